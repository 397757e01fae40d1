//! Portable kernel (any architecture): the same integer math as the SIMD path, one weight row
//! at a time, the row decoded once and met by every activation row.

use super::act::Acts;
use super::format::{decode_block, Format, QK};
use super::Out;
use std::ops::Range;

pub fn matmul_rows(f: Format, w: &[u8], rows: Range<usize>, acts: &Acts, out: &Out) {
    let nb = acts.blocks_per_row();
    let bb = f.block_bytes();
    let mut codes = vec![0i32; nb * QK];
    let mut scales = vec![(0f32, 0f32); nb];
    for r in rows {
        let row = &w[r * nb * bb..(r + 1) * nb * bb];
        for (b, blk) in row.chunks_exact(bb).enumerate() {
            let (d, m, u) = decode_block(f, blk);
            codes[b * QK..(b + 1) * QK].copy_from_slice(&u);
            scales[b] = (d, m);
        }
        for a in 0..acts.m {
            let mut acc = 0f32;
            for (b, &(d, m)) in scales.iter().enumerate() {
                let i = a * nb + b;
                let q = &acts.qs[i * QK..(i + 1) * QK];
                let dot: i32 = codes[b * QK..(b + 1) * QK]
                    .iter()
                    .zip(q)
                    .map(|(&u, &q)| u * q as i32)
                    .sum();
                acc += d * acts.d[i] * dot as f32 + m * acts.s[i];
            }
            // SAFETY: (a, r) lies inside the output and this call owns column range `rows`.
            unsafe { out.write(a, r, acc) };
        }
    }
}
