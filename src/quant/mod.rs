//! Frozen base weights: dense tensors or quantized ggml blocks, and the matmuls over them.
//!
//! candle's `QMatMul` has no backward and fails silently (zero gradient to the input), so
//! training never uses it: `lora::fused` computes the forward without a graph and its backward
//! multiplies the incoming gradient by the weight, dequantized just for that moment. No
//! full-precision copy of the model is ever held.

pub mod kernels;
pub mod quantize;
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
        Ok(FrozenWeight::Quantized(Arc::new(
            quantize::quantize_tensor(t, dtype)?,
        )))
    }
}

crate::config::named_enum!(
    /// In-memory form of the frozen base weights when the model arrives unquantized
    /// (an HF folder or an f16/f32 GGUF): a recipe's `model.quantize`. Already-quantized
    /// GGUF tensors are kept as they are.
    BaseQuant, "quantization", {
        Q4_0 = "q4_0",
        Q4K = "q4_k",
        Q8_0 = "q8_0",
        F16 = "f16",
        /// `none`: keep the weights in the dtype the file stores them in.
        Keep = "none",
    }
);

/// QLoRA's point is a 4-bit base; q4_0 also has the fastest CPU kernel.
impl Default for BaseQuant {
    fn default() -> Self {
        BaseQuant::Q4_0
    }
}

impl BaseQuant {
    /// The ggml type a dense matrix is quantized to on load; None keeps it dense.
    pub fn dtype(self) -> Option<GgmlDType> {
        match self {
            BaseQuant::Q4_0 => Some(GgmlDType::Q4_0),
            BaseQuant::Q4K => Some(GgmlDType::Q4K),
            BaseQuant::Q8_0 => Some(GgmlDType::Q8_0),
            BaseQuant::F16 => Some(GgmlDType::F16),
            BaseQuant::Keep => None,
        }
    }

    /// Bytes per weight of a matrix held in this form (block bytes / block weights; `none`
    /// keeps what the loader makes of dense safetensors, f32).
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            BaseQuant::Q4_0 => 18.0 / 32.0,
            BaseQuant::Q4K => 144.0 / 256.0,
            BaseQuant::Q8_0 => 34.0 / 32.0,
            BaseQuant::F16 => 2.0,
            BaseQuant::Keep => 4.0,
        }
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
/// Training goes through `lora::fused::linear_train`, which attaches them.
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    #[test]
    fn base_quant_names_and_types() {
        assert_eq!("Q4_K".parse::<BaseQuant>(), Ok(BaseQuant::Q4K));
        assert_eq!(BaseQuant::default().dtype(), Some(GgmlDType::Q4_0));
        assert_eq!(BaseQuant::Keep.dtype(), None);
        for q in BaseQuant::ALL {
            let bpw = q.bytes_per_weight();
            match q.dtype() {
                Some(dt) => assert_eq!(bpw, dt.type_size() as f64 / dt.block_size() as f64),
                None => assert_eq!(bpw, 4.0),
            }
        }
    }

    /// The fast path (ft's kernels, or candle's QMatMul for the types they leave to it: Q2_K,
    /// Q3_K, Q5_K) against f32 math over the same dequantized weight: only the 8-bit rounding
    /// of the activations may differ (issue 4: Q5_K_M's bad perplexity was not a kernel).
    #[test]
    fn fast_matmul_matches_the_dequantized_weight_for_every_type() {
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (m, n, k) = (5, 48, 768);
        let mut x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        for v in x.iter_mut().step_by(61) {
            *v *= 10.0; // outlier activations, as real ones have
        }
        let w: Vec<f32> = (0..n * k)
            .map(|_| rng.random_range(-1.0f32..1.0).powi(3) * 0.1)
            .collect();
        let x = Tensor::from_vec(x, (m, k), &dev).unwrap();
        let w = Tensor::from_vec(w, (n, k), &dev).unwrap();
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let fw = FrozenWeight::quantize(&w, dt).unwrap();
            let fast = frozen_matmul(&x, &fw, MatmulMode::Fast).unwrap();
            let exact = frozen_matmul(&x, &fw, MatmulMode::Exact).unwrap();
            let sum_sq = |t: &Tensor| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let rel = (sum_sq(&(&fast - &exact).unwrap()) / sum_sq(&exact)).sqrt();
            // Measured: 0.0087 for every type walked in 32-weight activation blocks, 0.022 for
            // candle's Q2_K/Q3_K/Q5_K, which quantize the activations in blocks of 256 (Q8_K,
            // as llama.cpp does), so an outlier coarsens 256 values; without outliers every
            // type gives 0.0037.
            let bound = if matches!(dt, GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q5K) {
                0.03
            } else {
                0.012
            };
            assert!(
                rel < bound,
                "{dt:?}: fast vs dequantized relative error {rel}"
            );
        }
    }
}
