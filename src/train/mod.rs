//! QLoRA training: the base stays frozen (and quantized) inside the model's linear layers,
//! LoRA adapters are the only `Var`s, AdamW updates them. [`train`] reads top to bottom:
//! attach adapters -> (resume) -> for each step: [`train_step`] (accumulate gradients over
//! micro-batches, clip, step), log to the one [`Metrics`] sink, evaluate, checkpoint -> save
//! the adapter. The data comes ready from [`prepare`].

pub mod checkpoint;
pub mod identity;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod prepare;
pub mod schedule;
pub mod select;
pub mod step;
pub mod tensorboard;

pub use metrics::Metrics;
pub use prepare::{prepare, prepare_with, Prepared};
pub use step::{
    attach_adapters, batch_loss, checkpointed_grads, eval_loss, train_step, trainable_params,
    StepStats,
};

use crate::error::{Error, Result};
use crate::model::{peft, Llama, Loaded};
use crate::recipe::Recipe;
use optim::AdamW;
use std::path::{Path, PathBuf};

/// What one training run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub steps: usize,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    pub eval_loss_before: Option<f64>,
    pub eval_loss_after: Option<f64>,
    pub tokens_per_sec: f64,
    pub seconds: f64,
    pub peak_rss_mib: f64,
    pub adapter_dir: PathBuf,
    /// With `train.select`: the step whose adapter was kept, and its validation scores.
    pub selected: Option<select::Best>,
}

/// Events the trainer reports (the CLI draws the progress bar from these).
pub enum Event<'a> {
    Start {
        total: usize,
        start: usize,
    },
    Step {
        step: usize,
        total: usize,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tok_s: f64,
    },
    Eval {
        step: usize,
        loss: f64,
    },
    Saved {
        step: usize,
        path: &'a std::path::Path,
    },
    /// `train.select` scored the adapter on the validation questions.
    Selected {
        step: usize,
        fact_match: f64,
        fact_recall: f64,
        best_step: usize,
    },
}

/// Run the recipe's training. `resume` continues from the newest checkpoint in output_dir
/// (refused if the recipe changed what the run is, see [`identity`]); a new run into an
/// output_dir holding another run's checkpoints is refused unless `overwrite`, which deletes
/// them. `on_event` returning false stops the run where it is, like a kill.
pub fn train(
    r: &Recipe,
    loaded: &mut Loaded,
    prepared: &Prepared,
    resume: bool,
    overwrite: bool,
    mut on_event: impl FnMut(Event) -> bool,
) -> Result<Summary> {
    let t = &r.train;
    std::fs::create_dir_all(&t.output_dir).map_err(|e| Error::io(&t.output_dir, e))?;
    let me = identity::fingerprint(r, prepared)?;
    let earlier = checkpoint::list(&t.output_dir);
    if !resume {
        let others: Vec<&PathBuf> = earlier
            .iter()
            .map(|(_, p)| p)
            .filter(|p| checkpoint::run_of(p).as_ref() != Some(&me))
            .collect();
        if let Some(first) = others.first() {
            if !overwrite {
                return Err(Error::invalid(format!(
                    "{} holds checkpoints of another run ({}); pass --resume to continue that \
                     run, --overwrite to delete them and start over, or choose another \
                     train.output_dir",
                    t.output_dir.display(),
                    first.display()
                )));
            }
            for p in others {
                std::fs::remove_dir_all(p).map_err(|e| Error::io(p, e))?;
            }
        }
    }
    let vars = attach_adapters(&mut loaded.model, &r.lora, t.seed)?;
    let mut opt = AdamW::new(vars, t.weight_decay)?.with_lora_plus(t.lora_plus_ratio);
    let template = r.template(loaded)?;
    let mut select = match &t.select {
        Some(cfg) => Some(select::Selector::new(cfg, &loaded.tokenizer, template)?),
        None => None,
    };
    let start = match checkpoint::list(&t.output_dir).pop().filter(|_| resume) {
        Some((_, dir)) => {
            // Before restoring: a changed rank would only show as a shape mismatch there.
            let was = checkpoint::run_of(&dir);
            if let Some(diff) = was.as_ref().and_then(|was| identity::difference(was, &me)) {
                return Err(Error::invalid(format!(
                    "--resume: {} belongs to a different run: {diff}; resume with the recipe \
                     it was trained with, or start a new run (--overwrite)",
                    dir.display()
                )));
            }
            let state = checkpoint::restore(&dir, &mut loaded.model, &mut opt)?;
            if let Some(s) = select.as_mut() {
                let best_dir = select::Selector::best_dir(&t.output_dir);
                s.resume(state.select_best, &best_dir, &opt.vars)?;
            }
            state.step
        }
        None => 0,
    };
    let run = Run {
        r,
        id: me,
        model: &loaded.model,
        data: prepared,
        pad: loaded.tokenizer.eos.unwrap_or(0),
        total: t.total_steps(prepared.rows()),
    };
    let mut metrics = Metrics::open(&r.logging)?;
    let eval_before = match start {
        0 => run.evaluate(0, &mut metrics, &mut on_event)?.0,
        _ => None,
    };
    let _ = on_event(Event::Start {
        total: run.total,
        start,
    });
    let mut tally = Tally::new(start, eval_before);
    let mut stopped = false;
    let mut early = false;
    for step in start..run.total {
        let s = train_step(run.model, &mut opt, prepared, t, step, run.total, run.pad)?;
        let done = step + 1;
        tally.record(&s);
        let mut go_on = on_event(Event::Step {
            step: done,
            total: run.total,
            loss: s.loss,
            lr: s.lr,
            grad_norm: s.grad_norm,
            tok_s: s.tokens_per_sec,
        });
        if done % t.log_every.max(1) == 0 || done == run.total {
            metrics.train(done, &s)?;
        }
        if t.eval_every.is_some_and(|n| n > 0 && done % n == 0) && done != run.total {
            let (loss, more) = run.evaluate(done, &mut metrics, &mut on_event)?;
            tally.last_eval = loss.or(tally.last_eval);
            go_on &= more;
        }
        if let Some(sel) = select.as_mut().filter(|s| s.due(done, run.total)) {
            let base = run.base_name();
            let (rep, more) =
                sel.evaluate(run.model, &opt.vars, &r.lora, &base, &t.output_dir, done)?;
            let best = sel.best.map(|b| b.step).unwrap_or(done);
            metrics.select(done, rep.fact_match_rate, rep.fact_recall)?;
            go_on &= on_event(Event::Selected {
                step: done,
                fact_match: rep.fact_match_rate,
                fact_recall: rep.fact_recall,
                best_step: best,
            });
            tally.select_best = sel.best;
            early = !more;
        }
        if t.save_every.is_some_and(|n| n > 0 && done % n == 0) || done == run.total || early {
            go_on &= run.checkpoint(done, &opt, &tally, &mut on_event)?;
        }
        if !go_on {
            stopped = true;
            break;
        }
        if early {
            break;
        }
    }
    let eval_after = if stopped {
        None
    } else {
        // With `train.select`, the final adapter is the best one it saw.
        if let Some(sel) = &select {
            sel.restore_best(&opt.vars)?;
        }
        let (loss, _) = run.evaluate(tally.steps, &mut metrics, &mut on_event)?;
        // The final adapter, PEFT layout, at the top of output_dir.
        peft::save(run.model, 0, &r.lora, &run.base_name(), &t.output_dir)?;
        loss
    };
    Ok(tally.summary(eval_after, &t.output_dir))
}

