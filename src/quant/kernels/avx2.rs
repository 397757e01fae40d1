//! AVX2 kernel (x86-64-v3: AVX2 + FMA + F16C, compiled in by .cargo/config.toml).
//!
//! Per (weight block, activation block) pair: `maddubs` multiplies 32 unsigned weight codes by
//! 32 signed activation codes into 16 i16 pair sums (≤ 2·31·127 for 5-bit codes, so no
//! saturation), `madd` with ones widens them to 8 i32, which are converted and accumulated
//! with the scale d_w·d_x in f32. Q8_0 weights are signed: |w| times x carrying w's sign
//! (≤ 2·128·127 per pair; Q6_K likewise, codes − 32). Offsets (Q4_1/Q5_1 m, −8d / −16d for
//! Q4_0/Q5_0, −dmin·m for Q4_K) add m·s_x per block. A tile of RW weight rows × RA activation
//! rows shares each unpacked weight block and each loaded activation block; decode runs 4×1
//! tiles and prefetches the weights ahead, prefill 2×2, 1×4 or 1×6 by type.

use super::act::Acts;
use super::format::{q4k_scale_min, Format, QK};
use super::Out;
use std::arch::x86_64::*;
use std::ops::Range;

/// One weight block unpacked into registers.
#[derive(Clone, Copy)]
struct WBlock {
    /// Unsigned codes (|w| for Q8_0).
    u: __m256i,
    /// Q8_0 only: the signed codes, whose signs go onto the activations.
    sign: __m256i,
    /// d broadcast.
    d: __m256,
    /// Offset m (0 for Q8_0).
    m: f32,
}

trait Block {
    /// Bytes and weights per stored block (K-quants: a 256-weight super-block).
    const BYTES: usize;
    const WEIGHTS: usize = QK;
    const SIGNED: bool;
    const HAS_MIN: bool;
    /// Activation rows per prefill tile (2: 2×2 tiles; 4 or 6: 1×4, 1×6), measured per type.
    const PREFILL_ROWS: usize = 6;
    /// 32-block `b` of the row at `row`.
    unsafe fn load(row: *const u8, b: usize) -> WBlock;
}

#[inline(always)]
unsafe fn f16_bcast(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16((p as *const i16).read_unaligned()))
}

/// The (d, m) f16 pair at p: d broadcast, m as a scalar, from one conversion.
#[inline(always)]
unsafe fn f16_pair(p: *const u8) -> (__m256, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
    (_mm256_broadcastss_ps(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

#[inline(always)]
unsafe fn f16_scalar(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        (p as *const u16).read_unaligned() as i32,
    )))
}

/// 16 bytes of packed nibbles -> 32 codes: low nibbles first, then high nibbles.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Bit j of the 32-bit little-endian word at p -> 16 in byte j, else 0.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = (p as *const i32).read_unaligned();
    // Byte j takes byte j/8 of qh, then keeps only bit j%8.
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), pick);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;
struct Q4K;
struct Q6K;

impl Block for Q4_0 {
    const PREFILL_ROWS: usize = 2;
    const BYTES: usize = 18;
    const SIGNED: bool = false;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn load(row: *const u8, b: usize) -> WBlock {
        let p = row.add(b * Self::BYTES);
        let d = f16_scalar(p);
        WBlock {
            u: nibbles(p.add(2)),
            sign: _mm256_setzero_si256(),
            d: _mm256_set1_ps(d),
            m: -8.0 * d,
        }
    }
}

impl Block for Q4_1 {
    const PREFILL_ROWS: usize = 4;
    const BYTES: usize = 20;
    const SIGNED: bool = false;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn load(row: *const u8, b: usize) -> WBlock {
        let p = row.add(b * Self::BYTES);
        let (d, m) = f16_pair(p);
        WBlock {
            u: nibbles(p.add(4)),
            sign: _mm256_setzero_si256(),
            d,
            m,
        }
    }
}

impl Block for Q5_0 {
    const BYTES: usize = 22;
    const SIGNED: bool = false;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn load(row: *const u8, b: usize) -> WBlock {
        let p = row.add(b * Self::BYTES);
        let d = f16_scalar(p);
        let u = _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)));
        WBlock {
            u,
            sign: _mm256_setzero_si256(),
            d: _mm256_set1_ps(d),
            m: -16.0 * d,
        }
    }
}

