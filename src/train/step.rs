//! One optimizer step: adapters attached to the model ([`attach_adapters`]), the loss of a
//! micro-batch with its graph ([`batch_loss`]) or with gradient checkpointing
//! ([`checkpointed_grads`]), gradients accumulated over `grad_accum` micro-batches, clipped,
//! and applied at the scheduled learning rate ([`train_step`]).

use super::optim::{self, AdamW};
use super::prepare::{micro_batch, Prepared};
use super::schedule;
use crate::data::encode::{Batch, Encoded};
use crate::error::{Error, Result};
use crate::lora::{Lora, LoraConfig};
use crate::model::{peft, Ctx, Llama};
use crate::recipe::TrainSpec;
use candle_core::{Tensor, TensorId, Var};

/// Give every targeted linear layer a fresh adapter in slot 0; returns the Vars by PEFT name.
pub fn attach_adapters(
    model: &mut Llama,
    cfg: &LoraConfig,
    seed: u64,
) -> Result<Vec<(String, Var)>> {
    cfg.check()?;
    // A rank above a layer's width adds nothing and can need more memory than the machine has.
    for block in model.blocks.iter_mut().take(1) {
        for (short, lin) in block.linears_mut() {
            let (fin, fout) = lin.features();
            if cfg.targets(short) && cfg.r > fin.max(fout) {
                return Err(Error::invalid(format!(
                    "lora.r must be at most {} for this model ({short} is {fin}x{fout}; got {})",
                    fin.max(fout),
                    cfg.r
                )));
            }
        }
    }
    let device = model.device.clone();
    let mut vars = Vec::new();
    for (i, block) in model.blocks.iter_mut().enumerate() {
        for (k, (short, lin)) in block.linears_mut().into_iter().enumerate() {
            if !cfg.targets(short) {
                continue;
            }
            let (fin, fout) = lin.features();
            let salt = (i * 8 + k) as u64 + 1;
            let (lora, [a, b]) = Lora::init(fin, fout, cfg, seed, salt, &device)?;
            lin.set_adapter(0, Some(lora));
            vars.push((peft::tensor_name(i, short, "A"), a));
            vars.push((peft::tensor_name(i, short, "B"), b));
        }
    }
    Ok(vars)
}

pub fn trainable_params(vars: &[(String, Var)]) -> usize {
    vars.iter().map(|(_, v)| v.elem_count()).sum()
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens that entered the model (not padding).
    pub tokens: usize,
    pub tokens_per_sec: f64,
}

