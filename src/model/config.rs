//! Model hyper-parameters, read from a GGUF file's `{arch}.*` metadata or an HF `config.json`.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 2/3, Mistral, SmolLM, TinyLlama.
    Llama,
    /// Qwen2: Llama plus biases on q/k/v.
    Qwen2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    fn parse(s: &str) -> Option<Arch> {
        match s {
            "llama" | "mistral" | "LlamaForCausalLM" | "MistralForCausalLM" => Some(Arch::Llama),
            "qwen2" | "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            _ => None,
        }
    }
}

/// Llama-3 style frequency-dependent RoPE scaling, or plain linear position scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    Linear {
        factor: f64,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors as stored in a GGUF `rope_freqs.weight` tensor.
    Factors {
        factors: Vec<f32>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub sliding_window: Option<usize>,
    /// Biases on q/k/v (Qwen2).
    pub attention_bias: bool,
}

/// Bounds far above any released model (Llama 3.1 405B: 126 layers, hidden 16384, 128 heads
/// of 128; Gemma: vocab 262k, head_dim 256), low enough that sizes derived from them cannot
/// overflow or ask for absurd allocations before the weights are checked against the file.
const MAX_VOCAB: usize = 1 << 24;
const MAX_WIDTH: usize = 1 << 20;
const MAX_LAYERS: usize = 4096;
const MAX_HEADS: usize = 4096;
/// The RoPE tables are (positions, head_dim / 2) and built before any use.
const MAX_HEAD_DIM: usize = 1024;

