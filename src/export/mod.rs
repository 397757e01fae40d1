//! Export: merge adapters into the base (W' = W + Σ wᵢ·scaleᵢ·BᵢAᵢ, in f32), write Hugging Face
//! folders ([`hf`]), write llama.cpp-loadable GGUF models with llama.cpp's quantization mixes
//! ([`gguf_model`]), and write LoRA adapters as GGUF ([`adapter`]).
//!
//! Every writer walks the same list of model tensors ([`tensors`]) by HF name, so the merge
//! math, the q/k permutation and the tied-embedding rule live in one place each. Weights stay
//! in HF layout until the GGUF writer permutes q/k rows for llama.cpp's interleaved RoPE.

pub mod adapter;
pub mod gguf_model;
pub mod hf;
pub mod merge;

pub use adapter::{export_adapter, AdapterReport};
pub use gguf_model::{quantize_file, write_model, Fallback, GgufOptions, GgufReport, TypeCount};
pub use hf::{write_hf, HfOptions, HfReport};
pub use merge::{merge, MergeOptions, MergeOutput, MergeReport};

use crate::error::{Error, Result};
use crate::model::{names, Arch, Linear, Llama};
use crate::quant::FrozenWeight;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Long work reports (done, total, what) after each tensor.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// A progress callback that ignores everything.
pub fn no_progress(_: usize, _: usize, _: &str) {}

/// Where one exported tensor's values come from.
#[derive(Clone)]
pub enum Src<'a> {
    /// A frozen matrix; `linear` is set for the seven projections (which may carry adapters).
    Matrix {
        weight: &'a FrozenWeight,
        linear: Option<&'a Linear>,
    },
    /// A norm weight or a bias (always f32 in outputs).
    Vector(&'a Tensor),
}

/// One model tensor, named both ways.
#[derive(Clone)]
pub struct Item<'a> {
    pub hf_name: String,
    pub gguf_name: String,
    pub src: Src<'a>,
    /// For llama-architecture q/k weights and biases: the head count their rows are permuted by.
    pub qk_heads: Option<usize>,
}

impl Item<'_> {
    pub fn shape(&self) -> Vec<usize> {
        match &self.src {
            Src::Matrix { weight, .. } => weight.dims(),
            Src::Vector(t) => t.dims().to_vec(),
        }
    }
}

/// Every tensor of `model` in GGUF order (embedding, blocks, final norm, output). The output
/// matrix is left out when the embeddings are tied.
pub fn tensors(model: &Llama) -> Vec<Item<'_>> {
    let cfg = &model.config;
    let mut items: Vec<Item<'_>> = Vec::new();
    items.push(item(
        "model.embed_tokens.weight",
        Src::Matrix {
            weight: &model.embed_tokens,
            linear: None,
        },
        None,
    ));
    for (i, block) in model.blocks.iter().enumerate() {
        items.push(item(
            &names::layer(i, "input_layernorm", "weight"),
            Src::Vector(&block.input_layernorm.weight),
            None,
        ));
        for (short, lin) in block.linears() {
            let heads = match (cfg.arch, short) {
                (Arch::Llama, "q_proj") => Some(cfg.num_heads),
                (Arch::Llama, "k_proj") => Some(cfg.num_kv_heads),
                _ => None,
            };
            let path = names::proj_path(short);
            items.push(item(
                &names::layer(i, path, "weight"),
                Src::Matrix {
                    weight: &lin.weight,
                    linear: Some(lin),
                },
                heads,
            ));
            if let Some(b) = &lin.bias {
                items.push(item(&names::layer(i, path, "bias"), Src::Vector(b), heads));
            }
        }
        items.push(item(
            &names::layer(i, "post_attention_layernorm", "weight"),
            Src::Vector(&block.post_attention_layernorm.weight),
            None,
        ));
    }
    items.push(item(
        "model.norm.weight",
        Src::Vector(&model.norm.weight),
        None,
    ));
    if !cfg.tie_word_embeddings {
        items.push(item(
            "lm_head.weight",
            Src::Matrix {
                weight: &model.lm_head.weight,
                linear: None,
            },
            None,
        ));
    }
    items
}

