//! Running an [`EvalPlan`]: load the model once, evaluate every column, report progress.

use std::path::Path;

use serde::Serialize;

use super::loss::held_out_loss;
use super::mmlu::{self, MmluReport};
use super::perplexity::{perplexity, Perplexity};
use super::plan::EvalPlan;
use super::scorer::ModelScorer;
use super::task::{self, TaskReport};
use crate::error::{Error, Result};
use crate::model::{Ctx, LoadOptions, Loaded};
use crate::tokenizer::ChatTemplate;

impl EvalPlan {
    /// Load the model (and the compare model) and evaluate every column in order.
    pub fn run(&self, on: &mut dyn FnMut(EvalEvent)) -> Result<Vec<Results>> {
        let loaded = crate::model::load(&self.model, &self.load)
            .map_err(|e| e.context(self.model.display().to_string()))?;
        let mut out = Vec::new();
        for c in &self.columns {
            let ctx = Ctx::infer(self.mode, c.adapter);
            out.push(self.evaluate(&loaded, &self.model, ctx, &c.label, on)?);
        }
        if let Some(other) = &self.compare_model {
            let load = LoadOptions {
                adapters: vec![],
                ..self.load.clone()
            };
            let loaded = crate::model::load(other, &load)
                .map_err(|e| e.context(format!("--compare {}", other.display())))?;
            let ctx = Ctx::infer(self.mode, None);
            out.push(self.evaluate(&loaded, other, ctx, "compare", on)?);
        }
        Ok(out)
    }

    /// Everything the plan measures, for one column.
    pub fn evaluate(
        &self,
        loaded: &Loaded,
        path: &Path,
        ctx: Ctx,
        label: &str,
        on: &mut dyn FnMut(EvalEvent),
    ) -> Result<Results> {
        let mut r = Results {
            label: label.to_string(),
            ..Default::default()
        };
        let template = ChatTemplate::choose(
            self.template.as_ref(),
            loaded.template.as_ref(),
            &loaded.tokenizer,
        )?;
        if let Some(m) = &self.mmlu {
            let ds = mmlu::load(&m.path)?;
            if !ds.skipped.is_empty() {
                on(EvalEvent::Note(format!(
                    "ft eval: skipped {} malformed MMLU rows ({})",
                    ds.skipped.len(),
                    ds.skipped
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            let names = mmlu::select(&ds, &m.subjects)?;
            let chat = m.options.chat.then(|| template.clone());
            let mut scorer = ModelScorer::new(&loaded.model, &loaded.tokenizer, ctx, chat);
            scorer.reuse_prefix = m.reuse_prefix;
            let step = progress(on, label, "MMLU");
            let mut rep = mmlu::run(&ds, &names, &m.options, &mut scorer, step)?;
            rep.set_model(path)?;
            on(EvalEvent::Note(format!(
                "ft eval [{label}]: {}",
                rep.summary_line()
            )));
            r.mmlu = Some(rep);
        }
        if let Some(p) = &self.perplexity {
            let text = std::fs::read_to_string(&p.path).map_err(|e| Error::io(&p.path, e))?;
            let ids = loaded.tokenizer.encode_prompt(&text, false)?;
            let step = progress(on, label, "perplexity");
            let ppl = perplexity(&loaded.model, &ctx, &ids, p.ctx, p.stride, step)?;
            on(EvalEvent::Note(format!(
                "ft eval [{label}]: perplexity {:.4} ± {:.4} over {} tokens ({} chunks of {}, {})",
                ppl.ppl, ppl.ppl_stderr, ppl.scored_tokens, ppl.chunks, ppl.ctx, ppl.method
            )));
            r.perplexity = Some(ppl);
        }
        if let Some(l) = &self.loss {
            let examples = l.examples()?;
            let h = held_out_loss(loaded, &template, &l.data, &examples, l.batch_size, ctx)?;
            if let Some(loss) = h.loss {
                on(EvalEvent::Note(format!(
                    "ft eval [{label}]: {} examples, masked loss {loss:.4} (perplexity {:.3})",
                    h.examples,
                    loss.exp()
                )));
            }
            r.dataset_loss = h.loss;
        }
        if let Some(t) = &self.task {
            let items = task::load(&t.path)?;
            // Asked plainly, then (when the plan says so) after the system prompt.
            let ask =
                |system: Option<&String>, what: &'static str, on: &mut dyn FnMut(EvalEvent)| {
                    let mut opts = task::TaskOptions::new(t.max_new_tokens);
                    opts.system = system.cloned();
                    task::run_with(
                        &loaded.model,
                        &loaded.tokenizer,
                        &template,
                        ctx,
                        &items,
                        &opts,
                        progress(on, label, what),
                    )
                };
            let rep = ask(None, "task", on)?;
            on(EvalEvent::Note(format!(
                "ft eval [{label}]: fact-match {:.3} ({} questions), fact recall {:.3}",
                rep.fact_match_rate, rep.questions, rep.fact_recall
            )));
            r.task = Some(rep);
            if let Some(sys) = &t.system {
                let rep = ask(Some(sys), "task (system prompt)", on)?;
                on(EvalEvent::Note(format!(
                    "ft eval [{label}]: with the system prompt: fact-match {:.3}, fact recall {:.3}",
                    rep.fact_match_rate, rep.fact_recall
                )));
                r.task_system = Some(rep);
            }
        }
        Ok(r)
    }
}

/// Progress of `what` in column `label`, as [`EvalEvent::Progress`].
fn progress<'a>(
    on: &'a mut dyn FnMut(EvalEvent),
    label: &'a str,
    what: &'static str,
) -> impl FnMut(usize, usize) + 'a {
    move |done, total| {
        on(EvalEvent::Progress {
            label: label.to_string(),
            what,
            done,
            total,
        })
    }
}

/// What [`EvalPlan::run`] reports while it works.
#[derive(Clone, Debug)]
pub enum EvalEvent {
    /// `what` (MMLU, perplexity, task) of column `label` is at `done` of `total`.
    Progress {
        label: String,
        what: &'static str,
        done: usize,
        total: usize,
    },
    /// A line for the log: a finished measurement's summary, rows skipped.
    Note(String),
}

/// Everything measured for one column.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    pub label: String,
    pub mmlu: Option<MmluReport>,
    pub perplexity: Option<Perplexity>,
    pub dataset_loss: Option<f64>,
    pub task: Option<TaskReport>,
    /// The task asked after `eval.task.system`.
    pub task_system: Option<TaskReport>,
}
