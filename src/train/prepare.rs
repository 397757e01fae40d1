//! The recipe's data as token rows ([`prepare`]), and the micro-batches a run draws from them:
//! a seeded shuffle per epoch, so a resumed run sees the same batches.

use super::Recipe;
use crate::data::encode::{self, Batch, EncodeStats, Encoded, Encoder};
use crate::data::{weighted, Source};
use crate::error::{Error, Result};
use crate::model::Loaded;
use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::PathBuf;

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
    /// Training examples per source (`dataset.train`, each `dataset.mix[]`, the replay).
    pub sources: Vec<Source>,
    /// The replay cache file, and whether it was already there.
    pub replay: Option<(PathBuf, bool)>,
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
    prepare_with(r, loaded, |_, _, _| {})
}

/// [`prepare`], reporting progress while replay data is generated (`what, done, total`).
/// Call it before adapters are attached: replay comes from the base model.
pub fn prepare_with(
    r: &Recipe,
    loaded: &Loaded,
    progress: impl FnMut(&str, usize, usize),
) -> Result<Prepared> {
    let template = r.template(loaded)?;
    let enc = Encoder::for_dataset(&loaded.tokenizer, &template, &r.dataset);
    let mut split = r.dataset.read(r.train.seed)?;
    let mut replay = None;
    if let Some(spec) = &r.dataset.replay {
        let (examples, path, cached) = crate::data::replay::load_or_generate(
            &r.model.path,
            &loaded.model,
            &loaded.tokenizer,
            &template,
            spec,
            progress,
        )?;
        let picked = weighted(
            examples,
            spec.weight,
            crate::lora::mix(r.train.seed, 0x7e91a),
        );
        split.sources.push(Source {
            name: format!("dataset.replay ({})", path.display()),
            examples: picked.len(),
            weight: spec.weight,
        });
        split.train.extend(picked);
        replay = Some((path, cached));
    }
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
        sources: split.sources,
        replay,
    })
}

/// The order of rows in `epoch`: a seeded shuffle, so a resumed run sees the same batches.
fn epoch_order(rows: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(crate::lora::mix(seed, epoch as u64 + 0x5eed));
    order.shuffle(&mut rng);
    order
}

/// Micro-batch number `m` of the whole run (epochs laid end to end).
pub(super) fn micro_batch(
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