fn item<'a>(hf: &str, src: Src<'a>, qk_heads: Option<usize>) -> Item<'a> {
    Item {
        hf_name: hf.to_string(),
        gguf_name: names::hf_to_gguf(hf).unwrap_or_else(|| hf.to_string()),
        src,
        qk_heads,
    }
}

/// End-of-turn markers of common chat formats, most specific first.
const END_OF_TURN: [&str; 6] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
];

/// The token that ends an assistant turn in `template` (the first marker it mentions that the
/// vocabulary has); exports make it the EOS so a fine-tuned chat model stops.
pub fn end_of_turn(
    tok: &crate::tokenizer::Tokenizer,
    template: Option<&crate::tokenizer::ChatTemplate>,
) -> Option<u32> {
    let src = &template?.source;
    END_OF_TURN
        .iter()
        .filter(|m| src.contains(**m))
        .find_map(|m| tok.token_to_id(m))
        // Templates that say `eos_token` end turns with the tokenizer's own EOS.
        .or_else(|| {
            if src.contains("eos_token") {
                tok.eos
            } else {
                None
            }
        })
}

/// A tensor's values ready to store: the source's quantized blocks untouched, or f32 values.
pub enum Values {
    Quantized(Arc<QTensor>),
    /// f32 on the CPU, HF layout.
    Dense(Tensor),
}

/// `W + Σ wᵢ · scaleᵢ · BᵢAᵢ` for the adapter slots in `merge` that this layer has, in f32 on
/// the CPU; None when none of them targets it (the stored weight is then used as is).
pub fn merged_weight(lin: &Linear, merge: &[(usize, f64)]) -> Result<Option<Tensor>> {
    let mut delta: Option<Tensor> = None;
    for &(slot, w) in merge {
        if let Some(l) = lin.adapter(slot) {
            let d = (l
                .delta_weight()?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                * w)?;
            delta = Some(match delta {
                None => d,
                Some(acc) => (acc + d)?,
            });
        }
    }
    let Some(delta) = delta else {
        return Ok(None);
    };
    let base = lin
        .weight
        .dequantize()?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?;
    if base.dims() != delta.dims() {
        return Err(Error::invalid(format!(
            "adapter delta {:?} does not match the base weight {:?}",
            delta.dims(),
            base.dims()
        )));
    }
    Ok(Some((base + delta)?))
}

/// The values of `item` with the adapters in `merge` folded in.
pub fn values(item: &Item<'_>, merge: &[(usize, f64)]) -> Result<Values> {
    let dense =
        |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?) };
    Ok(match &item.src {
        Src::Vector(t) => Values::Dense(dense(t)?),
        Src::Matrix { weight, linear } => {
            if let Some(w) = linear
                .map(|l| merged_weight(l, merge))
                .transpose()?
                .flatten()
            {
                return Ok(Values::Dense(w));
            }
            match weight {
                FrozenWeight::Quantized(q) => Values::Quantized(q.clone()),
                FrozenWeight::Dense(t) => Values::Dense(dense(t)?),
            }
        }
    })
}

/// Rows of an f32 tensor (rows, ..) reordered from HF to GGUF q/k layout.
pub fn permute_rows(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let rows = t.dim(0)?;
    names::check_qk_rows(rows, n_head).map_err(Error::invalid)?;
    let idx: Vec<u32> = names::qk_gguf_to_hf_rows(rows, n_head)
        .into_iter()
        .map(|r| r as u32)
        .collect();
    let idx = Tensor::new(idx.as_slice(), t.device())?;
    Ok(t.index_select(&idx, 0)?)
}

