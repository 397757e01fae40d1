//! PEFT adapter -> GGUF LoRA adapter, as llama.cpp's convert_lora_to_gguf.py writes it and
//! `llama_adapter_lora_init` reads it: `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha` (f32), and per projection `blk.N.attn_q.weight.lora_a` with torch
//! shape (r, in) and `.lora_b` with (out, r).
//!
//! llama.cpp scales by alpha / r; for rsLoRA (alpha / √r) the stored alpha is scale·r so the
//! product is the same. For the llama architecture B's rows (the output rows) are permuted
//! like the base q/k weights; A is untouched.

use crate::error::{Error, Result};
use crate::gguf::write::{write, TensorOut};
use crate::gguf::{GgufFile, Value};
use crate::lora::TargetModule;
use crate::model::{names, peft, Arch, Config};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Tensor};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub path: PathBuf,
    pub arch: &'static str,
    /// A/B pairs written.
    pub pairs: usize,
    pub rank: usize,
    /// What PEFT multiplies B·A by.
    pub scale: f64,
    /// The `adapter.lora.alpha` stored (scale · r).
    pub alpha: f64,
    pub rslora: bool,
    pub dtype: GgmlDType,
}

/// The base model's config and name, from a GGUF file or an HF folder (weights are not read).
fn base_config(base: &Path) -> Result<(Config, String)> {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base.is_dir() {
        Ok((Config::from_hf_json(&base.join("config.json"))?, stem))
    } else {
        let f = GgufFile::open(base)?;
        let name = f.get_str("general.name").map(String::from).unwrap_or(stem);
        Ok((Config::from_gguf(&f)?, name))
    }
}

