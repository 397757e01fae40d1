//! The Llama-family transformer (Llama 2/3, Mistral, SmolLM, TinyLlama, Qwen2), one
//! implementation for training, eval, serving and merge checks.
//!
//! Per block: x += o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(..)), v_proj(..)));
//!            x += down_proj(silu(gate_proj(rms(x))) * up_proj(rms(x))).
//! RoPE is the half-split ("rotate_half", NeoX) form that HF checkpoints use; GGUF llama
//! files store q/k rows permuted for llama.cpp's interleaved form, and the loader undoes that.

use super::cache::KvCache;
use super::config::{Config, RopeScaling};
use super::linear::Linear;
use super::names;
use super::{Ctx, WeightSource};
use crate::error::{Error, Result};
use crate::quant::FrozenWeight;
use candle_core::{DType, Device, Tensor};

/// Precomputed cos/sin tables, (max_positions, head_dim / 2).
#[derive(Clone, Debug)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(cfg: &Config, max_positions: usize, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let mut inv_freq: Vec<f64> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64))
            .collect();
        // Linear scaling stretches positions; the others divide each frequency.
        let pos_scale = match &cfg.rope_scaling {
            Some(RopeScaling::Linear { factor }) => 1.0 / factor,
            _ => 1.0,
        };
        if let Some(div) = cfg.rope_freq_divisors() {
            for (f, d) in inv_freq.iter_mut().zip(div) {
                *f /= d as f64;
            }
        }
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for f in &inv_freq {
                let a = p as f64 * pos_scale * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (max_positions, half), device)?,
            sin: Tensor::from_vec(sin, (max_positions, half), device)?,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// x: (batch, heads, seq, head_dim), positions pos..pos+seq.
    fn apply(&self, x: &Tensor, pos: usize, grad: bool) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, pos, seq)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, pos, seq)?.to_dtype(x.dtype())?;
        // candle's fused rope has no backward; ours does.
        Ok(if grad {
            super::ops::rope(x, &cos, &sin)?
        } else {
            candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?
        })
    }
}

#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        // candle's fused rms_norm has no backward; ours does.
        Ok(if grad {
            super::ops::rms_norm(x, &self.weight, self.eps)?
        } else {
            candle_nn::ops::rms_norm(x, &self.weight, self.eps as f32)?
        })
    }
}

#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    sliding_window: Option<usize>,
}

impl Attention {
    /// x: (batch, seq, hidden) at positions pos..pos+seq.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        pos: usize,
        rope: &Rope,
        cache: Option<&mut KvCache>,
        segments: Option<&Tensor>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            // (b, t, n*hd) -> (b, n, t, hd)
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(self.q_proj.forward(x, ctx)?, nh)?;
        let k = heads(self.k_proj.forward(x, ctx)?, nkv)?;
        let v = heads(self.v_proj.forward(x, ctx)?, nkv)?;
        let q = rope.apply(&q, pos, ctx.train)?;
        let k = rope.apply(&k, pos, ctx.train)?;
        let (k, v) = match cache {
            Some(c) => c.append(layer, &k, &v)?,
            None => (k, v),
        };
        let total = k.dim(2)?;
        let past = total - t;
        let g = nh / nkv;
        // Grouped-query attention without copying k/v per query head: the g query heads that
        // share a kv head are stacked along the row axis, (b, nkv, g·t, hd).
        let qg = q.reshape((b, nkv, g * t, hd))?;
        let scores = qg.matmul(&k.t()?)?; // (b, nkv, g·t, total)
        let scale = 1.0 / (hd as f64).sqrt();
        let probs =
            super::ops::causal_softmax(&scores, scale, t, past, self.sliding_window, segments)?;
        let out = probs.matmul(&v)?.reshape((b, nh, t, hd))?;
        let out = out.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        self.o_proj.forward(&out, ctx)
    }
}

#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x, ctx)?;
        let up = self.up_proj.forward(x, ctx)?;
        self.down_proj
            .forward(&super::ops::swiglu(&gate, &up)?, ctx)
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        [
            ("q_proj", &mut self.self_attn.q_proj),
            ("k_proj", &mut self.self_attn.k_proj),
            ("v_proj", &mut self.self_attn.v_proj),
            ("o_proj", &mut self.self_attn.o_proj),
            ("gate_proj", &mut self.mlp.gate_proj),
            ("up_proj", &mut self.mlp.up_proj),
            ("down_proj", &mut self.mlp.down_proj),
        ]
    }

    pub fn linears(&self) -> [(&'static str, &Linear); 7] {
        [
            ("q_proj", &self.self_attn.q_proj),
            ("k_proj", &self.self_attn.k_proj),
            ("v_proj", &self.self_attn.v_proj),
            ("o_proj", &self.self_attn.o_proj),
            ("gate_proj", &self.mlp.gate_proj),
            ("up_proj", &self.mlp.up_proj),
            ("down_proj", &self.mlp.down_proj),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        pos: usize,
        rope: &Rope,
        cache: Option<&mut KvCache>,
        segments: Option<&Tensor>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x, ctx.train)?;
        let x = (x + self
            .self_attn
            .forward(&h, layer, pos, rope, cache, segments, ctx)?)?;
        let h = self.post_attention_layernorm.forward(&x, ctx.train)?;
        Ok((&x + self.mlp.forward(&h, ctx)?)?)
    }
}

