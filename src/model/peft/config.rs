//! PEFT's `adapter_config.json` as ft reads and writes it ([`PeftConfig`]), and its mapping to
//! and from ft's [`LoraConfig`]: per-module rank and alpha from `rank_pattern` /
//! `alpha_pattern`, scales by the one formula in [`crate::lora::scale`].

use crate::error::{Error, Result};
use crate::lora::{LoraConfig, TargetModule, TargetModules};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
pub(crate) mod tests {
    use super::super::module_name;
    use super::*;

    /// What PEFT 0.21 writes for `target_modules="all-linear"` with rank/alpha patterns.
    pub(crate) fn peft_021_config() -> serde_json::Value {
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
}
