//! Loaders: a GGUF file or a Hugging Face folder -> [`Llama`] + tokenizer + chat template.
//!
//! GGUF weights stay in their stored (quantized) form; llama-architecture q/k rows are
//! un-permuted to HF layout row-by-row, which works on quantized blocks too because a block
//! never spans rows. HF safetensors weights (f32/f16/bf16) are quantized on load when asked
//! (`quantize`), so a 7B base fits in memory the way QLoRA intends.

use super::config::{Arch, Config, RopeScaling};
use super::names;
use super::{Llama, WeightSource};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::quant::FrozenWeight;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub device: Device,
    /// In-memory form of weights that arrive unquantized (HF folders); None keeps them dense.
    pub quantize: Option<GgmlDType>,
    /// Context to prepare RoPE tables for; None = the model's own (capped at 8192).
    pub max_positions: Option<usize>,
    /// PEFT adapter folders, loaded into slots 0, 1, ...
    pub adapters: Vec<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            quantize: None,
            max_positions: None,
            adapters: Vec::new(),
        }
    }
}

/// Where a model came from, for `ft info` and reports.
#[derive(Clone, Debug)]
pub struct ModelSource {
    pub path: PathBuf,
    pub format: &'static str,
    /// GGUF `general.name` or the folder name.
    pub name: String,
    /// Raw GGUF metadata kept for export (license, basename, ...); empty for HF.
    pub gguf_meta: Vec<(String, crate::gguf::Value)>,
}

pub struct Loaded {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub source: ModelSource,
}

/// Load a model from a GGUF file or an HF folder.
pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Loaded> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mut loaded = if meta.is_dir() {
        load_hf(path, opts)?
    } else {
        load_gguf(path, opts)?
    };
    for (slot, dir) in opts.adapters.iter().enumerate() {
        super::peft::load_into(&mut loaded.model, slot, dir)?;
    }
    Ok(loaded)
}

/// The longest context ft prepares (RoPE tables, KV cache): 1M tokens. A larger `--ctx` or
/// `dataset.max_seq_len` is refused before anything is allocated.
pub const MAX_POSITIONS: usize = 1 << 20;

fn positions(cfg: &Config, opts: &LoadOptions) -> Result<usize> {
    let n = opts
        .max_positions
        .unwrap_or_else(|| cfg.max_position_embeddings.min(8192))
        .max(1);
    if n > MAX_POSITIONS {
        return Err(Error::invalid(format!(
            "a context of {n} tokens is more than ft supports ({MAX_POSITIONS})"
        )));
    }
    Ok(n)
}

pub fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Loaded> {
    let file = GgufFile::open(path)?;
    let mut config = Config::from_gguf(&file)?;
    if let Some(info) = file.tensor_info("rope_freqs.weight") {
        // One divisor per rotated pair; checked before the values are expanded to f32.
        if info.elem_count() != config.head_dim / 2 {
            return Err(Error::tensor(
                "rope_freqs.weight",
                format!(
                    "{} values; head_dim {} needs {}",
                    info.elem_count(),
                    config.head_dim,
                    config.head_dim / 2
                ),
            )
            .context(path.display().to_string()));
        }
        let f = file
            .qtensor("rope_freqs.weight", &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        config.rope_scaling = Some(RopeScaling::Factors {
            factors: f.flatten_all()?.to_vec1::<f32>()?,
        });
    }
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = match file.get_str("tokenizer.chat_template") {
        Some(src) => Some(ChatTemplate::from_origin(
            src,
            &tokenizer,
            &format!("tokenizer.chat_template of {}", path.display()),
        )?),
        None => None,
    };
    let mut src = GgufSource {
        file: &file,
        config: &config,
        device: opts.device.clone(),
    };
    let model = Llama::new(
        config.clone(),
        &mut src,
        positions(&config, opts)?,
        &opts.device,
    )
    .map_err(|e| e.context(path.display().to_string()))?;
    let name = file
        .get_str("general.name")
        .map(String::from)
        .unwrap_or_else(|| stem(path));
    let gguf_meta = file
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("general."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Loaded {
        model,
        tokenizer,
        template,
        source: ModelSource {
            path: path.to_path_buf(),
            format: "gguf",
            name,
            gguf_meta,
        },
    })
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .or_else(|| path.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct GgufSource<'a> {
    file: &'a GgufFile,
    config: &'a Config,
    device: Device,
}

impl WeightSource for GgufSource<'_> {
    fn get(&mut self, name: &str) -> Result<Option<FrozenWeight>> {
        let Some(gname) = names::hf_to_gguf(name) else {
            return Ok(None);
        };
        let Some(info) = self.file.tensor_info(&gname) else {
            return Ok(None);
        };
        let bytes = self.file.tensor_bytes(info);
        let shape = info.shape();
        let short = name.split('.').rev().nth(1).unwrap_or("");
        let is_qk = matches!(short, "q_proj" | "k_proj");
        let bytes = if self.config.arch == Arch::Llama && is_qk {
            // The shape must be the config's before rows are moved by head (defect: a crafted
            // row count divided by zero or indexed past the end in the permutation).
            let (fin, fout) = self.config.proj_shape(short).unwrap_or((0, 0));
            let kind = name.rsplit('.').next().unwrap_or("");
            let want = if kind == "bias" {
                vec![fout]
            } else {
                vec![fout, fin]
            };
            if shape != want {
                return Err(Error::tensor(
                    name,
                    format!("shape {shape:?} does not match the config ({want:?})"),
                ));
            }
            let n_head = if short == "q_proj" {
                self.config.num_heads
            } else {
                self.config.num_kv_heads
            };
            std::borrow::Cow::Owned(
                names::unpermute_qk(bytes, shape[0], n_head).map_err(|e| Error::tensor(name, e))?,
            )
        } else {
            std::borrow::Cow::Borrowed(bytes)
        };
        let q = qtensor_from_ggml(info.dtype, &bytes, shape, &self.device)
            .map_err(|e| Error::format(&self.file.path, format!("tensor `{gname}`: {e}")))?;
        Ok(Some(match info.dtype {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                FrozenWeight::Dense(q.dequantize(&self.device)?)
            }
            _ => FrozenWeight::Quantized(Arc::new(q)),
        }))
    }
}

