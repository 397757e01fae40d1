//! Range and consistency checks on a deserialized [`Recipe`] (no file access), and the
//! separate existence checks for the files it names.

use super::{schema, values, EvalSpec, Recipe};
use crate::error::{Error, Result};

/// The 57 MMLU subjects, as `datasets/mmlu/mmlu.jsonl` spells them (`topic`).
#[rustfmt::skip]
pub const MMLU_SUBJECTS: &[&str] = &[
    "abstract algebra", "anatomy", "astronomy", "business ethics", "clinical knowledge",
    "college biology", "college chemistry", "college computer science", "college mathematics",
    "college medicine", "college physics", "computer security", "conceptual physics",
    "econometrics", "electrical engineering", "elementary mathematics", "formal logic",
    "global facts", "high school biology", "high school chemistry", "high school computer science",
    "high school european history", "high school geography", "high school government and politics",
    "high school macroeconomics", "high school mathematics", "high school microeconomics",
    "high school physics", "high school psychology", "high school statistics",
    "high school us history", "high school world history", "human aging", "human sexuality",
    "international law", "jurisprudence", "logical fallacies", "machine learning", "management",
    "marketing", "medical genetics", "miscellaneous", "moral disputes", "moral scenarios",
    "nutrition", "philosophy", "prehistory", "professional accounting", "professional law",
    "professional medicine", "professional psychology", "public relations", "security studies",
    "sociology", "us foreign policy", "virology", "world religions",
];

/// A failed check: the key to point at and the one-line message.
pub(crate) struct Problem {
    pub key: &'static str,
    pub msg: String,
}

macro_rules! ensure {
    ($cond:expr, $key:literal, $($fmt:tt)+) => {
        if !($cond) {
            return Err(Problem { key: $key, msg: format!($($fmt)+) });
        }
    };
}