/// f32 values -> stored bytes of `dtype` (raw f32/f16/bf16, or ggml blocks), converted over row
/// chunks in parallel; rows must fit the block size.
pub fn quantize_bytes(t: &Tensor, dtype: GgmlDType) -> Result<Vec<u8>> {
    let t = t
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .contiguous()?;
    let ncols = t.dims().last().copied().unwrap_or(1).max(1);
    let elems = t.elem_count();
    let rows = elems / ncols;
    if ncols % dtype.block_size() != 0 {
        return Err(Error::invalid(format!(
            "rows of {ncols} do not fit {} blocks of {}",
            crate::gguf::dtype_name(dtype),
            dtype.block_size()
        )));
    }
    let (storage, layout) = t.storage_and_layout();
    let all: &[f32] = match &*storage {
        candle_core::Storage::Cpu(cpu) => cpu.as_slice::<f32>()?,
        _ => return Err(Error::invalid("quantize_bytes: tensor is not on the CPU")),
    };
    let values = &all[layout.start_offset()..layout.start_offset() + elems];
    // About 64K values per chunk: big enough to amortise, small enough to spread over threads.
    let per = (65_536 / ncols).clamp(1, rows.max(1));
    let parts: Vec<Result<Vec<u8>>> = values
        .par_chunks(per * ncols)
        .map(|chunk| {
            // Whole rows per chunk, quantized from the slice itself (candle's quantize of a
            // `narrow`ed view would read from the storage's start). Q4_1/Q5_1 blocks that sit
            // on a coarser grid (a merged quantized base) are rounded stochastically: see
            // `quant::quantize`.
            crate::quant::quantize::quantize_values(chunk, ncols, dtype)
        })
        .collect();
    let mut out = Vec::with_capacity(elems / dtype.block_size() * dtype.type_size());
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer quantizes through `quant::quantize` (on the merged-Q4_1 data whose rounding
    /// broke exports before).
    #[test]
    fn writer_path_is_quants() {
        let (rows, ncols) = (96, 576);
        let (_, merged) = crate::quant::quantize::tests::merged_q4_1(rows, ncols, 1);
        let t = Tensor::from_slice(&merged, (rows, ncols), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q5_1, GgmlDType::Q4_1] {
            let want = crate::quant::quantize::quantize_values(&merged, ncols, dtype).unwrap();
            assert_eq!(quantize_bytes(&t, dtype).unwrap(), want, "{dtype:?}");
        }
    }

    #[test]
    fn parallel_quantization_matches_whole_tensor() {
        let v: Vec<f32> = (0..300 * 256)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let t = Tensor::from_vec(v, (300, 256), &Device::Cpu).unwrap();
        for dt in [
            GgmlDType::Q4K,
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_1,
        ] {
            let whole = QTensor::quantize(&t, dt).unwrap().data().unwrap().to_vec();
            assert!(
                quantize_bytes(&t, dt).unwrap() == whole,
                "{dt:?} chunked bytes differ"
            );
        }
        let f16 = quantize_bytes(&t, GgmlDType::F16).unwrap();
        assert_eq!(f16.len(), 300 * 256 * 2);
    }

    #[test]
    fn merged_weight_is_base_plus_weighted_deltas() {
        let dev = Device::Cpu;
        let w = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], (2, 3), &dev).unwrap();
        let mut lin = Linear::new(FrozenWeight::Dense(w.clone()), None);
        let lora = |a: Vec<f32>, b: Vec<f32>, scale: f64| crate::lora::Lora {
            a: Tensor::from_vec(a, (1, 3), &dev).unwrap(),
            b: Tensor::from_vec(b, (2, 1), &dev).unwrap(),
            scale,
            dropout: 0.0,
            salt: 0,
        };
        lin.set_adapter(0, Some(lora(vec![1., 0., 1.], vec![1., 2.], 2.0)));
        lin.set_adapter(1, Some(lora(vec![0., 1., 0.], vec![3., 0.], 1.0)));
        assert!(merged_weight(&lin, &[(5, 1.0)]).unwrap().is_none());
        let m = merged_weight(&lin, &[(0, 0.5), (1, 2.0)]).unwrap().unwrap();
        // 0.5·2·[[1,0,1],[2,0,2]] + 2·[[0,3,0],[0,0,0]]
        let want = vec![vec![2f32, 8., 4.], vec![6., 5., 8.]];
        assert_eq!(m.to_vec2::<f32>().unwrap(), want);
    }

    #[test]
    fn row_permutation_matches_the_byte_table() {
        let v: Vec<f32> = (0..16 * 2).map(|i| i as f32).collect();
        let t = Tensor::from_vec(v.clone(), (16, 2), &Device::Cpu).unwrap();
        let p = permute_rows(&t, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let pb = names::permute_qk(&bytes, 16, 2).unwrap();
        let want: Vec<f32> = pb
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(p, want);
        assert!(permute_rows(&t, 3).is_err());
    }
}
