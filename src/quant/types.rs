//! Quantization type names and llama.cpp's fallback rules.

use candle_core::quantized::GgmlDType;

/// The type to use for a row of `ncols` when `want` does not fit: k-quants need rows that are
/// a multiple of 256 (SmolLM2's 576 is not), so llama.cpp falls back Q4_K->Q5_0,
/// Q5_K->Q5_1, Q6_K->Q8_0 (llama-quant.cpp `llama_tensor_get_type`); 32-blocks need multiples of 32.
pub fn fallback_qtype(ncols: usize, want: GgmlDType) -> GgmlDType {
    if ncols % want.block_size() == 0 {
        return want;
    }
    let fb = match want {
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    };
    if ncols % fb.block_size() == 0 {
        fb
    } else {
        GgmlDType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm_rows_fall_back_like_llama_cpp() {
        assert_eq!(fallback_qtype(576, GgmlDType::Q4K), GgmlDType::Q5_0);
        assert_eq!(fallback_qtype(576, GgmlDType::Q5K), GgmlDType::Q5_1);
        assert_eq!(fallback_qtype(576, GgmlDType::Q6K), GgmlDType::Q8_0);
        assert_eq!(fallback_qtype(1536, GgmlDType::Q4K), GgmlDType::Q4K);
        assert_eq!(fallback_qtype(576, GgmlDType::Q4_0), GgmlDType::Q4_0);
        assert_eq!(fallback_qtype(100, GgmlDType::Q4_0), GgmlDType::F16);
    }
}
