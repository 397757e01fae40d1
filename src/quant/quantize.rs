//! f32 values -> ggml blocks, for the GGUF writer and in-memory quantization.
//!
//! Every type goes to candle (llama.cpp's reference quantizers, `quantize_row_*_ref`), except
//! for one case of the affine 32-weight types Q4_1 and Q5_1: blocks whose values already sit
//! on a coarser or equal affine grid — what `ft merge` of a QLoRA adapter into a Q4_1 (or
//! Q4_K, Q5_1) base gives: the base's dequantized levels plus a LoRA delta of a few percent
//! of one step. The reference rounds such a block badly either way:
//!
//! - Q5_1 from a 16-level block: `d = (max - min) / 31` does not contain the 16 levels; level
//!   k lands on `2k` steps below the middle and `2k + 1` above it in every block, so the
//!   rounding error is a fixed function of the weight (correlation ≈ 0.3, values pushed away
//!   from each block's middle) and adds up coherently in every dot product. The support
//!   fine-tune of SmolLM2 merged into its Q4_1 base and written as Q5_K_M (576-wide rows fall
//!   back to Q5_1) had perplexity 77.5 against 34.5 at F16; llama-quantize writes the same
//!   Q5_1 bytes, and llama.cpp measures the same perplexity on them.
//! - Q4_1 from a 16-level block: the grid is the base's own, so rounding to nearest gives the
//!   base back and drops the fine-tune (held-out loss 0.17 -> 2.37; the base's is 3.17).
//!   An error-minimising scale search does the same for Q5_1 (step `d₄ / 2`: loss 0.79).
//!
//! So on those blocks the grid is aligned with the source's (`range / 30` for Q5_1, `range
//! / 15` for Q4_1 from 16 levels; `range / nmax` from a grid of the same size) and each value
//! is rounded stochastically — up with probability equal to its fractional position, from a
//! hash of the block's values and the position (deterministic, chunking-independent). The
//! base's levels are kept exactly, the expected value of every stored weight is the merged
//! weight, and the error is independent of the weight (Q5_K_M: perplexity 33.3, loss 0.19;
//! Q4_1: 32.1, 0.36). Other blocks — any ordinary f16/f32
//! weights (a block of 32 real weights is on a 15- or 31-step grid with probability ~1e-5) —
//! get the reference's bytes, identical to llama-quantize's.

use crate::error::{Error, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use half::f16;

const QK: usize = 32;
/// A block is "on a grid of n steps over its range" when the RMS distance of its values to
/// the nearest level is below this fraction of a step (uniform values: 0.29).
const ON_GRID_RMS: f32 = 0.15;
/// Source grids looked for: 16 levels (Q4_0/Q4_1/Q4_K bases) and 32 (Q5_0/Q5_1/Q5_K).
const SOURCE_STEPS: [u8; 2] = [15, 31];

/// Whether [`quantize_values`] may write other bytes than candle's for `dtype`.
pub fn own_blocks(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_1)
}

/// Rows of `ncols` f32 values -> the stored bytes of `dtype` (ggml layout).
pub fn quantize_values(values: &[f32], ncols: usize, dtype: GgmlDType) -> Result<Vec<u8>> {
    let block = dtype.block_size();
    if ncols == 0 || !ncols.is_multiple_of(block) || !values.len().is_multiple_of(ncols) {
        return Err(Error::invalid(format!(
            "{} values in rows of {ncols} do not fit {} blocks of {block}",
            values.len(),
            crate::gguf::dtype_name(dtype)
        )));
    }
    match dtype {
        GgmlDType::Q4_1 => Ok(affine_blocks(values, 15)),
        GgmlDType::Q5_1 => Ok(affine_blocks(values, 31)),
        _ => {
            let t = Tensor::from_slice(values, (values.len() / ncols, ncols), &Device::Cpu)?;
            Ok(QTensor::quantize(&t, dtype)?.data()?.into_owned())
        }
    }
}

/// A tensor (rows, .., ncols) quantized to `dtype` as a CPU `QTensor`.
pub fn quantize_tensor(t: &Tensor, dtype: GgmlDType) -> Result<QTensor> {
    let t = t.to_dtype(DType::F32)?;
    if !own_blocks(dtype) {
        return Ok(QTensor::quantize(&t, dtype)?);
    }
    let dims = t.dims().to_vec();
    let ncols = dims.last().copied().unwrap_or(1);
    let values = t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    let bytes = quantize_values(&values, ncols, dtype)?;
    Ok(qtensor_from_ggml(dtype, &bytes, dims, &Device::Cpu)?)
}

