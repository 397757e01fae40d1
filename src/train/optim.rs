//! AdamW (Loshchilov & Hutter, arXiv:1711.05101) over the adapter `Var`s only, with its state
//! exposed so checkpoints resume bit-for-bit (candle_nn's AdamW keeps its moments private).
//! Decoupled weight decay as PyTorch applies it: w ← w·(1 − lr·wd) − lr·m̂/(√v̂ + ε).

use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

pub struct AdamW {
    pub vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Per-var learning-rate factor (LoRA+: B matrices learn faster).
    lr_scale: Vec<f64>,
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, weight_decay: f64) -> Result<Self> {
        let n = vars.len();
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            m,
            v,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            lr_scale: vec![1.0; n],
        })
    }

    /// LoRA+ (Hayou et al. 2024, arXiv:2402.12354): the B matrices (PEFT names `lora_B`) take
    /// `ratio` times the learning rate of the A matrices; 1 = plain LoRA.
    pub fn with_lora_plus(mut self, ratio: f64) -> Self {
        for (i, (name, _)) in self.vars.iter().enumerate() {
            self.lr_scale[i] = if name.contains("lora_B") { ratio } else { 1.0 };
        }
        self
    }

    /// One update with gradients `grads[i]` for `vars[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let g = &grads[i];
            let lr = lr * self.lr_scale[i];
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let w = var.as_tensor();
            let w = if self.weight_decay > 0.0 {
                (w * (1.0 - lr * self.weight_decay))?
            } else {
                w.clone()
            };
            var.set(&(w - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Gradients of every var from a backward pass (zeros where a var got none).
    pub fn grads_of(&self, store: &GradStore) -> Result<Vec<Tensor>> {
        self.vars
            .iter()
            .map(|(_, v)| match store.get(v.as_tensor()) {
                // Detached: a gradient must never keep a forward graph alive.
                Some(g) => Ok(g.detach()),
                None => Ok(v.zeros_like()?),
            })
            .collect()
    }

    /// Moments by name, for checkpoints.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut s = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            s.insert(format!("{name}.exp_avg"), self.m[i].clone());
            s.insert(format!("{name}.exp_avg_sq"), self.v[i].clone());
        }
        s
    }

    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let get = |k: String| {
                state.get(&k).cloned().ok_or_else(|| {
                    Error::invalid(format!("checkpoint optimizer state lacks `{k}`"))
                })
            };
            self.m[i] = get(format!("{name}.exp_avg"))?.to_device(var.device())?;
            self.v[i] = get(format!("{name}.exp_avg_sq"))?.to_device(var.device())?;
        }
        self.step = step;
        Ok(())
    }
}

/// Scale gradients so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_step_moves_by_lr_against_gradient_sign() {
        let v = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), v.clone())], 0.0).unwrap();
        let g = Tensor::new(&[0.5f32, -3.0], &Device::Cpu).unwrap();
        opt.step(&[g], 0.1).unwrap();
        let w = v.as_tensor().to_vec1::<f32>().unwrap();
        // Adam's first step is lr·sign(g) (bias-corrected m/√v = g/|g|).
        assert!(
            (w[0] - 0.9).abs() < 1e-5 && (w[1] + 1.9).abs() < 1e-5,
            "{w:?}"
        );
    }

    #[test]
    fn lora_plus_gives_the_b_matrices_a_larger_step() {
        let a = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let b = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let vars = vec![
            ("x.lora_A.weight".into(), a.clone()),
            ("x.lora_B.weight".into(), b.clone()),
        ];
        let mut opt = AdamW::new(vars, 0.0).unwrap().with_lora_plus(16.0);
        let g = Tensor::new(&[0.5f32], &Device::Cpu).unwrap();
        opt.step(&[g.clone(), g], 0.01).unwrap();
        let (wa, wb) = (
            a.as_tensor().to_vec1::<f32>().unwrap()[0],
            b.as_tensor().to_vec1::<f32>().unwrap()[0],
        );
        assert!((wa - 0.99).abs() < 1e-6, "A moves by lr: {wa}");
        assert!((wb - 0.84).abs() < 1e-5, "B moves by 16 lr: {wb}");
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = vec![Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap()];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let v = g[0].to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-4 && (v[1] - 0.8).abs() < 1e-4);
    }
}
