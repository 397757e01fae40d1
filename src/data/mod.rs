//! Datasets: read `.jsonl` / `.json` / `.parquet` files into typed [`Example`]s with
//! [`read_examples`], split off an eval set with [`split_eval`]. Rendering with the chat template,
//! tokenizing, loss masks and batching build on these types.

mod example;
mod parquet;
mod read;
mod split;

pub use example::{Example, FieldMap, Format, Turn, ROLES};
pub use read::{expand_paths, read_examples, ReadReport, EXTENSIONS};
pub use split::split_eval;