#[derive(Clone, Debug)]
pub struct Llama {
    pub config: Config,
    pub embed_tokens: FrozenWeight,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    pub lm_head: Linear,
    pub rope: Rope,
    pub device: Device,
}

impl Llama {
    /// Build from a weight source that yields tensors by HF name, in HF layout.
    /// `max_positions` bounds the RoPE table (the usable context).
    pub fn new(
        config: Config,
        src: &mut dyn WeightSource,
        max_positions: usize,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        // Every tensor is checked against the config's shape as it arrives, vectors (norm
        // weights, biases) too: a wrong length would only surface later as a panic in a kernel.
        let mut need = |name: String, dims: &[usize]| -> Result<FrozenWeight> {
            let w = src
                .get(&name)?
                .ok_or_else(|| Error::tensor(&name, "missing from the model file"))?;
            check_dims(&name, &w, dims)?;
            Ok(w)
        };
        let embed_tokens = need(
            "model.embed_tokens.weight".into(),
            &[config.vocab_size, config.hidden_size],
        )?;
        let mut blocks = Vec::new();
        for i in 0..config.num_layers {
            let mut linear = |short: &str| -> Result<Linear> {
                let path = names::proj_path(short);
                let (fin, fout) = config.proj_shape(short).unwrap_or((0, 0));
                let w = need(names::layer(i, path, "weight"), &[fout, fin])?;
                let bias =
                    if config.attention_bias && matches!(short, "q_proj" | "k_proj" | "v_proj") {
                        Some(need(names::layer(i, path, "bias"), &[fout])?.dequantize()?)
                    } else {
                        None
                    };
                Ok(Linear::new(w, bias))
            };
            let self_attn = Attention {
                q_proj: linear("q_proj")?,
                k_proj: linear("k_proj")?,
                v_proj: linear("v_proj")?,
                o_proj: linear("o_proj")?,
                num_heads: config.num_heads,
                num_kv_heads: config.num_kv_heads,
                head_dim: config.head_dim,
                sliding_window: config.sliding_window,
            };
            let mlp = Mlp {
                gate_proj: linear("gate_proj")?,
                up_proj: linear("up_proj")?,
                down_proj: linear("down_proj")?,
            };
            let mut norm = |n: &str| -> Result<RmsNorm> {
                Ok(RmsNorm {
                    weight: need(names::layer(i, n, "weight"), &[config.hidden_size])?
                        .dequantize()?,
                    eps: config.rms_norm_eps,
                })
            };
            blocks.push(Block {
                input_layernorm: norm("input_layernorm")?,
                self_attn,
                post_attention_layernorm: norm("post_attention_layernorm")?,
                mlp,
            });
        }
        let norm = RmsNorm {
            weight: need("model.norm.weight".into(), &[config.hidden_size])?.dequantize()?,
            eps: config.rms_norm_eps,
        };
        let lm_head = if config.tie_word_embeddings {
            Linear::new(embed_tokens.clone(), None)
        } else {
            match src.get("lm_head.weight")? {
                Some(w) => {
                    check_dims(
                        "lm_head.weight",
                        &w,
                        &[config.vocab_size, config.hidden_size],
                    )?;
                    Linear::new(w, None)
                }
                // Some checkpoints tie without saying so.
                None => Linear::new(embed_tokens.clone(), None),
            }
        };
        let rope = Rope::new(&config, max_positions, device)?;
        Ok(Llama {
            config,
            embed_tokens,
            blocks,
            norm,
            lm_head,
            rope,
            device: device.clone(),
        })
    }

    /// The largest sequence (cache + new tokens) this instance can run.
    pub fn max_positions(&self) -> usize {
        self.rope.max_positions()
    }

