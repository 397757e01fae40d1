//! Choosing the final adapter by the task metric (`train.select`): every `every` steps the
//! adapter being trained answers the validation questions (batched greedy decoding on the
//! quantized kernels), and the best fact-match so far — ties broken by fact recall, then by the
//! earlier step — is kept in memory and on disk (`output_dir/best/`). Training loss keeps
//! falling long after the answers to differently worded questions stop improving; this picks
//! the checkpoint by what the user cares about, and stops early after `patience` evaluations
//! without a gain.

use crate::error::Result;
use crate::eval::task::{self, TaskItem, TaskOptions, TaskReport};
use crate::eval::SelectConfig;
use crate::lora::LoraConfig;
use crate::model::{peft, Ctx, Llama};
use crate::quant::MatmulMode;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The folder under `output_dir` that holds the best adapter so far.
pub const BEST_DIR: &str = "best";

/// The best evaluation so far (recorded in checkpoints, so a resumed run keeps it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub step: usize,
    pub fact_match: f64,
    pub fact_recall: f64,
}

impl Best {
    fn beats(&self, other: &Best) -> bool {
        (self.fact_match, self.fact_recall) > (other.fact_match, other.fact_recall)
    }
}

pub struct Selector<'a> {
    cfg: &'a SelectConfig,
    items: Vec<TaskItem>,
    tok: &'a Tokenizer,
    template: ChatTemplate,
    pub best: Option<Best>,
    /// The best adapter's weights, in `vars` order.
    weights: Option<Vec<Tensor>>,
    /// Evaluations since the best one.
    since_best: usize,
}

impl<'a> Selector<'a> {
    pub fn new(cfg: &'a SelectConfig, tok: &'a Tokenizer, template: ChatTemplate) -> Result<Self> {
        Ok(Selector {
            cfg,
            items: task::load(&cfg.task)?,
            tok,
            template,
            best: None,
            weights: None,
            since_best: 0,
        })
    }

    /// Whether step `done` (1-based) of `total` is an evaluation step.
    pub fn due(&self, done: usize, total: usize) -> bool {
        done.is_multiple_of(self.cfg.every.max(1)) || done == total
    }

    /// Continue from a checkpoint's record: the best adapter is read back from `best_dir`.
    pub fn resume(
        &mut self,
        best: Option<Best>,
        best_dir: &Path,
        vars: &[(String, Var)],
    ) -> Result<()> {
        let Some(b) = best else { return Ok(()) };
        let (_, tensors) = peft::read(best_dir)?;
        let weights = vars
            .iter()
            .map(|(name, v)| {
                tensors
                    .get(name)
                    .ok_or_else(|| {
                        crate::error::Error::format(
                            best_dir,
                            format!("best adapter lacks `{name}`"),
                        )
                    })?
                    .to_device(v.device())
                    .map_err(Into::into)
            })
            .collect::<Result<Vec<_>>>()?;
        self.best = Some(b);
        self.weights = Some(weights);
        Ok(())
    }

    /// Evaluate the adapter in slot 0 at step `step`; keep it if it is the best so far (also
    /// written to `out/best/`). Returns the report and whether training should go on.
    pub fn evaluate(
        &mut self,
        model: &Llama,
        vars: &[(String, Var)],
        lora: &LoraConfig,
        base: &str,
        out: &Path,
        step: usize,
    ) -> Result<(TaskReport, bool)> {
        let ctx = Ctx::infer(MatmulMode::Fast, Some(0));
        let opts = TaskOptions {
            max_new_tokens: self.cfg.max_new_tokens,
            system: None,
            batch: 16,
        };
        let report = task::run_with(
            model,
            self.tok,
            &self.template,
            ctx,
            &self.items,
            &opts,
            |_, _| {},
        )?;
        let now = Best {
            step,
            fact_match: report.fact_match_rate,
            fact_recall: report.fact_recall,
        };
        if self.best.is_none_or(|b| now.beats(&b)) {
            self.best = Some(now);
            self.weights = Some(
                vars.iter()
                    .map(|(_, v)| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            );
            self.since_best = 0;
            save_best(model, lora, base, out)?;
        } else {
            self.since_best += 1;
        }
        let go_on = self.cfg.patience == 0 || self.since_best < self.cfg.patience;
        Ok((report, go_on))
    }

    /// Put the best adapter's weights into `vars` (before the final adapter is written).
    pub fn restore_best(&self, vars: &[(String, Var)]) -> Result<()> {
        if let Some(w) = &self.weights {
            for ((_, v), t) in vars.iter().zip(w) {
                v.set(t)?;
            }
        }
        Ok(())
    }

    pub fn best_dir(out: &Path) -> PathBuf {
        out.join(BEST_DIR)
    }
}

/// The adapter in slot 0 as `out/best/`: written whole to a temp folder, then swapped in.
fn save_best(model: &Llama, lora: &LoraConfig, base: &str, out: &Path) -> Result<()> {
    let dest = out.join(BEST_DIR);
    let tmp = out.join(format!(".{BEST_DIR}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    peft::save(model, 0, lora, base, &tmp)?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| crate::error::Error::io(&dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_means_more_matches_then_more_recall_and_ties_keep_the_earlier() {
        let b = |step, m, r| Best {
            step,
            fact_match: m,
            fact_recall: r,
        };
        assert!(b(9, 0.5, 0.1).beats(&b(1, 0.4, 0.9)));
        assert!(b(9, 0.5, 0.6).beats(&b(1, 0.5, 0.5)));
        assert!(
            !b(9, 0.5, 0.5).beats(&b(1, 0.5, 0.5)),
            "a tie keeps the earlier step"
        );
        assert!(!b(9, 0.4, 0.9).beats(&b(1, 0.5, 0.1)));
    }
}
