//! Hugging Face PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors` with
//! tensors named `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (r, in) and
//! `...lora_B.weight` (out, r), so adapters move between ft and PEFT unchanged.

use super::{Lora, LoraConfig};
use crate::error::{Error, Result};
use crate::model::{names, Llama};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The fields of PEFT's `adapter_config.json` that ft reads and writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeftConfig {
    #[serde(default = "lora_type")]
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "none_str")]
    pub bias: String,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default = "yes")]
    pub inference_mode: bool,
}

fn lora_type() -> String {
    "LORA".into()
}
fn none_str() -> String {
    "none".into()
}
fn yes() -> bool {
    true
}

/// PEFT allows a list or a single string (`all-linear`, or a regex).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    One(String),
}

impl PeftConfig {
    pub fn from_lora(cfg: &LoraConfig, base: &str) -> Self {
        PeftConfig {
            peft_type: "LORA".into(),
            r: cfg.r,
            lora_alpha: cfg.alpha,
            lora_dropout: cfg.dropout,
            target_modules: TargetModules::List(cfg.target_modules.clone()),
            use_rslora: cfg.rslora,
            base_model_name_or_path: Some(base.to_string()),
            bias: "none".into(),
            task_type: Some("CAUSAL_LM".into()),
            fan_in_fan_out: false,
            inference_mode: true,
        }
    }

    pub fn lora_config(&self) -> LoraConfig {
        let targets = match &self.target_modules {
            TargetModules::List(v) => v.clone(),
            TargetModules::One(s) if s == "all-linear" => {
                super::ALL_TARGETS.iter().map(|s| s.to_string()).collect()
            }
            TargetModules::One(s) => vec![s.clone()],
        };
        LoraConfig {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules: targets,
            rslora: self.use_rslora,
        }
    }
}

/// PEFT's tensor name for layer `i`, projection `short` (`q_proj`), matrix `ab` (`A`/`B`).
pub fn tensor_name(i: usize, short: &str, ab: &str) -> String {
    format!(
        "base_model.model.model.layers.{i}.{}.lora_{ab}.weight",
        names::proj_path(short)
    )
}

/// Write the adapter in slot `slot` of `model` as a PEFT folder (atomic per file).
pub fn save(model: &Llama, slot: usize, cfg: &LoraConfig, base: &str, dir: &Path) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (i, block) in model.blocks.iter().enumerate() {
        for (short, lin) in block.linears() {
            if let Some(l) = lin.adapter(slot) {
                tensors.push((
                    tensor_name(i, short, "A"),
                    l.a.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
                ));
                tensors.push((
                    tensor_name(i, short, "B"),
                    l.b.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
                ));
            }
        }
    }
    if tensors.is_empty() {
        return Err(Error::invalid(format!("no adapter in slot {slot} to save")));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".{WEIGHTS_FILE}.tmp"));
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, &tmp).map_err(|e| Error::format(&tmp, e.to_string()))?;
    let dest = dir.join(WEIGHTS_FILE);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    let json = serde_json::to_string_pretty(&PeftConfig::from_lora(cfg, base))?;
    crate::error::write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
}

/// Read a PEFT folder: its config and tensors by name.
pub fn read(dir: &Path) -> Result<(PeftConfig, HashMap<String, Tensor>)> {
    let cpath = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cpath).map_err(|e| Error::io(&cpath, e))?;
    let cfg: PeftConfig = serde_json::from_str(&text)
        .map_err(|e| Error::format(&cpath, format!("not a PEFT adapter config: {e}")))?;
    if cfg.peft_type != "LORA" {
        return Err(Error::Unsupported(format!(
            "{}: peft_type `{}` (ft reads LORA adapters)",
            cpath.display(),
            cfg.peft_type
        )));
    }
    let wpath = dir.join(WEIGHTS_FILE);
    if !wpath.exists() {
        return Err(Error::format(dir, format!("{WEIGHTS_FILE} is missing")));
    }
    let tensors = candle_core::safetensors::load(&wpath, &Device::Cpu)
        .map_err(|e| Error::format(&wpath, e.to_string()))?;
    Ok((cfg, tensors))
}

/// Load a PEFT adapter folder into adapter slot `slot` of `model`.
pub fn load_into(model: &mut Llama, slot: usize, dir: &Path) -> Result<LoraConfig> {
    let (pcfg, tensors) = read(dir)?;
    let cfg = pcfg.lora_config();
    let device = model.device.clone();
    let mut found = 0;
    for (i, block) in model.blocks.iter_mut().enumerate() {
        for (short, lin) in block.linears_mut() {
            let an = tensor_name(i, short, "A");
            let bn = tensor_name(i, short, "B");
            // PEFT sometimes keeps the adapter name in the key (`lora_A.default.weight`).
            let get = |n: &str| {
                tensors
                    .get(n)
                    .or_else(|| tensors.get(&n.replace(".weight", ".default.weight")))
            };
            match (get(&an), get(&bn)) {
                (Some(a), Some(b)) => {
                    let (fin, fout) = lin.features();
                    if a.dims() != [cfg.r, fin] || b.dims() != [fout, cfg.r] {
                        return Err(Error::format(
                            dir,
                            format!(
                                "adapter `{an}` has shapes {:?}/{:?}, the base layer needs ({}, {fin})/({fout}, {})",
                                a.dims(),
                                b.dims(),
                                cfg.r,
                                cfg.r
                            ),
                        ));
                    }
                    lin.set_adapter(
                        slot,
                        Some(Lora {
                            a: a.to_dtype(DType::F32)?.to_device(&device)?,
                            b: b.to_dtype(DType::F32)?.to_device(&device)?,
                            scale: cfg.scale(),
                            dropout: 0.0,
                            salt: 0,
                        }),
                    );
                    found += 1;
                }
                (None, None) => lin.set_adapter(slot, None),
                _ => {
                    return Err(Error::format(
                        dir,
                        format!("adapter has only one of lora_A/lora_B for `{an}`"),
                    ))
                }
            }
        }
    }
    if found == 0 {
        return Err(Error::format(
            dir,
            "no LoRA tensors match this base model's layers (is it an adapter for another model?)",
        ));
    }
    Ok(cfg)
}
