//! Inference speed on the CPU, 2 threads (llama-bench's pp128 / tg128 setting):
//!
//! - `model/pp128`: prefill of a 128-token prompt, tokens/s;
//! - `model/tg128`: 128 greedy decode steps through `ft::generate::Session`, tokens/s;
//! - `model/linears_per_token`: only the 211 matmuls of one decode step (30 × 7 + lm_head),
//!   so the rest of a decode step (norms, RoPE, attention, KV cache, logits) is the difference;
//! - `matmul/{type}/576x1536/{ft,candle}/{b1,b128}`: x (b, 576) · Wᵀ for W (1536, 576), ours vs
//!   candle's QMatMul; `matmul/{Q4_K,Q6_K}/1536x576`: a down_proj; `matmul/Q8_0/576x49152`:
//!   the output head, one token.
//!
//! The model benches need models/SmolLM2-135M-Instruct.Q4_1.gguf and say so when it is
//! missing. Run: `cargo bench --bench inference` (a filter like `-- matmul` picks a group).
//! Figures and the comparison with llama.cpp: docs/perf.md.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{black_box, Criterion, Throughput};
use ft::generate::Session;
use ft::model::{load, Ctx, LoadOptions, Loaded};
use ft::quant::{frozen_matmul, MatmulMode};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const THREADS: usize = 2;
const PROMPT: usize = 128;
const GEN: usize = 128;

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The pseudo-text `ft bench` uses: speed does not depend on which ids.
fn prompt_ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7919 + 13) % (vocab as u32).min(30000))
        .collect()
}

fn bench_model(c: &mut Criterion, loaded: &Loaded) {
    let model = &loaded.model;
    let ctx = Ctx::infer(MatmulMode::Fast, None);
    let ids = prompt_ids(PROMPT, model.config.vocab_size);
    let mut g = c.benchmark_group("model");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(PROMPT as u64));
    g.bench_function("pp128", |b| {
        b.iter(|| {
            let mut s = Session::new(model, ctx);
            black_box(s.feed_all(&ids).expect("prefill"))
        })
    });
    g.throughput(Throughput::Elements(GEN as u64));
    let decode = |iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let mut s = Session::new(model, ctx);
            let mut logits = s.feed_all(&ids[..1]).expect("first token");
            let t = Instant::now();
            for _ in 0..GEN {
                let next = logits
                    .argmax(0)
                    .and_then(|t| t.to_scalar::<u32>())
                    .expect("argmax");
                logits = s.feed(&[next]).expect("decode step");
            }
            total += t.elapsed();
        }
        total
    };
    g.bench_function("tg128", |b| b.iter_custom(decode));
    // The same loop run on a pool thread (every rayon call then forks from a worker). Kept
    // as evidence: with the kernels' own chunk sharing it is not faster (docs/perf.md).
    g.bench_function("tg128_in_pool", |b| {
        b.iter_custom(|iters| rayon::scope(|_| decode(iters)))
    });
    // Every frozen matmul of one decode step, on its own.
    let mut linears: Vec<&ft::quant::FrozenWeight> = model
        .blocks
        .iter()
        .flat_map(|b| b.linears().map(|(_, l)| &l.weight))
        .collect();
    linears.push(&model.lm_head.weight);
    let xs: Vec<Tensor> = linears
        .iter()
        .map(|w| {
            Tensor::ones((1, 1, w.dims()[1]), candle_core::DType::F32, &Device::Cpu).expect("x")
        })
        .collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("linears_per_token", |b| {
        b.iter(|| {
            for (w, x) in linears.iter().zip(&xs) {
                black_box(frozen_matmul(x, w, MatmulMode::Fast).expect("matmul"));
            }
        })
    });
    g.finish();
}

/// x (m, k) · Wᵀ for a random W (n, k) in `dt`: ours and candle's, same weights and inputs.
fn bench_shape(
    c: &mut Criterion,
    rng: &mut rand::rngs::StdRng,
    dt: GgmlDType,
    (n, k): (usize, usize),
    ms: &[usize],
) {
    let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.1f32..0.1)).collect();
    let w = Tensor::from_vec(w, (n, k), &Device::Cpu).expect("w");
    let q = QTensor::quantize(&w, dt).expect("quantize");
    let qmm = QMatMul::from_qtensor(QTensor::quantize(&w, dt).expect("quantize")).expect("qmatmul");
    let mut g = c.benchmark_group(format!("matmul/{}/{k}x{n}", ft::gguf::dtype_name(dt)));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &m in ms {
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
        let x = Tensor::from_vec(x, (m, k), &Device::Cpu).expect("x");
        g.throughput(Throughput::Elements((m * n * k) as u64));
        g.bench_function(format!("ft/b{m}"), |b| {
            b.iter(|| {
                black_box(
                    ft::quant::kernels::try_matmul(&x, &q)
                        .expect("ours")
                        .expect("supported"),
                )
            })
        });
        g.bench_function(format!("candle/b{m}"), |b| {
            b.iter(|| black_box(qmm.forward(&x).expect("candle")))
        });
    }
    g.finish();
}

fn bench_matmuls(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for dt in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
        bench_shape(c, &mut rng, dt, (1536, 576), &[1, 128]);
    }
    // K-quants need whole 256-weight super-blocks: the down_proj shape (576, 1536).
    for dt in [GgmlDType::Q4K, GgmlDType::Q6K] {
        bench_shape(c, &mut rng, dt, (576, 1536), &[1, 128]);
    }
    // The tied output head: the largest matmul of a decode step.
    bench_shape(c, &mut rng, GgmlDType::Q8_0, (49152, 576), &[1]);
}

fn main() {
    ft::device::tune_allocator();
    ft::device::set_threads(THREADS);
    let mut c = Criterion::default().configure_from_args();
    bench_matmuls(&mut c);
    let path = model_path();
    if path.exists() {
        let loaded = load(&path, &LoadOptions::default()).expect("load the model");
        bench_model(&mut c, &loaded);
    } else {
        eprintln!("skipping the model benches: {} is missing", path.display());
    }
    c.final_summary();
}
