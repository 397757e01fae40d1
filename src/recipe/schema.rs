//! The recipe's key names, checked before serde sees the tree so that a misspelt key gets
//! "did you mean" (typos via string similarity, other tools' names via an alias table), and
//! `--set key.path=value` overrides applied to the YAML tree (defaults < YAML < --set).

use serde_yaml_ng::{Mapping, Value};

use crate::config::closest;

/// Every section (dotted path, "" = top level) and the keys it accepts.
/// `tests::schema_matches_structs` keeps this in step with the serde structs.
pub(crate) const SECTIONS: &[(&str, &[&str])] = &[
    (
        "",
        &["model", "dataset", "lora", "train", "logging", "eval"],
    ),
    ("model", &["path", "quantize", "chat_template", "device"]),
    (
        "dataset",
        &[
            "train",
            "eval",
            "eval_split",
            "format",
            "fields",
            "max_seq_len",
            "packing",
            "train_on_prompt",
            "special_tokens_in_content",
            "mix",
            "replay",
        ],
    ),
    (
        "dataset.replay",
        &[
            "kind",
            "samples",
            "max_new_tokens",
            "temperature",
            "seed",
            "weight",
        ],
    ),
    (
        "dataset.fields",
        &[
            "messages",
            "instruction",
            "input",
            "output",
            "prompt",
            "completion",
            "text",
            "role",
            "content",
        ],
    ),
    (
        "lora",
        &["r", "alpha", "dropout", "target_modules", "rslora"],
    ),
    (
        "train",
        &[
            "epochs",
            "max_steps",
            "batch_size",
            "grad_accum",
            "lr",
            "scheduler",
            "warmup_steps",
            "warmup_ratio",
            "weight_decay",
            "max_grad_norm",
            "seed",
            "grad_checkpointing",
            "eval_every",
            "save_every",
            "keep_checkpoints",
            "output_dir",
            "log_every",
            "neftune_alpha",
            "lora_plus_ratio",
            "select",
        ],
    ),
    (
        "train.select",
        &["task", "every", "max_new_tokens", "patience"],
    ),
    ("logging", &["tensorboard", "metrics_jsonl"]),
    ("eval", &["mmlu", "task", "perplexity", "after_train"]),
    (
        "eval.mmlu",
        &["path", "subjects", "shots", "limit", "style"],
    ),
    ("eval.task", &["path", "max_new_tokens", "system"]),
];

/// Names other fine-tuning tools (axolotl, HF Trainer, PEFT, mlx-lm) use for our keys.
const ALIASES: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("num_epochs", "epochs"),
    ("num_train_epochs", "epochs"),
    ("iters", "max_steps"),
    ("steps", "max_steps"),
    ("micro_batch_size", "batch_size"),
    ("per_device_train_batch_size", "batch_size"),
    ("gradient_accumulation_steps", "grad_accum"),
    ("lr_scheduler", "scheduler"),
    ("lr_scheduler_type", "scheduler"),
    ("gradient_checkpointing", "grad_checkpointing"),
    ("grad_checkpoint", "grad_checkpointing"),
    ("warmup", "warmup_steps"),
    ("clip_grad_norm", "max_grad_norm"),
    ("save_total_limit", "keep_checkpoints"),
    ("eval_steps", "eval_every"),
    ("save_steps", "save_every"),
    ("steps_per_eval", "eval_every"),
    ("logging_steps", "log_every"),
    ("lora_r", "r"),
    ("rank", "r"),
    ("lora_alpha", "alpha"),
    ("lora_dropout", "dropout"),
    ("lora_target_modules", "target_modules"),
    ("use_rslora", "rslora"),
    ("base_model", "path"),
    ("model_name_or_path", "path"),
    ("sequence_len", "max_seq_len"),
    ("max_length", "max_seq_len"),
    ("max_seq_length", "max_seq_len"),
    ("sample_packing", "packing"),
    ("val_set_size", "eval_split"),
    ("type", "format"),
    ("tb", "tensorboard"),
    ("neftune_noise_alpha", "neftune_alpha"),
    ("loraplus_lr_ratio", "lora_plus_ratio"),
];

pub(crate) fn keys_of(section: &str) -> Option<&'static [&'static str]> {
    SECTIONS
        .iter()
        .find(|(s, _)| *s == section)
        .map(|(_, k)| *k)
}

