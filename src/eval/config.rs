//! [`EvalConfig`]: what `ft eval RECIPE` runs (a recipe's `eval:` section, which deserializes
//! straight into it); each present subsection runs.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::mmlu::{category_of, display_subject, Style, SUBJECTS};
use crate::config::{ensure, ConfigError};
use crate::error::Result;

/// `eval:` what `ft eval RECIPE` runs; each present subsection runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    #[serde(deserialize_with = "null_some_default")]
    pub mmlu: Option<MmluConfig>,
    pub task: Option<TaskConfig>,
    /// A jsonl/text file to report perplexity on.
    pub perplexity: Option<PathBuf>,
    /// `ft train` ends with this evaluation (the quality card, base vs tuned).
    pub after_train: bool,
}

/// `eval.mmlu:` multiple-choice accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmluConfig {
    pub path: PathBuf,
    /// Subject names (`high school geography`); empty = all 57.
    #[serde(deserialize_with = "list_or_csv")]
    pub subjects: Vec<String>,
    pub shots: usize,
    /// At most this many questions per subject.
    pub limit: Option<usize>,
    /// `letter` (lm-evaluation-harness: the log-prob of " A".." D") or `cloze` (the
    /// log-likelihood of each answer's text, as the SmolLM2 card reports).
    pub style: Style,
}

impl Default for MmluConfig {
    fn default() -> Self {
        MmluConfig {
            path: PathBuf::from("datasets/mmlu/mmlu.jsonl"),
            subjects: Vec::new(),
            shots: 0,
            limit: None,
            style: Style::Letter,
        }
    }
}

/// `eval.task:` generate answers for held-out prompts and score them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub path: PathBuf,
    #[serde(default = "d_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Also ask every question after this system prompt (a second task row in the report).
    #[serde(default)]
    pub system: Option<String>,
}

/// `train.select:` choose the final adapter by the task metric on validation questions (never
/// the held-out set): fact-match every `every` steps; the best checkpoint becomes the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// Validation questions, in the task format (`{"question", "facts"}` per line).
    pub task: PathBuf,
    /// Steps between evaluations (also at the last step).
    pub every: usize,
    #[serde(default = "d_select_tokens")]
    pub max_new_tokens: usize,
    /// Stop after this many evaluations without improvement (0 = never stop early).
    #[serde(default)]
    pub patience: usize,
}

fn d_select_tokens() -> usize {
    64
}

impl SelectConfig {
    pub fn check(&self, eval: &EvalConfig) -> std::result::Result<(), ConfigError> {
        ensure!(
            self.every >= 1,
            "train.select.every",
            "train.select.every must be >= 1 (got {})",
            self.every
        );
        ensure!(
            self.max_new_tokens >= 1,
            "train.select.max_new_tokens",
            "train.select.max_new_tokens must be >= 1 (got {})",
            self.max_new_tokens
        );
        // Choosing checkpoints on the held-out questions would make their score optimistic.
        if let Some(t) = &eval.task {
            ensure!(
                t.path != self.task,
                "train.select.task",
                "train.select.task is eval.task.path (`{}`): choose checkpoints on separate validation questions, or the held-out score is no longer held out",
                t.path.display()
            );
        }
        Ok(())
    }
}

fn d_max_new_tokens() -> usize {
    128
}

impl EvalConfig {
    /// Range checks (no file access): MMLU subjects must be among the 57.
    pub fn check(&self) -> std::result::Result<(), ConfigError> {
        if let Some(m) = &self.mmlu {
            for s in &m.subjects {
                if category_of(s).is_none() {
                    let names: Vec<String> =
                        SUBJECTS.iter().map(|s| display_subject(s.0)).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let norm = display_subject(s).to_ascii_lowercase();
                    let hint = crate::config::closest(&norm, &names)
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default();
                    return Err(ConfigError {
                        key: "eval.mmlu.subjects",
                        msg: format!("eval.mmlu.subjects: unknown subject `{s}`{hint}"),
                    });
                }
            }
            if let Some(n) = m.limit {
                ensure!(
                    n >= 1,
                    "eval.mmlu.limit",
                    "eval.mmlu.limit must be >= 1 (got {n})"
                );
            }
        }
        if let Some(task) = &self.task {
            ensure!(
                task.max_new_tokens >= 1,
                "eval.task.max_new_tokens",
                "eval.task.max_new_tokens must be >= 1 (got {})",
                task.max_new_tokens
            );
        }
        Ok(())
    }

    /// Check that the files the present subsections read exist.
    pub fn check_paths(&self) -> Result<()> {
        let files = [
            self.mmlu.as_ref().map(|m| ("eval.mmlu.path", &m.path)),
            self.task.as_ref().map(|t| ("eval.task.path", &t.path)),
            self.perplexity.as_ref().map(|p| ("eval.perplexity", p)),
        ];
        for (key, path) in files.into_iter().flatten() {
            if !path.exists() {
                let msg = format!(
                    "`{}` does not exist{}",
                    path.display(),
                    crate::data::cwd_note()
                );
                return Err(crate::data::key_error(key, &msg));
            }
        }
        Ok(())
    }
}

/// Like `config::null_default` for an optional section: present-but-empty means "run with
/// defaults".
fn null_some_default<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// A list of strings, or one comma-separated string (`"marketing, virology"`); entries trimmed.
fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    use serde::de;
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of names or a comma-separated string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Vec<String>, E> {
            Ok(crate::config::csv(v))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(
            self,
            seq: A,
        ) -> std::result::Result<Vec<String>, A::Error> {
            crate::config::strings(seq)
        }
    }
    d.deserialize_any(V)
}
