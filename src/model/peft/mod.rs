//! Hugging Face PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors` with
//! tensors named `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (r, in) and
//! `...lora_B.weight` (out, r), so adapters move between ft and PEFT unchanged.
//!
//! Checked against PEFT itself by `tests/peft_check.py` (both directions, same NLL and greedy
//! tokens as PyTorch). Reading follows PEFT: `target_modules` may be short names, full module
//! paths (what `all-linear` is saved as) or `all-linear`; `rank_pattern` / `alpha_pattern` give
//! single layers their own r / alpha. What ft cannot apply (DoRA, LoRA on `lm_head` or the
//! embeddings, `modules_to_save`, LoRA biases) is an error, never silently dropped.

mod config;

pub use config::{Pattern, PeftConfig, PeftTargets};

use super::{names, Llama};
use crate::error::{Error, Result};
use crate::lora::{Lora, LoraConfig};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The HF module path of projection `short` in layer `i`: `model.layers.0.self_attn.q_proj`.
pub fn module_name(i: usize, short: &str) -> String {
    format!("model.layers.{i}.{}", names::proj_path(short))
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
    crate::output::write_bytes(&dir.join(CONFIG_FILE), json.as_bytes())
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
    if cfg.use_dora {
        return Err(Error::Unsupported(format!(
            "{}: a DoRA adapter (use_dora); ft reads plain LoRA",
            cpath.display()
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

/// Load a PEFT adapter folder into adapter slot `slot` of `model`. Every tensor in the file
/// must land on a layer: an adapter ft would apply only in part is an error.
pub fn load_into(model: &mut Llama, slot: usize, dir: &Path) -> Result<LoraConfig> {
    let (pcfg, tensors) = read(dir)?;
    let cfg = pcfg.lora_config();
    let device = model.device.clone();
    let mut used = std::collections::HashSet::new();
    for (i, block) in model.blocks.iter_mut().enumerate() {
        for (short, lin) in block.linears_mut() {
            let an = tensor_name(i, short, "A");
            let bn = tensor_name(i, short, "B");
            // PEFT sometimes keeps the adapter name in the key (`lora_A.default.weight`).
            let get = |n: &str| {
                tensors.get_key_value(n).or_else(|| {
                    tensors.get_key_value(n.replace(".weight", ".default.weight").as_str())
                })
            };
            match (get(&an), get(&bn)) {
                (Some((ak, a)), Some((bk, b))) => {
                    let module = module_name(i, short);
                    let (r, _) = pcfg.module_rank_alpha(&module)?;
                    let (fin, fout) = lin.features();
                    if a.dims() != [r, fin] || b.dims() != [fout, r] {
                        return Err(Error::format(
                            dir,
                            format!(
                                "adapter `{an}` has shapes {:?}/{:?}, the base layer needs ({r}, {fin})/({fout}, {r})",
                                a.dims(),
                                b.dims(),
                            ),
                        ));
                    }
                    lin.set_adapter(
                        slot,
                        Some(Lora {
                            a: a.to_dtype(DType::F32)?.to_device(&device)?,
                            b: b.to_dtype(DType::F32)?.to_device(&device)?,
                            scale: pcfg.module_scale(&module)?,
                            dropout: 0.0,
                            salt: 0,
                        }),
                    );
                    used.insert(ak.clone());
                    used.insert(bk.clone());
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
    if used.is_empty() {
        return Err(Error::format(
            dir,
            "no LoRA tensors match this base model's layers (is it an adapter for another model?)",
        ));
    }
    let mut left: Vec<&String> = tensors.keys().filter(|k| !used.contains(*k)).collect();
    if !left.is_empty() {
        left.sort();
        return Err(Error::Unsupported(format!(
            "{}: {} adapter tensor(s) ft cannot apply, e.g. `{}` (ft applies LoRA A/B to the q/k/v/o/gate/up/down projections of this model's {} layers)",
            dir.display(),
            left.len(),
            left[0],
            model.blocks.len()
        )));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_adapter(dir: &Path, cfg: serde_json::Value, tensors: Vec<(String, Tensor)>) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), cfg.to_string()).unwrap();
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, dir.join(WEIGHTS_FILE)).unwrap();
    }

    /// Random A (r, in) and B (out, r) for every projection of the tiny model, rank per module.
    fn all_tensors(model: &Llama, rank: impl Fn(usize, &str) -> usize) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        for (i, block) in model.blocks.iter().enumerate() {
            for (short, lin) in block.linears() {
                let (fin, fout) = lin.features();
                let r = rank(i, short);
                let a = Tensor::randn(0f32, 1.0, (r, fin), &Device::Cpu).unwrap();
                let b = Tensor::randn(0f32, 1.0, (fout, r), &Device::Cpu).unwrap();
                v.push((tensor_name(i, short, "A"), a));
                v.push((tensor_name(i, short, "B"), b));
            }
        }
        v
    }

    #[test]
    fn rank_and_alpha_patterns_give_each_layer_its_rank_and_scale() {
        let mut model = crate::testing::tiny_model(1, None).unwrap();
        let c: PeftConfig = serde_json::from_value(config::tests::peft_021_config()).unwrap();
        let tensors = all_tensors(&model, |i, s| {
            c.module_rank_alpha(&module_name(i, s)).unwrap().0
        });
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), config::tests::peft_021_config(), tensors);
        load_into(&mut model, 0, dir.path()).unwrap();
        for (i, block) in model.blocks.iter().enumerate() {
            for (short, lin) in block.linears() {
                let l = lin.adapter(0).unwrap();
                let (r, alpha) = c.module_rank_alpha(&module_name(i, short)).unwrap();
                assert_eq!(l.a.dims()[0], r);
                assert_eq!(l.scale, alpha / r as f64, "layer {i} {short}");
            }
        }
        let l = model.blocks[0].linears()[2].1.adapter(0).unwrap(); // v_proj: alpha 32, r 4
        assert_eq!(l.scale, 8.0);
    }

    #[test]
    fn what_ft_cannot_apply_is_an_error() {
        let model = crate::testing::tiny_model(1, None).unwrap();
        let cfg = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
            "target_modules": ["q_proj", "lm_head"]});
        // LoRA on lm_head (or the embeddings, modules_to_save, a LoRA bias): not dropped.
        let mut t = all_tensors(&model, |_, _| 4);
        t.push((
            "base_model.model.lm_head.lora_A.weight".into(),
            Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap(),
        ));
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), cfg.clone(), t);
        let mut m = crate::testing::tiny_model(1, None).unwrap();
        let e = load_into(&mut m, 0, dir.path()).unwrap_err().to_string();
        assert!(e.contains("lm_head") && e.contains("cannot apply"), "{e}");
        // DoRA.
        let mut dora = cfg;
        dora["use_dora"] = serde_json::json!(true);
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), dora, all_tensors(&model, |_, _| 4));
        let e = load_into(&mut m, 0, dir.path()).unwrap_err().to_string();
        assert!(e.contains("DoRA"), "{e}");
        // A layer whose rank disagrees with the config.
        let dir = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
            "target_modules": "all-linear"});
        write_adapter(dir.path(), cfg, all_tensors(&model, |i, _| 4 + i));
        let e = load_into(&mut m, 0, dir.path()).unwrap_err().to_string();
        assert!(e.contains("shapes"), "{e}");
    }
}