impl Block for Q5_1 {
    const BYTES: usize = 24;
    const SIGNED: bool = false;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn load(row: *const u8, b: usize) -> WBlock {
        let p = row.add(b * Self::BYTES);
        let (d, m) = f16_pair(p);
        let u = _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)));
        WBlock {
            u,
            sign: _mm256_setzero_si256(),
            d,
            m,
        }
    }
}

impl Block for Q8_0 {
    const BYTES: usize = 34;
    const SIGNED: bool = true;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn load(row: *const u8, b: usize) -> WBlock {
        let p = row.add(b * Self::BYTES);
        let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
        WBlock {
            u: _mm256_abs_epi8(q),
            sign: q,
            d: f16_bcast(p),
            m: 0.0,
        }
    }
}

impl Block for Q4K {
    const PREFILL_ROWS: usize = 4;
    const BYTES: usize = 144;
    const WEIGHTS: usize = 256;
    const SIGNED: bool = false;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn load(row: *const u8, b: usize) -> WBlock {
        // Sub-blocks 2i and 2i+1 share 32 bytes: low nibbles, then high nibbles.
        let (sb, s) = (row.add((b / 8) * Self::BYTES), b % 8);
        let raw = _mm256_loadu_si256(sb.add(16 + (s / 2) * 32) as *const __m256i);
        let raw = if s.is_multiple_of(2) {
            raw
        } else {
            _mm256_srli_epi16(raw, 4)
        };
        let (sc, mn) = q4k_scale_min(s, std::slice::from_raw_parts(sb.add(4), 12));
        let (d, dmin) = f16_pair(sb);
        WBlock {
            u: _mm256_and_si256(raw, _mm256_set1_epi8(0x0F)),
            sign: _mm256_setzero_si256(),
            d: _mm256_mul_ps(d, _mm256_set1_ps(sc as f32)),
            m: -dmin * mn as f32,
        }
    }
}

impl Block for Q6K {
    const BYTES: usize = 210;
    const WEIGHTS: usize = 256;
    const SIGNED: bool = true;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn load(row: *const u8, b: usize) -> WBlock {
        // Each 128-weight half: 4 groups of 32 from ql (low/high nibbles of two 32-byte runs)
        // and 2 bits each of the same 32 qh bytes; a signed 8-bit scale per 16 weights.
        let sb = row.add((b / 8) * Self::BYTES);
        let (half, g) = ((b % 8) / 4, b % 4);
        let ql = _mm256_loadu_si256(sb.add(half * 64 + (g % 2) * 32) as *const __m256i);
        let ql = if g < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
        let qh = _mm256_loadu_si256(sb.add(128 + half * 32) as *const __m256i);
        let qh = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32));
        let m3 = _mm256_set1_epi8(0x03);
        let code = _mm256_or_si256(
            _mm256_and_si256(ql, _mm256_set1_epi8(0x0F)),
            _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4),
        );
        let q = _mm256_sub_epi8(code, _mm256_set1_epi8(32));
        let sc = sb.add(192 + half * 8 + 2 * g) as *const i8;
        let d = f16_scalar(sb.add(208));
        let (lo, hi) = (d * *sc as f32, d * *sc.add(1) as f32);
        WBlock {
            u: _mm256_abs_epi8(q),
            sign: q,
            // madd leaves weights 0..15 in lanes 0..3 and 16..31 in lanes 4..7.
            d: _mm256_setr_ps(lo, lo, lo, lo, hi, hi, hi, hi),
            m: 0.0,
        }
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// out[a0+a][r0+r] for r < RW, a < RA: full dot products over all `nb` blocks.
#[inline(always)]
unsafe fn tile<B: Block, const RW: usize, const RA: usize>(
    w: *const u8,
    nb: usize,
    acts: &Acts,
    w_len: usize,
    r0: usize,
    a0: usize,
    out: &Out,
) {
    let ones = _mm256_set1_epi16(1);
    let row_bytes = nb * QK / B::WEIGHTS * B::BYTES;
    let qs = acts.qs.as_ptr();
    let (ds, ss) = (acts.d.as_ptr(), acts.s.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); RA]; RW];
    let mut macc = [[0f32; RA]; RW];
    // Decode streams every weight once: fetch the tile PREFETCH tiles ahead, two cache
    // lines per block step (a tile is RW rows of contiguous bytes).
    let ahead = w.wrapping_add((r0 + RW * PREFETCH) * row_bytes);
    let ahead_end = w.wrapping_add(w_len);
    for b in 0..nb {
        if RA == 1 {
            let p = ahead.wrapping_add(b * 128);
            if p < ahead_end && b * 128 < RW * row_bytes {
                _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(p.add(64) as *const i8);
            }
        }
        let mut y = [_mm256_setzero_si256(); RA];
        let mut dx = [_mm256_setzero_ps(); RA];
        let mut sx = [0f32; RA];
        for a in 0..RA {
            let i = (a0 + a) * nb + b;
            y[a] = _mm256_loadu_si256(qs.add(i * QK) as *const __m256i);
            dx[a] = _mm256_broadcast_ss(&*ds.add(i));
            sx[a] = *ss.add(i);
        }
        for r in 0..RW {
            let wb = B::load(w.add((r0 + r) * row_bytes), b);
            for a in 0..RA {
                let p16 = if B::SIGNED {
                    _mm256_maddubs_epi16(wb.u, _mm256_sign_epi8(y[a], wb.sign))
                } else {
                    _mm256_maddubs_epi16(wb.u, y[a])
                };
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[r][a] = _mm256_fmadd_ps(_mm256_mul_ps(wb.d, dx[a]), p, acc[r][a]);
                if B::HAS_MIN {
                    macc[r][a] += wb.m * sx[a];
                }
            }
        }
    }
    for r in 0..RW {
        for a in 0..RA {
            out.write(a0 + a, r0 + r, hsum(acc[r][a]) + macc[r][a]);
        }
    }
}