impl Config {
    /// Check every value a file supplied: counts and widths in range (their products then fit),
    /// heads that divide, and finite, positive floats where the math divides or takes roots.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("model config: {m}")));
        let limits = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_layers", self.num_layers, MAX_LAYERS),
            ("num_heads", self.num_heads, MAX_HEADS),
            ("num_kv_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
        ];
        for (name, v, max) in limits {
            if v == 0 {
                return bad(format!("{name} must be > 0 (got 0)"));
            }
            if v > max {
                return bad(format!(
                    "{name} {v} is beyond any model ft can load (at most {max})"
                ));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} heads is not a multiple of {} kv heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even", self.head_dim));
        }
        if self.num_heads * self.head_dim > MAX_WIDTH {
            return bad(format!(
                "{} heads of {} is wider than {MAX_WIDTH}",
                self.num_heads, self.head_dim
            ));
        }
        if self.max_position_embeddings == 0 {
            return bad("max_position_embeddings must be > 0 (got 0)".into());
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window must be > 0 (got 0)".into());
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return bad(format!(
                "rms_norm_eps must be a finite number >= 0 (got {})",
                self.rms_norm_eps
            ));
        }
        let positive = |name: &str, v: f64| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "model config: {name} must be a finite number > 0 (got {v})"
                )))
            }
        };
        positive("rope_theta", self.rope_theta)?;
        match &self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => positive("rope_scaling.factor", *factor)?,
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                positive("rope_scaling.factor", *factor)?;
                positive("rope_scaling.low_freq_factor", *low_freq_factor)?;
                positive("rope_scaling.high_freq_factor", *high_freq_factor)?;
                // The smooth band divides by their difference.
                if high_freq_factor <= low_freq_factor {
                    return bad(format!(
                        "rope_scaling.high_freq_factor ({high_freq_factor}) must be above low_freq_factor ({low_freq_factor})"
                    ));
                }
                if *original_max_position_embeddings == 0 {
                    return bad(
                        "rope_scaling.original_max_position_embeddings must be > 0 (got 0)".into(),
                    );
                }
            }
            Some(RopeScaling::Factors { factors }) => {
                if factors.len() != self.head_dim / 2 {
                    return bad(format!(
                        "{} RoPE frequency factors for head_dim {} (needs {})",
                        factors.len(),
                        self.head_dim,
                        self.head_dim / 2
                    ));
                }
                if let Some(f) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                    return bad(format!(
                        "RoPE frequency factors must be finite and > 0 (got {f})"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Parameters in the base model (embeddings counted once when tied).
    pub fn param_count(&self) -> usize {
        let h = self.hidden_size;
        let kv = self.num_kv_heads * self.head_dim;
        let q = self.num_heads * self.head_dim;
        let attn = h * q + 2 * h * kv + q * h + if self.attention_bias { q + 2 * kv } else { 0 };
        let mlp = 3 * h * self.intermediate_size;
        let block = attn + mlp + 2 * h;
        let emb = self.vocab_size * h;
        emb * if self.tie_word_embeddings { 1 } else { 2 } + self.num_layers * block + h
    }

    /// Per-frequency RoPE divisors (llama.cpp's `rope_freqs.weight`): given as such by a GGUF,
    /// or derived from Llama-3 scaling as convert_hf_to_gguf.py does (long wavelengths slowed
    /// by `factor`, short ones kept, smoothly in between); None without such scaling.
    pub fn rope_freq_divisors(&self) -> Option<Vec<f32>> {
        match &self.rope_scaling {
            Some(RopeScaling::Factors { factors }) => Some(factors.clone()),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = *original_max_position_embeddings as f64;
                let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
                Some(
                    (0..self.head_dim / 2)
                        .map(|i| {
                            let freq =
                                1.0 / self.rope_theta.powf(2.0 * i as f64 / self.head_dim as f64);
                            let wl = 2.0 * std::f64::consts::PI / freq;
                            let f = if wl < high_wl {
                                1.0
                            } else if wl > low_wl {
                                *factor
                            } else {
                                let smooth = (old / wl - low_freq_factor)
                                    / (high_freq_factor - low_freq_factor);
                                1.0 / ((1.0 - smooth) / factor + smooth)
                            };
                            f as f32
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// (in, out) features of a projection by its HF name.
    pub fn proj_shape(&self, module: &str) -> Option<(usize, usize)> {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let i = self.intermediate_size;
        Some(match module {
            "q_proj" => (h, q),
            "k_proj" | "v_proj" => (h, kv),
            "o_proj" => (q, h),
            "gate_proj" | "up_proj" => (h, i),
            "down_proj" => (i, h),
            _ => return None,
        })
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f.architecture()?;
        let arch = Arch::parse(arch_name).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: architecture `{arch_name}` (ft supports llama, mistral, qwen2)",
                f.path.display()
            ))
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize> {
            f.get_u64(&key(k))
                .map(|v| v as usize)
                .ok_or_else(|| Error::format(&f.path, format!("metadata `{}` is missing", key(k))))
        };
        let hidden = req("embedding_length")?;
        let heads = req("attention.head_count")?;
        let kv_heads = f
            .get_u64(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(heads);
        let head_dim = f
            .get_u64(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(hidden / heads.max(1));
        let vocab = match f.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => f
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| {
                    Error::format(&f.path, "no vocab_size and no tokenizer.ggml.tokens")
                })?,
        };
        let rope_scaling = match f.get_str(&key("rope.scaling.type")) {
            Some("linear") => f
                .get_f64(&key("rope.scaling.factor"))
                .map(|factor| RopeScaling::Linear { factor }),
            _ => None,
        };
        let cfg = Config {
            arch,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: req("feed_forward_length")?,
            num_layers: req("block_count")?,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rms_norm_eps: f
                .get_f64(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: f.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: f
                .get_u64(&key("context_length"))
                .map(|v| v as usize)
                .unwrap_or(2048),
            tie_word_embeddings: f.tensor_info("output.weight").is_none(),
            sliding_window: None,
            attention_bias: f.tensor_info("blk.0.attn_q.bias").is_some(),
        };
        cfg.validate()
            .map_err(|e| Error::format(&f.path, e.to_string()))?;
        Ok(cfg)
    }

    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let j: HfConfig = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid config.json: {e}")))?;
        let arch_name = j
            .model_type
            .clone()
            .or_else(|| j.architectures.as_ref().and_then(|a| a.first().cloned()))
            .unwrap_or_default();
        let arch = Arch::parse(&arch_name).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: model_type `{arch_name}` (ft supports llama, mistral, qwen2)",
                path.display()
            ))
        })?;
        let heads = j.num_attention_heads;
        // transformers >= 5 writes `rope_parameters` ({rope_type, rope_theta, factor, ...})
        // in place of `rope_theta` + `rope_scaling`.
        let params = j.rope_parameters.as_ref().filter(|v| v.is_object());
        let scaling = j.rope_scaling.as_ref().filter(|v| !v.is_null()).or(params);
        let rope_theta = j.rope_theta.or_else(|| {
            params
                .and_then(|p| p.get("rope_theta"))
                .and_then(|t| t.as_f64())
        });
        let rope_scaling = match scaling {
            None => None,
            Some(v) => {
                let ty = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
                match ty {
                    "llama3" => Some(RopeScaling::Llama3 {
                        factor: num("factor").unwrap_or(8.0),
                        low_freq_factor: num("low_freq_factor").unwrap_or(1.0),
                        high_freq_factor: num("high_freq_factor").unwrap_or(4.0),
                        original_max_position_embeddings: num("original_max_position_embeddings")
                            .unwrap_or(8192.0)
                            as usize,
                    }),
                    "linear" => Some(RopeScaling::Linear {
                        factor: num("factor").unwrap_or(1.0),
                    }),
                    "default" | "" => None,
                    other => {
                        return Err(Error::Unsupported(format!(
                            "{}: rope_scaling type `{other}`",
                            path.display()
                        )))
                    }
                }
            }
        };
        let cfg = Config {
            arch,
            vocab_size: j.vocab_size,
            hidden_size: j.hidden_size,
            intermediate_size: j.intermediate_size,
            num_layers: j.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: j.num_key_value_heads.unwrap_or(heads),
            head_dim: j.head_dim.unwrap_or(j.hidden_size / heads.max(1)),
            rms_norm_eps: j.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: j.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: j.tie_word_embeddings.unwrap_or(false),
            sliding_window: j
                .sliding_window
                .filter(|_| j.use_sliding_window.unwrap_or(true)),
            attention_bias: j.attention_bias.unwrap_or(arch == Arch::Qwen2),
        };
        cfg.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    /// An HF `config.json` for this model (what merge writes).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let (model_type, archs) = match self.arch {
            Arch::Llama => ("llama", "LlamaForCausalLM"),
            Arch::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        };
        let mut v = serde_json::json!({
            "architectures": [archs],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        if self.arch == Arch::Llama {
            v["attention_bias"] = serde_json::json!(self.attention_bias);
        }
        if let Some(w) = self.sliding_window {
            v["sliding_window"] = serde_json::json!(w);
        }
        match &self.rope_scaling {
            Some(RopeScaling::Linear { factor }) => {
                v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": factor,
                    "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position_embeddings})
            }
            _ => {}
        }
        v
    }
}

/// The subset of a Hugging Face `config.json` ft reads.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    attention_bias: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(extra: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let json = format!(
            r#"{{"model_type": "llama", "vocab_size": 259, "hidden_size": 64,
                "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, {extra}}}"#
        );
        std::fs::write(&p, json).unwrap();
        Config::from_hf_json(&p)
    }

    fn parse(extra: &str) -> Config {
        try_parse(extra).unwrap()
    }

    #[test]
    fn rope_scaling_factors_that_break_the_math_are_refused_at_load() {
        // Defect 13: factor 0 made every RoPE angle NaN/inf, silently.
        for f in ["0", "-2.0", "-0.0"] {
            for ty in ["linear", "llama3"] {
                let e = try_parse(&format!(
                    r#""rope_scaling": {{"rope_type": "{ty}", "factor": {f}}}"#
                ))
                .unwrap_err()
                .to_string();
                assert!(
                    e.contains("config.json") && e.contains("rope_scaling.factor"),
                    "{e}"
                );
            }
        }
        let e = try_parse(
            r#""rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("high_freq_factor"), "{e}");
        let mut c = parse(r#""rms_norm_eps": 1e-5"#);
        c.rope_scaling = Some(RopeScaling::Linear { factor: f64::NAN });
        assert!(c.validate().unwrap_err().to_string().contains("NaN"));
        c.rope_scaling = Some(RopeScaling::Factors {
            factors: vec![1.0; 7],
        });
        assert!(c.validate().unwrap_err().to_string().contains("needs 8"));
        assert!(
            parse(r#""rope_scaling": {"rope_type": "linear", "factor": 2.0}"#)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn sizes_beyond_any_model_are_refused_before_anything_is_allocated() {
        for (key, v) in [
            ("num_hidden_layers", "1099511627776"),
            ("hidden_size", "4611686018427387904"),
            ("head_dim", "65536"),
            ("vocab_size", "18446744073709551615"),
            ("num_attention_heads", "0"),
            ("max_position_embeddings", "0"),
            ("rms_norm_eps", "-1.0"),
            ("rope_theta", "0"),
        ] {
            let e = try_parse(&format!(r#""{key}": {v}"#))
                .map(|_| ())
                .unwrap_err();
            let s = e.to_string();
            assert!(
                !s.contains('\n') && s.contains("config.json"),
                "{key}={v}: {s}"
            );
        }
        // Wrong types and negative counts are JSON errors naming the field.
        for (key, v) in [
            ("hidden_size", "-64"),
            ("hidden_size", "\"64\""),
            ("num_hidden_layers", "2.5"),
        ] {
            let e = try_parse(&format!(r#""{key}": {v}"#))
                .map(|_| ())
                .unwrap_err();
            assert!(
                e.to_string().contains("invalid config.json"),
                "{key}={v}: {e}"
            );
        }
    }

    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        // transformers >= 5 save_pretrained: no top-level rope_theta / rope_scaling.
        let c = parse(r#""rope_parameters": {"rope_theta": 50000.0, "rope_type": "default"}"#);
        assert_eq!(c.rope_theta, 50000.0);
        assert!(c.rope_scaling.is_none());
        let c = parse(
            r#""rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}"#,
        );
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(
            c.rope_scaling,
            Some(RopeScaling::Llama3 { factor, .. }) if factor == 32.0
        ));
        // The transformers 4 keys still work, and win when both are present.
        let c = parse(
            r#""rope_theta": 100000.0, "rope_scaling": {"type": "linear", "factor": 2.0},
               "rope_parameters": {"rope_theta": 1.0, "rope_type": "default"}"#,
        );
        assert_eq!(c.rope_theta, 100000.0);
        assert!(matches!(c.rope_scaling, Some(RopeScaling::Linear { factor }) if factor == 2.0));
        assert_eq!(parse(r#""rms_norm_eps": 1e-5"#).rope_theta, 10_000.0);
    }
}
