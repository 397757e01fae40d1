//! Small model files written from scratch for tests that attack or interrupt the loaders and
//! writers: a PEFT adapter folder, and a tiny llama GGUF built with the crate's own writer
//! (metadata and tensors kept separate so a test can change either before writing).
#![allow(dead_code)]

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ft::gguf::write::{write, TensorOut};
use ft::gguf::Value;
use ft::model::Config;
use rand::{Rng, SeedableRng};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn random(rows: usize, cols: usize, rng: &mut rand::rngs::StdRng) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-0.3f32..0.3))
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

/// A PEFT LoRA folder (adapter_config.json + adapter_model.safetensors) of rank `r` on every
/// projection of a model with config `cfg`, written directly in PEFT's format.
pub fn peft_adapter(dir: &Path, cfg: &Config, r: usize, seed: u64) -> PathBuf {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let targets = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    for i in 0..cfg.num_layers {
        for short in targets {
            let (fin, fout) = cfg.proj_shape(short).unwrap();
            let stem = format!(
                "base_model.model.model.layers.{i}.{}",
                ft::model::names::proj_path(short)
            );
            tensors.insert(format!("{stem}.lora_A.weight"), random(r, fin, &mut rng));
            tensors.insert(format!("{stem}.lora_B.weight"), random(fout, r, &mut rng));
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
    let config = serde_json::json!({
        "peft_type": "LORA", "r": r, "lora_alpha": 2.0 * r as f64, "lora_dropout": 0.0,
        "target_modules": targets, "bias": "none", "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "tiny",
    });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    dir.to_path_buf()
}

/// Every file under `dir` (relative name -> bytes), for before/after comparisons.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(root: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// The tiny GGUF's hyper-parameters: 1 layer, hidden 32, 2 heads / 1 kv head of 16, ffn 64.
pub const HIDDEN: usize = 32;
pub const FFN: usize = 64;
pub const VOCAB: usize = 259;

/// A tiny llama GGUF as (metadata, tensors): a byte-level gpt2 vocabulary with ChatML specials
/// and a ChatML template, and tensors in several stored types (F32, F16, Q8_0, Q4_0, Q4_1).
pub fn tiny_gguf_parts(seed: u64) -> (Vec<(String, Value)>, Vec<TensorOut<'static>>) {
    let s = |v: &str| Value::String(v.into());
    let mut vocab = ft::testing::tiny_vocab();
    // Two merged tokens in place of two unused bytes' spare slots would change ids; instead
    // the last two byte tokens stand in for the merge results `Ġt` and `he`.
    vocab.tokens[254] = "Ġt".into();
    vocab.tokens[255] = "he".into();
    let meta = vec![
        ("general.architecture".to_string(), s("llama")),
        ("general.name".into(), s("tiny")),
        ("llama.context_length".into(), Value::U32(256)),
        ("llama.embedding_length".into(), Value::U32(HIDDEN as u32)),
        ("llama.block_count".into(), Value::U32(1)),
        ("llama.feed_forward_length".into(), Value::U32(FFN as u32)),
        ("llama.attention.head_count".into(), Value::U32(2)),
        ("llama.attention.head_count_kv".into(), Value::U32(1)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("gpt2")),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(vocab.tokens.iter().map(|t| s(t)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vocab.types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(vec![s("Ġ t"), s("h e")]),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(256)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(258)),
        (
            "tokenizer.chat_template".into(),
            s(ft::tokenizer::template::CHATML),
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t = |name: &str, shape: &[usize], dtype: GgmlDType| {
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => unreachable!("tiny tensors are 1-D or 2-D"),
        };
        let data: Vec<u8> = if shape.len() == 1 {
            // Norm weights near 1.
            (0..cols)
                .flat_map(|_| (1.0f32 + rng.random_range(-0.1f32..0.1)).to_le_bytes())
                .collect()
        } else {
            let q = QTensor::quantize(&random(rows, cols, &mut rng), dtype).unwrap();
            q.data().unwrap().into_owned()
        };
        TensorOut {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            data: Cow::Owned(data),
        }
    };
    let tensors = vec![
        t("token_embd.weight", &[VOCAB, HIDDEN], GgmlDType::Q8_0),
        t("blk.0.attn_norm.weight", &[HIDDEN], GgmlDType::F32),
        t("blk.0.attn_q.weight", &[HIDDEN, HIDDEN], GgmlDType::Q8_0),
        t("blk.0.attn_k.weight", &[16, HIDDEN], GgmlDType::F16),
        t("blk.0.attn_v.weight", &[16, HIDDEN], GgmlDType::F32),
        t(
            "blk.0.attn_output.weight",
            &[HIDDEN, HIDDEN],
            GgmlDType::Q4_0,
        ),
        t("blk.0.ffn_norm.weight", &[HIDDEN], GgmlDType::F32),
        t("blk.0.ffn_gate.weight", &[FFN, HIDDEN], GgmlDType::Q8_0),
        t("blk.0.ffn_up.weight", &[FFN, HIDDEN], GgmlDType::F16),
        t("blk.0.ffn_down.weight", &[HIDDEN, FFN], GgmlDType::Q4_1),
        t("output_norm.weight", &[HIDDEN], GgmlDType::F32),
        t("output.weight", &[VOCAB, HIDDEN], GgmlDType::F16),
    ];
    (meta, tensors)
}

/// Write GGUF parts with the crate's writer.
pub fn write_gguf(path: &Path, meta: &[(String, Value)], tensors: &[TensorOut<'_>]) {
    write(path, meta, tensors).unwrap();
}

/// Replace (or add) a metadata value.
pub fn set_meta(meta: &mut Vec<(String, Value)>, key: &str, v: Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => meta.push((key.to_string(), v)),
    }
}
