//! The one linear layer: a frozen base weight (dense or quantized), an optional bias, and
//! LoRA adapters in numbered slots (slot 0 while training; several when serving).

use super::Ctx;
use crate::error::Result;
use crate::lora::Lora;
use crate::quant::{frozen_matmul, FrozenWeight};
use candle_core::Tensor;

#[derive(Clone, Debug)]
pub struct Linear {
    /// (out_features, in_features)
    pub weight: FrozenWeight,
    pub bias: Option<Tensor>,
    /// Adapter slot -> adapter on this layer (None where that adapter does not target it).
    pub adapters: Vec<Option<Lora>>,
}

impl Linear {
    pub fn new(weight: FrozenWeight, bias: Option<Tensor>) -> Self {
        Linear {
            weight,
            bias,
            adapters: Vec::new(),
        }
    }

    /// (in_features, out_features)
    pub fn features(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[1], d[0])
    }

    /// Put `lora` into adapter slot `slot`.
    pub fn set_adapter(&mut self, slot: usize, lora: Option<Lora>) {
        if self.adapters.len() <= slot {
            self.adapters.resize(slot + 1, None);
        }
        self.adapters[slot] = lora;
    }

    pub fn adapter(&self, slot: usize) -> Option<&Lora> {
        self.adapters.get(slot).and_then(|a| a.as_ref())
    }

    /// x: (.., in) -> (.., out)
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let lora = ctx.adapter.and_then(|s| self.adapter(s));
        if ctx.train {
            let y = crate::lora::fused::linear_train(x, &self.weight, lora, ctx.seed)?;
            return Ok(match &self.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            });
        }
        let mut y = frozen_matmul(x, &self.weight, ctx.mode)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(lora) = lora {
            // Detached: evaluating mid-training must not build a graph through the adapter Vars.
            y = (y + lora.forward_detached(x, None)?)?;
        }
        Ok(y)
    }
}
