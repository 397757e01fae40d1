//! Range and consistency checks on a deserialized [`Recipe`] (no file access), and the
//! separate existence checks for the files it names.

use super::Recipe;
use crate::config::{ensure, ConfigError};
use crate::error::{Error, Result};

impl Recipe {
    /// Range and consistency checks (no file access). Errors name the key but not the
    /// place; [`Recipe::load`] and [`Recipe::from_str`] add `file:line:col`.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|p| Error::Recipe { msg: p.msg })
    }

    pub(crate) fn check(&self) -> std::result::Result<(), ConfigError> {
        let t = &self.train;
        ensure!(
            !self.model.path.as_os_str().is_empty(),
            "model.path",
            "model.path must not be empty"
        );
        self.dataset.check()?;
        self.lora.check()?;
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
                self.dataset.has_eval(),
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
        ensure!(
            t.neftune_alpha.is_finite() && (0.0..=100.0).contains(&t.neftune_alpha),
            "train.neftune_alpha",
            "train.neftune_alpha must be in [0, 100]; 0 disables NEFTune (got {})",
            t.neftune_alpha
        );
        ensure!(
            t.lora_plus_ratio.is_finite()
                && (0.0..=1000.0).contains(&t.lora_plus_ratio)
                && t.lora_plus_ratio > 0.0,
            "train.lora_plus_ratio",
            "train.lora_plus_ratio must be in (0, 1000]; 1 is plain LoRA (got {})",
            t.lora_plus_ratio
        );
        if let Some(s) = &t.select {
            s.check(&self.eval)?;
        }
        self.eval.check()
    }

    /// Check that the base model and the dataset files exist (globs expanded), naming the
    /// key: ``dataset.train: no file matches `datasets/x/*.jsonl` ``. Call before loading.
    pub fn check_paths(&self) -> Result<()> {
        if !self.model.path.exists() {
            return Err(crate::data::key_error(
                "model.path",
                &format!(
                    "`{}` does not exist{}",
                    self.model.path.display(),
                    crate::data::cwd_note()
                ),
            ));
        }
        self.dataset.check_paths()?;
        self.check_eval_unseen()
    }

    /// Evaluation files never feed training: a training source (`dataset.train`, a
    /// `dataset.mix` path) that is the general-text perplexity file, the task's held-out
    /// questions, `train.select`'s validation questions or the MMLU data is refused.
    fn check_eval_unseen(&self) -> Result<()> {
        let mut trained = self.dataset.train.resolve("dataset.train")?;
        for m in &self.dataset.mix {
            trained.extend(m.path.resolve("dataset.mix[].path")?);
        }
        let evals = [
            ("eval.perplexity", self.eval.perplexity.as_ref()),
            ("eval.task.path", self.eval.task.as_ref().map(|t| &t.path)),
            (
                "train.select.task",
                self.train.select.as_ref().map(|s| &s.task),
            ),
            ("eval.mmlu.path", self.eval.mmlu.as_ref().map(|m| &m.path)),
        ];
        let same =
            |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize()) {
                (Ok(x), Ok(y)) => x == y || x.starts_with(&y),
                _ => false,
            };
        for (key, path) in evals {
            let Some(e) = path else { continue };
            if let Some(t) = trained.iter().find(|t| same(t, e)) {
                return Err(crate::data::key_error(
                    "dataset",
                    &format!(
                        "`{}` is both trained on and used by {key}; evaluation data must stay unseen",
                        t.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}
