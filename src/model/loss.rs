//! The model's masked next-token loss, straight from the last hidden states. candle's
//! `cross_entropy` cannot ignore tokens, and logits + log_softmax + gather keep several
//! vocabulary-sized tensors alive for backward. [`linear_weighted_nll`] projects onto the
//! vocabulary a chunk of rows at a time and keeps none of them; [`weighted_nll`] is the same
//! loss over given logits (a head with a bias). [`masked_cross_entropy`] is what training
//! minimises, [`masked_nll_sum`] what held-out evaluation adds up.

use super::ops::{contiguous_f32, to_f32_vec};
use super::{Ctx, Llama};
use crate::error::Result;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Mean of -log p(target) over positions where `mask` is 1.
/// h (b, t, hidden), targets (b, t) u32, mask (b, t) f32 -> scalar.
pub fn masked_cross_entropy(
    model: &Llama,
    h: &Tensor,
    ctx: &Ctx,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let count = m.iter().sum::<f32>().max(1.0);
    let w: Vec<f32> = m.iter().map(|v| v / count).collect();
    head_nll(model, h, ctx, targets, &w)
}

/// (sum of -log p(target) over masked positions, number of masked positions).
pub fn masked_nll_sum(
    model: &Llama,
    h: &Tensor,
    ctx: &Ctx,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<(Tensor, f64)> {
    let m = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let count = m.iter().sum::<f32>() as f64;
    Ok((head_nll(model, h, ctx, targets, &m)?, count))
}

/// Σ weight · nll through the model's output projection (frozen; never adapted).
fn head_nll(model: &Llama, h: &Tensor, ctx: &Ctx, targets: &Tensor, w: &[f32]) -> Result<Tensor> {
    let t = targets.flatten_all()?.to_vec1::<u32>()?;
    if model.lm_head.bias.is_none() {
        return linear_weighted_nll(h, &model.lm_head.weight.dequantize()?, &t, w);
    }
    let logits = model.logits(h, ctx)?;
    let v = logits.dim(D::Minus1)?;
    weighted_nll(&logits.reshape(((), v))?.to_dtype(DType::F32)?, &t, w)
}

// ---------------------------------------------------------------- cross-entropy

struct WeightedNllOp {
    targets: Vec<u32>,
    /// Per-row weight (mask / count): the loss is Σ wᵢ·nllᵢ.
    weights: Vec<f32>,
}

impl CustomOp1 for WeightedNllOp {
    fn name(&self) -> &'static str {
        "ft-weighted-nll"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (rows, v) = l.shape().dims2()?;
        let out: Vec<f32> = (0..rows)
            .into_par_iter()
            .map(|r| {
                if self.weights[r] == 0.0 {
                    return 0.0;
                }
                let row = &x[r * v..(r + 1) * v];
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = m + row.iter().map(|z| ((z - m) as f64).exp()).sum::<f64>().ln() as f32;
                self.weights[r] * (lse - row[self.targets[r] as usize])
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d/dz [w (lse(z) − z_t)] = w (softmax(z) − onehot(t))
        let (rows, v) = x.dims2()?;
        let xs = to_f32_vec(x)?;
        let gs = to_f32_vec(g)?;
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(v).enumerate().for_each(|(r, d)| {
            let w = self.weights[r] * gs[r];
            if w == 0.0 {
                return;
            }
            let row = &xs[r * v..(r + 1) * v];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for i in 0..v {
                d[i] = (row[i] - m).exp();
                sum += d[i];
            }
            let k = w / sum;
            d.iter_mut().for_each(|e| *e *= k);
            d[self.targets[r] as usize] -= w;
        });
        let _ = rows;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Σ over rows of weight·(−log softmax(logits)[target]) for logits (rows, vocab): the
/// masked mean cross-entropy when weights = mask / mask.sum(). Keeps only the logits.
pub fn weighted_nll(logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    let rows = logits.dim(0)?;
    if targets.len() != rows || weights.len() != rows {
        return Err(crate::Error::invalid(
            "weighted_nll: targets/weights do not match the rows",
        ));
    }
    if !logits.device().is_cpu() || logits.dtype() != candle_core::DType::F32 {
        let dev = logits.device();
        let lp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let t = Tensor::new(targets, dev)?.unsqueeze(1)?;
        let picked = lp.gather(&t, 1)?.squeeze(1)?;
        let w = Tensor::new(weights, dev)?;
        return Ok((picked * w)?.neg()?.sum_all()?);
    }
    let op = WeightedNllOp {
        targets: targets.to_vec(),
        weights: weights.to_vec(),
    };
    Ok(logits.contiguous()?.apply_op1(op)?.sum_all()?)
}

// ------------------------------------------------ vocabulary projection + NLL

/// Rows of logits computed at a time by [`linear_weighted_nll`]: 128 × 49152 f32 is 24 MiB.
const HEAD_CHUNK_ROWS: usize = 128;

/// Carries a value and its precomputed gradient into the graph: forward returns the value,
/// backward scales the stored gradient by the incoming one.
struct PrecomputedGrad {
    value: f32,
    grad: Option<Tensor>,
}

impl CustomOp1 for PrecomputedGrad {
    fn name(&self) -> &'static str {
        "ft-precomputed-grad"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![self.value]), Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match &self.grad {
            Some(d) => Ok(Some(d.broadcast_mul(g)?.reshape(x.shape())?)),
            None => Ok(None),
        }
    }
}

/// Σ over rows of weight·(−log softmax(h·Wᵀ)[target]) for hidden states h (.., d) and a frozen
/// vocabulary projection W (vocab, d): the masked cross-entropy straight from the last hidden
/// states. The logits exist one chunk of rows at a time, and because the loss ends the graph
/// its gradient w.r.t. h is computed in the same pass (d = Σ w (softmax − onehot) W); nothing
/// vocabulary-sized outlives a chunk, and W gets no gradient (a plain matmul's backward would
/// compute one: 1024 × 49152 × 576 multiply-adds of waste per SmolLM2 step).
pub fn linear_weighted_nll(
    h: &Tensor,
    w: &Tensor,
    targets: &[u32],
    weights: &[f32],
) -> Result<Tensor> {
    let d = h.dim(D::Minus1)?;
    let rows = h.elem_count() / d.max(1);
    if targets.len() != rows || weights.len() != rows {
        return Err(crate::Error::invalid(
            "linear_weighted_nll: targets/weights do not match the rows",
        ));
    }
    if !h.device().is_cpu() || h.dtype() != candle_core::DType::F32 {
        let logits = h.reshape((rows, d))?.matmul(&w.to_dtype(h.dtype())?.t()?)?;
        return weighted_nll(&logits, targets, weights);
    }
    let need_grad = h.track_op();
    let hd = h.detach().reshape((rows, d))?.contiguous()?;
    let w = w.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let v = w.dim(0)?;
    let wt = w.t()?;
    let mut total = 0f64;
    let mut grads = Vec::new();
    for start in (0..rows).step_by(HEAD_CHUNK_ROWS) {
        let n = HEAD_CHUNK_ROWS.min(rows - start);
        let (tg, wg) = (&targets[start..start + n], &weights[start..start + n]);
        if !need_grad && wg.iter().all(|&x| x == 0.0) {
            continue;
        }
        let mut z = hd
            .narrow(0, start, n)?
            .matmul(&wt)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Each row becomes its loss term's gradient w (softmax − onehot) in place.
        let loss: f64 = z
            .par_chunks_mut(v)
            .enumerate()
            .map(|(r, row)| {
                if wg[r] == 0.0 {
                    row.fill(0.0);
                    return 0.0;
                }
                let t = tg[r] as usize;
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let zt = row[t];
                let mut sum = 0f64;
                for e in row.iter_mut() {
                    *e = (*e - m).exp();
                    sum += *e as f64;
                }
                let k = wg[r] / sum as f32;
                row.iter_mut().for_each(|e| *e *= k);
                row[t] -= wg[r];
                wg[r] as f64 * ((m as f64 + sum.ln()) - zt as f64)
            })
            .sum();
        total += loss;
        if need_grad {
            grads.push(Tensor::from_vec(z, (n, v), h.device())?.matmul(&w)?);
        }
    }
    let grad = match need_grad {
        true => Some(Tensor::cat(&grads, 0)?),
        false => None,
    };
    Ok(h.apply_op1(PrecomputedGrad {
        value: total as f32,
        grad,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

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
    fn matches_hand_computation_and_ignores_masked() {
        let d = Device::Cpu;
        // A one-layer model whose head is the identity, so hidden states are the logits.
        let mut model = crate::testing::tiny_model(3, None).unwrap();
        model.lm_head = crate::model::linear::Linear::new(
            crate::quant::FrozenWeight::Dense(Tensor::eye(3, DType::F32, &d).unwrap()),
            None,
        );
        let ctx = Ctx::infer(crate::quant::MatmulMode::Exact, None);
        let masked_cross_entropy =
            |h: &Tensor, t: &Tensor, m: &Tensor| super::masked_cross_entropy(&model, h, &ctx, t, m);
        // One row, two positions, vocab 3.
        let logits = Tensor::new(&[[[1.0f32, 2.0, 3.0], [0.0, 0.0, 0.0]]], &d).unwrap();
        let targets = Tensor::new(&[[2u32, 0]], &d).unwrap();
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let only_first = Tensor::new(&[[1f32, 0.0]], &d).unwrap();
        let l = masked_cross_entropy(&logits, &targets, &only_first).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() as f64 - (lse - 3.0)).abs() < 1e-5);
        let both = Tensor::new(&[[1f32, 1.0]], &d).unwrap();
        let l = masked_cross_entropy(&logits, &targets, &both).unwrap();
        let want = ((lse - 3.0) + 3f64.ln()) / 2.0;
        assert!((l.to_scalar::<f32>().unwrap() as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn weighted_nll_matches_log_softmax_gather() {
        let dev = Device::Cpu;
        let z = Var::rand(-3f32, 3.0, (6, 11), &dev).unwrap();
        let t = [1u32, 5, 10, 0, 3, 3];
        let wts = [0.25f32, 0.25, 0.0, 0.25, 0.25, 0.0];
        let fused = weighted_nll(z.as_tensor(), &t, &wts).unwrap();
        let lp = candle_nn::ops::log_softmax(z.as_tensor(), D::Minus1).unwrap();
        let picked = lp
            .gather(&Tensor::new(&t, &dev).unwrap().unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        let plain = (picked * Tensor::new(&wts, &dev).unwrap())
            .unwrap()
            .neg()
            .unwrap()
            .sum_all()
            .unwrap();
        let (a, b) = (
            fused.to_scalar::<f32>().unwrap(),
            plain.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-5, "{a} {b}");
        assert_close(&grad_wrt(&fused, &z), &grad_wrt(&plain, &z), 1e-5);
    }

    #[test]
    fn linear_weighted_nll_matches_logits_then_nll() {
        let dev = Device::Cpu;
        // 300 rows: more than one chunk, the last one partial.
        let h = Var::rand(-1f32, 1.0, (3, 100, 16), &dev).unwrap();
        let w = Tensor::rand(-1f32, 1.0, (37, 16), &dev).unwrap();
        let t: Vec<u32> = (0..300).map(|i| (i * 7 % 37) as u32).collect();
        let wts: Vec<f32> = (0..300)
            .map(|i| if i % 5 == 0 { 0.0 } else { 0.01 })
            .collect();
        let fused = linear_weighted_nll(h.as_tensor(), &w, &t, &wts).unwrap();
        let logits = h
            .as_tensor()
            .reshape((300, 16))
            .unwrap()
            .matmul(&w.t().unwrap())
            .unwrap();
        let plain = weighted_nll(&logits, &t, &wts).unwrap();
        let (a, b) = (
            fused.to_scalar::<f32>().unwrap(),
            plain.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} {b}");
        // Scaled, so the incoming gradient is not 1.
        let g = |l: &Tensor| grad_wrt(&(l * 3.0).unwrap(), &h);
        assert_close(&g(&fused), &g(&plain), 1e-4);
        // Without a tracked input no gradient is built and the value is the same.
        let frozen = linear_weighted_nll(&h.as_tensor().detach(), &w, &t, &wts).unwrap();
        assert_eq!(frozen.to_scalar::<f32>().unwrap(), a);
    }
}