fn join(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

/// The message for an unknown `key` inside `section`.
pub(crate) fn unknown_key_message(section: &str, key: &str) -> String {
    let full = join(section, key);
    let valid = keys_of(section).unwrap_or(&[]);
    // The right key in the wrong section (`train.r`).
    if let Some((other, _)) = SECTIONS
        .iter()
        .find(|(s, keys)| !s.is_empty() && *s != section && keys.contains(&key))
    {
        return format!(
            "unknown key `{full}`; `{key}` belongs in `{other}` (did you mean `{}`?)",
            join(other, key)
        );
    }
    let alias = ALIASES
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(key))
        .map(|(_, k)| *k)
        .filter(|k| valid.contains(k));
    if let Some(near) = alias.or_else(|| closest(key, valid)) {
        return format!("unknown key `{full}`; did you mean `{near}`?");
    }
    format!("unknown key `{full}` (valid keys: {})", valid.join(", "))
}

/// First unknown key in `tree`, as (dotted path of the key, message).
pub(crate) fn find_unknown_key(tree: &Value) -> Option<(String, String)> {
    walk(tree, "")
}

fn walk(node: &Value, section: &str) -> Option<(String, String)> {
    let (Some(map), Some(valid)) = (node.as_mapping(), keys_of(section)) else {
        return None; // not a mapping: serde reports the type error with its location
    };
    for (k, v) in map {
        let key = key_text(k);
        if !valid.contains(&key.as_str()) {
            return Some((join(section, &key), unknown_key_message(section, &key)));
        }
        let child = join(section, &key);
        if keys_of(&child).is_some() {
            if let Some(found) = walk(v, &child) {
                return Some(found);
            }
        }
    }
    None
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// One `--set key.path=value` flag, split and checked against the schema.
#[derive(Debug, Clone)]
pub(crate) struct SetFlag {
    /// The flag as the user wrote it, for error messages.
    pub raw: String,
    pub path: Vec<String>,
    pub value: Value,
}

impl SetFlag {
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// Parse `a.b=value`; the value is a YAML scalar or flow list/map (`[q_proj, v_proj]`),
    /// and falls back to a plain string when it is not valid YAML.
    pub fn parse(raw: &str) -> Result<SetFlag, String> {
        let Some((key, val)) = raw.split_once('=') else {
            return Err(format!("--set {raw}: expected key.path=value"));
        };
        let path: Vec<String> = key
            .trim()
            .split('.')
            .map(|s| s.trim().to_string())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("--set {raw}: empty key in `{}`", key.trim()));
        }
        let mut section = String::new();
        for (i, part) in path.iter().enumerate() {
            let Some(valid) = keys_of(&section) else {
                return Err(format!(
                    "--set {raw}: `{section}` has no keys under it (`{}`)",
                    path.join(".")
                ));
            };
            if !valid.contains(&part.as_str()) {
                return Err(format!(
                    "--set {raw}: {}",
                    unknown_key_message(&section, part)
                ));
            }
            if i + 1 < path.len() {
                section = join(&section, part);
            }
        }
        let value = if val.trim().is_empty() {
            Value::Null
        } else {
            serde_yaml_ng::from_str(val).unwrap_or_else(|_| Value::String(val.to_string()))
        };
        Ok(SetFlag {
            raw: raw.to_string(),
            path,
            value,
        })
    }

    /// Write the value into `tree`, creating sections as needed.
    pub fn apply(&self, tree: &mut Value) {
        let mut node = tree;
        for part in &self.path {
            if !node.is_mapping() {
                *node = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(map) = node else { return };
            node = map
                .entry(Value::String(part.clone()))
                .or_insert(Value::Null);
        }
        *node = self.value.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean() {
        assert!(unknown_key_message("train", "learning_rate").contains("did you mean `lr`?"));
        assert!(unknown_key_message("train", "epohcs").contains("did you mean `epochs`?"));
        assert!(unknown_key_message("lora", "aplha").contains("did you mean `alpha`?"));
        assert!(unknown_key_message("train", "r").contains("`lora.r`"));
        let m = unknown_key_message("lora", "zzzzzz");
        assert!(m.contains("valid keys: r, alpha"), "{m}");
    }

    #[test]
    fn set_parse_and_apply() {
        let s = SetFlag::parse("lora.target_modules=[q_proj, v_proj]").unwrap();
        let mut tree: Value = serde_yaml_ng::from_str("lora:\n  r: 4\n").unwrap();
        s.apply(&mut tree);
        assert_eq!(tree["lora"]["target_modules"][1].as_str(), Some("v_proj"));
        assert_eq!(tree["lora"]["r"].as_u64(), Some(4));
        let s = SetFlag::parse("train.lr=1e-3").unwrap();
        s.apply(&mut tree);
        assert_eq!(tree["train"]["lr"].as_f64(), Some(1e-3));
        assert!(SetFlag::parse("train.learning_rate=1")
            .unwrap_err()
            .contains("did you mean `lr`"));
        assert!(SetFlag::parse("lora.r.x=1").is_err());
        assert!(SetFlag::parse("lora.r").is_err());
    }
}
