//! Model -> GGUF: the metadata llama.cpp needs (`general.*`, `{arch}.*` hyper-parameters, the
//! full tokenizer, the chat template) and every tensor under its GGUF name, typed by a
//! llama.cpp quantization mix ([`FileType`]), with llama q/k rows permuted back to GGUF layout.
//!
//! A source tensor already stored in the target type is copied block for block (q/k rows
//! are permuted as whole rows of blocks). Turning one quantized type into another needs
//! `allow_requantize`, as in llama-quantize: the values would be rounded twice.

use super::{
    end_of_turn, permute_rows, quantize_bytes, tensors, values, Item, Progress, Src, Values,
};
use crate::error::{Error, Result};
use crate::gguf::write::{write_streaming, TensorHeader};
use crate::gguf::{dtype_name, Value};
use crate::model::config::RopeScaling;
use crate::model::{names, Loaded};
use crate::quant::types::{tensor_type, FileType, MixModel};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How to write the GGUF.
#[derive(Clone, Debug)]
pub struct GgufOptions {
    pub file_type: FileType,
    /// Allow converting already-quantized tensors into another quantized type.
    pub allow_requantize: bool,
    /// Adapter slots folded into the weights, with their weights: `(slot, w)`.
    pub merge: Vec<(usize, f64)>,
    /// `general.name` (default: the source's).
    pub name: Option<String>,
    /// `general.finetune` (default: the source's).
    pub finetune: Option<String>,
    /// Recorded as `general.base_model.0.name` (what a merge was made from).
    pub base_model: Option<String>,
    /// Replace an existing file at the output path (never an input, never a folder).
    pub overwrite: bool,
}

