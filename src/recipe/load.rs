//! Text -> [`Recipe`]: parse the YAML tree, apply `--set` flags, reject unknown keys,
//! deserialize, fill path defaults, validate; every failure becomes one located line.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::location::{KeyIndex, Locator};
use super::schema::{find_unknown_key, SetFlag};
use super::Recipe;
use crate::config::closest;
use crate::error::{Error, Result};

fn fail(msg: String) -> Error {
    Error::Recipe { msg }
}

impl Recipe {
    /// Load and validate the recipe file at `path` (no overrides).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Recipe> {
        Recipe::load(path, &[])
    }

    /// Load `path`, apply `sets` (`key.path=value`, value as YAML) over it, then validate.
    pub fn load(path: impl AsRef<Path>, sets: &[String]) -> Result<Recipe> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Recipe::parse(&text, &path.display().to_string(), sets)
    }

    /// Parse and validate recipe text; `origin` names it in errors (usually the file path)
    /// and gives the default output dir `runs/<stem of origin>`.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, origin: &str) -> Result<Recipe> {
        Recipe::parse(text, origin, &[])
    }

    /// The resolved recipe as YAML (what `ft train --dry-run` prints); it loads back unchanged.
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self)
            .map_err(|e| fail(format!("cannot write recipe as YAML: {e}")))
    }

    /// Text + overrides -> validated recipe, with `origin:line:col` on every error.
    pub fn parse(text: &str, origin: &str, sets: &[String]) -> Result<Recipe> {
        let mut tree: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{origin}:{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| origin.to_string());
            fail(format!(
                "{at}: invalid YAML: {}",
                strip_position(&e.to_string())
            ))
        })?;
        if tree.is_null() {
            return Err(fail(format!(
                "{origin}: empty recipe; it needs at least model.path and dataset.train"
            )));
        }
        if !tree.is_mapping() {
            return Err(fail(format!(
                "{origin}:1:1: a recipe is a mapping of sections (model:, dataset:, ...)"
            )));
        }
        let flags = sets
            .iter()
            .map(|s| SetFlag::parse(s).map_err(fail))
            .collect::<Result<Vec<_>>>()?;
        for f in &flags {
            f.apply(&mut tree);
        }
        let loc = Locator {
            origin: origin.to_string(),
            index: KeyIndex::build(text),
            sets: flags,
        };
        if let Some((key, msg)) = find_unknown_key(&tree) {
            return Err(fail(format!("{}: {msg}", loc.at(&key))));
        }

        // Without overrides, deserialize the text itself: serde's positions are exact.
        // With them, deserialize the merged tree re-emitted as text, for serde's key path,
        // and point at the flag or the file line by that path.
        let mut recipe: Recipe = if loc.sets.is_empty() {
            serde_yaml_ng::from_str(text).map_err(|e| serde_error(&e, &loc, true))?
        } else {
            let merged = serde_yaml_ng::to_string(&tree)
                .map_err(|e| fail(format!("{origin}: cannot merge --set values: {e}")))?;
            serde_yaml_ng::from_str(&merged).map_err(|e| serde_error(&e, &loc, false))?
        };
        recipe.fill_defaults(origin);
        recipe
            .check()
            .map_err(|p| fail(format!("{}: {}", loc.at(p.key), p.msg)))?;
        Ok(recipe)
    }

    /// Paths whose default depends on the recipe's name or output dir.
    fn fill_defaults(&mut self, origin: &str) {
        if self.train.output_dir.as_os_str().is_empty() {
            let stem = Path::new(origin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty() && !s.starts_with('<'))
                .unwrap_or_else(|| "recipe".into());
            self.train.output_dir = PathBuf::from("runs").join(stem);
        }
        let out = &self.train.output_dir;
        for (slot, name) in [
            (&mut self.logging.tensorboard, "tb"),
            (&mut self.logging.metrics_jsonl, "metrics.jsonl"),
        ] {
            if let Some(p) = slot {
                if p.as_os_str().is_empty() {
                    *p = out.join(name);
                }
            }
        }
    }
}

/// serde_yaml's message is `path: msg at line L column C`; split it back apart.
fn split_serde_message(msg: &str) -> (String, String) {
    let msg = strip_position(msg);
    if let Some((head, rest)) = msg.split_once(": ") {
        if !head.is_empty() && !head.contains(' ') && !head.contains('`') {
            return (head.to_string(), rest.to_string());
        }
    }
    (String::new(), msg)
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// A serde error as `place: key.path: message`, with plainer wording for common cases.
fn serde_error(e: &serde_yaml_ng::Error, loc: &Locator, exact: bool) -> Error {
    let (path, msg) = split_serde_message(&e.to_string());
    let place = |key: &str| match (exact, e.location()) {
        (true, Some(l)) if loc.sets.is_empty() => {
            format!("{}:{}:{}", loc.origin, l.line(), l.column())
        }
        _ => loc.at(key),
    };
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        let full = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        let (key, what) = match full.as_str() {
            "model" | "model.path" => (
                "model.path",
                " (the base model: a GGUF file or a Hugging Face folder)",
            ),
            "dataset" | "dataset.train" => (
                "dataset.train",
                " (training data: a jsonl/parquet path, list or glob)",
            ),
            _ => (full.as_str(), ""),
        };
        // Point at the section that lacks the key (its own line, not serde's end-of-map mark).
        return fail(format!(
            "{}: missing required key `{key}`{what}",
            loc.at(&path)
        ));
    }
    let msg = plain_wording(&msg);
    let at = place(&path);
    if path.is_empty() {
        fail(format!("{at}: {msg}"))
    } else {
        fail(format!("{at}: {path}: {msg}"))
    }
}

fn plain_wording(msg: &str) -> String {
    let mut m = msg
        .replace("expected usize", "expected a whole number >= 0")
        .replace("expected u64", "expected a whole number >= 0")
        .replace("expected f64", "expected a number")
        .replace("unit value", "an empty value");
    // serde's own unknown-variant message gets the same "did you mean" as keys.
    if let Some(rest) = m.strip_prefix("unknown variant `") {
        if let Some((got, tail)) = rest.split_once('`') {
            let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            if let Some(near) = closest(got, &valid) {
                m.push_str(&format!("; did you mean `{near}`?"));
            }
        }
    }
    m
}