/// One run's fixed parts, for the helpers of [`train`].
struct Run<'a> {
    r: &'a Recipe,
    /// Recorded in every checkpoint.
    id: identity::Fingerprint,
    model: &'a Llama,
    data: &'a Prepared,
    pad: u32,
    total: usize,
}

impl Run<'_> {
    /// What the adapter records as its base model.
    fn base_name(&self) -> String {
        self.r.model.path.display().to_string()
    }

    /// Held-out loss at `step` (None without eval data), logged and reported; also whether
    /// `on_event` wants to go on.
    fn evaluate(
        &self,
        step: usize,
        metrics: &mut Metrics,
        on_event: &mut impl FnMut(Event) -> bool,
    ) -> Result<(Option<f64>, bool)> {
        let loss = eval_loss(
            self.model,
            &self.data.eval,
            self.r.train.batch_size,
            self.pad,
        )?;
        let Some(l) = loss else {
            return Ok((None, true));
        };
        let go_on = on_event(Event::Eval { step, loss: l });
        metrics.eval(step, l)?;
        Ok((loss, go_on))
    }

    /// Checkpoint `output_dir/checkpoint-<step>` (adapter, optimizer, state), reported.
    fn checkpoint(
        &self,
        step: usize,
        opt: &AdamW,
        tally: &Tally,
        on_event: &mut impl FnMut(Event) -> bool,
    ) -> Result<bool> {
        let t = &self.r.train;
        let state = checkpoint::TrainerState {
            step,
            total_steps: self.total,
            seed: t.seed,
            last_loss: tally.last_loss,
            best_eval_loss: tally.last_eval,
            select_best: tally.select_best,
            run: Some(self.id.clone()),
        };
        let base = self.base_name();
        let path = checkpoint::save(
            &t.output_dir,
            self.model,
            &self.r.lora,
            &base,
            opt,
            &state,
            t.keep_checkpoints,
        )?;
        Ok(on_event(Event::Saved { step, path: &path }))
    }
}

/// What a run has done so far, for the [`Summary`].
struct Tally {
    started: std::time::Instant,
    steps: usize,
    tokens: usize,
    first_loss: Option<f64>,
    last_loss: Option<f64>,
    eval_before: Option<f64>,
    last_eval: Option<f64>,
    select_best: Option<select::Best>,
}

impl Tally {
    /// From step `start` on (the clock starts now), after the eval loss `eval_before`.
    fn new(start: usize, eval_before: Option<f64>) -> Self {
        Tally {
            started: std::time::Instant::now(),
            steps: start,
            tokens: 0,
            first_loss: None,
            last_loss: None,
            eval_before,
            last_eval: eval_before,
            select_best: None,
        }
    }

    fn record(&mut self, s: &StepStats) {
        self.steps += 1;
        self.tokens += s.tokens;
        self.first_loss.get_or_insert(s.loss);
        self.last_loss = Some(s.loss);
    }

    fn summary(&self, eval_after: Option<f64>, adapter_dir: &Path) -> Summary {
        let seconds = self.started.elapsed().as_secs_f64();
        Summary {
            steps: self.steps,
            first_loss: self.first_loss,
            final_loss: self.last_loss,
            eval_loss_before: self.eval_before,
            eval_loss_after: eval_after,
            tokens_per_sec: self.tokens as f64 / seconds.max(1e-9),
            seconds,
            peak_rss_mib: peak_rss_mib(),
            adapter_dir: adapter_dir.to_path_buf(),
            selected: self.select_best,
        }
    }
}

/// Peak resident memory of this process (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
