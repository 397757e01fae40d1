//! Hugging Face PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors` with
//! tensors named `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` (r, in) and
//! `...lora_B.weight` (out, r), so adapters move between ft and PEFT unchanged.
//!
//! Checked against PEFT itself by `tests/peft_check.py` (both directions, same NLL and greedy
//! tokens as PyTorch). Reading follows PEFT: `target_modules` may be short names, full module
//! paths (what `all-linear` is saved as) or `all-linear`; `rank_pattern` / `alpha_pattern` give
//! single layers their own r / alpha. What ft cannot apply (DoRA, LoRA on `lm_head` or the
//! embeddings, `modules_to_save`, LoRA biases) is an error, never silently dropped.

use super::{names, Llama};
use crate::error::{Error, Result};
use crate::lora::{Lora, LoraConfig, TargetModule, TargetModules};
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
    pub target_modules: PeftTargets,
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
    /// Per-module rank: PEFT module-name pattern -> r (first matching key wins).
    #[serde(default, skip_serializing_if = "Pattern::is_empty")]
    pub rank_pattern: Pattern,
    /// Per-module alpha: PEFT module-name pattern -> alpha.
    #[serde(default, skip_serializing_if = "Pattern::is_empty")]
    pub alpha_pattern: Pattern,
    /// DoRA (weight-decomposed LoRA); ft does not implement it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_dora: bool,
}

/// PEFT's `rank_pattern` / `alpha_pattern`: a JSON object whose keys are module-name patterns,
/// kept in file order because PEFT uses the first key that matches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pattern(pub Vec<(String, f64)>);

impl Pattern {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value for `module` (`model.layers.3.mlp.down_proj`), as PEFT's `get_pattern_key`:
    /// key `k` matches when the module name matches the regex `(.*\.)?(k)$`. ft takes keys as
    /// literal dotted names (what PEFT's docs show); a key with other regex syntax is an error.
    pub fn lookup(&self, module: &str) -> Result<Option<f64>> {
        for (k, v) in &self.0 {
            if k.chars().any(|c| "\\^$*+?()[]{}|".contains(c)) {
                return Err(Error::Unsupported(format!(
                    "adapter_config.json: pattern key `{k}` is a regular expression; ft matches literal module names (`down_proj`, `model.layers.0.mlp.down_proj`)"
                )));
            }
            if module == k || module.ends_with(&format!(".{k}")) {
                return Ok(Some(*v));
            }
        }
        Ok(None)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pattern;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of module pattern -> number")
            }
            fn visit_unit<E>(self) -> std::result::Result<Pattern, E> {
                Ok(Pattern::default())
            }
            fn visit_none<E>(self) -> std::result::Result<Pattern, E> {
                Ok(Pattern::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Pattern, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, f64>()? {
                    v.push((k, x));
                }
                Ok(Pattern(v))
            }
        }
        d.deserialize_any(V)
    }
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