impl Recipe {
    /// Range and consistency checks (no file access). Errors name the key but not the
    /// place; [`Recipe::load`] and [`Recipe::from_str`] add `file:line:col`.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|p| Error::Recipe { msg: p.msg })
    }

    pub(crate) fn check(&self) -> std::result::Result<(), Problem> {
        let (d, l, t) = (&self.dataset, &self.lora, &self.train);
        ensure!(
            !self.model.path.as_os_str().is_empty(),
            "model.path",
            "model.path must not be empty"
        );
        if let Some(s) = d.eval_split {
            ensure!(
                s > 0.0 && s < 1.0,
                "dataset.eval_split",
                "dataset.eval_split must be in (0, 1) (got {s})"
            );
            ensure!(
                d.eval.is_none(),
                "dataset.eval_split",
                "set dataset.eval or dataset.eval_split, not both"
            );
        }
        ensure!(
            d.max_seq_len >= 8,
            "dataset.max_seq_len",
            "dataset.max_seq_len must be >= 8 (got {})",
            d.max_seq_len
        );
        ensure!(l.r > 0, "lora.r", "lora.r must be > 0 (got {})", l.r);
        ensure!(
            l.alpha > 0.0 && l.alpha.is_finite(),
            "lora.alpha",
            "lora.alpha must be > 0 (got {})",
            l.alpha
        );
        ensure!(
            (0.0..1.0).contains(&l.dropout),
            "lora.dropout",
            "lora.dropout must be in [0, 1) (got {})",
            l.dropout
        );
        ensure!(
            t.lr > 0.0 && t.lr.is_finite(),
            "train.lr",
            "train.lr must be > 0 (got {})",
            t.lr
        );
        ensure!(
            t.batch_size >= 1,
            "train.batch_size",
            "train.batch_size must be >= 1 (got {})",
            t.batch_size
        );
        ensure!(
            t.grad_accum >= 1,
            "train.grad_accum",
            "train.grad_accum must be >= 1 (got {})",
            t.grad_accum
        );
        match t.max_steps {
            Some(m) => ensure!(
                m >= 1,
                "train.max_steps",
                "train.max_steps must be >= 1 (got {m})"
            ),
            None => ensure!(
                t.epochs >= 1,
                "train.epochs",
                "train.epochs must be >= 1 unless train.max_steps is set (got {})",
                t.epochs
            ),
        }
        ensure!(
            (0.0..1.0).contains(&t.warmup_ratio),
            "train.warmup_ratio",
            "train.warmup_ratio must be in [0, 1) (got {})",
            t.warmup_ratio
        );
        ensure!(
            t.warmup_steps == 0 || t.warmup_ratio == 0.0,
            "train.warmup_ratio",
            "set train.warmup_steps or train.warmup_ratio, not both"
        );
        ensure!(
            t.weight_decay >= 0.0 && t.weight_decay.is_finite(),
            "train.weight_decay",
            "train.weight_decay must be >= 0 (got {})",
            t.weight_decay
        );
        ensure!(
            t.max_grad_norm >= 0.0 && t.max_grad_norm.is_finite(),
            "train.max_grad_norm",
            "train.max_grad_norm must be >= 0; 0 disables clipping (got {})",
            t.max_grad_norm
        );
        if let Some(e) = t.eval_every {
            ensure!(
                e >= 1,
                "train.eval_every",
                "train.eval_every must be >= 1 (got {e})"
            );
            ensure!(
                d.eval.is_some() || d.eval_split.is_some(),
                "train.eval_every",
                "train.eval_every needs eval data: set dataset.eval or dataset.eval_split"
            );
        }
        if let Some(s) = t.save_every {
            ensure!(
                s >= 1,
                "train.save_every",
                "train.save_every must be >= 1 (got {s})"
            );
        }
        ensure!(
            t.keep_checkpoints >= 1,
            "train.keep_checkpoints",
            "train.keep_checkpoints must be >= 1 (got {})",
            t.keep_checkpoints
        );
        ensure!(
            t.log_every >= 1,
            "train.log_every",
            "train.log_every must be >= 1 (got {})",
            t.log_every
        );
        if let Some(m) = &self.eval.mmlu {
            for s in &m.subjects {
                let norm = s.replace('_', " ").to_ascii_lowercase();
                if !MMLU_SUBJECTS.contains(&norm.as_str()) {
                    let hint = schema::closest(&norm, MMLU_SUBJECTS)
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default();
                    return Err(Problem {
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
        if let Some(task) = &self.eval.task {
            ensure!(
                task.max_new_tokens >= 1,
                "eval.task.max_new_tokens",
                "eval.task.max_new_tokens must be >= 1 (got {})",
                task.max_new_tokens
            );
        }
        Ok(())
    }

    /// Check that the base model and the dataset files exist (globs expanded), naming the
    /// key: ``dataset.train: no file matches `datasets/x/*.jsonl` ``. Call before loading.
    pub fn check_paths(&self) -> Result<()> {
        if !self.model.path.exists() {
            return Err(values::recipe_err(
                "model.path",
                &format!(
                    "`{}` does not exist{}",
                    self.model.path.display(),
                    values::cwd_note()
                ),
            ));
        }
        self.dataset.train.resolve("dataset.train")?;
        if let Some(e) = &self.dataset.eval {
            e.resolve("dataset.eval")?;
        }
        Ok(())
    }
}

impl EvalSpec {
    /// Check that the files the present eval subsections read exist.
    pub fn check_paths(&self) -> Result<()> {
        let files = [
            self.mmlu.as_ref().map(|m| ("eval.mmlu.path", &m.path)),
            self.task.as_ref().map(|t| ("eval.task.path", &t.path)),
            self.perplexity.as_ref().map(|p| ("eval.perplexity", p)),
        ];
        for (key, path) in files.into_iter().flatten() {
            if !path.exists() {
                let msg = format!("`{}` does not exist{}", path.display(), values::cwd_note());
                return Err(values::recipe_err(key, &msg));
            }
        }
        Ok(())
    }
}
