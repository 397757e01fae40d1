//! Model -> Hugging Face folder: `config.json`, `model.safetensors` (or shards over a size
//! limit with `model.safetensors.index.json`), `tokenizer.json`, `tokenizer_config.json` (with
//! the chat template), `special_tokens_map.json` and `generation_config.json`, whose
//! `eos_token_id` lists the chat template's end-of-turn token first so the model stops.
//!
//! The folder is written as one transaction ([`crate::output`]): built complete under a
//! temporary sibling, fsynced, renamed into place; an existing destination is replaced only
//! when it is an earlier ft output and `overwrite` is set.

use super::{end_of_turn, tensors, values, Progress, Values};
use crate::error::{Error, Result};
use crate::model::Loaded;
use candle_core::{DType, Device};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct HfOptions {
    /// f16, bf16 or f32.
    pub dtype: DType,
    /// Start a new shard once one would grow past this many bytes (transformers' default: 5 GB).
    pub shard_bytes: u64,
    /// Adapter slots folded into the weights, with their weights: `(slot, w)`.
    pub merge: Vec<(usize, f64)>,
    /// Replace `dir` when it holds an earlier ft output (never anything else).
    pub overwrite: bool,
}

impl Default for HfOptions {
    fn default() -> Self {
        HfOptions {
            dtype: DType::F16,
            shard_bytes: 5_000_000_000,
            merge: Vec::new(),
            overwrite: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HfReport {
    pub dir: PathBuf,
    pub files: Vec<String>,
    pub tensors: usize,
    pub bytes: u64,
    /// What `generation_config.json` lists as `eos_token_id`.
    pub eos_token_ids: Vec<u32>,
    pub seconds: f64,
}

/// Parse `f16`, `bf16`, `f32` (also `float16`, `bfloat16`, `float32`).
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.to_ascii_lowercase().as_str() {
        "f16" | "float16" | "fp16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f32" | "float32" | "fp32" => Ok(DType::F32),
        _ => Err(Error::invalid(format!(
            "unknown dtype `{s}` (expected f16, bf16 or f32)"
        ))),
    }
}

fn torch_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bfloat16",
        DType::F32 => "float32",
        _ => "float16",
    }
}

