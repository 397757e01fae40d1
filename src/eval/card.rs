//! The quality card: one table that says whether a fine-tune does the user's job and leaves
//! the model sane — the task score on held-out questions (without and with the system prompt),
//! the held-out loss, the perplexity of a general text and MMLU — base next to tuned.

use super::execute::Results;
use super::report::render_table;
use serde::Serialize;

/// One line of the card.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CardRow {
    pub metric: String,
    pub base: Option<f64>,
    pub tuned: Option<f64>,
    /// How to read the change: `points` (percentages), `relative` (a ratio), `absolute`.
    pub change: Change,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Rates shown as percentages; the change in percentage points.
    Points,
    /// The change as a percentage of the base value (perplexity).
    Relative,
    /// The plain difference (a loss).
    Absolute,
}

impl CardRow {
    fn cell(&self, v: Option<f64>) -> String {
        match (v, self.change) {
            (None, _) => "-".into(),
            (Some(x), Change::Points) => format!("{:.1}%", x * 100.0),
            (Some(x), _) => format!("{x:.3}"),
        }
    }

    fn delta(&self) -> String {
        let (Some(b), Some(t)) = (self.base, self.tuned) else {
            return "-".into();
        };
        match self.change {
            Change::Points => format!("{:+.1} pts", (t - b) * 100.0),
            Change::Relative if b != 0.0 => format!("{:+.1}%", (t / b - 1.0) * 100.0),
            _ => format!("{:+.3}", t - b),
        }
    }
}

/// The card's rows for a base and a tuned column; rows with no value on either side are left out.
pub fn rows(base: &Results, tuned: &Results) -> Vec<CardRow> {
    let row = |metric: String, b: Option<f64>, t: Option<f64>, change| CardRow {
        metric,
        base: b,
        tuned: t,
        change,
    };
    let task = |r: &Results| r.task.as_ref().map(|x| (x.fact_match_rate, x.fact_recall));
    let task_sys = |r: &Results| {
        r.task_system
            .as_ref()
            .map(|x| (x.fact_match_rate, x.fact_recall))
    };
    let n = tuned
        .task
        .as_ref()
        .or(base.task.as_ref())
        .map(|t| t.questions);
    let q = n.map(|n| format!(", {n} questions")).unwrap_or_default();
    let mut out = vec![
        row(
            format!("task fact-match{q}"),
            task(base).map(|x| x.0),
            task(tuned).map(|x| x.0),
            Change::Points,
        ),
        row(
            "task fact recall".into(),
            task(base).map(|x| x.1),
            task(tuned).map(|x| x.1),
            Change::Points,
        ),
        row(
            "task fact-match, with the system prompt".into(),
            task_sys(base).map(|x| x.0),
            task_sys(tuned).map(|x| x.0),
            Change::Points,
        ),
        row(
            "held-out loss".into(),
            base.dataset_loss,
            tuned.dataset_loss,
            Change::Absolute,
        ),
        row(
            "general-text perplexity".into(),
            base.perplexity.as_ref().map(|p| p.ppl),
            tuned.perplexity.as_ref().map(|p| p.ppl),
            Change::Relative,
        ),
    ];
    if let (Some(mb), Some(mt)) = (&base.mmlu, &tuned.mmlu) {
        let s = &mt.settings;
        out.push(row(
            format!(
                "MMLU {} {}-shot, {} subjects, {} questions (95% CI ±{:.1} pts)",
                s.style,
                s.shots,
                mt.subjects.len(),
                mt.micro.scored,
                (mt.micro.ci_high - mt.micro.ci_low) * 50.0
            ),
            Some(mb.micro.acc),
            Some(mt.micro.acc),
            Change::Points,
        ));
    }
    out.retain(|r| r.base.is_some() || r.tuned.is_some());
    out
}

/// The card as a markdown table.
pub fn markdown(rows: &[CardRow], base_label: &str, tuned_label: &str) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| vec![r.metric.clone(), r.cell(r.base), r.cell(r.tuned), r.delta()])
        .collect();
    render_table(
        &["quality card", base_label, tuned_label, "change"],
        &[false, true, true, true],
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::task::TaskReport;

    fn task(m: f64) -> Option<TaskReport> {
        Some(TaskReport {
            questions: 10,
            fact_match_rate: m,
            fact_recall: m,
            answers: vec![],
        })
    }

    #[test]
    fn card_shows_points_relative_and_absolute_changes() {
        let base = Results {
            label: "base".into(),
            task: task(0.1),
            dataset_loss: Some(3.0),
            ..Default::default()
        };
        let tuned = Results {
            label: "tuned".into(),
            task: task(0.75),
            dataset_loss: Some(0.5),
            ..Default::default()
        };
        let r = rows(&base, &tuned);
        assert_eq!(r.len(), 3, "rows without values are left out: {r:?}");
        let md = markdown(&r, "base", "tuned");
        assert!(md.contains("task fact-match, 10 questions"), "{md}");
        assert!(
            md.contains("10.0%") && md.contains("75.0%") && md.contains("+65.0 pts"),
            "{md}"
        );
        assert!(md.contains("-2.500"), "{md}");
        let ppl = CardRow {
            metric: "p".into(),
            base: Some(20.0),
            tuned: Some(22.0),
            change: Change::Relative,
        };
        assert_eq!(ppl.delta(), "+10.0%");
    }
}
