//! Datasets: [`DatasetConfig`] (a recipe's `dataset:` section) names the files; read
//! `.jsonl` / `.json` / `.parquet` files into typed [`Example`]s with [`read_examples`], split
//! off an eval set with [`split_eval`]; render with the chat template, tokenize, mask and batch
//! them in [`encode`].

pub mod augment;
mod config;
pub mod encode;
mod example;
pub mod parquet;
mod read;
pub mod replay;
mod split;

pub(crate) use config::{cwd_note, key_error};
pub use config::{weighted, DatasetConfig, MixSource, Paths, Source, Split};
pub use example::{Example, FieldMap, Format};
pub use read::{expand_paths, read_examples, ReadReport, EXTENSIONS};
pub use split::split_eval;
