//! Masked next-token cross-entropy. candle's `cross_entropy` cannot ignore tokens, and the
//! composed log_softmax + gather keeps several vocab-sized tensors alive for backward; the fused
//! [`crate::model::ops::weighted_nll`] keeps only the logits.

use crate::error::Result;
use crate::model::ops::weighted_nll;
use candle_core::{DType, Tensor};

/// Mean of -log p(target) over positions where `mask` is 1.
/// logits (b, t, vocab), targets (b, t) u32, mask (b, t) f32 -> scalar.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let count = m.iter().sum::<f32>().max(1.0);
    let w: Vec<f32> = m.iter().map(|v| v / count).collect();
    let t = targets.flatten_all()?.to_vec1::<u32>()?;
    let v = logits.dim(candle_core::D::Minus1)?;
    weighted_nll(&logits.reshape(((), v))?.to_dtype(DType::F32)?, &t, &w)
}

/// (sum of -log p(target) over masked positions, number of masked positions).
pub fn masked_nll_sum(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<(Tensor, f64)> {
    let m = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let count = m.iter().sum::<f32>() as f64;
    let t = targets.flatten_all()?.to_vec1::<u32>()?;
    let v = logits.dim(candle_core::D::Minus1)?;
    let sum = weighted_nll(&logits.reshape(((), v))?.to_dtype(DType::F32)?, &t, &m)?;
    Ok((sum, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_hand_computation_and_ignores_masked() {
        let d = Device::Cpu;
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
