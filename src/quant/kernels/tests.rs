//! The kernels against f32 math over the dequantized weights (within a bound derived from
//! the 8-bit activation rounding), against candle's QMatMul, and SIMD against scalar.

use super::act::{scalar_block, Acts};
use super::format::QK;
use super::*;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};
use rand::{Rng, SeedableRng};

const TYPES: [GgmlDType; 7] = [
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q4K,
    GgmlDType::Q6K,
];

/// K-quant rows are whole 256-weight super-blocks: swap the row lengths that are not.
fn fit(dt: GgmlDType, k: usize) -> usize {
    let kq = matches!(dt, GgmlDType::Q4K | GgmlDType::Q6K);
    match k {
        576 if kq => 768,
        64 if kq => 256,
        k => k,
    }
}

fn rand_vec(rng: &mut rand::rngs::StdRng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

/// (x, W quantized, W dequantized as rows) for x (m, k), W (n, k).
fn case(m: usize, n: usize, k: usize, dt: GgmlDType, seed: u64) -> (Vec<f32>, QTensor, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x = rand_vec(&mut rng, m * k, 2.0);
    // Outliers, as real activations have: they set the block scales.
    for i in (0..x.len()).step_by(97) {
        x[i] *= 8.0;
    }
    let w = Tensor::from_vec(rand_vec(&mut rng, n * k, 0.1), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dt).unwrap();
    let wd = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (x, q, wd)
}

/// f64 reference and, per output, the largest error 8-bit activations can cause:
/// Σ_blocks (d_x / 2) · Σ_block |w|, plus f32 summation slack.
fn reference(x: &[f32], wd: &[f32], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut bound) = (vec![0f64; m * n], vec![0f64; m * n]);
    for a in 0..m {
        let xa = &x[a * k..(a + 1) * k];
        for r in 0..n {
            let wr = &wd[r * k..(r + 1) * k];
            let (mut s, mut e, mut mag) = (0f64, 0f64, 0f64);
            for b in 0..k / QK {
                let xb = &xa[b * QK..(b + 1) * QK];
                let wb = &wr[b * QK..(b + 1) * QK];
                let dx = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0;
                for (xv, wv) in xb.iter().zip(wb) {
                    s += *xv as f64 * *wv as f64;
                    e += dx / 2.0 * wv.abs() as f64;
                    mag += (*xv as f64 * *wv as f64).abs();
                }
            }
            y[a * n + r] = s;
            bound[a * n + r] = e * 1.01 + mag * 1e-5 + 1e-6;
        }
    }
    (y, bound)
}

fn ours(x: &[f32], q: &QTensor, m: usize, k: usize) -> Vec<f32> {
    let xt = Tensor::from_vec(x.to_vec(), (m, k), &Device::Cpu).unwrap();
    let y = try_matmul(&xt, q).unwrap().expect("a kernel for this type");
    assert_eq!(y.dims(), &[m, q.shape().dims2().unwrap().0]);
    y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn matches_dequantized_f32_within_activation_rounding() {
    for (i, dt) in TYPES.into_iter().enumerate() {
        for (k, n) in [(576, 37), (1536, 129), (64, 5), (576, 1)] {
            let k = fit(dt, k);
            for m in [1, 7] {
                let (x, q, wd) = case(m, n, k, dt, 100 + i as u64);
                let got = ours(&x, &q, m, k);
                let (want, bound) = reference(&x, &wd, m, n, k);
                for j in 0..m * n {
                    let d = (got[j] as f64 - want[j]).abs();
                    assert!(
                        d <= bound[j],
                        "{dt:?} m={m} n={n} k={k} [{j}]: got {} want {} (|Δ| {d} > {})",
                        got[j],
                        want[j],
                        bound[j]
                    );
                }
                if m * n < 16 {
                    continue; // one random dot product can cancel to ~0: no relative measure
                }
                // And not merely within a loose bound: close overall.
                let num: f64 = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (*g as f64 - w).powi(2))
                    .sum();
                let den: f64 = want.iter().map(|w| w * w).sum();
                assert!(
                    (num / den).sqrt() < 0.02,
                    "{dt:?} m={m} n={n} k={k}: relative error {}",
                    (num / den).sqrt()
                );
            }
        }
    }
}

