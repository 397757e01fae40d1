//! [`DatasetConfig`]: what to train and evaluate on (a recipe's `dataset:` section, which
//! deserializes straight into it), and [`DatasetConfig::read`], the one way training and
//! evaluation get the training and held-out examples from it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::example::{Example, FieldMap, Format};
use super::replay::ReplaySpec;
use crate::config::{ensure, null_default, ConfigError};
use crate::error::{Error, Result};

/// `dataset:` what to train and evaluate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// jsonl or parquet files: one path, a list, or globs.
    pub train: Paths,
    /// Held-out files for eval loss; or use `eval_split`.
    #[serde(default)]
    pub eval: Option<Paths>,
    /// Fraction of `train` held out for eval, chosen deterministically from `train.seed`.
    #[serde(default)]
    pub eval_split: Option<f64>,
    #[serde(default)]
    pub format: Format,
    /// Column names, when they differ from the standard ones.
    #[serde(default, deserialize_with = "null_default")]
    pub fields: FieldMap,
    /// Tokens per example after templating; longer ones are truncated.
    #[serde(default = "d_max_seq_len")]
    pub max_seq_len: usize,
    /// Concatenate short examples into full `max_seq_len` rows.
    #[serde(default)]
    pub packing: bool,
    /// Also train on prompt/user tokens (default: only on the answer).
    #[serde(default)]
    pub train_on_prompt: bool,
    /// Let special-token text in message content (`<|im_end|>`) become special tokens, as
    /// older tools did. Default: content is plain text; only the chat template makes turns.
    #[serde(default)]
    pub special_tokens_in_content: bool,
    /// More training sources mixed into `train`, each with its own format, fields and weight.
    #[serde(default)]
    pub mix: Vec<MixSource>,
    /// The base model's own conversations or texts mixed in (self-distillation replay), to
    /// keep its general behaviour; generated once and cached.
    #[serde(default)]
    pub replay: Option<ReplaySpec>,
}

fn d_max_seq_len() -> usize {
    512
}

/// `dataset.mix[]`: one more training source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixSource {
    pub path: Paths,
    /// Default: `dataset.format`.
    #[serde(default)]
    pub format: Option<Format>,
    /// Default: `dataset.fields`.
    #[serde(default)]
    pub fields: Option<FieldMap>,
    /// Copies of the source per epoch: 1 = each example once, 0.5 = a seeded half, 2 = twice.
    #[serde(default = "d_weight")]
    pub weight: f64,
}

pub(crate) fn d_weight() -> f64 {
    1.0
}

/// `weight` copies of `examples`: the whole part as full copies, the fraction as a seeded
/// sample without replacement (the same for the same seed, so a resumed run sees the same data).
pub fn weighted(examples: Vec<Example>, weight: f64, seed: u64) -> Vec<Example> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let whole = weight.floor() as usize;
    let part = ((weight - weight.floor()) * examples.len() as f64).round() as usize;
    let mut idx: Vec<usize> = (0..examples.len()).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut out = Vec::with_capacity(examples.len() * whole + part);
    for _ in 0..whole {
        out.extend(examples.iter().cloned());
    }
    out.extend(
        idx[..part.min(idx.len())]
            .iter()
            .map(|&i| examples[i].clone()),
    );
    out
}

/// The examples of a run: training rows and held-out rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
    /// Records the readers skipped (empty turns etc.), train and eval files together.
    pub skipped: usize,
    /// How many training examples each source gave (after its weight).
    pub sources: Vec<Source>,
}

/// One training source's share of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub examples: usize,
    pub weight: f64,
}

impl DatasetConfig {
    /// A config over `train` with every other key at its default.
    pub fn new(train: Paths) -> Self {
        DatasetConfig {
            train,
            eval: None,
            eval_split: None,
            format: Format::default(),
            fields: FieldMap::default(),
            max_seq_len: d_max_seq_len(),
            packing: false,
            train_on_prompt: false,
            special_tokens_in_content: false,
            mix: Vec::new(),
            replay: None,
        }
    }

    /// Whether there is held-out data (`eval` files or `eval_split`).
    pub fn has_eval(&self) -> bool {
        self.eval.is_some() || self.eval_split.is_some()
    }

