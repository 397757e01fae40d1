//! Frozen base weights: dense tensors or quantized ggml blocks, and the matmuls over them.
//!
//! candle's `QMatMul` has no backward and fails silently (zero gradient to the input), so
//! training never uses it: `lora::fused` computes the forward without a graph and its backward
//! multiplies the incoming gradient by the weight, dequantized just for that moment. No
//! full-precision copy of the model is ever held.

pub mod kernels;
pub mod types;

use crate::error::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Tensor};
use std::sync::Arc;

/// A frozen weight of shape (out_features, in_features), or a 1-D norm/bias vector.
#[derive(Clone, Debug)]
pub enum FrozenWeight {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl FrozenWeight {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            FrozenWeight::Dense(t) => t.dims().to_vec(),
            FrozenWeight::Quantized(q) => q.shape().dims().to_vec(),
        }
    }

    /// The stored type, in llama.cpp's naming (`F32`, `Q4_1`, ...).
    pub fn type_name(&self) -> String {
        match self {
            FrozenWeight::Dense(t) => format!("{:?}", t.dtype()).to_uppercase(),
            FrozenWeight::Quantized(q) => crate::gguf::dtype_name(q.dtype()).to_string(),
        }
    }

    pub fn ggml_dtype(&self) -> Option<GgmlDType> {
        match self {
            FrozenWeight::Dense(_) => None,
            FrozenWeight::Quantized(q) => Some(q.dtype()),
        }
    }

    pub fn storage_bytes(&self) -> usize {
        match self {
            FrozenWeight::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            FrozenWeight::Quantized(q) => q.storage_size_in_bytes(),
        }
    }

    /// The weight in f32 (a fresh tensor for quantized weights).
    pub fn dequantize(&self) -> Result<Tensor> {
        Ok(match self {
            FrozenWeight::Dense(t) => t.to_dtype(DType::F32)?,
            FrozenWeight::Quantized(q) => q.dequantize(&q.device())?,
        })
    }

    /// Quantize a dense weight into `dtype` (rows must suit the block size).
    pub fn quantize(t: &Tensor, dtype: GgmlDType) -> Result<Self> {
        Ok(FrozenWeight::Quantized(Arc::new(QTensor::quantize(
            &t.to_dtype(DType::F32)?,
            dtype,
        )?)))
    }
}

/// How a frozen matmul is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulMode {
    /// f32 math over the dequantized weight: matches PyTorch over the same weights.
    Exact,
    /// Quantized kernels with 8-bit activations, as llama.cpp does: fastest for inference.
    Fast,
}

/// `x @ w^T` for x (.., in) and a frozen w (out, in), without gradients (inference, eval).
/// Training goes through [`crate::lora::fused::linear_train`], which attaches them.
pub fn frozen_matmul(x: &Tensor, w: &FrozenWeight, mode: MatmulMode) -> Result<Tensor> {
    match (w, mode) {
        (FrozenWeight::Quantized(q), MatmulMode::Fast) => {
            if let Some(y) = kernels::try_matmul(x, q)? {
                return Ok(y);
            }
            Ok(QMatMul::QTensor(q.clone()).forward_x(x)?)
        }
        _ => plain_matmul(x, &w.dequantize()?),
    }
}

/// `x @ w^T` for dense tensors, any leading batch dims on x. Leading dims are folded into one
/// so the product is a single 2-D gemm (a broadcast batched matmul would copy `w` per batch).
pub fn plain_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let w = w.to_dtype(x.dtype())?;
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let x2 = x.reshape(((), k))?;
    let y = x2.matmul(&w.t()?)?;
    let mut out = dims;
    *out.last_mut().unwrap_or(&mut 0) = w.dim(0)?;
    Ok(y.reshape(out)?)
}

trait ForwardX {
    fn forward_x(&self, x: &Tensor) -> candle_core::Result<Tensor>;
}

impl ForwardX for QMatMul {
    fn forward_x(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::Module;
        self.forward(x)
    }
}
