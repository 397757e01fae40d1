//! What a training run will hold in memory, estimated without loading weights (sizes come
//! from `config.json` or GGUF metadata): `ft train --dry-run` prints it.
//!
//! The model: the frozen base at its in-memory bytes per weight; adapter weights, gradients and
//! two AdamW moments in f32; activations kept for backward, ~(14 hidden + 5 ffn)-sized f32
//! tensors per layer per token plus attention scores and probabilities; then logits, their
//! log-softmax and gradients (4 vocabulary-sized f32 tensors per token).

use std::path::Path;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::lora::LoraConfig;
use crate::model::Config;
use crate::quant::BaseQuant;
use crate::recipe::Recipe;

/// Parameter counts and estimated peak bytes of a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    pub trainable: usize,
    pub frozen: usize,
    pub base_bytes: f64,
    /// Adapter weights, gradients and optimizer moments.
    pub adapter_bytes: f64,
    pub activation_bytes: f64,
    pub logit_bytes: f64,
}

impl MemoryEstimate {
    pub fn total_bytes(&self) -> f64 {
        self.base_bytes + self.adapter_bytes + self.activation_bytes + self.logit_bytes
    }
}

/// LoRA parameters `lora` adds to a model of shape `cfg`: r·(in + out) per targeted layer.
pub fn trainable_params(cfg: &Config, lora: &LoraConfig) -> usize {
    let per_layer: usize = lora
        .target_modules
        .modules()
        .iter()
        .filter_map(|m| cfg.proj_shape(m.as_str()))
        .map(|(i, o)| lora.r * (i + o))
        .sum();
    per_layer * cfg.num_layers
}

/// The estimate for a model of shape `cfg` whose frozen weights take `bytes_per_weight`, an
/// adapter `lora`, and micro-batches of `batch` rows of `seq` tokens.
pub fn estimate(
    cfg: &Config,
    bytes_per_weight: f64,
    lora: &LoraConfig,
    batch: usize,
    seq: usize,
) -> MemoryEstimate {
    let trainable = trainable_params(cfg, lora);
    let frozen = cfg.param_count();
    let per_tok = (14 * cfg.hidden_size + 5 * cfg.intermediate_size) as f64 * 4.0;
    let attn = (2 * cfg.num_heads * seq) as f64 * 4.0 * 2.0;
    MemoryEstimate {
        trainable,
        frozen,
        base_bytes: frozen as f64 * bytes_per_weight,
        adapter_bytes: trainable as f64 * 4.0 * 4.0,
        activation_bytes: (batch * seq) as f64 * (per_tok + attn) * cfg.num_layers as f64,
        logit_bytes: (batch * seq * cfg.vocab_size) as f64 * 4.0 * 4.0,
    }
}

/// The base's config and in-memory bytes per weight, read without loading weights: for a GGUF
/// file its stored size, for an HF folder what `quantize` makes of it. None when the path is
/// missing or a folder has no `config.json`.
pub fn peek_base(path: &Path, quantize: BaseQuant) -> Result<Option<(Config, f64)>> {
    if path.is_dir() {
        let cj = path.join("config.json");
        if !cj.exists() {
            return Ok(None);
        }
        Ok(Some((
            Config::from_hf_json(&cj)?,
            quantize.bytes_per_weight(),
        )))
    } else if path.is_file() {
        let f = GgufFile::open(path)?;
        let cfg = Config::from_gguf(&f)?;
        let bytes: usize = f.tensors.iter().map(|t| t.size).sum();
        let bpw = bytes as f64 / cfg.param_count() as f64;
        Ok(Some((cfg, bpw)))
    } else {
        Ok(None)
    }
}

/// The recipe's base config and estimate (None when the base is not there to peek at).
pub fn for_recipe(r: &Recipe) -> Result<Option<(Config, MemoryEstimate)>> {
    Ok(
        peek_base(&r.model.path, r.model.quantize)?.map(|(cfg, bpw)| {
            let e = estimate(
                &cfg,
                bpw,
                &r.lora,
                r.train.batch_size,
                r.dataset.max_seq_len,
            );
            (cfg, e)
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{TargetModule, TargetModules};

    #[test]
    fn trainable_count_matches_attached_adapters() {
        let lora = LoraConfig {
            r: 4,
            target_modules: TargetModules::List(vec![TargetModule::QProj, TargetModule::DownProj]),
            ..LoraConfig::default()
        };
        let mut model = crate::testing::tiny_model(1, None).unwrap();
        let vars = super::super::attach_adapters(&mut model, &lora, 0).unwrap();
        assert_eq!(
            trainable_params(&model.config, &lora),
            super::super::trainable_params(&vars)
        );
        let e = estimate(&model.config, 0.5, &lora, 2, 16);
        assert_eq!(e.base_bytes, model.config.param_count() as f64 * 0.5);
        assert_eq!(
            e.total_bytes(),
            e.base_bytes + e.adapter_bytes + e.activation_bytes + e.logit_bytes
        );
    }

    #[test]
    fn peek_reads_an_hf_folder_without_weights() {
        let dir = tempfile::tempdir().unwrap();
        crate::testing::tiny_hf_dir(dir.path(), 1).unwrap();
        let (cfg, bpw) = peek_base(dir.path(), BaseQuant::Q8_0).unwrap().unwrap();
        assert_eq!(cfg.num_layers, 2);
        assert_eq!(bpw, 34.0 / 32.0);
        assert!(peek_base(&dir.path().join("nope"), BaseQuant::Q8_0)
            .unwrap()
            .is_none());
    }
}
