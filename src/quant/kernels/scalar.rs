//! Portable kernel (any architecture): the same integer math as the SIMD path, one weight row
//! at a time, the row decoded once and met by every activation row.

use super::act::Acts;
use super::format::{decode_block, Format, QK};
use super::Out;
use std::ops::Range;

pub fn matmul_rows(f: Format, w: &[u8], rows: Range<usize>, acts: &Acts, out: &Out) {
    let nb = acts.blocks_per_row();
    let rb = f.row_bytes(acts.k);
    let mut codes = vec![0i32; nb * QK];
    // Per 32-block: scales of its two halves and the offset.
    let mut scales = vec![([0f32; 2], 0f32); nb];
    for r in rows {
        let row = &w[r * rb..(r + 1) * rb];
        for (b, s) in scales.iter_mut().enumerate() {
            let (d, m, u) = decode_block(f, row, b);
            codes[b * QK..(b + 1) * QK].copy_from_slice(&u);
            *s = (d, m);
        }
        for a in 0..acts.m {
            let mut acc = 0f32;
            for (b, &(d, m)) in scales.iter().enumerate() {
                let i = a * nb + b;
                let q = &acts.qs[i * QK..(i + 1) * QK];
                let c = &codes[b * QK..(b + 1) * QK];
                let dot = |h: usize| -> i32 {
                    let span = h * QK / 2..(h + 1) * QK / 2;
                    c[span.clone()]
                        .iter()
                        .zip(&q[span])
                        .map(|(&u, &q)| u * q as i32)
                        .sum()
                };
                acc += acts.d[i] * (d[0] * dot(0) as f32 + d[1] * dot(1) as f32) + m * acts.s[i];
            }
            // SAFETY: (a, r) lies inside the output and this call owns column range `rows`.
            unsafe { out.write(a, r, acc) };
        }
    }
}