    /// Range and consistency checks (no file access).
    pub fn check(&self) -> std::result::Result<(), ConfigError> {
        if let Some(s) = self.eval_split {
            ensure!(
                s > 0.0 && s < 1.0,
                "dataset.eval_split",
                "dataset.eval_split must be in (0, 1) (got {s})"
            );
            ensure!(
                self.eval.is_none(),
                "dataset.eval_split",
                "set dataset.eval or dataset.eval_split, not both"
            );
        }
        ensure!(
            self.max_seq_len >= 8,
            "dataset.max_seq_len",
            "dataset.max_seq_len must be >= 8 (got {})",
            self.max_seq_len
        );
        ensure!(
            self.max_seq_len <= crate::model::MAX_POSITIONS,
            "dataset.max_seq_len",
            "dataset.max_seq_len must be at most {} (got {})",
            crate::model::MAX_POSITIONS,
            self.max_seq_len
        );
        for m in &self.mix {
            ensure!(
                m.weight.is_finite() && (0.0..=100.0).contains(&m.weight),
                "dataset.mix",
                "dataset.mix[].weight must be in [0, 100] (got {})",
                m.weight
            );
        }
        if let Some(r) = &self.replay {
            if let Err(e) = r.validate() {
                return Err(ConfigError {
                    key: "dataset.replay",
                    msg: format!("dataset.{e}"),
                });
            }
        }
        Ok(())
    }

    /// Check that the named files exist (globs expanded).
    pub fn check_paths(&self) -> Result<()> {
        self.train.resolve("dataset.train")?;
        for m in &self.mix {
            m.path.resolve("dataset.mix[].path")?;
        }
        if let Some(e) = &self.eval {
            e.resolve("dataset.eval")?;
        }
        Ok(())
    }

    /// Read `train`, and the held-out examples: the `eval` files, or an `eval_split` of
    /// `train` drawn with `seed` (the recipe's `train.seed`), or none.
    pub fn read(&self, seed: u64) -> Result<Split> {
        let read = |paths: &[PathBuf]| super::read_examples(paths, self.format, &self.fields);
        let train = read(&self.train.resolve("dataset.train")?)?;
        let mut skipped = train.skipped.len();
        let (train, eval) = match (&self.eval, self.eval_split) {
            (Some(p), _) => {
                let e = read(&p.resolve("dataset.eval")?)?;
                skipped += e.skipped.len();
                (train.examples, e.examples)
            }
            (None, Some(frac)) => super::split_eval(train.examples, frac, seed),
            (None, None) => (train.examples, Vec::new()),
        };
        let mut sources = vec![Source {
            name: "dataset.train".into(),
            examples: train.len(),
            weight: 1.0,
        }];
        let mut train = train;
        for (i, m) in self.mix.iter().enumerate() {
            let fields = m.fields.as_ref().unwrap_or(&self.fields);
            let r = super::read_examples(
                &m.path.resolve("dataset.mix[].path")?,
                m.format.unwrap_or(self.format),
                fields,
            )?;
            skipped += r.skipped.len();
            let picked = weighted(
                r.examples,
                m.weight,
                crate::lora::mix(seed, 0x313 + i as u64),
            );
            sources.push(Source {
                name: format!("dataset.mix[{i}] {}", m.path.0.join(",")),
                examples: picked.len(),
                weight: m.weight,
            });
            train.extend(picked);
        }
        Ok(Split {
            train,
            eval,
            skipped,
            sources,
        })
    }
}

/// One path, a list of paths, or glob patterns (`datasets/x/*.jsonl`), as written.
/// Nothing touches the disk until [`Paths::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paths(pub Vec<String>);

impl Paths {
    /// Expand globs and check that each entry names at least one existing file, in the
    /// order written (glob matches sorted). `key` names the recipe key in errors.
    pub fn resolve(&self, key: &str) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for pat in &self.0 {
            if pat.contains(['*', '?', '[']) {
                let matches = glob::glob(pat)
                    .map_err(|e| key_error(key, &format!("bad glob `{pat}`: {e}")))?;
                let mut found: Vec<PathBuf> = matches
                    .filter_map(|m| m.ok())
                    .filter(|p| p.is_file())
                    .collect();
                if found.is_empty() {
                    return Err(key_error(
                        key,
                        &format!("no file matches `{pat}`{}", cwd_note()),
                    ));
                }
                found.sort();
                out.extend(found);
            } else if Path::new(pat).exists() {
                out.push(PathBuf::from(pat));
            } else {
                return Err(key_error(
                    key,
                    &format!("`{pat}` does not exist{}", cwd_note()),
                ));
            }
        }
        Ok(out)
    }
}

