//! Fast CPU matmul kernels for quantized weights (in progress: falls back to candle).

use crate::error::Result;
use candle_core::quantized::QTensor;
use candle_core::Tensor;

/// Our own kernel for `x @ q^T` when one fits; `None` lets the caller use candle's.
pub fn try_matmul(_x: &Tensor, _q: &QTensor) -> Result<Option<Tensor>> {
    Ok(None)
}
