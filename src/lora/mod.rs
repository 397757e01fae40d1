//! LoRA (Hu et al. 2021, arXiv:2106.09685): a frozen linear `W` plus a trainable low-rank update,
//! `y = x Wᵀ + scale · dropout(x) Aᵀ Bᵀ`, A: (r, in), B: (out, r), scale = alpha / r
//! (rsLoRA, arXiv:2312.03732: alpha / √r). A starts Kaiming-uniform like PEFT, B at zero, so a
//! fresh adapter changes nothing. `delta_weight()` (= scale · B A) is what merge uses, so
//! training and export share one definition.

pub mod peft;

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

/// The seven projections of a Llama block, named as in Hugging Face checkpoints.
pub const ALL_TARGETS: [&str; 7] = [
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
];

/// What an adapter looks like: rank, alpha, dropout, which projections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<String>,
    pub rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: ALL_TARGETS.iter().map(|s| s.to_string()).collect(),
            rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor in front of B·A: alpha/r, or alpha/√r with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == module)
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::invalid("lora.r must be > 0 (got 0)"));
        }
        for t in &self.target_modules {
            if !ALL_TARGETS.contains(&t.as_str()) {
                return Err(Error::invalid(format!(
                    "unknown LoRA target module `{t}` (expected one of {})",
                    ALL_TARGETS.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// One adapter on one linear layer.
#[derive(Clone, Debug)]
pub struct Lora {
    /// (r, in_features)
    pub a: Tensor,
    /// (out_features, r)
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f64,
}

impl Lora {
    /// A fresh trainable adapter: A ~ Kaiming-uniform(a=√5) as PEFT/nn.Linear, B = 0.
    /// Returns the adapter and its two `Var`s for the optimizer.
    pub fn init(
        in_features: usize,
        out_features: usize,
        cfg: &LoraConfig,
        device: &Device,
    ) -> Result<(Self, [Var; 2])> {
        // kaiming_uniform_(a=√5) on fan_in: bound = √(6 / ((1 + a²) fan_in)) = 1/√fan_in.
        let bound = 1.0 / (in_features as f64).sqrt();
        let a = Var::rand(-bound, bound, (cfg.r, in_features), device)?;
        let b = Var::zeros((out_features, cfg.r), DType::F32, device)?;
        let lora = Lora {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: cfg.scale(),
            dropout: cfg.dropout,
        };
        Ok((lora, [a, b]))
    }

    /// `scale · dropout(x) Aᵀ Bᵀ` for x (.., in).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = if train && self.dropout > 0.0 {
            candle_nn::ops::dropout(x, self.dropout as f32)?
        } else {
            x.clone()
        };
        let x = x.to_dtype(self.a.dtype())?;
        let h = crate::quant::plain_matmul(&x, &self.a)?;
        let y = crate::quant::plain_matmul(&h, &self.b)?;
        Ok((y * self.scale)?)
    }

    /// scale · B A, shape (out, in): what merging adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }
}
