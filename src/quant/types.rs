//! Quantization file types (llama.cpp's `--type` names and `general.file_type` numbers) and
//! the per-tensor type choice of llama.cpp's `llama-quant.cpp` (`llama_tensor_get_type`):
//! the _M/_S mixes give attn_v/ffn_down more bits on some layers, the output (and a tied
//! token embedding) Q6_K, and any tensor whose rows do not fit its block size falls back.

use crate::error::{Error, Result};
use candle_core::quantized::GgmlDType;

/// The type to use for a row of `ncols` when `want` does not fit: k-quants need rows that are
/// a multiple of 256 (SmolLM2's 576 is not), so llama.cpp falls back Q2_K/Q3_K->Q4_0,
/// Q4_K->Q5_0, Q5_K->Q5_1, Q6_K->Q8_0 (`tensor_type_fallback`), and to F16 when even the
/// 32-wide fallback does not fit.
pub fn fallback_qtype(ncols: usize, want: GgmlDType) -> GgmlDType {
    if ncols.is_multiple_of(want.block_size()) {
        return want;
    }
    let fb = match want {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        _ => GgmlDType::F16,
    };
    if ncols.is_multiple_of(fb.block_size()) {
        fb
    } else {
        GgmlDType::F16
    }
}

/// A whole-file quantization choice, as `llama-quantize` names them.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6_K,
    Q5_K_M,
    Q5_K_S,
    Q5_1,
    Q5_0,
    Q4_K_M,
    Q4_K_S,
    Q4_1,
    Q4_0,
    Q3_K_L,
    Q3_K_M,
    Q3_K_S,
    Q2_K,
}

impl FileType {
    pub const ALL: [FileType; 17] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q6_K,
        FileType::Q5_K_M,
        FileType::Q5_K_S,
        FileType::Q5_1,
        FileType::Q5_0,
        FileType::Q4_K_M,
        FileType::Q4_K_S,
        FileType::Q4_1,
        FileType::Q4_0,
        FileType::Q3_K_L,
        FileType::Q3_K_M,
        FileType::Q3_K_S,
        FileType::Q2_K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q8_0 => "Q8_0",
            FileType::Q6_K => "Q6_K",
            FileType::Q5_K_M => "Q5_K_M",
            FileType::Q5_K_S => "Q5_K_S",
            FileType::Q5_1 => "Q5_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q4_1 => "Q4_1",
            FileType::Q4_0 => "Q4_0",
            FileType::Q3_K_L => "Q3_K_L",
            FileType::Q3_K_M => "Q3_K_M",
            FileType::Q3_K_S => "Q3_K_S",
            FileType::Q2_K => "Q2_K",
        }
    }

    /// Parse a name case-insensitively (`q4_k_m`, `Q4_K_M`; `Q4_K`/`Q5_K`/`Q3_K` mean the _M mix
    /// as in llama-quantize; `fp16`/`f16`).
    pub fn parse(s: &str) -> Result<Self> {
        let up = s.trim().to_ascii_uppercase().replace('-', "_");
        let alias = match up.as_str() {
            "Q4_K" => Some(FileType::Q4_K_M),
            "Q5_K" => Some(FileType::Q5_K_M),
            "Q3_K" => Some(FileType::Q3_K_M),
            "FP16" => Some(FileType::F16),
            "FP32" => Some(FileType::F32),
            _ => None,
        };
        alias
            .or_else(|| Self::ALL.into_iter().find(|t| t.name() == up))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
                Error::invalid(format!(
                    "unknown quantization type `{s}` (expected one of {})",
                    names.join(", ")
                ))
            })
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::BF16 => 32,
        }
    }

    pub fn from_llama_ftype(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.llama_ftype() == v)
    }

    /// The type every quantizable tensor gets unless the mix says otherwise.
    pub fn default_type(self) -> GgmlDType {
        match self {
            FileType::F32 => GgmlDType::F32,
            FileType::F16 => GgmlDType::F16,
            FileType::BF16 => GgmlDType::BF16,
            FileType::Q8_0 => GgmlDType::Q8_0,
            FileType::Q6_K => GgmlDType::Q6K,
            FileType::Q5_K_M | FileType::Q5_K_S => GgmlDType::Q5K,
            FileType::Q5_1 => GgmlDType::Q5_1,
            FileType::Q5_0 => GgmlDType::Q5_0,
            FileType::Q4_K_M | FileType::Q4_K_S => GgmlDType::Q4K,
            FileType::Q4_1 => GgmlDType::Q4_1,
            FileType::Q4_0 => GgmlDType::Q4_0,
            FileType::Q3_K_L | FileType::Q3_K_M | FileType::Q3_K_S => GgmlDType::Q3K,
            FileType::Q2_K => GgmlDType::Q2K,
        }
    }

    pub fn is_quantized(self) -> bool {
        !matches!(self, FileType::F32 | FileType::F16 | FileType::BF16)
    }
}

