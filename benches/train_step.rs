//! One QLoRA optimizer step on the real model, shaped like the PyTorch + PEFT reference in
//! ../shared/fixtures/peft-reference.json: batch 4 x 256 tokens, r 16, alpha 32, dropout 0,
//! all seven projections, AdamW, fp32, the base kept as the shipped Q4_1 blocks.
//! Prints tokens/s (median of steps after a warm-up) and peak RSS next to PyTorch's.
//!
//!   cargo bench --bench train_step            # FT_BENCH_STEPS=5 FT_THREADS=2 to change

use candle_core::{Device, Tensor};
use ft::data::encode::Batch;
use ft::model::{load, LoadOptions};
use ft::train::{attach_adapters, batch_loss, checkpointed_grads, optim};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let fx = root.join("../shared/fixtures/peft-reference.json");
    if !model.exists() || !fx.exists() {
        eprintln!(
            "SKIP: needs {} (scripts/fetch-assets.sh) and {}",
            model.display(),
            fx.display()
        );
        return;
    }
    let threads: usize = std::env::var("FT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    ft::device::tune_allocator();
    ft::device::set_threads(threads);
    let steps: usize = std::env::var("FT_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let ckpt = std::env::var("FT_BENCH_CKPT").is_ok();
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx).unwrap()).unwrap();
    let batches: Vec<Vec<Vec<u32>>> =
        serde_json::from_value(fx["first_two_batches_token_ids"].clone()).unwrap();
    let mut loaded = load(
        &model,
        &LoadOptions {
            max_positions: Some(512),
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = ft::lora::LoraConfig {
        r: 16,
        alpha: 32.0,
        dropout: 0.0,
        ..Default::default()
    };
    let vars = attach_adapters(&mut loaded.model, &cfg, 0).unwrap();
    let mut opt = optim::AdamW::new(vars, 0.0).unwrap();
    let mut times = Vec::new();
    let mut tokens = 0;
    for s in 0..steps + 1 {
        let b = &batches[s % batches.len()];
        let (bs, t) = (b.len(), b[0].len());
        let flat: Vec<u32> = b.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (bs, t), &Device::Cpu).unwrap();
        let batch = Batch {
            input: x.narrow(1, 0, t - 1).unwrap().contiguous().unwrap(),
            target: x.narrow(1, 1, t - 1).unwrap().contiguous().unwrap(),
            loss_mask: Tensor::ones((bs, t - 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
            segments: None,
            tokens: bs * t,
        };
        tokens = bs * t;
        let (t0, c0) = (std::time::Instant::now(), cpu_seconds());
        let (loss, grads) = if ckpt {
            checkpointed_grads(&loaded.model, &batch, &ft::model::Ctx::train(0), &opt.vars).unwrap()
        } else {
            let l = batch_loss(&loaded.model, &batch, &ft::model::Ctx::train(0)).unwrap();
            (
                l.to_scalar::<f32>().unwrap() as f64,
                opt.grads_of(&l.backward().unwrap()).unwrap(),
            )
        };
        opt.step(&grads, 2e-4).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        // CPU seconds (user + system, all threads): on a shared machine wall time swings,
        // CPU time per step much less so.
        let cpu = cpu_seconds() - c0;
        eprintln!(
            "step {s}: loss {loss:.4} {dt:.2}s wall, {cpu:.2}s cpu{}",
            if s == 0 { " (warm-up)" } else { "" }
        );
        if s > 0 {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let key = if ckpt {
        "with_gradient_checkpointing"
    } else {
        "no_checkpointing"
    };
    let torch = &fx[key];
    let rss = ft::train::peak_rss_mib();
    println!("| | tokens/s | step s (median) | peak RSS MiB |");
    println!("|---|---:|---:|---:|");
    println!(
        "| ft ({threads} threads, {key}) | {:.1} | {median:.2} | {rss:.0} |",
        tokens as f64 / median
    );
    println!(
        "| PyTorch + PEFT | {} | {} | {} |",
        torch["tokens_per_s"], torch["median_step_s"], torch["peak_rss_mib_getrusage"]
    );
}

/// User + system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
