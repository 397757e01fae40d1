//! Fast CPU matmuls over quantized weights, computed the way llama.cpp does: the activations
//! are quantized once per row to 8-bit blocks of 32 (d = max|x|/127), then every weight block
//! meets them in an integer dot product (AVX2 `maddubs`/`madd` on x86-64-v3, a portable
//! scalar loop elsewhere), scaled by d_w·d_x in f32.
//!
//! x (.., k) f32 on the CPU times Wᵀ for W (n, k) in Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K or
//! Q6_K gives (.., n); K-quants are walked in 32-weight sub-blocks, so the same 8-bit
//! activation blocks serve every type. The weight bytes are read in place from the `QTensor`
//! (no copy, no repacking). Output rows of W are split into contiguous ranges shared by the
//! calling thread and the rayon pool (`ft --threads`, see `share`); small products stay on
//! the calling thread. Other types (Q2_K, Q3_K, Q5_K, f16, ...) return `None` and the caller
//! uses candle's kernel.

mod act;
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod avx2;
mod format;
// The kernel off x86-64-v3; on it, the reference the tests hold the SIMD path to.
#[cfg_attr(target_feature = "avx2", allow(dead_code))]
mod scalar;
mod share;
#[cfg(test)]
mod tests;

pub use format::Format;

use crate::error::Result;
use act::Acts;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Storage, Tensor};
use std::cell::RefCell;
use std::ops::Range;

/// Multiply-adds below which a product runs on the calling thread alone: a 192×576 decode
/// matvec takes ~5 µs on one core, too little to share.
const PAR_MIN_MACS: usize = 1 << 18;

/// Row ranges per thread: several, so a thread that is preempted on a busy machine (or a pool
/// thread slow to wake) leaves its share to the others, while each range stays long and
/// contiguous; and never under 64 rows (a chunk must outweigh claiming it).
const CHUNKS_PER_THREAD: usize = 8;
const MIN_CHUNK_ROWS: usize = 64;

/// Our own kernel for `x @ q^T` when one fits; `None` lets the caller use candle's.
pub fn try_matmul(x: &Tensor, q: &QTensor) -> Result<Option<Tensor>> {
    let Some(fmt) = Format::from_dtype(q.dtype()) else {
        return Ok(None);
    };
    if !x.device().is_cpu() || !q.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let Ok((n, k)) = q.shape().dims2() else {
        return Ok(None);
    };
    let dims = x.dims();
    if dims.is_empty() || dims[dims.len() - 1] != k || !k.is_multiple_of(fmt.block_weights()) {
        return Ok(None);
    }
    let m = x.elem_count() / k.max(1);
    let x = x.contiguous()?;
    let w = q.data()?;
    let mut out = vec![0f32; m * n];
    {
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Ok(None);
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Ok(None);
        };
        let xs = &cpu.as_slice::<f32>()?[start..end];
        matmul(xs, m, k, fmt, &w, n, &mut out);
    }
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().unwrap_or(&mut 0) = n;
    Ok(Some(Tensor::from_vec(out, out_dims, &Device::Cpu)?))
}

/// out (m, n) = x (m, k) · Wᵀ, W given as the raw blocks of an (n, k) matrix in `fmt`.
pub fn matmul(x: &[f32], m: usize, k: usize, fmt: Format, w: &[u8], n: usize, out: &mut [f32]) {
    // Real asserts: the kernels write `out` through raw pointers.
    assert!(k.is_multiple_of(fmt.block_weights()) && x.len() == m * k && out.len() == m * n);
    assert_eq!(w.len(), n * fmt.row_bytes(k), "weight bytes for ({n}, {k})");
    if m == 0 || n == 0 {
        return;
    }
    thread_local! {
        static SCRATCH: RefCell<Acts> = RefCell::new(Acts::default());
    }
    SCRATCH.with(|cell| {
        // Taken only if this thread re-enters (it never waits inside rayon here, but a
        // fresh buffer is cheaper than proving that forever).
        let mut fresh = Acts::default();
        let mut held = cell.try_borrow_mut();
        let acts = match held.as_deref_mut() {
            Ok(a) => a,
            Err(_) => &mut fresh,
        };
        acts.quantize(x, m, k);
        let dst = Out {
            ptr: out.as_mut_ptr(),
            ld: n,
        };
        let threads = rayon::current_num_threads();
        if threads <= 1 || m * n * k < PAR_MIN_MACS {
            rows_kernel(fmt, w, 0..n, acts, &dst);
            return;
        }
        // Multiples of 4 rows, the tile height.
        let per = n
            .div_ceil(threads * CHUNKS_PER_THREAD)
            .max(MIN_CHUNK_ROWS)
            .div_ceil(4)
            * 4;
        let acts = &*acts;
        share::run(n.div_ceil(per), threads, &|c| {
            rows_kernel(fmt, w, c * per..((c + 1) * per).min(n), acts, &dst);
        });
    });
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
fn rows_kernel(f: Format, w: &[u8], rows: Range<usize>, acts: &Acts, out: &Out) {
    avx2::matmul_rows(f, w, rows, acts, out)
}

#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
)))]
fn rows_kernel(f: Format, w: &[u8], rows: Range<usize>, acts: &Acts, out: &Out) {
    scalar::matmul_rows(f, w, rows, acts, out)
}

/// The (m, n) output, written concurrently: each worker owns a disjoint range of columns.
struct Out {
    ptr: *mut f32,
    ld: usize,
}

// SAFETY: workers write disjoint (row, column) cells; the buffer outlives the parallel loop.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// # Safety
    /// (a, r) must lie inside the buffer, and no other thread may write that cell.
    #[inline(always)]
    unsafe fn write(&self, a: usize, r: usize, v: f32) {
        *self.ptr.add(a * self.ld + r) = v;
    }
}