impl std::str::FromStr for FileType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the mix rules need to know about the model.
#[derive(Clone, Copy, Debug)]
pub struct MixModel {
    pub n_layers: usize,
    /// Query heads per key/value head.
    pub n_gqa: usize,
    /// No `output.weight`: the token embedding doubles as the output and is typed like it.
    pub tied_embeddings: bool,
}

/// The type chosen for one tensor, and the type the mix wanted when rows forced a fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeChoice {
    pub dtype: GgmlDType,
    pub fallback_from: Option<GgmlDType>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    Output,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    match name {
        "output.weight" => Category::Output,
        "token_embd.weight" => Category::TokenEmbd,
        _ if name.contains("attn_v.weight") => Category::AttnV,
        _ if name.contains("attn_k.weight") => Category::AttnK,
        _ if name.contains("attn_q.weight") => Category::AttnQ,
        _ if name.contains("attn_output.weight") => Category::AttnOutput,
        _ if name.contains("ffn_up") => Category::FfnUp,
        _ if name.contains("ffn_gate") => Category::FfnGate,
        _ if name.contains("ffn_down") => Category::FfnDown,
        _ => Category::Other,
    }
}

/// `blk.N.` -> N.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third between.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Whether llama.cpp would quantize this tensor at all: matrices named `*.weight`, not norms.
pub fn is_quantizable(name: &str, rank: usize) -> bool {
    rank >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// The stored type of GGUF tensor `name` (rows of `ncols`, `rank` dims) under file type `ft`.
/// Tensors llama.cpp does not quantize (norms, biases, 1-D) come back as F32.
pub fn tensor_type(
    ft: FileType,
    name: &str,
    ncols: usize,
    rank: usize,
    m: &MixModel,
) -> TypeChoice {
    if !is_quantizable(name, rank) {
        return TypeChoice {
            dtype: GgmlDType::F32,
            fallback_from: None,
        };
    }
    let default = ft.default_type();
    if !ft.is_quantized() {
        return TypeChoice {
            dtype: default,
            fallback_from: None,
        };
    }
    let want = mix_type(ft, name, ncols, m);
    let dtype = fallback_qtype(ncols, want);
    TypeChoice {
        dtype,
        fallback_from: (dtype != want).then_some(want),
    }
}

/// The mix rule alone (before the row-size fallback).
fn mix_type(ft: FileType, name: &str, ncols: usize, m: &MixModel) -> GgmlDType {
    use FileType as F;
    use GgmlDType as T;
    let default = ft.default_type();
    let cat = category(name);
    let layer = layer_of(name).unwrap_or(0);
    let n = m.n_layers.max(1);
    if cat == Category::Output || (m.tied_embeddings && cat == Category::TokenEmbd) {
        // Rows that do not fit the default block go straight to Q8_0 (not counted as a fallback).
        return if !ncols.is_multiple_of(default.block_size()) {
            T::Q8_0
        } else if default != T::Q8_0 {
            T::Q6K
        } else {
            default
        };
    }
    match cat {
        Category::AttnV => match ft {
            F::Q2_K => {
                if m.n_gqa >= 4 {
                    T::Q4K
                } else {
                    T::Q3K
                }
            }
            F::Q3_K_M => {
                if layer < 2 {
                    T::Q5K
                } else {
                    T::Q4K
                }
            }
            F::Q3_K_L => T::Q5K,
            F::Q4_K_M | F::Q5_K_M if use_more_bits(layer, n) => T::Q6K,
            F::Q4_K_S if layer < 4 => T::Q5K,
            _ => default,
        },
        Category::FfnDown => match ft {
            F::Q2_K => T::Q3K,
            // Falcon aside, every layer past the first sixteenth gets Q4_K.
            F::Q3_K_M => {
                if layer < n / 16 {
                    T::Q5K
                } else {
                    T::Q4K
                }
            }
            F::Q3_K_L => T::Q5K,
            F::Q4_K_M | F::Q5_K_M if use_more_bits(layer, n) => T::Q6K,
            F::Q4_K_S if layer < n / 8 => T::Q5K,
            _ => default,
        },
        Category::AttnOutput => match ft {
            F::Q2_K => T::Q3K,
            F::Q3_K_M => T::Q4K,
            F::Q3_K_L => T::Q5K,
            _ => default,
        },
        _ => default,
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
        assert_eq!(fallback_qtype(576, GgmlDType::Q3K), GgmlDType::Q4_0);
        assert_eq!(fallback_qtype(1536, GgmlDType::Q4K), GgmlDType::Q4K);
        assert_eq!(fallback_qtype(576, GgmlDType::Q4_0), GgmlDType::Q4_0);
        assert_eq!(fallback_qtype(100, GgmlDType::Q4_0), GgmlDType::F16);
        assert_eq!(fallback_qtype(100, GgmlDType::Q4K), GgmlDType::F16);
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(FileType::parse("q4_k_m").unwrap(), FileType::Q4_K_M);
        assert_eq!(FileType::parse("Q8_0").unwrap(), FileType::Q8_0);
        assert_eq!(FileType::parse("bf16").unwrap(), FileType::BF16);
        assert_eq!(FileType::parse("Q4_K").unwrap(), FileType::Q4_K_M);
        let e = FileType::parse("q7").unwrap_err().to_string();
        assert!(e.contains("Q4_K_M"), "{e}");
        for t in FileType::ALL {
            assert_eq!(FileType::parse(t.name()).unwrap(), t);
            assert_eq!(FileType::from_llama_ftype(t.llama_ftype()), Some(t));
        }
        assert_eq!(FileType::Q4_K_M.llama_ftype(), 15);
        assert_eq!(FileType::Q5_K_M.llama_ftype(), 17);
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_30_layers() {
        let more: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
    }

    #[test]
    fn q4_k_m_mix_on_smollm_shapes() {
        // SmolLM2-135M: 30 layers, hidden 576, ffn 1536, 9/3 heads, tied embeddings.
        let m = MixModel {
            n_layers: 30,
            n_gqa: 3,
            tied_embeddings: true,
        };
        let t = |name: &str, ncols: usize| tensor_type(FileType::Q4_K_M, name, ncols, 2, &m);
        // Tied embedding: typed as the output; 576 does not fit Q4_K's 256 -> Q8_0, no fallback.
        assert_eq!(
            t("token_embd.weight", 576),
            TypeChoice {
                dtype: GgmlDType::Q8_0,
                fallback_from: None
            }
        );
        assert_eq!(
            t("blk.0.attn_q.weight", 576),
            TypeChoice {
                dtype: GgmlDType::Q5_0,
                fallback_from: Some(GgmlDType::Q4K)
            }
        );
        assert_eq!(
            t("blk.0.attn_v.weight", 576),
            TypeChoice {
                dtype: GgmlDType::Q8_0,
                fallback_from: Some(GgmlDType::Q6K)
            }
        );
        assert_eq!(t("blk.3.attn_v.weight", 576).dtype, GgmlDType::Q5_0);
        // ffn_down rows are 1536 = 6·256: no fallback.
        assert_eq!(
            t("blk.0.ffn_down.weight", 1536),
            TypeChoice {
                dtype: GgmlDType::Q6K,
                fallback_from: None
            }
        );
        assert_eq!(t("blk.3.ffn_down.weight", 1536).dtype, GgmlDType::Q4K);
        assert_eq!(t("blk.5.ffn_down.weight", 1536).dtype, GgmlDType::Q6K);
        assert_eq!(
            tensor_type(FileType::Q4_K_M, "blk.0.attn_norm.weight", 576, 1, &m).dtype,
            GgmlDType::F32
        );
        // Untied: output Q6_K when rows fit, the embedding keeps the default type.
        let m = MixModel {
            n_layers: 32,
            n_gqa: 4,
            tied_embeddings: false,
        };
        let t = |name: &str| tensor_type(FileType::Q4_K_M, name, 4096, 2, &m).dtype;
        assert_eq!(t("output.weight"), GgmlDType::Q6K);
        assert_eq!(t("token_embd.weight"), GgmlDType::Q4K);
        assert_eq!(t("blk.10.attn_k.weight"), GgmlDType::Q4K);
        assert_eq!(
            tensor_type(FileType::Q2_K, "blk.1.attn_v.weight", 4096, 2, &m).dtype,
            GgmlDType::Q4K
        );
        assert_eq!(
            tensor_type(FileType::Q3_K_M, "blk.1.attn_v.weight", 4096, 2, &m).dtype,
            GgmlDType::Q5K
        );
        assert_eq!(
            tensor_type(FileType::Q4_K_S, "blk.3.attn_v.weight", 4096, 2, &m).dtype,
            GgmlDType::Q5K
        );
        assert_eq!(
            tensor_type(FileType::F16, "blk.3.attn_v.weight", 4096, 2, &m).dtype,
            GgmlDType::F16
        );
        assert_eq!(
            tensor_type(FileType::Q8_0, "output.weight", 4096, 2, &m).dtype,
            GgmlDType::Q8_0
        );
    }
}
