//! Evaluation: MMLU (letter and cloze styles, prefix-cached), perplexity, held-out loss, and the
//! task metric of a held-out set; reports that put base and fine-tuned side by side. [`plan`]
//! decides what `ft eval` runs on which model and runs it; [`EvalConfig`] is a recipe's `eval:`
//! section.

pub mod card;
pub mod config;
pub mod execute;
pub mod loss;
pub mod mmlu;
pub mod perplexity;
pub mod plan;
pub mod report;
pub mod scorer;
pub mod stats;
pub mod task;

pub use config::{EvalConfig, MmluConfig, SelectConfig, TaskConfig};
pub use execute::{EvalEvent, Results};
pub use plan::{EvalPlan, EvalSettings, TrainedRun};