pub fn load_hf(dir: &Path, opts: &LoadOptions) -> Result<Loaded> {
    let config = Config::from_hf_json(&dir.join("config.json"))?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let template = ChatTemplate::from_hf_dir(dir, &tokenizer)?;
    let files = safetensors_files(dir)?;
    // SAFETY: read-only maps of files ft does not modify while loaded.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }
        .map_err(|e| Error::format(dir, format!("cannot read safetensors: {e}")))?;
    let mut src = HfSource {
        st: &st,
        quantize: opts.quantize,
        device: opts.device.clone(),
        dir,
    };
    let model = Llama::new(
        config.clone(),
        &mut src,
        positions(&config, opts)?,
        &opts.device,
    )
    .map_err(|e| e.context(dir.display().to_string()))?;
    Ok(Loaded {
        model,
        tokenizer,
        template,
        source: ModelSource {
            path: dir.to_path_buf(),
            format: "hf",
            name: stem(dir),
            gguf_meta: Vec::new(),
        },
    })
}

/// `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|_| {
        Error::format(
            dir,
            "no model.safetensors and no model.safetensors.index.json in this folder",
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(&index, format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::format(&index, "missing `weight_map`"))?;
    // Shards live in the folder: a name like `../../x` or `/x` would read files elsewhere.
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|f| f.as_str())
        .map(|f| {
            let inside = !f.is_empty()
                && Path::new(f)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if inside {
                Ok(dir.join(f))
            } else {
                Err(Error::format(
                    &index,
                    format!("shard `{f}` is not a file name inside the folder"),
                ))
            }
        })
        .collect::<Result<_>>()?;
    files.sort();
    files.dedup();
    for f in &files {
        if !f.exists() {
            return Err(Error::format(
                &index,
                format!("shard {} is missing", f.display()),
            ));
        }
    }
    Ok(files)
}

struct HfSource<'a> {
    st: &'a candle_core::safetensors::MmapedSafetensors,
    quantize: Option<GgmlDType>,
    device: Device,
    dir: &'a Path,
}

impl WeightSource for HfSource<'_> {
    fn get(&mut self, name: &str) -> Result<Option<FrozenWeight>> {
        if self.st.get(name).is_err() {
            return Ok(None);
        }
        let t = self
            .st
            .load(name, &self.device)
            .map_err(|e| Error::format(self.dir, format!("tensor `{name}`: {e}")))?
            .to_dtype(DType::F32)?;
        // Matrices are quantized when asked; norms and biases stay f32.
        match self.quantize {
            Some(want) if t.rank() == 2 => {
                let qt = crate::quant::types::fallback_qtype(t.dim(1)?, want);
                Ok(Some(FrozenWeight::quantize(&t, qt)?))
            }
            _ => Ok(Some(FrozenWeight::Dense(t))),
        }
    }
}
