//! Activations quantized to 8-bit blocks of 32, once per matmul (llama.cpp's Q8_0/Q8_1):
//! per block d = max|x| / 127, q = round(x / d), and s = d·Σq for the weight formats that
//! carry an offset. Scales stay f32 (ggml rounds them to f16; f32 is slightly closer).

use super::format::QK;

/// `m` rows of `k` activations: codes (m·k), per-block scales and scaled sums (m·k/32 each).
#[derive(Default)]
pub struct Acts {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub m: usize,
    pub k: usize,
}

impl Acts {
    pub fn blocks_per_row(&self) -> usize {
        self.k / QK
    }

    /// Quantize x (m, k) row-major, k a multiple of 32, reusing this buffer's allocations.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        debug_assert!(k.is_multiple_of(QK) && x.len() == m * k);
        let nb = m * k / QK;
        self.qs.resize(m * k, 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        self.m = m;
        self.k = k;
        let blocks = x
            .chunks_exact(QK)
            .zip(self.qs.chunks_exact_mut(QK))
            .zip(self.d.iter_mut().zip(self.s.iter_mut()));
        for ((x, q), (d, s)) in blocks {
            (*d, *s) = quantize_block(x, q);
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    // SAFETY: both slices hold exactly 32 elements (chunks_exact above); AVX2 is compiled in.
    unsafe { avx2_block(x, q) }
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)))]
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    scalar_block(x, q)
}

/// Portable reference: also what the AVX2 path must reproduce.
#[cfg_attr(target_feature = "avx2", allow(dead_code))]
pub fn scalar_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in q.iter_mut().zip(x) {
        // Round half to even, as the SIMD path's cvtps does.
        let r = (v * id).round_ties_even() as i32;
        *q = r as i8;
        sum += r;
    }
    (d, d * sum as f32)
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline(always)]
unsafe fn avx2_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let p = x.as_ptr();
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let a = v.map(|v| _mm256_andnot_ps(sign, v));
    let mx = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let mx = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    let mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
    let mx = _mm_max_ss(mx, _mm_movehdup_ps(mx));
    let d = _mm_cvtss_f32(mx) / 127.0;
    let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
    // cvtps rounds to nearest even under the default MXCSR.
    let i = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
    let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    let sum = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
    let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01));
    let sum = _mm_cvtsi128_si32(sum);
    // i32 -> i16 -> i8 with saturation; packs interleave 128-bit lanes, the permute undoes it.
    let w = _mm256_packs_epi32(i[0], i[1]);
    let z = _mm256_packs_epi32(i[2], i[3]);
    let b = _mm256_packs_epi16(w, z);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, b);
    (d, d * sum as f32)
}
