//! LoRA (Hu et al. 2021, arXiv:2106.09685): a frozen linear `W` plus a trainable low-rank update,
//! `y = x Wᵀ + scale · dropout(x) Aᵀ Bᵀ`, A: (r, in), B: (out, r), scale = alpha / r
//! (rsLoRA, arXiv:2312.03732: alpha / √r). A starts Kaiming-uniform like PEFT, B at zero, so a
//! fresh adapter changes nothing. `delta_weight()` (= scale · B A) is what merge uses, so
//! training and export share one definition. [`LoraConfig`] is the adapter's shape; PEFT files
//! are read and written by `model::peft`, which walks the model's layers.

pub mod fused;

use crate::config::{ensure, ConfigError};
use crate::error::Result;
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

crate::config::named_enum!(
    /// A linear layer of a Llama block that can carry a LoRA adapter (HF names).
    TargetModule, "target module", {
        QProj = "q_proj",
        KProj = "k_proj",
        VProj = "v_proj",
        OProj = "o_proj",
        GateProj = "gate_proj",
        UpProj = "up_proj",
        DownProj = "down_proj",
    }
);

/// Which layers get an adapter: `all-linear` or a list of [`TargetModule`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetModules {
    /// Every linear layer of every block (not `lm_head`), as the QLoRA paper recommends.
    #[default]
    AllLinear,
    List(Vec<TargetModule>),
}

impl TargetModules {
    /// The selected modules, in block order.
    pub fn modules(&self) -> Vec<TargetModule> {
        match self {
            TargetModules::AllLinear => TargetModule::ALL.to_vec(),
            TargetModules::List(l) => l.clone(),
        }
    }

    /// Whether the layer named `name` (e.g. `q_proj`) gets an adapter.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            TargetModules::AllLinear => TargetModule::ALL.iter().any(|m| m.as_str() == name),
            TargetModules::List(l) => l.iter().any(|m| m.as_str() == name),
        }
    }

    /// Parse names as a recipe writes them: `all-linear` alone, or distinct module names.
    fn from_names(names: &[String]) -> std::result::Result<Self, String> {
        if let [one] = names {
            if matches!(one.as_str(), "all-linear" | "all_linear") {
                return Ok(TargetModules::AllLinear);
            }
        }
        let mut out = Vec::new();
        for n in names {
            let m: TargetModule = n
                .parse()
                .map_err(|e: String| format!("{e} or `all-linear`"))?;
            if out.contains(&m) {
                return Err(format!("`{m}` is listed twice"));
            }
            out.push(m);
        }
        if out.is_empty() {
            return Err("empty list; name at least one module or use `all-linear`".into());
        }
        Ok(TargetModules::List(out))
    }
}

impl Serialize for TargetModules {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            TargetModules::AllLinear => s.serialize_str("all-linear"),
            TargetModules::List(l) => s.collect_seq(l.iter().map(|m| m.as_str())),
        }
    }
}

impl<'de> Deserialize<'de> for TargetModules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de;
        // Checked inside the visitor, so serde's error carries this key's path and position.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TargetModules;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`all-linear` or a list of module names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<TargetModules, E> {
                TargetModules::from_names(&crate::config::csv(v)).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<TargetModules, A::Error> {
                TargetModules::from_names(&crate::config::strings(seq)?).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The factor in front of B·A: alpha/r, or alpha/√r with rsLoRA. The one definition: the
/// recipe's config, PEFT files (per module with rank/alpha patterns) and export all use it.
pub fn scale(alpha: f64, r: usize, rslora: bool) -> f64 {
    if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

/// A rank beyond any model's layer width: larger values are typos, refused before any allocation.
pub const MAX_RANK: usize = 1 << 16;

/// What an adapter looks like: rank, alpha, dropout, which projections (a recipe's `lora:`
/// section deserializes straight into it; PEFT's `adapter_config.json` maps to and from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: TargetModules,
    /// rsLoRA: scale by alpha/sqrt(r) instead of alpha/r.
    pub rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.05,
            target_modules: TargetModules::AllLinear,
            rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor in front of B·A ([`scale`]).
    pub fn scale(&self) -> f64 {
        scale(self.alpha, self.r, self.rslora)
    }

    /// Whether the projection named `module` (`q_proj`) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.contains(module)
    }

    /// Range checks, naming the recipe key (the model-dependent bound is in
    /// `train::attach_adapters`).
    pub fn check(&self) -> std::result::Result<(), ConfigError> {
        ensure!(self.r > 0, "lora.r", "lora.r must be > 0 (got {})", self.r);
        ensure!(
            self.r <= MAX_RANK,
            "lora.r",
            "lora.r must be at most {MAX_RANK} (got {})",
            self.r
        );
        ensure!(
            self.alpha > 0.0 && self.alpha.is_finite(),
            "lora.alpha",
            "lora.alpha must be > 0 (got {})",
            self.alpha
        );
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "lora.dropout",
            "lora.dropout must be in [0, 1) (got {})",
            self.dropout
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_yaml_and_scale() {
        let c: LoraConfig = serde_yaml_ng::from_str("r: 4\nalpha: 8\nrslora: true\n").unwrap();
        assert_eq!(c.scale(), 4.0, "rslora: 8/sqrt(4)");
        assert_eq!(c.target_modules, TargetModules::AllLinear);
        assert!(c.targets("down_proj") && !c.targets("lm_head"));
        let c: LoraConfig = serde_yaml_ng::from_str("target_modules: q_proj, v_proj\n").unwrap();
        assert_eq!(
            c.target_modules.modules(),
            vec![TargetModule::QProj, TargetModule::VProj]
        );
        assert!(!c.targets("o_proj"));
        let e = serde_yaml_ng::from_str::<LoraConfig>("target_modules: [q_proj, q_proj]\n");
        assert!(e.unwrap_err().to_string().contains("listed twice"));
        assert!(serde_yaml_ng::from_str::<LoraConfig>("rank: 4\n").is_err());
        let bad = LoraConfig {
            r: 0,
            ..LoraConfig::default()
        };
        assert_eq!(bad.check().unwrap_err().msg, "lora.r must be > 0 (got 0)");
    }
}
