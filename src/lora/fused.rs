//! The training forward of a frozen linear layer with its LoRA adapter as ONE graph node.
//!
//! candle keeps every op's inputs alive until backward. Written as plain ops, a LoRA linear
//! (base matmul, dropout, two small matmuls, scale, add) leaves five activation-sized tensors
//! per layer; this op leaves one. The forward runs without a graph; the backward recomputes
//! what it needs (the dropout mask from its seed, the weight dequantized for that moment):
//!   y  = x Wᵀ + s·(m∘x) Aᵀ Bᵀ
//!   dx = g W + s·((g B) A)∘m,   dA = s·(g B)ᵀ (m∘x),   dB = s·gᵀ ((m∘x) Aᵀ)

use super::Lora;
use crate::error::Result;
use crate::quant::{plain_matmul, FrozenWeight};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use std::sync::Mutex;

/// Fold leading dims: (.., k) -> (n, k).
fn rows(t: &Tensor) -> candle_core::Result<Tensor> {
    let k = t.dim(candle_core::D::Minus1)?;
    t.reshape(((), k))
}

fn cerr(e: crate::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// Hands over a precomputed output once (then drops it, so it is not held twice).
struct Precomputed(Mutex<Option<Tensor>>);

impl Precomputed {
    fn take_storage<S: BackendStorage>(
        &self,
        f: impl Fn(&candle_core::Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, Shape)> {
        let t = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("fused linear forward ran twice".into()))?;
        let (st, layout) = t.storage_and_layout();
        let s = f(&st).ok_or_else(|| candle_core::Error::Msg("device mismatch".into()))?;
        Ok((s.try_clone(layout)?, layout.shape().clone()))
    }
}

fn cpu_of(s: &candle_core::Storage) -> Option<&CpuStorage> {
    match s {
        candle_core::Storage::Cpu(c) => Some(c),
        _ => None,
    }
}

#[cfg(feature = "cuda")]
fn cuda_of(s: &candle_core::Storage) -> Option<&candle_core::CudaStorage> {
    match s {
        candle_core::Storage::Cuda(c) => Some(c),
        _ => None,
    }
}

struct LoraLinearOp {
    y: Precomputed,
    w: FrozenWeight,
    scale: f64,
    dropout: f64,
    salt: u64,
    seed: u64,
}

impl CustomOp3 for LoraLinearOp {
    fn name(&self) -> &'static str {
        "ft-lora-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.y.take_storage(cpu_of)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.y.take_storage(cuda_of)
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The arguments still carry the forward graph; gradients built from them must not, or
        // the optimizer state would keep every step's activations alive.
        let (x, a, b) = (&x.detach(), &a.detach(), &b.detach());
        let g2 = rows(g)?;
        let x2 = rows(x)?;
        let w = self.w.dequantize().map_err(cerr)?.to_dtype(g.dtype())?;
        let xd =
            match super::dropout_mask(x2.shape(), self.dropout, self.seed, self.salt, x.device())
                .map_err(cerr)?
            {
                Some(m) => Some(m.to_dtype(x.dtype())?),
                None => None,
            };
        let xm = match &xd {
            Some(m) => (&x2 * m)?,
            None => x2.clone(),
        };
        let gb = g2.matmul(b)?; // (n, r)
        let mut gx_lora = (gb.matmul(a)? * self.scale)?; // (n, in)
        if let Some(m) = &xd {
            gx_lora = (gx_lora * m)?;
        }
        let gx = (g2.matmul(&w)? + gx_lora)?.reshape(x.shape())?;
        let ga = (gb.t()?.matmul(&xm)? * self.scale)?; // (r, in)
        let h = xm.matmul(&a.t()?)?; // (n, r)
        let gbm = (g2.t()?.matmul(&h)? * self.scale)?; // (out, r)
        Ok((Some(gx), Some(ga), Some(gbm)))
    }
}

struct FrozenLinearOp {
    y: Precomputed,
    w: FrozenWeight,
}

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "ft-frozen-linear"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.y.take_storage(cpu_of)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.y.take_storage(cuda_of)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let x = &x.detach();
        let w = self.w.dequantize().map_err(cerr)?.to_dtype(g.dtype())?;
        Ok(Some(rows(g)?.matmul(&w)?.reshape(x.shape())?))
    }
}

/// Training forward of `x Wᵀ (+ LoRA)` as a single differentiable node; `seed` drives dropout.
pub fn linear_train(
    x: &Tensor,
    w: &FrozenWeight,
    lora: Option<&Lora>,
    seed: u64,
) -> Result<Tensor> {
    let xd = x.detach();
    let mut y = plain_matmul(&xd, &w.dequantize()?)?;
    match lora {
        None => {
            let op = FrozenLinearOp {
                y: Precomputed(Mutex::new(Some(y.contiguous()?))),
                w: w.clone(),
            };
            Ok(x.apply_op1(op)?)
        }
        Some(l) => {
            y = (y + l.forward_detached(&xd, Some(seed))?)?;
            let op = LoraLinearOp {
                y: Precomputed(Mutex::new(Some(y.contiguous()?))),
                w: w.clone(),
                scale: l.scale,
                dropout: l.dropout,
                salt: l.salt,
                seed,
            };
            Ok(x.apply_op3(&l.a, &l.b, op)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Var};

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The fused node gives the same output and gradients as the plain-op composition.
    #[test]
    fn fused_lora_linear_matches_composition() {
        let dev = Device::Cpu;
        for (dropout, quant) in [(0.0, None), (0.3, None), (0.1, Some(GgmlDType::Q8_0))] {
            let wt = Tensor::rand(-0.2f32, 0.2, (48, 64), &dev).unwrap();
            let w = match quant {
                Some(q) => FrozenWeight::quantize(&wt, q).unwrap(),
                None => FrozenWeight::Dense(wt),
            };
            let x = Var::rand(-1f32, 1.0, (2, 5, 64), &dev).unwrap();
            let a = Var::rand(-0.1f32, 0.1, (4, 64), &dev).unwrap();
            let b = Var::rand(-0.1f32, 0.1, (48, 4), &dev).unwrap();
            let lora = Lora {
                a: a.as_tensor().clone(),
                b: b.as_tensor().clone(),
                scale: 2.0,
                dropout,
                salt: 9,
            };
            let gw = Tensor::rand(-1f32, 1.0, (2, 5, 48), &dev).unwrap();
            let fused = linear_train(x.as_tensor(), &w, Some(&lora), 77).unwrap();
            let plain = (plain_matmul(x.as_tensor(), &w.dequantize().unwrap()).unwrap()
                + lora.forward(x.as_tensor(), Some(77)).unwrap())
            .unwrap();
            for (p, q) in flat(&fused).iter().zip(flat(&plain)) {
                assert!((p - q).abs() < 1e-5);
            }
            let g1 = (fused * &gw)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (plain * &gw)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &a, &b] {
                let (p, q) = (
                    flat(g1.get(v.as_tensor()).unwrap()),
                    flat(g2.get(v.as_tensor()).unwrap()),
                );
                for (p, q) in p.iter().zip(q) {
                    assert!(
                        (p - q).abs() < 1e-4 * (1.0 + q.abs()),
                        "dropout {dropout}: {p} vs {q}"
                    );
                }
            }
        }
    }
}
