//! LoRA (Hu et al. 2021, arXiv:2106.09685): a frozen linear `W` plus a trainable low-rank update,
//! `y = x Wᵀ + scale · dropout(x) Aᵀ Bᵀ`, A: (r, in), B: (out, r), scale = alpha / r
//! (rsLoRA, arXiv:2312.03732: alpha / √r). A starts Kaiming-uniform like PEFT, B at zero, so a
//! fresh adapter changes nothing. `delta_weight()` (= scale · B A) is what merge uses, so
//! training and export share one definition.

pub mod fused;
pub mod peft;

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// A 64-bit mix (splitmix64 finaliser) of a seed and a salt.
pub fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seven projections of a Llama block, named as in Hugging Face checkpoints.
pub const ALL_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The inverted-dropout mask (values 0 or 1/keep) for an input of `shape`, reproducible from
/// (seed, salt); None when dropout is off.
pub fn dropout_mask(
    shape: &candle_core::Shape,
    p: f64,
    seed: u64,
    salt: u64,
    device: &Device,
) -> Result<Option<Tensor>> {
    if p <= 0.0 {
        return Ok(None);
    }
    let keep = 1.0 - p;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(mix(seed, salt));
    let k = (1.0 / keep) as f32;
    let m: Vec<f32> = (0..shape.elem_count())
        .map(|_| if rng.random::<f64>() < keep { k } else { 0.0 })
        .collect();
    Ok(Some(Tensor::from_vec(m, shape, device)?))
}

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
    /// Distinguishes this layer's dropout masks from every other layer's.
    pub salt: u64,
}

impl Lora {
    /// A fresh trainable adapter: A ~ Kaiming-uniform(a=√5) as PEFT/nn.Linear, B = 0.
    /// Returns the adapter and its two `Var`s for the optimizer.
    pub fn init(
        in_features: usize,
        out_features: usize,
        cfg: &LoraConfig,
        seed: u64,
        salt: u64,
        device: &Device,
    ) -> Result<(Self, [Var; 2])> {
        // kaiming_uniform_(a=√5) on fan_in: bound = √(6 / ((1 + a²) fan_in)) = 1/√fan_in.
        let bound = 1.0 / (in_features as f64).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix(seed, salt));
        let vals: Vec<f32> = (0..cfg.r * in_features)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(vals, (cfg.r, in_features), device)?)?;
        let b = Var::zeros((out_features, cfg.r), DType::F32, device)?;
        let lora = Lora {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: cfg.scale(),
            dropout: cfg.dropout,
            salt,
        };
        Ok((lora, [a, b]))
    }

    /// `scale · dropout(x) Aᵀ Bᵀ` for x (.., in). `dropout_seed` (training only) makes the
    /// mask reproducible, so a resumed run draws the same masks as an uninterrupted one.
    pub fn forward(&self, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        let x = match dropout_seed.and_then(|s| {
            dropout_mask(x.shape(), self.dropout, s, self.salt, x.device()).transpose()
        }) {
            Some(m) => (x * m?.to_dtype(x.dtype())?)?,
            None => x.clone(),
        };
        let x = x.to_dtype(self.a.dtype())?;
        let h = crate::quant::plain_matmul(&x, &self.a)?;
        let y = crate::quant::plain_matmul(&h, &self.b)?;
        Ok((y * self.scale)?)
    }

    /// The same with A and B detached (the fused training op attaches gradients itself).
    pub fn forward_detached(&self, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor> {
        Lora {
            a: self.a.detach(),
            b: self.b.detach(),
            ..self.clone()
        }
        .forward(x, dropout_seed)
    }

    /// scale · B A, shape (out, in): what merging adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }
}