/// Decode (one activation row) runs DW weight rows per tile, sharing each activation block;
/// prefill tiles share each unpacked weight block between activation rows instead (sizes
/// per type: the fastest measured that keeps to the 16 ymm registers).
const DW: usize = 4;
/// Tiles ahead that decode prefetches.
const PREFETCH: usize = 4;

#[inline(always)]
unsafe fn rows_of<B: Block>(w: &[u8], rows: Range<usize>, acts: &Acts, out: &Out) {
    match (B::PREFILL_ROWS, acts.m) {
        (_, 0..=1) => rows_tiled::<B, DW, 1>(w, rows, acts, out),
        (6, 6..) => rows_tiled::<B, 1, 6>(w, rows, acts, out),
        (4 | 6, 4..) => rows_tiled::<B, 1, 4>(w, rows, acts, out),
        _ => rows_tiled::<B, 2, 2>(w, rows, acts, out),
    }
}

#[inline(always)]
unsafe fn rows_tiled<B: Block, const TW: usize, const TA: usize>(
    w: &[u8],
    rows: Range<usize>,
    acts: &Acts,
    out: &Out,
) {
    let nb = acts.blocks_per_row();
    let (wl, w, m) = (w.len(), w.as_ptr(), acts.m);
    let mut r = rows.start;
    while r + TW <= rows.end {
        let mut a = 0;
        while a + TA <= m {
            tile::<B, TW, TA>(w, nb, acts, wl, r, a, out);
            a += TA;
        }
        while a < m {
            tile::<B, TW, 1>(w, nb, acts, wl, r, a, out);
            a += 1;
        }
        r += TW;
    }
    for r in r..rows.end {
        for a in 0..m {
            tile::<B, 1, 1>(w, nb, acts, wl, r, a, out);
        }
    }
}

/// out[a][r] = x_a · w_r for r in `rows`, every activation row a.
pub fn matmul_rows(f: Format, w: &[u8], rows: Range<usize>, acts: &Acts, out: &Out) {
    assert!(w.len() >= rows.end * f.row_bytes(acts.k) && acts.k.is_multiple_of(f.block_weights()));
    // SAFETY: the assert bounds every weight read; activation reads stay within `acts`
    // (m rows of nb blocks); writes go to (a < m, r in rows), which the caller owns.
    unsafe {
        match f {
            Format::Q4_0 => rows_of::<Q4_0>(w, rows, acts, out),
            Format::Q4_1 => rows_of::<Q4_1>(w, rows, acts, out),
            Format::Q5_0 => rows_of::<Q5_0>(w, rows, acts, out),
            Format::Q5_1 => rows_of::<Q5_1>(w, rows, acts, out),
            Format::Q8_0 => rows_of::<Q8_0>(w, rows, acts, out),
            Format::Q4K => rows_of::<Q4K>(w, rows, acts, out),
            Format::Q6K => rows_of::<Q6K>(w, rows, acts, out),
        }
    }
}
