//! A run's identity: what makes two trainings the same run, recorded in every checkpoint's
//! `trainer_state.json`. `--resume` with a recipe that changed any of it is refused naming the
//! key; a new run into a folder holding another run's checkpoints is refused unless
//! `--overwrite`; pruning deletes only this run's checkpoints.
//!
//! Keys are recipe keys: `model.path` (the base's identity: size and a hash of its header, or of
//! an HF folder's config and file sizes, not the path's spelling), `model.quantize`, every
//! `lora.*`, the `train.*` keys that change what is learned (not where or how often it is
//! saved, logged or evaluated), and `dataset` (a hash of the encoded training rows: the data,
//! template, `max_seq_len`, `train_on_prompt`, packing).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::prepare::Prepared;
use crate::error::{Error, Result};
use crate::model::identity::{content_identity, hex};
use crate::recipe::Recipe;

/// Recipe key -> value, for one run.
pub type Fingerprint = BTreeMap<String, String>;

/// `train.*` keys a resumed run may change: where and how often it saves, logs and evaluates.
const FREE_TRAIN_KEYS: [&str; 7] = [
    "output_dir",
    "keep_checkpoints",
    "save_every",
    "eval_every",
    "log_every",
    "select",
    "grad_checkpointing",
];

pub fn fingerprint(r: &Recipe, prepared: &Prepared) -> Result<Fingerprint> {
    let mut f = Fingerprint::new();
    f.insert("model.path".into(), base_identity(&r.model.path)?);
    flatten(
        "model.quantize",
        &serde_json::to_value(r.model.quantize)?,
        &mut f,
    );
    flatten("lora", &serde_json::to_value(&r.lora)?, &mut f);
    let mut train = serde_json::to_value(&r.train)?;
    if let Some(o) = train.as_object_mut() {
        for k in FREE_TRAIN_KEYS {
            o.remove(k);
        }
    }
    flatten("train", &train, &mut f);
    let mut h = Sha256::new();
    for e in &prepared.train {
        h.update((e.ids.len() as u64).to_le_bytes());
        for (id, m) in e.ids.iter().zip(&e.mask) {
            h.update(id.to_le_bytes());
            h.update([*m as u8]);
        }
    }
    h.update([prepared.packed.is_some() as u8]);
    f.insert("dataset".into(), hex(&h.finalize()[..12]));
    Ok(f)
}

/// The first key whose value differs between `was` and `now`, as a sentence.
pub fn difference(was: &Fingerprint, now: &Fingerprint) -> Option<String> {
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    keys.into_iter().find_map(|k| {
        let (a, b) = (was.get(k), now.get(k));
        (a != b).then(|| match k.as_str() {
            "dataset" => {
                "the training data (`dataset.*`, the chat template or the tokenizer) changed".into()
            }
            _ => format!(
                "`{k}` was {}, now {}",
                a.map_or("unset", String::as_str),
                b.map_or("unset", String::as_str)
            ),
        })
    })
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Fingerprint) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The base's size and a hash of its [content identity](content_identity) (each file's size and
/// its first and last MiB: a GGUF's header and metadata; an HF folder's config and weights).
fn base_identity(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let id = Sha256::digest(content_identity(path)?);
    Ok(format!("{} bytes, {}", meta.len(), hex(&id[..12])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_key_is_named() {
        let a: Fingerprint = [("lora.r", "8"), ("train.lr", "0.001")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut b = a.clone();
        assert_eq!(difference(&a, &b), None);
        b.insert("lora.r".into(), "16".into());
        assert_eq!(difference(&a, &b).unwrap(), "`lora.r` was 8, now 16");
    }
}
