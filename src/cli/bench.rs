//! `ft bench`: llama-bench-style prefill and decode throughput, with spread over repetitions
//! and time to first token.

use super::common::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use ft::generate::Session;
use ft::model::Ctx;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths to time (comma-separated).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_prompt: Vec<usize>,
    /// Tokens to decode.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "reps", default_value_t = 3)]
    pub reps: usize,
    /// Output format: md or json.
    #[arg(short = 'o', long = "output", default_value = "md")]
    pub output: String,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

pub fn run(a: BenchArgs) -> Result<()> {
    if !matches!(a.output.as_str(), "md" | "json") {
        bail!("--output must be md or json (got `{}`)", a.output);
    }
    let loaded = a.model.load()?;
    let model = &loaded.model;
    let ctx = Ctx::infer(a.model.mode(), a.model.adapter_slot());
    let vocab = model.config.vocab_size as u32;
    // Deterministic pseudo-text: the ids do not matter for speed.
    let ids = |n: usize| -> Vec<u32> {
        (0..n as u32)
            .map(|i| (i * 7919 + 13) % vocab.min(30000))
            .collect()
    };
    let reps = a.reps.max(1);
    let mut rows = Vec::new();
    // Warm-up: first touches of the weights and allocator.
    Session::new(model, ctx).feed_all(&ids(8))?;
    for &p in &a.n_prompt {
        if p == 0 || p + a.n_gen > model.max_positions() {
            bail!(
                "-p {p} with -n {} does not fit the context of {}",
                a.n_gen,
                model.max_positions()
            );
        }
        let mut speeds = Vec::new();
        let mut ttft = Vec::new();
        for _ in 0..reps {
            let mut s = Session::new(model, ctx);
            let t = std::time::Instant::now();
            let logits = s.feed_all(&ids(p))?;
            let _first = logits.argmax(0)?.to_scalar::<u32>()?;
            let dt = t.elapsed().as_secs_f64();
            speeds.push(p as f64 / dt);
            ttft.push(dt * 1000.0);
        }
        rows.push((format!("pp{p}"), mean_sd(&speeds), Some(mean_sd(&ttft))));
    }
    if a.n_gen > 0 {
        let mut speeds = Vec::new();
        for _ in 0..reps {
            let mut s = Session::new(model, ctx);
            let mut logits = s.feed_all(&ids(1))?;
            let t = std::time::Instant::now();
            for _ in 0..a.n_gen {
                let next = logits.argmax(0)?.to_scalar::<u32>()?;
                logits = s.feed(&[next])?;
            }
            speeds.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
        }
        rows.push((format!("tg{}", a.n_gen), mean_sd(&speeds), None));
    }
    let threads = ft::device::threads();
    if a.output == "json" {
        let v: Vec<_> = rows
            .iter()
            .map(|(test, (m, sd), ttft)| {
                serde_json::json!({"model": a.model.model, "threads": threads, "test": test,
                    "tokens_per_sec": m, "stddev": sd, "reps": reps,
                    "ttft_ms": ttft.map(|t| t.0)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("| model | threads | test | t/s | TTFT ms |");
        println!("|---|---:|---:|---:|---:|");
        for (test, (m, sd), ttft) in &rows {
            let tt = ttft
                .map(|(m, sd)| format!("{m:.1} ± {sd:.1}"))
                .unwrap_or_else(|| "-".into());
            println!(
                "| {} | {threads} | {test} | {m:.2} ± {sd:.2} | {tt} |",
                a.model.model.display()
            );
        }
    }
    Ok(())
}
