//! Fused, differentiable CPU ops for the layers. candle's fused `rms_norm`, `rope` and
//! `softmax_last_dim` have no backward (gradients silently stop), and the composed forms keep
//! every intermediate alive for backward (≈3× the memory of the model's activations). These
//! keep only their input (or output) and compute the exact gradient by hand. On other devices
//! the composed candle forms are used. The loss kernels are in `model::loss`.

use crate::error::Result;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};
use rayon::prelude::*;

pub(super) fn contiguous_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous");
    };
    match s {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => candle_core::bail!("{op}: only f32 is supported"),
    }
}

pub(super) fn to_f32_vec(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

// ---------------------------------------------------------------- RMSNorm

struct RmsNormOp {
    weight: Vec<f32>,
    eps: f32,
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "ft-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let n = self.weight.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let r = 1.0 / (ms + self.eps).sqrt();
            for i in 0..n {
                y[i] = x[i] * r * self.weight[i];
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // dx = r·(g∘w) − x·r³·mean(g∘w∘x), r = 1/√(mean(x²)+ε)
        let n = self.weight.len();
        let xs = to_f32_vec(x)?;
        let gs = to_f32_vec(g)?;
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(n)
            .zip(xs.par_chunks(n).zip(gs.par_chunks(n)))
            .for_each(|(dx, (x, g))| {
                let ms = x.iter().map(|v| v * v).sum::<f32>() / n as f32;
                let r = 1.0 / (ms + self.eps).sqrt();
                let dot = (0..n).map(|i| g[i] * self.weight[i] * x[i]).sum::<f32>() / n as f32;
                for i in 0..n {
                    dx[i] = r * g[i] * self.weight[i] - x[i] * r * r * r * dot;
                }
            });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// RMSNorm over the last dim with a frozen weight, differentiable w.r.t. x.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return Ok(candle_nn::ops::rms_norm_slow(x, weight, eps as f32)?);
    }
    let op = RmsNormOp {
        weight: to_f32_vec(weight)?,
        eps: eps as f32,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

// ---------------------------------------------------------------- RoPE (half-split)

struct RopeOp {
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// +1 forward rotation, −1 its transpose (the backward).
    sign: f32,
}

fn rope_rows(x: &[f32], y: &mut [f32], cos: &[f32], sin: &[f32], t: usize, d: usize, sign: f32) {
    let half = d / 2;
    y.par_chunks_mut(t * d)
        .zip(x.par_chunks(t * d))
        .for_each(|(y, x)| {
            for p in 0..t {
                let (c, s) = (
                    &cos[p * half..(p + 1) * half],
                    &sin[p * half..(p + 1) * half],
                );
                let (xr, yr) = (&x[p * d..(p + 1) * d], &mut y[p * d..(p + 1) * d]);
                for i in 0..half {
                    let (x1, x2) = (xr[i], xr[i + half]);
                    let si = sign * s[i];
                    yr[i] = x1 * c[i] - x2 * si;
                    yr[i + half] = x2 * c[i] + x1 * si;
                }
            }
        });
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "ft-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (_, _, t, d) = l.shape().dims4()?;
        let mut y = vec![0f32; x.len()];
        rope_rows(x, &mut y, &self.cos, &self.sin, t, d, self.sign);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A rotation's gradient is the inverse rotation.
        let (_, _, t, d) = x.dims4()?;
        let gs = to_f32_vec(g)?;
        let mut dx = vec![0f32; gs.len()];
        rope_rows(&gs, &mut dx, &self.cos, &self.sin, t, d, -self.sign);
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Half-split RoPE on x (b, h, t, d) with cos/sin (t, d/2), differentiable.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return Ok(candle_nn::rotary_emb::rope_slow(x, cos, sin)?);
    }
    let op = RopeOp {
        cos: to_f32_vec(cos)?,
        sin: to_f32_vec(sin)?,
        sign: 1.0,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

// ---------------------------------------------------------------- causal softmax

/// Scaled, causally masked softmax over scores laid out (b, kv_heads, group·t, total): row r of
/// a group is query position `past + r % t`. Masking inside the op avoids two extra
/// score-sized tensors per layer (the scaled and the masked scores).
struct CausalSoftmaxOp {
    scale: f32,
    t: usize,
    past: usize,
    window: Option<usize>,
    /// Packed sequences: segment id per key position, (batch, total); keys of another
    /// segment are hidden. `rows_per_batch` = kv_heads·group·t.
    segments: Option<(Vec<u32>, usize)>,
}

impl CausalSoftmaxOp {
    /// Visible keys [lo, hi) for row r (before segment masking).
    fn span(&self, r: usize) -> (usize, usize) {
        let q = self.past + r % self.t;
        let lo = self.window.map(|w| (q + 1).saturating_sub(w)).unwrap_or(0);
        (lo, q + 1)
    }

    /// Whether key j is hidden from row r by the segment mask.
    fn other_segment(&self, r: usize, j: usize, total: usize) -> bool {
        match &self.segments {
            None => false,
            Some((seg, per_batch)) => {
                let b = r / per_batch;
                let q = self.past + r % self.t;
                seg[b * total + j] != seg[b * total + q]
            }
        }
    }
}

impl CustomOp1 for CausalSoftmaxOp {
    fn name(&self) -> &'static str {
        "ft-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let n = l.shape().dims().last().copied().unwrap_or(1);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .enumerate()
            .for_each(|(r, (y, x))| {
                let (lo, hi) = self.span(r);
                let hi = hi.min(n);
                let m = x[lo..hi].iter().copied().fold(f32::NEG_INFINITY, f32::max) * self.scale;
                let mut sum = 0f32;
                for i in lo..hi {
                    if self.other_segment(r, i, n) {
                        continue;
                    }
                    y[i] = (x[i] * self.scale - m).exp();
                    sum += y[i];
                }
                let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
                y[lo..hi].iter_mut().for_each(|v| *v *= inv);
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // dx = scale · y ∘ (g − Σ g∘y); masked positions have y = 0.
        let n = y.dim(D::Minus1)?;
        let ys = to_f32_vec(y)?;
        let gs = to_f32_vec(g)?;
        let mut dx = vec![0f32; ys.len()];
        dx.par_chunks_mut(n)
            .zip(ys.par_chunks(n).zip(gs.par_chunks(n)))
            .for_each(|(dx, (y, g))| {
                let dot: f32 = (0..n).map(|i| y[i] * g[i]).sum();
                for i in 0..n {
                    dx[i] = self.scale * y[i] * (g[i] - dot);
                }
            });
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

/// softmax(scale·x + causal mask) over the last dim of (b, kv, group·t, total).
/// `segments` (b, total) u32: packed sequences attend only within their own segment.
pub fn causal_softmax(
    x: &Tensor,
    scale: f64,
    t: usize,
    past: usize,
    window: Option<usize>,
    segments: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, kv, gt, total) = x.dims4()?;
    let segments = match segments {
        Some(s) => Some((s.flatten_all()?.to_vec1::<u32>()?, kv * gt)),
        None => None,
    };
    let op = CausalSoftmaxOp {
        scale: scale as f32,
        t,
        past,
        window,
        segments,
    };
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    // Elsewhere: build the additive mask (b, 1, g·t, total) and use candle's ops.
    let nb = if op.segments.is_some() { b } else { 1 };
    let mut m = vec![f32::NEG_INFINITY; nb * gt * total];
    for bi in 0..nb {
        for r in 0..gt {
            let (lo, hi) = op.span(r);
            for j in lo..hi.min(total) {
                if !op.other_segment(bi * kv * gt + r, j, total) {
                    m[(bi * gt + r) * total + j] = 0.0;
                }
            }
        }
    }
    let mask = Tensor::from_vec(m, (nb, 1, gt, total), x.device())?.to_dtype(x.dtype())?;
    let z = (x * scale)?.broadcast_add(&mask)?;
    Ok(candle_nn::ops::softmax(&z, D::Minus1)?)
}

// ---------------------------------------------------------------- SwiGLU

struct SwigluOp;

fn silu(v: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + (-v).exp());
    (v * s, s)
}

impl candle_core::CustomOp2 for SwigluOp {
    fn name(&self) -> &'static str {
        "ft-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, self.name())?;
        let u = contiguous_f32(s2, l2, self.name())?;
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(y, (g, u))| {
                for i in 0..y.len() {
                    y[i] = silu(g[i]).0 * u[i];
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // d/dg silu(g)·u = u·σ(g)·(1 + g·(1 − σ(g))),  d/du = silu(g)
        let (g, u, d) = (to_f32_vec(gate)?, to_f32_vec(up)?, to_f32_vec(grad)?);
        let mut dg = vec![0f32; g.len()];
        let mut du = vec![0f32; g.len()];
        dg.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .enumerate()
            .for_each(|(c, (dg, du))| {
                let o = c * 4096;
                for i in 0..dg.len() {
                    let (sv, s) = silu(g[o + i]);
                    dg[i] = d[o + i] * u[o + i] * s * (1.0 + g[o + i] * (1.0 - s));
                    du[i] = d[o + i] * sv;
                }
            });
        Ok((
            Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(du, up.shape(), up.device())?),
        ))
    }
}

/// silu(gate) · up, differentiable, without keeping silu(gate) alive.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.device().is_cpu() && gate.dtype() == candle_core::DType::F32 {
        return Ok(gate.contiguous()?.apply_op2(&up.contiguous()?, SwigluOp)?);
    }
    Ok((candle_nn::ops::silu(gate)? * up)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn grad_of(f: impl Fn(&Tensor) -> Tensor, x: &Var, w: &Tensor) -> Vec<f32> {
        let y = f(x.as_tensor());
        grad_wrt(&(y * w).unwrap().sum_all().unwrap(), x)
    }

    /// d loss / d x, flattened.
    fn grad_wrt(loss: &Tensor, x: &Var) -> Vec<f32> {
        let g = loss.backward().unwrap();
        g.get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    #[test]
    fn fused_ops_match_composed_candle_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::rand(-2f32, 2.0, (2, 3, 5, 8), &dev).unwrap();
        let w = Tensor::rand(-1f32, 1.0, (2, 3, 5, 8), &dev).unwrap();
        let nw = Tensor::rand(0.5f32, 1.5, 8, &dev).unwrap();
        // RMSNorm
        let a = grad_of(|x| rms_norm(x, &nw, 1e-5).unwrap(), &x, &w);
        let b = grad_of(
            |x| candle_nn::ops::rms_norm_slow(x, &nw, 1e-5).unwrap(),
            &x,
            &w,
        );
        assert_close(&a, &b, 1e-4);
        // RoPE
        let cos = Tensor::rand(-1f32, 1.0, (5, 4), &dev).unwrap();
        let sin = Tensor::rand(-1f32, 1.0, (5, 4), &dev).unwrap();
        let ya = rope(x.as_tensor(), &cos, &sin)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let yb = candle_nn::rotary_emb::rope_slow(x.as_tensor(), &cos, &sin)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_close(&ya, &yb, 1e-5);
        let a = grad_of(|x| rope(x, &cos, &sin).unwrap(), &x, &w);
        let b = grad_of(
            |x| candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap(),
            &x,
            &w,
        );
        assert_close(&a, &b, 1e-4);
    }

    #[test]
    fn causal_softmax_and_swiglu_match_composition() {
        let dev = Device::Cpu;
        // (b=1, kv=2, group 2 x t 3, total 5): past = 2.
        let x = Var::rand(-2f32, 2.0, (1, 2, 6, 5), &dev).unwrap();
        let w = Tensor::rand(-1f32, 1.0, (1, 2, 6, 5), &dev).unwrap();
        let mut m = vec![f32::NEG_INFINITY; 30];
        for r in 0..6 {
            for j in 0..=(2 + r % 3) {
                m[r * 5 + j] = 0.0;
            }
        }
        let mask = Tensor::from_vec(m, (6, 5), &dev).unwrap();
        let a = grad_of(
            |x| causal_softmax(x, 0.5, 3, 2, None, None).unwrap(),
            &x,
            &w,
        );
        let b = grad_of(
            |x| {
                candle_nn::ops::softmax(
                    &(x * 0.5).unwrap().broadcast_add(&mask).unwrap(),
                    D::Minus1,
                )
                .unwrap()
            },
            &x,
            &w,
        );
        assert_close(&a, &b, 1e-4);
        let ya = causal_softmax(x.as_tensor(), 0.5, 3, 2, None, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let yb = candle_nn::ops::softmax(
            &(x.as_tensor() * 0.5).unwrap().broadcast_add(&mask).unwrap(),
            D::Minus1,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert_close(&ya, &yb, 1e-5);
        let g = Var::rand(-3f32, 3.0, (4, 7), &dev).unwrap();
        let u = Tensor::rand(-1f32, 1.0, (4, 7), &dev).unwrap();
        let w = Tensor::rand(-1f32, 1.0, (4, 7), &dev).unwrap();
        let a = grad_of(|g| swiglu(g, &u).unwrap(), &g, &w);
        let b = grad_of(|g| (candle_nn::ops::silu(g).unwrap() * &u).unwrap(), &g, &w);
        assert_close(&a, &b, 1e-4);
    }
}
