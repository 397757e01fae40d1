//! QLoRA training: the base stays frozen (and quantized) inside the model's linear layers,
//! LoRA adapters are the only `Var`s, AdamW updates them. The loop reads top to bottom:
//! prepare data -> attach adapters -> (resume) -> for each step: accumulate gradients over
//! micro-batches, clip, step, log, eval, checkpoint -> save the adapter.

pub mod checkpoint;
pub mod memory;
pub mod optim;
pub mod schedule;
pub mod tensorboard;

use crate::data::encode::{self, Batch, EncodeStats, Encoded, Encoder};
use crate::error::{Error, Result};
use crate::lora::{Lora, LoraConfig};
use crate::model::{peft, Ctx, Llama, Loaded};
use crate::recipe::Recipe;
use candle_core::{Device, Var};
use optim::AdamW;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::PathBuf;

/// Give every targeted linear layer a fresh adapter in slot 0; returns the Vars by PEFT name.
pub fn attach_adapters(
    model: &mut Llama,
    cfg: &LoraConfig,
    seed: u64,
) -> Result<Vec<(String, Var)>> {
    cfg.check()?;
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

/// Token rows ready for batching.
pub struct Prepared {
    pub train: Vec<Encoded>,
    pub eval: Vec<Encoded>,
    pub train_stats: EncodeStats,
    pub eval_stats: EncodeStats,
    /// Records the readers skipped (empty turns etc.), each counted.
    pub skipped: usize,
    /// Packed rows (each a group of examples) when packing is on.
    pub packed: Option<Vec<Vec<Encoded>>>,
}

impl Prepared {
    /// Rows the trainer iterates over: packed groups or single examples.
    pub fn rows(&self) -> usize {
        self.packed
            .as_ref()
            .map(|p| p.len())
            .unwrap_or(self.train.len())
    }
}

/// Read, split, tokenize and (optionally) pack the recipe's data.
pub fn prepare(r: &Recipe, loaded: &Loaded) -> Result<Prepared> {
    let template = r.template(loaded)?;
    let enc = Encoder::for_dataset(&loaded.tokenizer, &template, &r.dataset);
    let split = r.dataset.read(r.train.seed)?;
    let (train, train_stats) = enc.encode_all(&split.train)?;
    let (eval, eval_stats) = enc.encode_all(&split.eval)?;
    if train.is_empty() {
        return Err(Error::invalid(
            "dataset.train: no example has a token to train on (all empty or masked)",
        ));
    }
    let packed = r
        .dataset
        .packing
        .then(|| encode::pack(&train, r.dataset.max_seq_len));
    Ok(Prepared {
        train,
        eval,
        train_stats,
        eval_stats,
        skipped: split.skipped,
        packed,
    })
}

/// What one training run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub steps: usize,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    pub eval_loss_before: Option<f64>,
    pub eval_loss_after: Option<f64>,
    pub tokens_per_sec: f64,
    pub seconds: f64,
    pub peak_rss_mib: f64,
    pub adapter_dir: PathBuf,
}

/// Events the trainer reports (the CLI draws the progress bar from these).
pub enum Event<'a> {
    Start {
        total: usize,
        start: usize,
    },
    Step {
        step: usize,
        total: usize,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tok_s: f64,
    },
    Eval {
        step: usize,
        loss: f64,
    },
    Saved {
        step: usize,
        path: &'a std::path::Path,
    },
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

/// Loss of one micro-batch with the graph attached (training mode).
pub fn batch_loss(model: &Llama, b: &Batch, seed: u64) -> Result<candle_core::Tensor> {
    let ctx = Ctx::train(seed);
    let h = model.forward_hidden(&b.input, 0, None, b.segments.as_ref(), &ctx)?;
    crate::model::loss::masked_cross_entropy(model, &h, &ctx, &b.target, &b.loss_mask)
}

