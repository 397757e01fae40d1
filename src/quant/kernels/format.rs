//! The ggml weight blocks our kernels read, straight from a `QTensor`'s bytes (32 weights per
//! block, little-endian f16 scales, no alignment assumed):
//!
//! | type | bytes | layout                      | weight j                                  |
//! |------|-------|-----------------------------|-------------------------------------------|
//! | Q4_0 | 18    | d, qs[16]                   | d·(nib_j − 8)                             |
//! | Q4_1 | 20    | d, m, qs[16]                | d·nib_j + m                               |
//! | Q5_0 | 22    | d, qh[4], qs[16]            | d·(nib_j + 16·bit_j(qh) − 16)             |
//! | Q5_1 | 24    | d, m, qh[4], qs[16]         | d·(nib_j + 16·bit_j(qh)) + m              |
//! | Q8_0 | 34    | d, qs[32] (i8)              | d·q_j                                     |
//!
//! nib_j is the low nibble of qs[j] for j < 16 and the high nibble of qs[j-16] otherwise.
//! Every 4/5-bit type is read as unsigned codes u with `w = d·u + m` (Q4_0: m = −8d,
//! Q5_0: m = −16d), so one kernel shape serves them all; the offset term m·Σx comes from the
//! activation block sums.

use candle_core::quantized::GgmlDType;

/// Weights per block, for every format here and for the 8-bit activations.
pub const QK: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl Format {
    pub fn from_dtype(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Format::Q4_0,
            GgmlDType::Q4_1 => Format::Q4_1,
            GgmlDType::Q5_0 => Format::Q5_0,
            GgmlDType::Q5_1 => Format::Q5_1,
            GgmlDType::Q8_0 => Format::Q8_0,
            _ => return None,
        })
    }

    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q8_0 => 34,
        }
    }
}

#[inline(always)]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Scale, offset and the 32 codes of one block (u in 0..32 for 4/5-bit types, i8 as i32 for
/// Q8_0): the portable reading of the table above, used by the scalar kernel and the tests.
#[cfg_attr(target_feature = "avx2", allow(dead_code))]
pub fn decode_block(f: Format, b: &[u8]) -> (f32, f32, [i32; QK]) {
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
    let d = f16_at(b, 0);
    let m = match f {
        Format::Q4_0 => {
            nibbles(&b[2..18], &mut u);
            -8.0 * d
        }
        Format::Q4_1 => {
            nibbles(&b[4..20], &mut u);
            f16_at(b, 2)
        }
        Format::Q5_0 => {
            nibbles(&b[6..22], &mut u);
            high_bits(&b[2..6], &mut u);
            -16.0 * d
        }
        Format::Q5_1 => {
            nibbles(&b[8..24], &mut u);
            high_bits(&b[4..8], &mut u);
            f16_at(b, 2)
        }
        Format::Q8_0 => {
            for (j, v) in u.iter_mut().enumerate() {
                *v = b[2 + j] as i8 as i32;
            }
            0.0
        }
    };
    (d, m, u)
}