/// Write the PEFT adapter in `adapter_dir` (trained on `base`) as a GGUF LoRA at `out`,
/// replacing an existing file there only when `overwrite` (never an input, never inside the
/// adapter folder: see [`crate::output`]).
pub fn export_adapter(
    adapter_dir: &Path,
    base: &Path,
    out: &Path,
    dtype: GgmlDType,
    overwrite: bool,
) -> Result<AdapterReport> {
    if !matches!(dtype, GgmlDType::F32 | GgmlDType::F16) {
        return Err(Error::invalid("adapter tensors are written as F32 or F16"));
    }
    crate::output::check(
        out,
        crate::output::Kind::File,
        &[adapter_dir, base],
        overwrite,
    )?;
    let (cfg, base_name) = base_config(base)?;
    let (pcfg, tensors) = peft::read(adapter_dir)?;
    let lcfg = pcfg.lora_config();
    let scale = lcfg.scale();
    let alpha = scale * lcfg.r as f64;
    let mut used = std::collections::HashSet::new();
    let mut out_tensors: Vec<TensorOut<'static>> = Vec::new();
    for i in 0..cfg.num_layers {
        for short in TargetModule::ALL.iter().map(|m| m.as_str()) {
            let find = |ab: &str| {
                let n = peft::tensor_name(i, short, ab);
                let alt = n.replace(".weight", ".default.weight");
                tensors
                    .get_key_value(&n)
                    .or_else(|| tensors.get_key_value(&alt))
                    .map(|(k, v)| (k.clone(), v))
            };
            let (a, b) = match (find("A"), find("B")) {
                (None, None) => continue,
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(Error::format(
                        adapter_dir,
                        format!("layer {i} {short}: only one of lora_A / lora_B is present"),
                    ))
                }
            };
            used.insert(a.0.clone());
            used.insert(b.0.clone());
            let module = peft::module_name(i, short);
            // rank_pattern / alpha_pattern give some modules their own r and alpha; llama.cpp
            // scales each tensor by the one stored alpha over that tensor's rank.
            let (r, _) = pcfg.module_rank_alpha(&module)?;
            let (fin, fout) = cfg.proj_shape(short).unwrap_or((0, 0));
            if a.1.dims() != [r, fin] || b.1.dims() != [fout, r] {
                return Err(Error::format(
                    adapter_dir,
                    format!(
                        "`{}` has A {:?} / B {:?}; the base ({}) needs A ({}, {fin}) / B ({fout}, {}) (wrong --base?)",
                        a.0,
                        a.1.dims(),
                        b.1.dims(),
                        base.display(),
                        r,
                        r
                    ),
                ));
            }
            let a_t = a.1.to_dtype(DType::F32)?;
            let mut b_t = b.1.to_dtype(DType::F32)?;
            // What llama.cpp will apply here vs what PEFT applies: fold the ratio into B.
            let wanted = pcfg.module_scale(&module)?;
            let applied = alpha / r as f64;
            if (wanted - applied).abs() > 1e-12 * wanted.abs().max(1.0) {
                b_t = (b_t * (wanted / applied))?;
            }
            if cfg.arch == Arch::Llama {
                match short {
                    "q_proj" => b_t = super::permute_rows(&b_t, cfg.num_heads)?,
                    "k_proj" => b_t = super::permute_rows(&b_t, cfg.num_kv_heads)?,
                    _ => {}
                }
            }
            let gname = names::hf_to_gguf(&names::layer(i, names::proj_path(short), "weight"))
                .ok_or_else(|| Error::invalid(format!("no GGUF name for layer {i} {short}")))?;
            for (suffix, t) in [("lora_a", a_t), ("lora_b", b_t)] {
                out_tensors.push(TensorOut {
                    name: format!("{gname}.{suffix}"),
                    shape: t.dims().to_vec(),
                    dtype,
                    data: Cow::Owned(super::quantize_bytes(&t, dtype)?),
                });
            }
        }
    }
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !used.contains(*k)).collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(Error::Unsupported(format!(
            "{}: adapter tensor `{}`{} is not a LoRA A/B on a q/k/v/o/gate/up/down projection of this base \
             (embedding/lm_head adapters and modules_to_save cannot be exported)",
            adapter_dir.display(),
            extra[0],
            if extra.len() > 1 { format!(" and {} more", extra.len() - 1) } else { String::new() }
        )));
    }
    if out_tensors.is_empty() {
        return Err(Error::format(
            adapter_dir,
            "no LoRA tensors match the base model's layers",
        ));
    }
    let name = adapter_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "adapter".into());
    let meta: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String(cfg.arch.name().into()),
        ),
        ("general.type".into(), Value::String("adapter".into())),
        ("general.name".into(), Value::String(name)),
        ("general.base_model.count".into(), Value::U32(1)),
        ("general.base_model.0.name".into(), Value::String(base_name)),
        (
            "general.file_type".into(),
            Value::U32(if dtype == GgmlDType::F16 { 1 } else { 0 }),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
        ("adapter.type".into(), Value::String("lora".into())),
        ("adapter.lora.alpha".into(), Value::F32(alpha as f32)),
    ];
    write(out, &meta, &out_tensors)?;
    Ok(AdapterReport {
        path: out.to_path_buf(),
        arch: cfg.arch.name(),
        pairs: out_tensors.len() / 2,
        rank: lcfg.r,
        scale,
        alpha,
        rslora: lcfg.rslora,
        dtype,
    })
}

/// One adapted tensor of a GGUF LoRA: (base GGUF tensor name, A (r, in), B (out, r)).
pub type AdapterTensor = (String, Tensor, Tensor);

/// Read a GGUF LoRA back as (alpha, tensors), B rows in GGUF layout. For checks and tests.
pub fn read_adapter(path: &Path) -> Result<(f64, Vec<AdapterTensor>)> {
    let f = GgufFile::open(path)?;
    if f.get_str("general.type") != Some("adapter") || f.get_str("adapter.type") != Some("lora") {
        return Err(Error::format(
            path,
            "not a GGUF LoRA adapter (general.type / adapter.type)",
        ));
    }
    let alpha = f
        .get_f64("adapter.lora.alpha")
        .ok_or_else(|| Error::format(path, "adapter.lora.alpha is missing"))?;
    let dev = candle_core::Device::Cpu;
    let mut out = Vec::new();
    for t in &f.tensors {
        if let Some(base) = t.name.strip_suffix(".lora_a") {
            let a = f.qtensor(&t.name, &dev)?.dequantize(&dev)?;
            let b = f
                .qtensor(&format!("{base}.lora_b"), &dev)?
                .dequantize(&dev)?;
            out.push((base.to_string(), a, b));
        }
    }
    Ok((alpha, out))
}