/// Loss and adapter gradients of one micro-batch with gradient checkpointing: the forward keeps
/// only each block's input; the backward re-runs one block at a time with its graph and
/// back-propagates `Σ y·dL/dy` through it. Peak activation memory is one block instead of all
/// of them, for about one extra forward pass of compute.
pub fn checkpointed_grads(
    model: &Llama,
    b: &Batch,
    seed: u64,
    vars: &[(String, Var)],
) -> Result<(f64, Vec<candle_core::Tensor>)> {
    let ctx = Ctx::train(seed);
    let mask = b.segments.as_ref();
    let mut inputs = vec![model.embed(&b.input)?.detach()];
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
    let mut found: std::collections::HashMap<candle_core::TensorId, candle_core::Tensor> =
        Default::default();
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

/// The order of rows in `epoch`: a seeded shuffle, so a resumed run sees the same batches.
fn epoch_order(rows: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(crate::lora::mix(seed, epoch as u64 + 0x5eed));
    order.shuffle(&mut rng);
    order
}

/// Micro-batch number `m` of the whole run (epochs laid end to end).
fn micro_batch(
    p: &Prepared,
    m: usize,
    bs: usize,
    seed: u64,
    pad: u32,
    device: &Device,
) -> Result<Batch> {
    let rows = p.rows();
    let per_epoch = rows.div_ceil(bs);
    let (epoch, k) = (m / per_epoch, m % per_epoch);
    let order = epoch_order(rows, seed, epoch);
    let idx = &order[k * bs..((k + 1) * bs).min(rows)];
    match &p.packed {
        Some(groups) => {
            let g: Vec<&[Encoded]> = idx.iter().map(|&i| groups[i].as_slice()).collect();
            encode::packed_batch(&g, pad, device)
        }
        None => {
            let e: Vec<&Encoded> = idx.iter().map(|&i| &p.train[i]).collect();
            encode::pad_batch(&e, pad, device)
        }
    }
}

/// Peak resident memory of this process (VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Run the recipe's training. `resume` continues from the newest checkpoint in output_dir.
/// `on_event` returning false stops the run where it is, like a kill (no final eval or save).
pub fn train(
    r: &Recipe,
    loaded: &mut Loaded,
    prepared: &Prepared,
    resume: bool,
    mut on_event: impl FnMut(Event) -> bool,
) -> Result<Summary> {
    let t = &r.train;
    let out = t.output_dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let lcfg = &r.lora;
    let vars = attach_adapters(&mut loaded.model, lcfg, t.seed)?;
    let mut opt = AdamW::new(vars, t.weight_decay)?;
    let pad = loaded.tokenizer.eos.unwrap_or(0);
    let total = t.total_steps(prepared.rows());
    let warmup = t.warmup_for(total);
    let base_name = r.model.path.display().to_string();
    let mut start = 0;
    if resume {
        if let Some((_, dir)) = checkpoint::list(&out).pop() {
            let st = checkpoint::restore(&dir, &mut loaded.model, &mut opt)?;
            start = st.step;
        }
    }
    let model = &loaded.model;
    let mut tb = match &r.logging.tensorboard {
        Some(dir) => Some(tensorboard::EventWriter::create(dir)?),
        None => None,
    };
    let mut metrics = match &r.logging.metrics_jsonl {
        Some(p) => Some(tensorboard::MetricsLog::open(p)?),
        None => None,
    };
    let eval_before = if start == 0 {
        eval_loss(model, &prepared.eval, t.batch_size, pad)?
    } else {
        None
    };
    if let Some(l) = eval_before {
        let _ = on_event(Event::Eval { step: 0, loss: l });
        if let Some(w) = tb.as_mut() {
            w.add_scalar("eval/loss", l as f32, 0)?;
        }
    }
    let _ = on_event(Event::Start { total, start });
    let t0 = std::time::Instant::now();
    let (mut tokens_seen, mut first_loss, mut last_loss) = (0usize, None, None);
    let mut last_eval = eval_before;
    for step in start..total {
        let ts = std::time::Instant::now();
        let mut grads: Option<Vec<candle_core::Tensor>> = None;
        let mut step_loss = 0f64;
        let mut step_tokens = 0;
        for k in 0..t.grad_accum {
            let m = step * t.grad_accum + k;
            let b = micro_batch(prepared, m, t.batch_size, t.seed, pad, &model.device)?;
            step_tokens += b.tokens;
            let seed = crate::lora::mix(t.seed, m as u64);
            let (l, g) = if t.grad_checkpointing {
                checkpointed_grads(model, &b, seed, &opt.vars)?
            } else {
                let loss = batch_loss(model, &b, seed)?;
                (
                    loss.to_scalar::<f32>()? as f64,
                    opt.grads_of(&loss.backward()?)?,
                )
            };
            step_loss += l / t.grad_accum as f64;
            let g: Vec<candle_core::Tensor> = if t.grad_accum > 1 {
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
        let lr = schedule::lr_at(step, total, warmup, t.lr, t.scheduler);
        opt.step(&grads, lr)?;
        tokens_seen += step_tokens;
        let tok_s = step_tokens as f64 / ts.elapsed().as_secs_f64().max(1e-9);
        first_loss.get_or_insert(step_loss);
        last_loss = Some(step_loss);
        let done = step + 1;
        let mut go_on = on_event(Event::Step {
            step: done,
            total,
            loss: step_loss,
            lr,
            grad_norm,
            tok_s,
        });
        if done % t.log_every.max(1) == 0 || done == total {
            if let Some(w) = tb.as_mut() {
                w.add_scalar("train/loss", step_loss as f32, done as i64)?;
                w.add_scalar("train/lr", lr as f32, done as i64)?;
                w.add_scalar("train/grad_norm", grad_norm as f32, done as i64)?;
                w.add_scalar("train/tokens_per_sec", tok_s as f32, done as i64)?;
                w.flush()?;
            }
            if let Some(mlog) = metrics.as_mut() {
                mlog.log(
                    done as u64,
                    &[
                        ("loss", step_loss),
                        ("lr", lr),
                        ("grad_norm", grad_norm),
                        ("tokens_per_sec", tok_s),
                    ],
                )?;
            }
        }
        if t.eval_every.is_some_and(|n| n > 0 && done % n == 0) && done != total {
            if let Some(l) = eval_loss(model, &prepared.eval, t.batch_size, pad)? {
                last_eval = Some(l);
                go_on &= on_event(Event::Eval {
                    step: done,
                    loss: l,
                });
                if let Some(w) = tb.as_mut() {
                    w.add_scalar("eval/loss", l as f32, done as i64)?;
                }
                if let Some(mlog) = metrics.as_mut() {
                    mlog.log(done as u64, &[("eval_loss", l)])?;
                }
            }
        }
        if t.save_every.is_some_and(|n| n > 0 && done % n == 0) || done == total {
            let st = checkpoint::TrainerState {
                step: done,
                total_steps: total,
                seed: t.seed,
                last_loss,
                best_eval_loss: last_eval,
            };
            let p = checkpoint::save(&out, model, lcfg, &base_name, &opt, &st, t.keep_checkpoints)?;
            go_on &= on_event(Event::Saved {
                step: done,
                path: &p,
            });
        }
        if !go_on {
            return Ok(Summary {
                steps: done,
                first_loss,
                final_loss: last_loss,
                eval_loss_before: eval_before,
                eval_loss_after: None,
                tokens_per_sec: tokens_seen as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                seconds: t0.elapsed().as_secs_f64(),
                peak_rss_mib: peak_rss_mib(),
                adapter_dir: out,
            });
        }
    }
    let eval_after = eval_loss(model, &prepared.eval, t.batch_size, pad)?;
    if let Some(l) = eval_after {
        let _ = on_event(Event::Eval {
            step: total,
            loss: l,
        });
        if let Some(w) = tb.as_mut() {
            w.add_scalar("eval/loss", l as f32, total as i64)?;
            w.flush()?;
        }
        if let Some(mlog) = metrics.as_mut() {
            mlog.log(total as u64, &[("eval_loss", l)])?;
        }
    }
    // The final adapter, PEFT layout, at the top of output_dir.
    peft::save(model, 0, lcfg, &base_name, &out)?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(Summary {
        steps: total,
        first_loss,
        final_loss: last_loss,
        eval_loss_before: eval_before,
        eval_loss_after: eval_after,
        tokens_per_sec: tokens_seen as f64 / secs.max(1e-9),
        seconds: secs,
        peak_rss_mib: peak_rss_mib(),
        adapter_dir: out,
    })
}
