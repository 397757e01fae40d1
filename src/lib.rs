//! ft: fine-tune small open LLMs with QLoRA on commodity hardware and ship them as GGUF.
//!
//! The flow: a [`recipe::Recipe`] names a base model (GGUF or Hugging Face folder) and a dataset;
//! [`model`] loads one Llama-family implementation whose linear layers carry frozen (often
//! quantized) base weights plus optional LoRA adapters ([`lora`]); [`train`] optimises the
//! adapters only; [`export`] merges and writes GGUF; [`eval`] and [`serve`] use the same model.

pub mod budget;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod lora;
pub mod model;
pub mod output;
pub mod quant;
pub mod recipe;
pub mod serve;
pub mod testing;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
