//! Masked next-token cross-entropy straight from the last hidden states. candle's
//! `cross_entropy` cannot ignore tokens, and logits + log_softmax + gather keep several
//! vocabulary-sized tensors alive for backward; [`crate::model::ops::linear_weighted_nll`]
//! projects onto the vocabulary a chunk of rows at a time and keeps none of them.

use crate::error::Result;
use crate::model::ops::{linear_weighted_nll, weighted_nll};
use crate::model::{Ctx, Llama};
use candle_core::{DType, Tensor};

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
    let v = logits.dim(candle_core::D::Minus1)?;
    weighted_nll(&logits.reshape(((), v))?.to_dtype(DType::F32)?, &t, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
}
