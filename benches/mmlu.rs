//! 5-shot MMLU speed on the real model: questions/s with the few-shot prefix's KV cache reused
//! across a subject's questions, and recomputed for every question; and the implied time for
//! all 57 subjects.
//!
//!   cargo bench --bench mmlu        # FT_MMLU_LIMIT=20 FT_THREADS=2 by default

use ft::eval::mmlu::{self, MmluOptions, Style};
use ft::eval::scorer::ModelScorer;
use ft::model::{load, Ctx, LoadOptions};
use ft::quant::MatmulMode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (model, data) = (
        root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
        root.join("datasets/mmlu/mmlu.jsonl"),
    );
    if !model.exists() || !data.exists() {
        eprintln!("SKIP: run scripts/fetch-assets.sh first");
        return;
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    ft::device::tune_allocator();
    ft::device::set_threads(env("FT_THREADS", 2));
    let limit = env("FT_MMLU_LIMIT", 20);
    let m = load(&model, &LoadOptions::default()).unwrap();
    let ds = mmlu::load(&data).unwrap();
    let subjects = mmlu::select(&ds, "high school geography,marketing").unwrap();
    let total: usize = ds
        .subjects
        .iter()
        .map(|s| s.questions.len().saturating_sub(5))
        .sum();
    println!("| mode | prefix reuse | questions | q/s | 57 subjects (est.) |");
    println!("|---|---|---:|---:|---:|");
    for mode in [MatmulMode::Fast, MatmulMode::Exact] {
        for reuse in [true, false] {
            let opts = MmluOptions {
                shots: 5,
                limit: Some(limit),
                style: Style::Letter,
                pool: Some(5),
                chat: false,
            };
            let mut s = ModelScorer::new(&m.model, &m.tokenizer, Ctx::infer(mode, None), None);
            s.reuse_prefix = reuse;
            let t = std::time::Instant::now();
            let rep = mmlu::run(&ds, &subjects, &opts, &mut s, |_, _| {}).unwrap();
            let qps = rep.micro.scored as f64 / t.elapsed().as_secs_f64();
            println!(
                "| {mode:?} | {reuse} | {} | {qps:.2} | {:.0} min |",
                rep.micro.scored,
                total as f64 / qps / 60.0
            );
        }
    }
}