    /// The embeddings a pass under `ctx` starts from: in training with `ctx.neftune` = α > 0,
    /// plus NEFTune noise (Jain et al. 2023, arXiv:2310.05914): uniform in ±α/√(L·d) for L
    /// positions of width d, drawn from `ctx.seed` so a resumed run draws the same noise.
    pub fn embed_for(&self, tokens: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let x = self.embed(tokens)?;
        if !ctx.train || ctx.neftune <= 0.0 {
            return Ok(x);
        }
        use rand::{Rng, SeedableRng};
        let (b, l, d) = x.dims3()?;
        let mag = (ctx.neftune / ((l * d) as f64).sqrt()) as f32;
        let mut rng = rand::rngs::StdRng::seed_from_u64(crate::lora::mix(ctx.seed, 0x4ef7));
        let noise: Vec<f32> = (0..b * l * d)
            .map(|_| rng.random_range(-mag..=mag))
            .collect();
        let noise = Tensor::from_vec(noise, (b, l, d), &Device::Cpu)?.to_device(x.device())?;
        let noise = noise.to_dtype(x.dtype())?;
        Ok((x + noise)?)
    }

    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        Ok(match &self.embed_tokens {
            FrozenWeight::Quantized(q) => q.embedding(tokens)?,
            FrozenWeight::Dense(w) => {
                let (b, t) = tokens.dims2()?;
                w.to_dtype(DType::F32)?
                    .index_select(&tokens.flatten_all()?, 0)?
                    .reshape((b, t, self.config.hidden_size))?
            }
        })
    }

    /// Final hidden states (batch, seq, hidden) for tokens (batch, seq) at positions pos...
    /// `segments`: (batch, seq) u32 segment ids for packed sequences; a token attends only to
    /// earlier tokens of its own segment.
    pub fn forward_hidden(
        &self,
        tokens: &Tensor,
        pos: usize,
        mut cache: Option<&mut KvCache>,
        segments: Option<&Tensor>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let (_, t) = tokens.dims2()?;
        if pos + t > self.max_positions() {
            return Err(Error::invalid(format!(
                "sequence of {} tokens exceeds the context of {} tokens",
                pos + t,
                self.max_positions()
            )));
        }
        let mut x = self.embed_for(tokens, ctx)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, i, pos, &self.rope, cache.as_deref_mut(), segments, ctx)?;
        }
        self.norm.forward(&x, ctx.train)
    }

    /// Block `i` alone (for gradient checkpointing, which re-runs blocks one at a time).
    pub fn forward_block(
        &self,
        i: usize,
        x: &Tensor,
        pos: usize,
        segments: Option<&Tensor>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        self.blocks[i].forward(x, i, pos, &self.rope, None, segments, ctx)
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.norm.forward(x, ctx.train)
    }

    /// Logits (.., vocab) from hidden states (.., hidden).
    pub fn logits(&self, hidden: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let head_ctx = Ctx {
            adapter: None,
            ..*ctx
        };
        self.lm_head.forward(hidden, &head_ctx)
    }

    /// Logits for every position: (batch, seq, vocab).
    pub fn forward(
        &self,
        tokens: &Tensor,
        pos: usize,
        cache: Option<&mut KvCache>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(tokens, pos, cache, None, ctx)?;
        self.logits(&h, ctx)
    }

    /// Logits of the last position only: (batch, vocab). What generation needs.
    pub fn forward_last(
        &self,
        tokens: &Tensor,
        pos: usize,
        cache: Option<&mut KvCache>,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(tokens, pos, cache, None, ctx)?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        self.logits(&last, ctx)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.num_layers)
    }
}

fn check_dims(name: &str, w: &FrozenWeight, want: &[usize]) -> Result<()> {
    let got = w.dims();
    if got != want {
        return Err(Error::tensor(
            name,
            format!("shape {got:?} does not match the config ({want:?})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NEFTune noise: only in training with α > 0, bounded by α/√(L·d), and the same for the
    /// same seed (a resumed run draws the same noise).
    #[test]
    fn neftune_noise_is_bounded_seeded_and_training_only() {
        let model = crate::testing::tiny_model(1, None).unwrap();
        let tokens = Tensor::new(&[[1u32, 2, 3, 4, 5, 6]], &Device::Cpu).unwrap();
        let clean = model.embed(&tokens).unwrap();
        let diff = |ctx: &Ctx| {
            (model.embed_for(&tokens, ctx).unwrap() - &clean)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let alpha = 5.0;
        let train = Ctx::train(7).with_neftune(alpha);
        let d = diff(&train);
        let bound = alpha / ((6 * model.config.hidden_size) as f64).sqrt();
        assert!(d.iter().all(|x| (*x as f64).abs() <= bound + 1e-6));
        assert!(d.iter().map(|x| x.abs()).fold(0f32, f32::max) as f64 > bound * 0.5);
        assert_eq!(d, diff(&train), "same seed, same noise");
        assert_ne!(d, diff(&Ctx::train(8).with_neftune(alpha)));
        let off = |ctx: &Ctx| diff(ctx).iter().all(|x| *x == 0.0);
        assert!(off(&Ctx::train(7)), "alpha 0 adds nothing");
        let infer = Ctx::infer(crate::quant::MatmulMode::Exact, None).with_neftune(alpha);
        assert!(off(&infer), "never at inference");
    }
}