/// Optimizer step `step` of `total` (0-based): accumulate the gradients of its `grad_accum`
/// micro-batches (each scaled by 1/grad_accum), clip, and step at `lr_at(step)`.
pub fn train_step(
    model: &Llama,
    opt: &mut AdamW,
    data: &Prepared,
    t: &TrainSpec,
    step: usize,
    total: usize,
    pad: u32,
) -> Result<StepStats> {
    let started = std::time::Instant::now();
    let mut grads: Option<Vec<Tensor>> = None;
    let (mut loss, mut tokens) = (0f64, 0);
    for k in 0..t.grad_accum {
        let m = step * t.grad_accum + k;
        let b = micro_batch(data, m, t.batch_size, t.seed, pad, &model.device)?;
        tokens += b.tokens;
        let ctx = Ctx::train(crate::lora::mix(t.seed, m as u64)).with_neftune(t.neftune_alpha);
        let (l, g) = if t.grad_checkpointing {
            checkpointed_grads(model, &b, &ctx, &opt.vars)?
        } else {
            let l = batch_loss(model, &b, &ctx)?;
            (l.to_scalar::<f32>()? as f64, opt.grads_of(&l.backward()?)?)
        };
        loss += l / t.grad_accum as f64;
        let g: Vec<Tensor> = if t.grad_accum > 1 {
            g.iter()
                .map(|x| x / t.grad_accum as f64)
                .collect::<candle_core::Result<_>>()?
        } else {
            g
        };
        grads = Some(match grads {
            None => g,
            Some(acc) => acc
                .iter()
                .zip(&g)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?,
        });
    }
    let mut grads = grads.unwrap_or_default();
    let grad_norm = optim::clip_grad_norm(&mut grads, t.max_grad_norm)?;
    let lr = schedule::lr_at(step, total, t.warmup_for(total), t.lr, t.scheduler);
    opt.step(&grads, lr)?;
    Ok(StepStats {
        loss,
        lr,
        grad_norm,
        tokens,
        tokens_per_sec: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}

/// Mean masked loss over `rows` without gradients, with the training adapter (slot 0): the
/// held-out loss `ft eval` computes for the tuned column.
pub fn eval_loss(
    model: &Llama,
    rows: &[Encoded],
    batch_size: usize,
    pad: u32,
) -> Result<Option<f64>> {
    let ctx = Ctx::infer(crate::quant::MatmulMode::Exact, Some(0));
    crate::eval::loss::dataset_loss(model, rows, batch_size, pad, ctx)
}

/// Loss of one micro-batch with the graph attached (training mode: `Ctx::train`).
pub fn batch_loss(model: &Llama, b: &Batch, ctx: &Ctx) -> Result<Tensor> {
    let h = model.forward_hidden(&b.input, 0, None, b.segments.as_ref(), ctx)?;
    crate::model::loss::masked_cross_entropy(model, &h, ctx, &b.target, &b.loss_mask)
}

/// Loss and adapter gradients of one micro-batch with gradient checkpointing: the forward keeps
/// only each block's input; the backward re-runs one block at a time with its graph and
/// back-propagates `Σ y·dL/dy` through it. Peak activation memory is one block instead of all
/// of them, for about one extra forward pass of compute.
pub fn checkpointed_grads(
    model: &Llama,
    b: &Batch,
    ctx: &Ctx,
    vars: &[(String, Var)],
) -> Result<(f64, Vec<Tensor>)> {
    let ctx = *ctx;
    let mask = b.segments.as_ref();
    let mut inputs = vec![model.embed_for(&b.input, &ctx)?.detach()];
    for i in 0..model.blocks.len() {
        let x = inputs[i].clone();
        let y = model.forward_block(i, &x, 0, mask, &ctx)?.detach();
        inputs.push(y);
    }
    let top = Var::from_tensor(&inputs[model.blocks.len()])?;
    let h = model.final_norm(top.as_tensor(), &ctx)?;
    let loss = crate::model::loss::masked_cross_entropy(model, &h, &ctx, &b.target, &b.loss_mask)?;
    let loss_val = loss.to_scalar::<f32>()? as f64;
    let mut grad = loss
        .backward()?
        .get(top.as_tensor())
        .cloned()
        .ok_or_else(|| Error::invalid("no gradient reached the last block"))?;
    drop((h, loss));
    let mut found: std::collections::HashMap<TensorId, Tensor> = Default::default();
    for i in (0..model.blocks.len()).rev() {
        let x = Var::from_tensor(&inputs[i])?;
        let y = model.forward_block(i, x.as_tensor(), 0, mask, &ctx)?;
        let store = (y * &grad)?.sum_all()?.backward()?;
        for (_, v) in vars {
            if let Some(g) = store.get(v.as_tensor()) {
                found.insert(v.as_tensor().id(), g.clone());
            }
        }
        grad = store
            .get(x.as_tensor())
            .cloned()
            .ok_or_else(|| Error::invalid(format!("no gradient reached block {i}")))?;
        inputs.truncate(i + 1);
    }
    let grads = vars
        .iter()
        .map(|(_, v)| match found.remove(&v.as_tensor().id()) {
            Some(g) => Ok(g),
            None => Ok(v.zeros_like()?),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((loss_val, grads))
}
