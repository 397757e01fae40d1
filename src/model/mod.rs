//! The model: config, the Llama-family network, its KV cache, the HF<->GGUF name table,
//! and the loaders that turn files into a [`Llama`] and PEFT adapter folders into its adapter
//! slots ([`load`], [`peft`]: the only parts here that do I/O).

pub mod cache;
pub mod config;
pub mod identity;
pub mod linear;
pub mod llama;
pub mod load;
pub mod loss;
pub mod names;
pub mod ops;
pub mod peft;

pub use cache::KvCache;
pub use config::{Arch, Config};
pub use linear::Linear;
pub use llama::Llama;
pub use load::{load, LoadOptions, Loaded, MAX_POSITIONS};

use crate::error::Result;
use crate::quant::{FrozenWeight, MatmulMode};

/// How one forward pass runs.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub mode: MatmulMode,
    /// Which adapter slot to apply (None = base model).
    pub adapter: Option<usize>,
    /// Training: dropout on, gradients flow through frozen weights.
    pub train: bool,
    /// Dropout seed for this step (training only).
    pub seed: u64,
    /// NEFTune noise on the input embeddings (training only; 0 = off).
    pub neftune: f64,
}

impl Ctx {
    /// The same pass with NEFTune noise of magnitude `alpha` on the embeddings.
    pub fn with_neftune(self, alpha: f64) -> Self {
        Ctx {
            neftune: alpha,
            ..self
        }
    }

    pub fn infer(mode: MatmulMode, adapter: Option<usize>) -> Self {
        Ctx {
            mode,
            adapter,
            train: false,
            seed: 0,
            neftune: 0.0,
        }
    }

    /// A training step: exact matmuls, adapter slot 0, dropout seeded by `seed`.
    pub fn train(seed: u64) -> Self {
        Ctx {
            mode: MatmulMode::Exact,
            adapter: Some(0),
            train: true,
            seed,
            neftune: 0.0,
        }
    }
}

/// Where the model constructor gets its weights: by HF name, in HF layout.
pub trait WeightSource {
    fn get(&mut self, name: &str) -> Result<Option<FrozenWeight>>;
}
