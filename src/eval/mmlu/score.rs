//! Scoring bookkeeping: walk the selected subjects, ask a [`ChoiceScorer`] for choice log-probs,
//! count. The model lives behind the trait, so everything here runs in tests with a fake scorer.

use std::time::Instant;

use super::load::Dataset;
use super::prompt::{build_items, build_items_with_dev, Item, Style, LETTERS};
use super::subjects::category_of;
use crate::error::{Error, Result};
use crate::eval::report::{MmluReport, MmluSettings, SubjectResult, AGGREGATION};
use crate::eval::stats::accuracy;

/// What a model must answer for MMLU.
pub trait ChoiceScorer {
    /// Log-probs of the letter candidates after prefix+suffix. `prefix` is the same for all items of a subject.
    fn letter_logprobs(
        &mut self,
        prefix: &str,
        suffix: &str,
        letters: &[&str; 4],
    ) -> crate::Result<[f64; 4]>;
    /// Sum of token log-probs of each continuation after prefix+suffix.
    fn cloze_logprobs(
        &mut self,
        prefix: &str,
        suffix: &str,
        continuations: &[String; 4],
    ) -> crate::Result<[f64; 4]>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmluOptions {
    /// Worked examples before each question.
    pub shots: usize,
    /// Score at most this many questions per subject (lm-eval's `--limit`).
    pub limit: Option<usize>,
    pub style: Style,
    /// `Some(k)`: the first k questions of each subject are the shot pool and are not scored (k = 5
    /// reproduces the fixture: 0- and 5-shot score the same questions). `None`: the dev split when the
    /// data set has one for the subject, else the first `shots` questions.
    pub pool: Option<usize>,
    /// Recorded in the report; applying the chat template is the scorer's job.
    pub chat: bool,
}

impl Default for MmluOptions {
    fn default() -> Self {
        MmluOptions {
            shots: 5,
            limit: None,
            style: Style::Letter,
            pool: None,
            chat: false,
        }
    }
}

struct Work {
    name: String,
    prefix: String,
    items: Vec<Item>,
}

/// Score `subjects` of `ds`; `progress(done, total)` is called after every question (and once at 0).
pub fn run(
    ds: &Dataset,
    subjects: &[String],
    opts: &MmluOptions,
    scorer: &mut dyn ChoiceScorer,
    mut progress: impl FnMut(usize, usize),
) -> Result<MmluReport> {
    if subjects.is_empty() {
        return Err(Error::invalid("no MMLU subjects selected"));
    }
    let mut work = Vec::with_capacity(subjects.len());
    let (mut from_dev, mut from_file) = (0usize, 0usize);
    for name in subjects {
        let subject = ds.subject(name).ok_or_else(|| {
            Error::invalid(format!("MMLU subject `{name}` is not in the data set"))
        })?;
        let (prefix, mut items) = match (opts.pool, ds.dev_for(name)) {
            (Some(pool), _) => {
                from_file += 1;
                build_items(&subject.questions, opts.shots, pool, opts.style)?
            }
            (None, Some(dev)) => {
                from_dev += 1;
                build_items_with_dev(dev, &subject.questions, opts.shots, opts.style)?
            }
            (None, None) => {
                from_file += 1;
                build_items(&subject.questions, opts.shots, opts.shots, opts.style)?
            }
        };
        if let Some(limit) = opts.limit {
            items.truncate(limit);
        }
        work.push(Work {
            name: name.clone(),
            prefix,
            items,
        });
    }

    let total: usize = work.iter().map(|w| w.items.len()).sum();
    let started = Instant::now();
    let mut done = 0;
    progress(done, total);
    let mut results = Vec::with_capacity(work.len());
    for w in &work {
        let mut tally = Tally::default();
        for item in &w.items {
            let lp = match opts.style {
                Style::Letter => {
                    scorer.letter_logprobs(&w.prefix, &item.prompt_suffix, &LETTERS)?
                }
                Style::Cloze => scorer.cloze_logprobs(
                    &w.prefix,
                    &item.prompt_suffix,
                    &item.cloze_continuations,
                )?,
            };
            if lp.iter().any(|x| x.is_nan()) {
                return Err(Error::invalid(format!(
                    "scorer returned NaN log-probs {lp:?} for `{}` question {}",
                    w.name,
                    item.index_in_subject + 1
                )));
            }
            tally.add(item, &lp, opts.style);
            done += 1;
            progress(done, total);
        }
        results.push(tally.result(&w.name, opts.style));
    }
    let seconds = started.elapsed().as_secs_f64();

    let shot_source = match (opts.pool, from_dev, from_file) {
        (Some(k), _, _) => {
            format!("first {k} questions of each subject (the shot pool, not scored)")
        }
        (None, d, 0) if d > 0 => "dev split".to_string(),
        (None, 0, _) => format!(
            "first {} questions of each subject (not scored)",
            opts.shots
        ),
        (None, _, _) => format!(
            "dev split for {from_dev} subjects, first {} questions of the other {from_file}",
            opts.shots
        ),
    };
    let settings = MmluSettings {
        model: None,
        model_sha256: None,
        dataset: ds.files.iter().map(|f| f.display().to_string()).collect(),
        style: opts.style,
        shots: opts.shots,
        shot_source,
        limit: opts.limit,
        chat_template: opts.chat,
        aggregation: AGGREGATION.to_string(),
        skipped: ds.skipped.len(),
        skipped_rows: ds.skipped.iter().map(|s| s.to_string()).collect(),
        questions: total,
        seconds,
        questions_per_s: if seconds > 0.0 {
            total as f64 / seconds
        } else {
            0.0
        },
    };
    Ok(MmluReport::new(settings, results))
}

/// Index of the largest value; the first on ties (numpy's argmax, as lm-eval).
fn argmax(v: &[f64; 4]) -> usize {
    let mut best = 0;
    for i in 1..4 {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

#[derive(Default)]
struct Tally {
    scored: usize,
    correct: usize,
    correct_norm: usize,
    pred_counts: [usize; 4],
}

impl Tally {
    fn add(&mut self, item: &Item, lp: &[f64; 4], style: Style) {
        let pred = argmax(lp);
        self.scored += 1;
        self.pred_counts[pred] += 1;
        if pred == item.gold {
            self.correct += 1;
        }
        if style == Style::Cloze {
            // lm-eval's acc_norm: log-prob per character of the choice text (without the space).
            let norm = [0, 1, 2, 3].map(|i| {
                let chars = item.cloze_continuations[i]
                    .chars()
                    .count()
                    .saturating_sub(1);
                lp[i] / chars.max(1) as f64
            });
            if argmax(&norm) == item.gold {
                self.correct_norm += 1;
            }
        }
    }

    fn result(&self, name: &str, style: Style) -> SubjectResult {
        SubjectResult {
            subject: name.to_string(),
            category: category_of(name),
            accuracy: accuracy(self.correct, self.scored),
            pred_counts: self.pred_counts,
            acc_norm: (style == Style::Cloze).then(|| accuracy(self.correct_norm, self.scored)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_on_ties() {
        assert_eq!(argmax(&[-1.0, -0.5, -0.5, -2.0]), 1);
        assert_eq!(argmax(&[f64::NEG_INFINITY; 4]), 0);
        assert_eq!(argmax(&[-3.0, -2.0, -1.0, -0.0]), 3);
    }
}