/// Raw little-endian tensor bytes for the safetensors writer.
struct Raw {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Write `loaded` (with `opts.merge` folded in) as an HF folder at `dir`.
pub fn write_hf(
    dir: &Path,
    loaded: &Loaded,
    opts: &HfOptions,
    progress: Progress<'_>,
) -> Result<HfReport> {
    if !matches!(opts.dtype, DType::F16 | DType::BF16 | DType::F32) {
        return Err(Error::invalid(format!(
            "HF export dtype must be f16, bf16 or f32 (got {:?})",
            opts.dtype
        )));
    }
    let start = std::time::Instant::now();
    crate::output::check(
        dir,
        crate::output::Kind::Dir,
        &[&loaded.source.path],
        opts.overwrite,
    )?;
    let mut r = crate::output::write_dir(dir, "merged model (Hugging Face folder)", |tmp| {
        fill(tmp, loaded, opts, progress)
    })?;
    r.dir = dir.to_path_buf();
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

fn write_json(dir: &Path, file: &str, v: &serde_json::Value) -> Result<()> {
    let path = dir.join(file);
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

fn fill(dir: &Path, loaded: &Loaded, opts: &HfOptions, progress: Progress<'_>) -> Result<HfReport> {
    let model = &loaded.model;
    let tok = &loaded.tokenizer;
    let items = tensors(model);
    let esize = opts.dtype.size_in_bytes() as u64;
    let sizes: Vec<u64> = items
        .iter()
        .map(|it| it.shape().iter().product::<usize>() as u64 * esize)
        .collect();
    // Greedy shards in tensor order.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut cur = 0u64;
    for (i, &sz) in sizes.iter().enumerate() {
        let last = shards.len() - 1;
        if !shards[last].is_empty() && cur + sz > opts.shard_bytes {
            shards.push(Vec::new());
            cur = 0;
        }
        let last = shards.len() - 1;
        shards[last].push(i);
        cur += sz;
    }
    let n = shards.len();
    let st_dtype = match opts.dtype {
        DType::BF16 => safetensors::Dtype::BF16,
        DType::F32 => safetensors::Dtype::F32,
        _ => safetensors::Dtype::F16,
    };
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    let mut done = 0;
    for (si, shard) in shards.iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", si + 1)
        };
        let mut raws: Vec<(String, Raw)> = Vec::with_capacity(shard.len());
        for &i in shard {
            let it = &items[i];
            let t = match values(it, &opts.merge)
                .map_err(|e| e.context(format!("tensor `{}`", it.hf_name)))?
            {
                Values::Quantized(q) => q.dequantize(&Device::Cpu)?,
                Values::Dense(t) => t,
            };
            let t = t.to_dtype(opts.dtype)?.flatten_all()?;
            let data: Vec<u8> = match opts.dtype {
                DType::F32 => t
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                DType::BF16 => t
                    .to_vec1::<half::bf16>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                _ => t
                    .to_vec1::<half::f16>()?
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            };
            weight_map.insert(it.hf_name.clone(), serde_json::Value::String(file.clone()));
            raws.push((
                it.hf_name.clone(),
                Raw {
                    dtype: st_dtype,
                    shape: it.shape(),
                    data,
                },
            ));
            done += 1;
            progress(done, items.len(), &it.hf_name);
        }
        let path = dir.join(&file);
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        safetensors::serialize_to_file(
            raws.iter().map(|(k, r)| (k.as_str(), r)),
            Some(meta),
            &path,
        )
        .map_err(|e| Error::format(&path, format!("cannot write safetensors: {e}")))?;
        files.push(file);
    }
    let total: u64 = sizes.iter().sum();
    if n > 1 {
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(dir, "model.safetensors.index.json", &index)?;
        files.push("model.safetensors.index.json".into());
    }
    // Token ids: the template's end-of-turn token leads the EOS list.
    let eot = end_of_turn(tok, loaded.template.as_ref());
    let mut eos_ids: Vec<u32> = eot.into_iter().collect();
    for id in tok.eos.into_iter().chain(tok.stop.iter().copied()) {
        if !eos_ids.contains(&id) && (Some(id) == tok.eos || eot.is_none()) {
            eos_ids.push(id);
        }
    }
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    let mut config = model.config.to_hf_json();
    config["torch_dtype"] = serde_json::json!(torch_name(opts.dtype));
    if let Some(b) = tok.bos {
        config["bos_token_id"] = serde_json::json!(b);
    }
    if let Some(&e) = eos_ids.first() {
        config["eos_token_id"] = serde_json::json!(e);
    }
    write_json(dir, "config.json", &config)?;
    let mut gen = serde_json::json!({"_from_model_config": false, "eos_token_id": eos_ids});
    if let Some(b) = tok.bos {
        gen["bos_token_id"] = serde_json::json!(b);
    }
    if let Some(&e) = eos_ids.first() {
        gen["pad_token_id"] = serde_json::json!(e);
    }
    write_json(dir, "generation_config.json", &gen)?;
    let tjson = tok
        .hf()
        .to_string(true)
        .map_err(|e| Error::Tokenizer(format!("cannot serialise tokenizer.json: {e}")))?;
    let tpath = dir.join("tokenizer.json");
    std::fs::write(&tpath, tjson).map_err(|e| Error::io(&tpath, e))?;
    let eos_name = name(eos_ids.first().copied());
    let mut tc = serde_json::json!({
        "add_bos_token": tok.add_bos,
        "add_eos_token": false,
        "bos_token": name(tok.bos),
        "eos_token": eos_name,
        "pad_token": eos_name,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model.config.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(t) = &loaded.template {
        tc["chat_template"] = serde_json::json!(t.source);
    }
    write_json(dir, "tokenizer_config.json", &tc)?;
    let mut stm = serde_json::Map::new();
    if let Some(b) = name(tok.bos) {
        stm.insert("bos_token".into(), b.into());
    }
    if let Some(e) = eos_name {
        stm.insert("eos_token".into(), e.clone().into());
        stm.insert("pad_token".into(), e.into());
    }
    write_json(
        dir,
        "special_tokens_map.json",
        &serde_json::Value::Object(stm),
    )?;
    files.extend(
        [
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
        .map(String::from),
    );
    Ok(HfReport {
        dir: dir.to_path_buf(),
        files,
        tensors: items.len(),
        bytes: total,
        eos_token_ids: eos_ids,
        seconds: 0.0,
    })
}