#[test]
fn agrees_with_candle_qmatmul() {
    for (i, dt) in TYPES.into_iter().enumerate() {
        for (m, n, k) in [(1, 129, 576), (7, 37, 1536), (7, 5, 64)] {
            let k = fit(dt, k);
            let (x, q, wd) = case(m, n, k, dt, 200 + i as u64);
            let got = ours(&x, &q, m, k);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let theirs = QMatMul::from_qtensor(q).unwrap().forward(&xt).unwrap();
            let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // Both round the activations to 8 bits (candle's scales in f16): each is within
            // the bound of the exact product, so they are within twice it of each other.
            let (_, bound) = reference(&x, &wd, m, n, k);
            for j in 0..m * n {
                let d = (got[j] - theirs[j]).abs() as f64;
                assert!(
                    d <= 2.0 * bound[j] + 1e-3,
                    "{dt:?} ({m},{n},{k}) [{j}]: ours {} candle {}",
                    got[j],
                    theirs[j]
                );
            }
        }
    }
}

#[test]
fn simd_and_threads_match_scalar() {
    // Large enough to take the parallel path; n not a multiple of the 4-row tile.
    let (m, n, k) = (7, 203, 1536);
    for (i, dt) in TYPES.into_iter().enumerate() {
        let (x, q, _) = case(m, n, k, dt, 300 + i as u64);
        let fmt = Format::from_dtype(dt).unwrap();
        let mut fast = vec![0f32; m * n];
        matmul(&x, m, k, fmt, &q.data().unwrap(), n, &mut fast);
        let mut acts = Acts::default();
        acts.quantize(&x, m, k);
        let mut slow = vec![0f32; m * n];
        let dst = Out {
            ptr: slow.as_mut_ptr(),
            ld: n,
        };
        scalar::matmul_rows(fmt, &q.data().unwrap(), 0..n, &acts, &dst);
        for j in 0..m * n {
            let tol = 1e-4 * (1.0 + slow[j].abs());
            assert!(
                (fast[j] - slow[j]).abs() <= tol,
                "{dt:?} [{j}]: simd {} scalar {}",
                fast[j],
                slow[j]
            );
        }
    }
}

#[test]
fn activation_quantization_matches_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut x = rand_vec(&mut rng, 32 * 40, 3.0);
    x[40..72].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
    x[100] = 1e-30;
    let mut acts = Acts::default();
    acts.quantize(&x, 4, 320);
    for (b, xb) in x.chunks_exact(QK).enumerate() {
        let mut q = [0i8; QK];
        let (d, s) = scalar_block(xb, &mut q);
        assert_eq!(&acts.qs[b * QK..(b + 1) * QK], &q, "block {b}");
        assert!(
            (acts.d[b] - d).abs() <= d * 1e-6 && (acts.s[b] - s).abs() <= s.abs() * 1e-6 + 1e-6
        );
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(q.iter().all(|v| (-127..=127).contains(v)));
        if amax > 0.0 {
            assert!(
                q.iter().any(|v| v.abs() == 127),
                "the largest value maps to ±127"
            );
        }
    }
}

#[test]
fn handles_batch_dims_strides_and_declines_other_types() {
    let (m, n, k) = (6, 11, 64);
    let (x, q, _) = case(m, n, k, GgmlDType::Q4_1, 9);
    let flat = ours(&x, &q, m, k);
    // (2, 3, k) input gives (2, 3, n).
    let x3 = Tensor::from_vec(x.clone(), (2, 3, k), &Device::Cpu).unwrap();
    let y3 = try_matmul(&x3, &q).unwrap().unwrap();
    assert_eq!(y3.dims(), &[2, 3, n]);
    assert_eq!(y3.flatten_all().unwrap().to_vec1::<f32>().unwrap(), flat);
    // A non-contiguous view of the same values.
    let xt = Tensor::from_vec(x, (m, k), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap()
        .contiguous()
        .unwrap()
        .t()
        .unwrap();
    assert!(!xt.is_contiguous());
    let yt = try_matmul(&xt, &q).unwrap().unwrap();
    assert_eq!(yt.flatten_all().unwrap().to_vec1::<f32>().unwrap(), flat);
    // Types without a kernel here, and f16 input, are left to candle.
    let w = Tensor::zeros((4, 256), DType::F32, &Device::Cpu).unwrap();
    let qk = QTensor::quantize(&w, GgmlDType::Q5K).unwrap();
    assert!(try_matmul(
        &Tensor::zeros((1, 256), DType::F32, &Device::Cpu).unwrap(),
        &qk
    )
    .unwrap()
    .is_none());
    let x16 = Tensor::zeros((1, k), DType::F16, &Device::Cpu).unwrap();
    assert!(try_matmul(&x16, &q).unwrap().is_none());
}