/// A recipe key whose value is wrong on disk: `dataset.train: no file matches ...`.
pub(crate) fn key_error(key: &str, msg: &str) -> Error {
    Error::Recipe {
        msg: format!("{key}: {msg}"),
    }
}

/// Relative paths are relative to where ft runs; say where that is.
pub(crate) fn cwd_note() -> String {
    match std::env::current_dir() {
        Ok(d) => format!(" (relative to the current directory {})", d.display()),
        Err(_) => String::new(),
    }
}

impl Serialize for Paths {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => s.collect_seq(many),
        }
    }
}

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Paths;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path, a glob pattern, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Paths, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("empty path"));
                }
                Ok(Paths(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Paths, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    if p.trim().is_empty() {
                        return Err(de::Error::custom("empty path in list"));
                    }
                    out.push(p);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("empty list of paths"));
                }
                Ok(Paths(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_splits_by_seed_or_reads_eval_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for i in 0..10 {
            lines.push_str(&format!("{{\"text\": \"row {i}\"}}\n"));
        }
        let train = dir.path().join("t.jsonl");
        std::fs::write(&train, &lines).unwrap();
        std::fs::write(dir.path().join("e.jsonl"), "{\"text\": \"held\"}\n").unwrap();
        let mut c = DatasetConfig::new(Paths(vec![train.display().to_string()]));
        c.format = Format::Text;
        c.eval_split = Some(0.3);
        let (a, b) = (c.read(7).unwrap(), c.read(7).unwrap());
        assert_eq!(a, b, "same seed, same split");
        assert_eq!((a.train.len(), a.eval.len()), (7, 3));
        c.eval_split = None;
        c.eval = Some(Paths(vec![dir
            .path()
            .join("e.jsonl")
            .display()
            .to_string()]));
        let s = c.read(7).unwrap();
        assert_eq!((s.train.len(), s.eval.len()), (10, 1));
        c.eval_split = Some(0.5);
        assert_eq!(c.check().unwrap_err().key, "dataset.eval_split");
    }

    #[test]
    fn weights_copy_whole_parts_and_sample_fractions_by_seed() {
        let ex: Vec<Example> = (0..10)
            .map(|i| Example::Text {
                text: format!("t{i}"),
            })
            .collect();
        assert_eq!(weighted(ex.clone(), 1.0, 3), ex);
        assert!(weighted(ex.clone(), 0.0, 3).is_empty());
        let half = weighted(ex.clone(), 0.5, 3);
        assert_eq!(half.len(), 5);
        assert_eq!(half, weighted(ex.clone(), 0.5, 3));
        assert_ne!(half, weighted(ex.clone(), 0.5, 4));
        let mut distinct = half.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "sampled without replacement");
        let more = weighted(ex.clone(), 2.3, 3);
        assert_eq!(more.len(), 23);
        assert_eq!(&more[..10], &ex[..]);
    }

    #[test]
    fn mix_sources_read_with_their_own_format_and_weight() {
        let dir = tempfile::tempdir().unwrap();
        let chat = dir.path().join("c.jsonl");
        let mut lines = String::new();
        for i in 0..4 {
            lines.push_str(&format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"q{i}\"}}, {{\"role\": \"assistant\", \"content\": \"a{i}\"}}]}}\n"
            ));
        }
        std::fs::write(&chat, lines).unwrap();
        let text = dir.path().join("t.jsonl");
        std::fs::write(&text, "{\"body\": \"x\"}\n{\"body\": \"y\"}\n").unwrap();
        let mut c = DatasetConfig::new(Paths(vec![chat.display().to_string()]));
        c.mix.push(MixSource {
            path: Paths(vec![text.display().to_string()]),
            format: Some(Format::Text),
            fields: Some(FieldMap {
                text: "body".into(),
                ..Default::default()
            }),
            weight: 2.0,
        });
        let s = c.read(1).unwrap();
        assert_eq!(s.train.len(), 4 + 4);
        assert_eq!(s.sources.len(), 2);
        assert_eq!(s.sources[1].examples, 4);
        assert!(matches!(s.train[4], Example::Text { .. }));
        c.mix[0].weight = -1.0;
        assert_eq!(c.check().unwrap_err().key, "dataset.mix");
    }
}
