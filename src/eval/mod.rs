//! Evaluation: MMLU (letter and cloze styles, prefix-cached), perplexity, and the task metric
//! of a held-out set; reports that put base and fine-tuned side by side.

pub mod config;
pub mod mmlu;
pub mod perplexity;
pub mod report;
pub mod scorer;
pub mod stats;
pub mod task;

pub use config::{EvalConfig, MmluConfig, TaskConfig};