/// Q4_1 (`nmax` 15) or Q5_1 (`nmax` 31) blocks of `values` (a multiple of 32 long).
fn affine_blocks(values: &[f32], nmax: u8) -> Vec<u8> {
    let five = nmax == 31;
    let size = if five { 24 } else { 20 };
    let mut out = Vec::with_capacity(values.len() / QK * size);
    let mut q = [0u8; QK];
    for x in values.chunks_exact(QK) {
        let (d, m) = affine_block(x, nmax, &mut q);
        out.extend_from_slice(&d.to_bits().to_le_bytes());
        out.extend_from_slice(&m.to_bits().to_le_bytes());
        if five {
            let mut qh = 0u32;
            for (j, &v) in q.iter().enumerate() {
                qh |= ((v as u32 >> 4) & 1) << j;
            }
            out.extend_from_slice(&qh.to_le_bytes());
        }
        for j in 0..QK / 2 {
            out.push((q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4));
        }
    }
    out
}

/// The steps of the coarsest source grid (15 or 31, at most `nmax`) that `x` lies on, with
/// its range `[min, max]` spanning exactly those steps.
fn source_grid(x: &[f32], min: f32, max: f32, nmax: u8) -> Option<u8> {
    let range = max - min;
    if !range.is_finite() || range <= 0.0 {
        return None;
    }
    SOURCE_STEPS.into_iter().filter(|&n| n <= nmax).find(|&n| {
        let id = n as f32 / range;
        let ss: f32 = x
            .iter()
            .map(|&v| {
                let f = (v - min) * id;
                (f - f.round()).powi(2)
            })
            .sum();
        (ss / x.len() as f32).sqrt() < ON_GRID_RMS
    })
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The block's (d, m) as stored, and its codes in `q`.
fn affine_block(x: &[f32], nmax: u8, q: &mut [u8; QK]) -> (f16, f16) {
    let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in x {
        min = min.min(v);
        max = max.max(v);
    }
    if let Some(n) = source_grid(x, min, max, nmax) {
        // Aligned with the source grid: a whole number of our steps per source step.
        let steps = n as u32 * (nmax as u32 / n as u32);
        let (d16, m16) = (
            f16::from_f32((max - min) / steps as f32),
            f16::from_f32(min),
        );
        let (d, m) = (d16.to_f32(), m16.to_f32());
        if d > 0.0 && d.is_finite() && m.is_finite() {
            stochastic_codes(x, d, m, nmax, q);
            return (d16, m16);
        }
    }
    // llama.cpp's quantize_row_q{4,5}_1_ref: codes against the unrounded d and min.
    let d = (max - min) / nmax as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (c, &v) in q.iter_mut().zip(x) {
        *c = (((v - min) * id + 0.5) as u8).min(nmax);
    }
    (f16::from_f32(d), f16::from_f32(min))
}

/// Codes for `x ≈ d·q + m` rounded up with probability equal to the fractional position, from
/// a hash of the block's values and the position; values on a level stay on it.
fn stochastic_codes(x: &[f32], d: f32, m: f32, nmax: u8, q: &mut [u8; QK]) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for &v in x {
        seed = mix(seed ^ v.to_bits() as u64);
    }
    for (i, (c, &v)) in q.iter_mut().zip(x).enumerate() {
        let f = (v - m) / d;
        let below = f.floor();
        let frac = f - below;
        let up = if frac < 1e-4 {
            false
        } else if frac > 1.0 - 1e-4 {
            true
        } else {
            let u = (mix(seed ^ (i as u64 + 1)) >> 40) as f32 / (1u64 << 24) as f32;
            u < frac
        };
        *c = (below + up as u8 as f32).clamp(0.0, nmax as f32) as u8;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn dequant(bytes: &[u8], dtype: GgmlDType, rows: usize, ncols: usize) -> Vec<f32> {
        qtensor_from_ggml(dtype, bytes, vec![rows, ncols], &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    fn candle_bytes(values: &[f32], ncols: usize, dtype: GgmlDType) -> Vec<u8> {
        let t = Tensor::from_slice(values, (values.len() / ncols, ncols), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype)
            .unwrap()
            .data()
            .unwrap()
            .into_owned()
    }

    /// Weight-like values: heavy-tailed, per-row scales.
    fn weights(rows: usize, ncols: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..rows * ncols)
            .map(|i| {
                let u: f32 = rng.random_range(-1.0..1.0);
                let row_scale = 1.0 + (i / ncols % 7) as f32 * 0.3;
                row_scale * (0.05 * u * u * u + 0.02 * rng.random_range(-1.0f32..1.0))
            })
            .collect()
    }

    /// What `ft merge` of a QLoRA adapter gives: the Q4_1 base (dequantized) and base + delta,
    /// the delta a rank-2 product of a few percent of a Q4_1 step.
    pub(crate) fn merged_q4_1(rows: usize, ncols: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let w = weights(rows, ncols, seed);
        let base = dequant(
            &candle_bytes(&w, ncols, GgmlDType::Q4_1),
            GgmlDType::Q4_1,
            rows,
            ncols,
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1);
        let mut vec =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (b, a) = (vec(rows * 2), vec(2 * ncols));
        let merged = (0..rows * ncols)
            .map(|i| {
                let (r, c) = (i / ncols, i % ncols);
                base[i] + 3e-4 * (b[2 * r] * a[c] + b[2 * r + 1] * a[ncols + c])
            })
            .collect();
        (base, merged)
    }

    /// Σ a·b / Σ b·b.
    fn proj(a: &[f32], b: &[f32]) -> f64 {
        let ab: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        ab / b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>()
    }

    fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x - y).collect()
    }

    #[test]
    fn merged_q4_1_base_keeps_its_fine_tune_without_bias() {
        // The reference quantizers on this data are what broke exports of a merged Q4_1 base:
        // Q5_1's error is correlated with the weights (gain Σe·w/Σw² ≈ +0.015: Q5_K_M
        // perplexity 33 -> 75), and Q4_1 rounds back to the base (the delta is lost).
        let (rows, ncols) = (96, 576);
        let (base, merged) = merged_q4_1(rows, ncols, 1);
        let delta = diff(&merged, &base);
        for dtype in [GgmlDType::Q5_1, GgmlDType::Q4_1] {
            let bytes = quantize_values(&merged, ncols, dtype).unwrap();
            let got = dequant(&bytes, dtype, rows, ncols);
            let err = diff(&got, &merged);
            let gain = proj(&err, &merged);
            // What survives of the delta (1 = all of it, in expectation).
            let kept = proj(&diff(&got, &base), &delta);
            assert!(gain.abs() < 1e-3, "{dtype:?}: gain {gain}");
            assert!((0.85..1.15).contains(&kept), "{dtype:?}: delta kept {kept}");
            // A tensor goes the same way (the GGUF writer's path: `export::quantize_bytes`).
            let t = Tensor::from_slice(&merged, (rows, ncols), &Device::Cpu).unwrap();
            assert_eq!(
                quantize_tensor(&t, dtype).unwrap().data().unwrap().as_ref(),
                &bytes[..]
            );
        }
        // The failure mode itself, as candle (= llama.cpp's reference) has it.
        let reference = |dtype| dequant(&candle_bytes(&merged, ncols, dtype), dtype, rows, ncols);
        let r51 = reference(GgmlDType::Q5_1);
        assert!(proj(&diff(&r51, &merged), &merged) > 5e-3);
        let r41 = reference(GgmlDType::Q4_1);
        assert!(proj(&diff(&r41, &base), &delta).abs() < 0.2);
    }

    #[test]
    fn untouched_base_weights_are_kept_exactly() {
        // A tensor no adapter targets is the base's Q4_1 grid itself.
        let (rows, ncols) = (8, 256);
        let (base, _) = merged_q4_1(rows, ncols, 3);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_1] {
            let got = dequant(
                &quantize_values(&base, ncols, dtype).unwrap(),
                dtype,
                rows,
                ncols,
            );
            for (i, (g, b)) in got.iter().zip(&base).enumerate() {
                assert!(
                    (g - b).abs() <= 1e-3 * b.abs() + 1e-6,
                    "{dtype:?} [{i}]: {g} vs {b}"
                );
            }
        }
    }

    #[test]
    fn ordinary_weights_get_llama_cpps_reference_bytes() {
        let ncols = 576;
        let w = weights(64, ncols, 7);
        for dtype in [
            GgmlDType::Q4_1,
            GgmlDType::Q5_1,
            GgmlDType::Q4_0,
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
        ] {
            assert!(
                quantize_values(&w, ncols, dtype).unwrap() == candle_bytes(&w, ncols, dtype),
                "{dtype:?}"
            );
        }
        assert!(quantize_values(&w, 100, GgmlDType::Q5_1).is_err());
        // Degenerate blocks (constant, zero, two values, tiny) decode as the reference's do.
        let mut e = vec![0f32; 5 * 32];
        e[0..32].iter_mut().for_each(|v| *v = 0.25);
        e[64..96].iter_mut().for_each(|v| *v = 1e-3);
        e[70] = 4.0;
        e[96..128]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i as f32 - 9.0) * 1e-9);
        e[128..160]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i % 3) as f32 - 1.0);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_1] {
            let ours = dequant(&quantize_values(&e, 32, dtype).unwrap(), dtype, 5, 32);
            let theirs = dequant(&candle_bytes(&e, 32, dtype), dtype, 5, 32);
            for (i, ((o, t), x)) in ours.iter().zip(&theirs).zip(&e).enumerate() {
                let tol = (t - x).abs() + 1e-3 * x.abs() + 1e-9;
                assert!((o - x).abs() <= tol, "{dtype:?} [{i}]: {o} vs {t} ({x})");
            }
        }
    }
}
