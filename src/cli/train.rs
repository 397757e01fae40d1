//! `ft train RECIPE`: QLoRA fine-tuning from a YAML recipe, with a progress bar, eval loss,
//! TensorBoard logs, checkpoints and `--resume`.

use anyhow::{Context, Result};
use clap::Args;
use ft::model::load;
use ft::recipe::Recipe;
use ft::train::{self, Event};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The recipe (YAML); see recipes/README.md for every key.
    pub recipe: PathBuf,
    /// Override a recipe key: --set train.lr=1e-4 (repeatable; wins over the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Validate, print the resolved recipe, parameter counts, tokens and a memory estimate; train nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Continue from the newest checkpoint in train.output_dir.
    #[arg(long)]
    pub resume: bool,
    /// Start over in a train.output_dir that holds another run's checkpoints (deleting them).
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar (one log line per step instead).
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let recipe = Recipe::load(&a.recipe, &a.set)?;
    if a.dry_run {
        return super::dry_run::run(&recipe);
    }
    recipe.check_paths()?;
    let opts = recipe.load_options()?;
    let mut loaded = load(&recipe.model.path, &opts)
        .with_context(|| format!("model.path `{}`", recipe.model.path.display()))?;
    let prepared = train::prepare_with(&recipe, &loaded, |what, done, total| {
        eprint!("\rft: {what} {done}/{total}   ");
        if done == total {
            eprintln!();
        }
    })?;
    if let Some((path, cached)) = &prepared.replay {
        let how = if *cached {
            "cached in"
        } else {
            "generated into"
        };
        eprintln!("ft: replay data {how} {}", path.display());
    }
    if prepared.sources.len() > 1 {
        let parts: Vec<String> = prepared
            .sources
            .iter()
            .map(|s| format!("{} x{}: {}", s.name, s.weight, s.examples))
            .collect();
        eprintln!("ft: training sources: {}", parts.join("; "));
    }
    let s = &prepared.train_stats;
    eprintln!(
        "ft: {} training examples ({} tokens, {} trained on; {} truncated to {}, {} dropped with nothing to learn, {} records skipped by the reader); {} eval examples",
        s.examples, s.tokens, s.target_tokens, s.truncated, recipe.dataset.max_seq_len, s.empty, prepared.skipped, prepared.eval.len()
    );
    let bar = if a.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let quiet = a.no_progress;
    let summary = train::train(
        &recipe,
        &mut loaded,
        &prepared,
        a.resume,
        a.overwrite,
        |ev| {
            match ev {
                Event::Start { total, start } => {
                    bar.set_length(total as u64);
                    bar.set_position(start as u64);
                    if start > 0 {
                        bar.println(format!("resumed at step {start}/{total}"));
                    }
                }
                Event::Step {
                    step,
                    total,
                    loss,
                    lr,
                    grad_norm,
                    tok_s,
                } => {
                    bar.set_position(step as u64);
                    bar.set_message(format!(
                        "loss {loss:.4} lr {lr:.2e} |g| {grad_norm:.2} {tok_s:.0} tok/s"
                    ));
                    if quiet {
                        eprintln!("step {step}/{total} loss {loss:.4} lr {lr:.2e} grad_norm {grad_norm:.3} {tok_s:.0} tok/s");
                    }
                }
                Event::Eval { step, loss } => {
                    if quiet {
                        eprintln!("step {step}: eval loss {loss:.4}");
                    } else {
                        bar.println(format!("step {step}: eval loss {loss:.4}"));
                    }
                }
                Event::Saved { step, path } => {
                    if quiet {
                        eprintln!("step {step}: checkpoint {}", path.display());
                    }
                }
                Event::Selected {
                    step,
                    fact_match,
                    fact_recall,
                    best_step,
                } => {
                    let line = format!(
                    "step {step}: validation fact-match {:.1}%, recall {:.1}% (best: step {best_step})",
                    fact_match * 100.0,
                    fact_recall * 100.0
                );
                    if quiet {
                        eprintln!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
            }
            true
        },
    )?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!(
        "ft: {} steps in {:.0}s, {:.0} tok/s, peak RSS {:.0} MiB; adapter in {}",
        summary.steps,
        summary.seconds,
        summary.tokens_per_sec,
        summary.peak_rss_mib,
        summary.adapter_dir.display()
    );
    if let Some(b) = summary.selected {
        eprintln!(
            "ft: adapter from step {} (validation fact-match {:.1}%, recall {:.1}%)",
            b.step,
            b.fact_match * 100.0,
            b.fact_recall * 100.0
        );
    }
    if let (Some(b), Some(a)) = (summary.eval_loss_before, summary.eval_loss_after) {
        eprintln!(
            "ft: eval loss {b:.4} -> {a:.4} ({:+.1}%)",
            (a - b) / b * 100.0
        );
    }
    if recipe.eval.after_train {
        // Exactly what `ft eval RECIPE` runs, on the adapter just written.
        drop(loaded);
        let plan = recipe.eval_plan(&ft::eval::EvalSettings::default())?;
        if !plan.is_empty() {
            let results = super::eval::run_plan(&plan)?;
            // On stderr: stdout holds the JSON summary.
            if let [b, t] = results.as_slice() {
                eprintln!("{}", super::eval::card(b, t));
            }
        }
    }
    Ok(())
}