impl Default for GgufOptions {
    fn default() -> Self {
        GgufOptions {
            file_type: FileType::F16,
            allow_requantize: false,
            merge: Vec::new(),
            name: None,
            finetune: None,
            base_model: None,
            overwrite: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeCount {
    pub tensors: usize,
    pub bytes: u64,
}

/// A tensor whose rows did not fit the type the mix wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub tensor: String,
    pub ncols: usize,
    pub wanted: GgmlDType,
    pub used: GgmlDType,
}

#[derive(Clone, Debug)]
pub struct GgufReport {
    pub path: PathBuf,
    pub file_type: FileType,
    /// Tensor count and bytes per stored type (`Q4_K`, `F32`, ...).
    pub types: BTreeMap<&'static str, TypeCount>,
    pub fallbacks: Vec<Fallback>,
    pub tensors: usize,
    /// Bytes of the source weights as held in memory.
    pub source_bytes: u64,
    pub out_bytes: u64,
    /// Tensors copied without re-encoding.
    pub copied: usize,
    /// Quantized tensors converted into another quantized type.
    pub requantized: usize,
    pub seconds: f64,
}

impl GgufReport {
    /// Throughput in MB/s of source weights.
    pub fn mb_per_s(&self) -> f64 {
        self.source_bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
}

/// One tensor's plan: where it comes from and what it becomes.
struct Planned<'a> {
    name: String,
    shape: Vec<usize>,
    dtype: GgmlDType,
    src: Option<Item<'a>>,
    /// For `rope_freqs.weight`, which is computed rather than stored in the model.
    owned: Option<Tensor>,
}

/// Write `loaded` (with the adapters in `opts.merge` folded in) as a GGUF file at `path`.
pub fn write_model(
    path: &Path,
    loaded: &Loaded,
    opts: &GgufOptions,
    progress: Progress<'_>,
) -> Result<GgufReport> {
    let start = std::time::Instant::now();
    crate::output::check(
        path,
        crate::output::Kind::File,
        &[&loaded.source.path],
        opts.overwrite,
    )?;
    let model = &loaded.model;
    let cfg = &model.config;
    let mix = MixModel {
        n_layers: cfg.num_layers,
        n_gqa: cfg.num_heads / cfg.num_kv_heads.max(1),
        tied_embeddings: cfg.tie_word_embeddings,
    };
    let mut report = GgufReport {
        path: path.to_path_buf(),
        file_type: opts.file_type,
        types: BTreeMap::new(),
        fallbacks: Vec::new(),
        tensors: 0,
        source_bytes: 0,
        out_bytes: 0,
        copied: 0,
        requantized: 0,
        seconds: 0.0,
    };
    let mut plan: Vec<Planned<'_>> = Vec::new();
    if let Some(f) = cfg.rope_freq_divisors() {
        plan.push(Planned {
            name: "rope_freqs.weight".into(),
            shape: vec![f.len()],
            dtype: GgmlDType::F32,
            src: None,
            owned: Some(Tensor::from_vec(f.clone(), f.len(), &Device::Cpu)?),
        });
    }
    for it in tensors(model) {
        let shape = it.shape();
        let ncols = shape.last().copied().unwrap_or(1);
        let choice = tensor_type(opts.file_type, &it.gguf_name, ncols, shape.len(), &mix);
        if let Some(wanted) = choice.fallback_from {
            report.fallbacks.push(Fallback {
                tensor: it.gguf_name.clone(),
                ncols,
                wanted,
                used: choice.dtype,
            });
        }
        if let Src::Matrix { weight, linear } = &it.src {
            report.source_bytes += weight.storage_bytes() as u64;
            let merged =
                linear.is_some_and(|l| opts.merge.iter().any(|&(s, _)| l.adapter(s).is_some()));
            if let (Some(stored), false) = (weight.ggml_dtype(), merged) {
                let target_quantized = !matches!(
                    choice.dtype,
                    GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
                );
                if stored == choice.dtype {
                    report.copied += 1;
                } else if target_quantized {
                    if !opts.allow_requantize {
                        return Err(Error::invalid(format!(
                            "tensor `{}` is already quantized ({}); making it {} would round its values twice. \
                             Pass --allow-requantize (allow_requantize) to do it anyway, or start from an \
                             F32/F16/BF16 model",
                            it.gguf_name,
                            dtype_name(stored),
                            dtype_name(choice.dtype)
                        )));
                    }
                    report.requantized += 1;
                }
            }
        } else if let Src::Vector(t) = &it.src {
            report.source_bytes += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        }
        plan.push(Planned {
            name: it.gguf_name.clone(),
            shape,
            dtype: choice.dtype,
            src: Some(it),
            owned: None,
        });
    }
    let headers: Vec<TensorHeader> = plan
        .iter()
        .map(|p| TensorHeader {
            name: p.name.clone(),
            shape: p.shape.clone(),
            dtype: p.dtype,
        })
        .collect();
    for h in &headers {
        let e = report.types.entry(dtype_name(h.dtype)).or_default();
        e.tensors += 1;
        e.bytes += h.byte_size()? as u64;
    }
    report.tensors = headers.len();
    report.out_bytes = report.types.values().map(|c| c.bytes).sum();
    let meta = metadata(loaded, opts)?;
    let total = plan.len();
    write_streaming(path, &meta, &headers, |i| {
        let p = &plan[i];
        let bytes = match (&p.src, &p.owned) {
            (_, Some(t)) => quantize_bytes(t, p.dtype)?,
            (Some(it), None) => encode(it, p.dtype, &opts.merge)
                .map_err(|e| e.context(format!("tensor `{}`", p.name)))?,
            (None, None) => return Err(Error::tensor(&p.name, "nothing to write")),
        };
        progress(i + 1, total, &p.name);
        Ok(Cow::Owned(bytes))
    })?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The stored bytes of one model tensor in `dtype`, GGUF layout.
fn encode(it: &Item<'_>, dtype: GgmlDType, merge: &[(usize, f64)]) -> Result<Vec<u8>> {
    match values(it, merge)? {
        Values::Quantized(q) if q.dtype() == dtype => {
            let data = q.data()?;
            Ok(match it.qk_heads {
                // A block never spans rows, so permuting whole rows of blocks is exact.
                Some(h) => names::permute_qk(&data, q.shape().dims()[0], h)
                    .map_err(|e| Error::tensor(&it.gguf_name, e))?,
                None => data.into_owned(),
            })
        }
        Values::Quantized(q) => {
            let t = q.dequantize(&Device::Cpu)?;
            let t = match it.qk_heads {
                Some(h) => permute_rows(&t, h)?,
                None => t,
            };
            quantize_bytes(&t, dtype)
        }
        Values::Dense(t) => {
            let t = match it.qk_heads {
                Some(h) => permute_rows(&t, h)?,
                None => t,
            };
            quantize_bytes(&t, dtype)
        }
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn u32v(v: usize) -> Value {
    Value::U32(v as u32)
}

/// All GGUF metadata for `loaded` under `opts`.
pub fn metadata(loaded: &Loaded, opts: &GgufOptions) -> Result<Vec<(String, Value)>> {
    let cfg = &loaded.model.config;
    let arch = cfg.arch.name();
    let mut m: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| {
        m.retain(|(key, _)| key != k);
        m.push((k.to_string(), v));
    };
    put("general.architecture", s(arch));
    put("general.type", s("model"));
    // The source's own general.* keys (license, basename, organization, ...) carry over.
    for (k, v) in &loaded.source.gguf_meta {
        let skip = [
            "general.architecture",
            "general.type",
            "general.file_type",
            "general.quantization_version",
            "general.alignment",
        ];
        if !skip.contains(&k.as_str()) {
            put(k, v.clone());
        }
    }
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| loaded.source.name.clone());
    put("general.name", s(&name));
    if !loaded
        .source
        .gguf_meta
        .iter()
        .any(|(k, _)| k == "general.basename")
    {
        put("general.basename", s(&loaded.source.name));
    }
    if let Some(f) = &opts.finetune {
        put("general.finetune", s(f));
    }
    if let Some(b) = &opts.base_model {
        put("general.base_model.count", Value::U32(1));
        put("general.base_model.0.name", s(b));
    }
    put(
        "general.file_type",
        Value::U32(opts.file_type.llama_ftype()),
    );
    put("general.quantization_version", Value::U32(2));
    let k = |key: &str| format!("{arch}.{key}");
    put(&k("context_length"), u32v(cfg.max_position_embeddings));
    put(&k("embedding_length"), u32v(cfg.hidden_size));
    put(&k("block_count"), u32v(cfg.num_layers));
    put(&k("feed_forward_length"), u32v(cfg.intermediate_size));
    put(&k("attention.head_count"), u32v(cfg.num_heads));
    put(&k("attention.head_count_kv"), u32v(cfg.num_kv_heads));
    put(
        &k("attention.layer_norm_rms_epsilon"),
        Value::F32(cfg.rms_norm_eps as f32),
    );
    put(&k("rope.freq_base"), Value::F32(cfg.rope_theta as f32));
    put(&k("rope.dimension_count"), u32v(cfg.head_dim));
    put(&k("vocab_size"), u32v(cfg.vocab_size));
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size {
        put(&k("attention.key_length"), u32v(cfg.head_dim));
        put(&k("attention.value_length"), u32v(cfg.head_dim));
    }
    if let Some(RopeScaling::Linear { factor }) = &cfg.rope_scaling {
        put(&k("rope.scaling.type"), s("linear"));
        put(&k("rope.scaling.factor"), Value::F32(*factor as f32));
    }
    for (key, v) in tokenizer_metadata(loaded)? {
        put(&key, v);
    }
    Ok(m)
}

/// `tokenizer.ggml.*` and `tokenizer.chat_template`. The vocabulary is padded with `[PAD{i}]`
/// tokens (type unused) up to the embedding's rows, as convert_hf_to_gguf.py does, since
/// llama.cpp sizes the embedding by the token count.
fn tokenizer_metadata(loaded: &Loaded) -> Result<Vec<(String, Value)>> {
    let tok = &loaded.tokenizer;
    let v = &tok.vocab;
    let n = loaded.model.config.vocab_size;
    if v.tokens.len() > n {
        return Err(Error::invalid(format!(
            "the tokenizer has {} tokens but the model's embedding only {n} rows",
            v.tokens.len()
        )));
    }
    let mut tokens = v.tokens.clone();
    let mut types = v.types.clone();
    types.resize(tokens.len(), 1);
    // Ids an HF vocabulary skips come out empty; llama.cpp wants every token to have text.
    for (i, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[PAD{i}]");
            types[i] = 5;
        }
    }
    let mut scores = v.scores.clone();
    for i in tokens.len()..n {
        tokens.push(format!("[PAD{i}]"));
        types.push(5);
        if let Some(sc) = scores.as_mut() {
            sc.push(0.0);
        }
    }
    if let Some(sc) = scores.as_mut() {
        sc.resize(n, 0.0);
    }
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), s(&v.model)),
        ("tokenizer.ggml.pre".into(), s(llama_cpp_pre(&v.pre))),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
    ];
    if let Some(sc) = scores {
        m.push((
            "tokenizer.ggml.scores".into(),
            Value::Array(sc.into_iter().map(Value::F32).collect()),
        ));
    }
    if let Some(mg) = &v.merges {
        m.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(mg.iter().cloned().map(Value::String).collect()),
        ));
    }
    // The chat template's end-of-turn token is the EOS: a fine-tuned chat model must stop there.
    let eot = end_of_turn(tok, loaded.template.as_ref());
    let eos = eot.or(tok.eos);
    if let Some(b) = tok.bos {
        m.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    if let Some(e) = eos {
        m.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
        m.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(e)));
    }
    if let Some(e) = eot {
        m.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(e)));
    }
    if let Some(u) = v.types.iter().position(|&t| t == 2) {
        m.push((
            "tokenizer.ggml.unknown_token_id".into(),
            Value::U32(u as u32),
        ));
    }
    m.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(tok.add_bos),
    ));
    m.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)));
    if v.model == "gpt2" {
        m.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)));
    }
    if let Some(t) = &loaded.template {
        m.push(("tokenizer.chat_template".into(), s(&t.source)));
    }
    Ok(m)
}

/// llama.cpp's name for a pre-tokenizer: it knows `gpt-2`, not `gpt2`.
fn llama_cpp_pre(pre: &str) -> &str {
    match pre {
        "gpt2" => "gpt-2",
        other => other,
    }
}

/// `ft quantize`: load a GGUF or HF folder and write it as a GGUF of `opts.file_type`.
pub fn quantize_file(
    input: &Path,
    out: &Path,
    opts: &GgufOptions,
    progress: Progress<'_>,
) -> Result<GgufReport> {
    crate::output::check(out, crate::output::Kind::File, &[input], opts.overwrite)?;
    let loaded = crate::model::load(input, &crate::model::LoadOptions::default())?;
    write_model(out, &loaded, opts, progress)
}
