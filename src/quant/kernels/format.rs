//! The ggml weight blocks our kernels read, straight from a `QTensor`'s bytes (little-endian
//! f16 scales, no alignment assumed). Kernels walk every row in sub-blocks of 32 weights:
//!
//! | type | bytes / weights | layout                   | weight j of a 32-block              |
//! |------|-----------------|--------------------------|-------------------------------------|
//! | Q4_0 | 18 / 32         | d, qs[16]                | d·(nib_j − 8)                       |
//! | Q4_1 | 20 / 32         | d, m, qs[16]             | d·nib_j + m                         |
//! | Q5_0 | 22 / 32         | d, qh[4], qs[16]         | d·(nib_j + 16·bit_j(qh) − 16)       |
//! | Q5_1 | 24 / 32         | d, m, qh[4], qs[16]      | d·(nib_j + 16·bit_j(qh)) + m        |
//! | Q8_0 | 34 / 32         | d, qs[32] (i8)           | d·q_j                               |
//! | Q4_K | 144 / 256       | d, dmin, scales[12], qs[128] | sub-block s: d·sc_s·nib − dmin·m_s (6-bit sc, m) |
//! | Q6_K | 210 / 256       | ql[128], qh[64], sc[16] (i8), d | d·sc_16·(6-bit code − 32), a scale per 16 |
//!
//! nib_j is the low nibble of qs[j] for j < 16 and the high nibble of qs[j-16] otherwise (the
//! K-quants pair sub-blocks instead: low nibbles of 32 bytes, then their high nibbles).
//! Offset types are read as unsigned codes u with `w = d·u + m` (Q4_0: m = −8d, Q5_0:
//! m = −16d), the offset term m·Σx coming from the activation block sums; Q8_0 and Q6_K are
//! read as signed codes. Q6_K's two scales per 32-block apply to its halves.

use candle_core::quantized::GgmlDType;

/// Weights per (sub-)block, for every format here and for the 8-bit activations.
pub const QK: usize = 32;
/// Weights per K-quant super-block.
pub const QK_K: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl Format {
    pub fn from_dtype(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Format::Q4_0,
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q5_0 => Format::Q5_0,
            GgmlDType::Q5_1 => Format::Q5_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            GgmlDType::Q4K => Format::Q4K,
            GgmlDType::Q6K => Format::Q6K,
            _ => return None,
        })
    }

    /// Weights per stored block.
    pub const fn block_weights(self) -> usize {
        match self {
            Format::Q4K | Format::Q6K => QK_K,
            _ => QK,
        }
    }

    /// Bytes per stored block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q8_0 => 34,
            Format::Q4K => 144,
            Format::Q6K => 210,
        }
    }

    /// Bytes of one row of k weights (k a multiple of `block_weights`).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / self.block_weights() * self.block_bytes()
    }
}

#[inline(always)]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// The 6-bit (scale, min) of sub-block j of a Q4_K super-block (ggml's `get_scale_min_k4`).
#[inline(always)]
pub fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// 32-block b of a row: scales for its two halves, offset, and the 32 codes (unsigned for
/// offset types, signed for Q8_0/Q6_K). The portable reading of the table above, used by the
/// scalar kernel and the tests.
#[cfg_attr(target_feature = "avx2", allow(dead_code))]
pub fn decode_block(f: Format, row: &[u8], b: usize) -> ([f32; 2], f32, [i32; QK]) {
    let mut u = [0i32; QK];
    let nibbles = |qs: &[u8], u: &mut [i32; QK]| {
        for j in 0..QK / 2 {
            u[j] = (qs[j] & 0x0F) as i32;
            u[j + QK / 2] = (qs[j] >> 4) as i32;
        }
    };
    let high_bits = |qh: &[u8], u: &mut [i32; QK]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in u.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) << 4) as i32;
        }
    };
    let blk = &row[(b * QK / f.block_weights()) * f.block_bytes()..];
    let (d, m) = match f {
        Format::Q4_0 => {
            nibbles(&blk[2..18], &mut u);
            (f16_at(blk, 0), -8.0 * f16_at(blk, 0))
        }
        Format::Q4_1 => {
            nibbles(&blk[4..20], &mut u);
            (f16_at(blk, 0), f16_at(blk, 2))
        }
        Format::Q5_0 => {
            nibbles(&blk[6..22], &mut u);
            high_bits(&blk[2..6], &mut u);
            (f16_at(blk, 0), -16.0 * f16_at(blk, 0))
        }
        Format::Q5_1 => {
            nibbles(&blk[8..24], &mut u);
            high_bits(&blk[4..8], &mut u);
            (f16_at(blk, 0), f16_at(blk, 2))
        }
        Format::Q8_0 => {
            for (j, v) in u.iter_mut().enumerate() {
                *v = blk[2 + j] as i8 as i32;
            }
            (f16_at(blk, 0), 0.0)
        }
        Format::Q4K => {
            let s = b % 8;
            let qs = &blk[16 + (s / 2) * 32..];
            for (j, v) in u.iter_mut().enumerate() {
                *v = if s.is_multiple_of(2) {
                    qs[j] & 0x0F
                } else {
                    qs[j] >> 4
                } as i32;
            }
            let (sc, mn) = q4k_scale_min(s, &blk[4..16]);
            (f16_at(blk, 0) * sc as f32, -f16_at(blk, 2) * mn as f32)
        }
        Format::Q6K => {
            let (half, g) = ((b % 8) / 4, b % 4);
            let ql = &blk[half * 64 + (g % 2) * 32..];
            let qh = &blk[128 + half * 32..];
            for (j, v) in u.iter_mut().enumerate() {
                let low = if g < 2 { ql[j] & 0x0F } else { ql[j] >> 4 };
                let high = (qh[j] >> (2 * g)) & 3;
                *v = (low | (high << 4)) as i32 - 32;
            }
            let sc = &blk[192 + half * 8 + 2 * g..];
            let d = f16_at(blk, 208);
            return ([d * sc[0] as i8 as f32, d * sc[1] as i8 as f32], 0.0, u);
        }
    };
    ([d, d], m, u)
}
