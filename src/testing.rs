//! Tiny random models for tests and benchmarks that must run without downloads: a seeded
//! random Llama (HF layout), a byte-level tokenizer with ChatML specials, and writers for an
//! HF folder. Real-model checks live in `tests/` and use the fetched assets.

use crate::error::{Error, Result};
use crate::model::{Config, Llama, WeightSource};
use crate::quant::FrozenWeight;
use crate::tokenizer::GgufVocab;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// The specials every tiny tokenizer has, after the 256 byte tokens.
pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A small Llama: 2 layers, hidden 64, 4 heads / 2 kv heads, vocab 259.
pub fn tiny_config() -> Config {
    Config {
        arch: crate::model::Arch::Llama,
        vocab_size: 256 + SPECIALS.len(),
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: None,
        max_position_embeddings: 512,
        tie_word_embeddings: false,
        sliding_window: None,
        attention_bias: false,
    }
}

/// Seeded random weights by HF name (f32), scaled so activations stay O(1).
pub fn random_weights(cfg: &Config, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut w = HashMap::new();
    let dev = Device::Cpu;
    let mat = |rows: usize, cols: usize, rng: &mut rand::rngs::StdRng| -> Result<Tensor> {
        let s = 1.0 / (cols as f32).sqrt();
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-s..s) * 1.7)
            .collect();
        Ok(Tensor::from_vec(v, (rows, cols), &dev)?)
    };
    let h = cfg.hidden_size;
    w.insert(
        "model.embed_tokens.weight".into(),
        mat(cfg.vocab_size, h, &mut rng)?,
    );
    for i in 0..cfg.num_layers {
        for short in crate::lora::TargetModule::ALL.iter().map(|m| m.as_str()) {
            let (fin, fout) = cfg.proj_shape(short).unwrap_or((h, h));
            let name =
                crate::model::names::layer(i, crate::model::names::proj_path(short), "weight");
            w.insert(name, mat(fout, fin, &mut rng)?);
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            let v: Vec<f32> = (0..h)
                .map(|_| 1.0 + rng.random_range(-0.1f32..0.1))
                .collect();
            w.insert(
                crate::model::names::layer(i, n, "weight"),
                Tensor::from_vec(v, h, &dev)?,
            );
        }
    }
    let v: Vec<f32> = (0..h)
        .map(|_| 1.0 + rng.random_range(-0.1f32..0.1))
        .collect();
    w.insert("model.norm.weight".into(), Tensor::from_vec(v, h, &dev)?);
    if !cfg.tie_word_embeddings {
        w.insert("lm_head.weight".into(), mat(cfg.vocab_size, h, &mut rng)?);
    }
    Ok(w)
}

/// Serves weights from a map; matrices optionally quantized.
pub struct MapSource {
    pub weights: HashMap<String, Tensor>,
    pub quantize: Option<candle_core::quantized::GgmlDType>,
}

impl WeightSource for MapSource {
    fn get(&mut self, name: &str) -> Result<Option<FrozenWeight>> {
        let Some(t) = self.weights.get(name) else {
            return Ok(None);
        };
        Ok(Some(match self.quantize {
            Some(q) if t.rank() == 2 => FrozenWeight::quantize(t, q)?,
            _ => FrozenWeight::Dense(t.clone()),
        }))
    }
}

/// A tiny random Llama in memory.
pub fn tiny_model(seed: u64, quantize: Option<candle_core::quantized::GgmlDType>) -> Result<Llama> {
    let cfg = tiny_config();
    let mut src = MapSource {
        weights: random_weights(&cfg, seed)?,
        quantize,
    };
    Llama::new(cfg, &mut src, 512, &Device::Cpu)
}

/// GPT-2's byte -> printable character map (bytes that are not printable move to U+0100...).
pub fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap_or('?')
}

/// A byte-level vocabulary: the 256 bytes, then [`SPECIALS`] as control tokens.
pub fn tiny_vocab() -> GgufVocab {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    let mut types = vec![1; 256];
    for s in SPECIALS {
        tokens.push(s.to_string());
        types.push(3);
    }
    GgufVocab {
        model: "gpt2".into(),
        pre: "gpt2".into(),
        tokens,
        types,
        scores: None,
        merges: Some(Vec::new()),
    }
}

/// The tokenizer of [`tiny_vocab`] (bytes, then the specials), without BOS/EOS.
pub fn tiny_tokenizer() -> Result<crate::tokenizer::Tokenizer> {
    let json = tiny_vocab()
        .build()?
        .to_string(false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    crate::tokenizer::Tokenizer::from_json_str(&json, None, None)
}

/// Write a complete HF folder (config, safetensors, tokenizer, ChatML template) for `weights`.
pub fn write_hf_dir(dir: &Path, cfg: &Config, weights: &HashMap<String, Tensor>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let w = |name: &str, bytes: &[u8]| crate::output::write_bytes(&dir.join(name), bytes);
    w(
        "config.json",
        serde_json::to_string_pretty(&cfg.to_hf_json())?.as_bytes(),
    )?;
    let tk = tiny_vocab().build()?;
    let json = tk
        .to_string(true)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    w("tokenizer.json", json.as_bytes())?;
    let tc = serde_json::json!({
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "add_bos_token": false,
        "chat_template": crate::tokenizer::template::CHATML,
    });
    w(
        "tokenizer_config.json",
        serde_json::to_string_pretty(&tc)?.as_bytes(),
    )?;
    let eos = 256 + 2;
    w(
        "generation_config.json",
        serde_json::json!({"eos_token_id": eos})
            .to_string()
            .as_bytes(),
    )?;
    let f32w: HashMap<String, Tensor> = weights
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&f32w, &path).map_err(|e| Error::format(&path, e.to_string()))
}

/// A tiny random HF model folder.
pub fn tiny_hf_dir(dir: &Path, seed: u64) -> Result<()> {
    let cfg = tiny_config();
    write_hf_dir(dir, &cfg, &random_weights(&cfg, seed)?)
}