/// PEFT's `target_modules`: a list, or a single string (`all-linear`, or a regex).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PeftTargets {
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
            target_modules: PeftTargets::List(
                cfg.target_modules
                    .modules()
                    .iter()
                    .map(|m| m.as_str().to_string())
                    .collect(),
            ),
            use_rslora: cfg.rslora,
            base_model_name_or_path: Some(base.to_string()),
            bias: "none".into(),
            task_type: Some("CAUSAL_LM".into()),
            fan_in_fan_out: false,
            inference_mode: true,
            rank_pattern: Pattern::default(),
            alpha_pattern: Pattern::default(),
            use_dora: false,
        }
    }

    /// The adapter-wide settings. `target_modules` comes back as ft's module names: PEFT saves
    /// `all-linear` as the full paths it resolved (`model.layers.0.self_attn.q_proj`, ...).
    /// Names ft has no layer for (`lm_head`, a regex) are left out here; loading checks that
    /// every tensor in the file lands on a layer, so nothing is dropped silently.
    /// `r` and `alpha` are the defaults; [`PeftConfig::module_rank_alpha`] has each layer's.
    pub fn lora_config(&self) -> LoraConfig {
        let short = |t: &str| t.rsplit('.').next().unwrap_or(t).to_string();
        let names: Vec<String> = match &self.target_modules {
            PeftTargets::One(s) if s == "all-linear" => vec![],
            PeftTargets::One(s) => vec![short(s)],
            PeftTargets::List(v) => v.iter().map(|t| short(t)).collect(),
        };
        let listed: Vec<TargetModule> = TargetModule::ALL
            .iter()
            .copied()
            .filter(|m| names.iter().any(|n| n == m.as_str()))
            .collect();
        let target_modules = match &self.target_modules {
            PeftTargets::One(s) if s == "all-linear" => TargetModules::AllLinear,
            _ if listed.len() == TargetModule::ALL.len() => TargetModules::AllLinear,
            _ => TargetModules::List(listed),
        };
        LoraConfig {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules,
            rslora: self.use_rslora,
        }
    }

    /// (r, alpha) of the adapter on `module` (`model.layers.0.mlp.down_proj`), with
    /// `rank_pattern` / `alpha_pattern` applied as PEFT does.
    pub fn module_rank_alpha(&self, module: &str) -> Result<(usize, f64)> {
        let r = match self.rank_pattern.lookup(module)? {
            Some(r) if r >= 1.0 && r.fract() == 0.0 => r as usize,
            Some(r) => {
                return Err(Error::Unsupported(format!(
                    "adapter_config.json: rank_pattern gives `{module}` rank {r}"
                )))
            }
            None => self.r,
        };
        let alpha = self
            .alpha_pattern
            .lookup(module)?
            .unwrap_or(self.lora_alpha);
        Ok((r, alpha))
    }

    /// The factor in front of B·A on `module` ([`crate::lora::scale`] of its r and alpha).
    pub fn module_scale(&self, module: &str) -> Result<f64> {
        let (r, alpha) = self.module_rank_alpha(module)?;
        Ok(crate::lora::scale(alpha, r, self.use_rslora))
    }

    /// Whether some layer has its own r or alpha (one adapter-wide alpha/r does not describe it).
    pub fn has_patterns(&self) -> bool {
        !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty()
    }
}

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

    /// What PEFT 0.21 writes for `target_modules="all-linear"` with rank/alpha patterns.
    fn peft_021_config() -> serde_json::Value {
        let mut targets = Vec::new();
        for i in 0..2 {
            for m in TargetModule::ALL {
                targets.push(module_name(i, m.as_str()));
            }
        }
        serde_json::json!({
            "peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": false,
            "target_modules": targets, "task_type": "CAUSAL_LM", "peft_version": "0.21.2",
            "rank_pattern": {"down_proj": 2, "layers.1.self_attn.q_proj": 6},
            "alpha_pattern": {"model.layers.0.mlp.up_proj": 1, "v_proj": 32},
            "use_dora": false, "modules_to_save": null, "layers_to_transform": null
        })
    }

    #[test]
    fn patterns_match_like_peft_get_pattern_key() {
        let p = Pattern(vec![
            ("layers.1.self_attn.q_proj".into(), 6.0),
            ("q_proj".into(), 3.0),
            ("proj".into(), 9.0),
        ]);
        let at = |m: &str| p.lookup(m).unwrap();
        assert_eq!(at("model.layers.1.self_attn.q_proj"), Some(6.0));
        // First matching key wins; `layers.1` must not match `layers.11`.
        assert_eq!(at("model.layers.11.self_attn.q_proj"), Some(3.0));
        assert_eq!(at("model.layers.0.self_attn.q_proj"), Some(3.0));
        // A key matches whole dotted components only: `proj` is not `down_proj`.
        assert_eq!(at("model.layers.0.mlp.down_proj"), None);
        let re = Pattern(vec![(r"model\.layers\.(0|1)\.mlp\.down_proj".into(), 2.0)]);
        assert!(re.lookup("model.layers.0.mlp.down_proj").is_err());
        // File order survives parsing (serde_json maps would sort the keys).
        let c: PeftConfig = serde_json::from_value(peft_021_config()).unwrap();
        assert_eq!(c.alpha_pattern.0[0].0, "model.layers.0.mlp.up_proj");
    }

    #[test]
    fn peft_full_module_names_read_as_short_targets() {
        let c: PeftConfig = serde_json::from_value(peft_021_config()).unwrap();
        let l = c.lora_config();
        assert_eq!(l.target_modules.modules(), TargetModule::ALL.to_vec());
        l.check().unwrap();
        assert!(c.has_patterns());
        assert_eq!(
            c.module_rank_alpha("model.layers.0.mlp.down_proj").unwrap(),
            (2, 8.0)
        );
        assert_eq!(
            c.module_rank_alpha("model.layers.1.self_attn.q_proj")
                .unwrap(),
            (6, 8.0)
        );
        assert_eq!(
            c.module_rank_alpha("model.layers.0.self_attn.q_proj")
                .unwrap(),
            (4, 8.0)
        );
        assert_eq!(
            c.module_scale("model.layers.1.self_attn.v_proj").unwrap(),
            8.0
        );
        assert_eq!(c.module_scale("model.layers.0.mlp.up_proj").unwrap(), 0.25);
        // ft's own files carry no patterns and no DoRA flag.
        let ours =
            serde_json::to_value(PeftConfig::from_lora(&LoraConfig::default(), "m")).unwrap();
        assert!(ours.get("rank_pattern").is_none() && ours.get("use_dora").is_none());
    }

    #[test]
    fn rank_and_alpha_patterns_give_each_layer_its_rank_and_scale() {
        let mut model = crate::testing::tiny_model(1, None).unwrap();
        let c: PeftConfig = serde_json::from_value(peft_021_config()).unwrap();
        let tensors = all_tensors(&model, |i, s| {
            c.module_rank_alpha(&module_name(i, s)).unwrap().0
        });
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), peft_021_config(), tensors);
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
