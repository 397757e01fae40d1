//! Quantization throughput per type (MB/s of f32 source weights) on ~50 MB of random matrices,
//! through the exporter's parallel row-chunked path (`ft::export::quantize_bytes`).
//!
//!     cargo bench --bench quantize

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// 12 matrices of 1024 x 1024 f32 = 48 MiB (rows of 1024 fit every block size).
fn matrices() -> Vec<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..12)
        .map(|_| {
            let v: Vec<f32> = (0..1024 * 1024)
                .map(|_| rng.random_range(-0.05f32..0.05))
                .collect();
            Tensor::from_vec(v, (1024, 1024), &Device::Cpu).expect("tensor")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ms = matrices();
    let bytes: u64 = ms.iter().map(|m| (m.elem_count() * 4) as u64).sum();
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for dt in [
        GgmlDType::F16,
        GgmlDType::Q8_0,
        GgmlDType::Q6K,
        GgmlDType::Q5K,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q4K,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q3K,
        GgmlDType::Q2K,
    ] {
        g.bench_function(ft::gguf::dtype_name(dt), |b| {
            b.iter(|| {
                for m in &ms {
                    std::hint::black_box(ft::export::quantize_bytes(m, dt).expect("quantize"));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
