//! The one place a run's metrics go: TensorBoard scalars (`train/<name>`, `eval/loss`) and
//! the JSONL log (`<name>`, `eval_loss`), each when the recipe's `logging:` switches it on.

use super::step::StepStats;
use super::tensorboard::{EventWriter, MetricsLog};
use crate::error::Result;
use crate::recipe::LoggingSpec;

pub struct Metrics {
    tensorboard: Option<EventWriter>,
    jsonl: Option<MetricsLog>,
}

impl Metrics {
    /// Open the sinks `logging` names (None = off).
    pub fn open(logging: &LoggingSpec) -> Result<Self> {
        Ok(Metrics {
            tensorboard: logging
                .tensorboard
                .as_deref()
                .map(EventWriter::create)
                .transpose()?,
            jsonl: logging
                .metrics_jsonl
                .as_deref()
                .map(MetricsLog::open)
                .transpose()?,
        })
    }

    /// One training step's scalars.
    pub fn train(&mut self, step: usize, s: &StepStats) -> Result<()> {
        let values = [
            ("loss", s.loss),
            ("lr", s.lr),
            ("grad_norm", s.grad_norm),
            ("tokens_per_sec", s.tokens_per_sec),
        ];
        if let Some(w) = self.tensorboard.as_mut() {
            for (name, v) in values {
                w.add_scalar(&format!("train/{name}"), v as f32, step as i64)?;
            }
            w.flush()?;
        }
        if let Some(log) = self.jsonl.as_mut() {
            log.log(step as u64, &values)?;
        }
        Ok(())
    }

    /// A held-out loss.
    pub fn eval(&mut self, step: usize, loss: f64) -> Result<()> {
        if let Some(w) = self.tensorboard.as_mut() {
            w.add_scalar("eval/loss", loss as f32, step as i64)?;
            w.flush()?;
        }
        if let Some(log) = self.jsonl.as_mut() {
            log.log(step as u64, &[("eval_loss", loss)])?;
        }
        Ok(())
    }

    /// `train.select`'s task scores on the validation questions at `step`.
    pub fn select(&mut self, step: usize, fact_match: f64, fact_recall: f64) -> Result<()> {
        if let Some(w) = self.tensorboard.as_mut() {
            w.add_scalar("select/fact_match", fact_match as f32, step as i64)?;
            w.add_scalar("select/fact_recall", fact_recall as f32, step as i64)?;
            w.flush()?;
        }
        if let Some(log) = self.jsonl.as_mut() {
            log.log(
                step as u64,
                &[
                    ("select_fact_match", fact_match),
                    ("select_fact_recall", fact_recall),
                ],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_reaches_both_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let logging = LoggingSpec {
            tensorboard: Some(dir.path().join("tb")),
            metrics_jsonl: Some(dir.path().join("m.jsonl")),
        };
        let mut m = Metrics::open(&logging).unwrap();
        m.eval(0, 2.5).unwrap();
        let s = StepStats {
            loss: 2.0,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens: 10,
            tokens_per_sec: 100.0,
        };
        m.train(1, &s).unwrap();
        m.eval(1, 1.5).unwrap();
        drop(m);
        let tb = std::fs::read_dir(dir.path().join("tb"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let scalars = super::super::tensorboard::read_scalars(&tb).unwrap();
        let tags: Vec<(&str, i64)> = scalars.iter().map(|s| (s.0.as_str(), s.1)).collect();
        assert_eq!(
            tags,
            [
                ("eval/loss", 0),
                ("train/loss", 1),
                ("train/lr", 1),
                ("train/grad_norm", 1),
                ("train/tokens_per_sec", 1),
                ("eval/loss", 1)
            ]
        );
        let text = std::fs::read_to_string(dir.path().join("m.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            (lines[0]["step"].as_u64(), lines[0]["eval_loss"].as_f64()),
            (Some(0), Some(2.5))
        );
        assert_eq!(lines[1]["loss"].as_f64(), Some(2.0));
        assert_eq!(lines[2]["eval_loss"].as_f64(), Some(1.5));
    }
}
