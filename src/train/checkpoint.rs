//! Checkpoints that survive a kill: `output_dir/checkpoint-<step>/` holds the adapter (PEFT
//! files), the optimizer moments and `trainer_state.json`. Each is written to a temp folder and
//! renamed into place, so a checkpoint folder either is complete or does not exist.

use super::optim::AdamW;
use crate::error::{Error, Result};
use crate::lora::LoraConfig;
use crate::model::{peft, Llama};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    pub seed: u64,
    pub last_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    /// `train.select`'s best evaluation so far (its adapter is in `output_dir/best/`).
    #[serde(default)]
    pub select_best: Option<super::select::Best>,
    /// The run's identity ([`super::identity`]); None in checkpoints from before it existed.
    #[serde(default)]
    pub run: Option<super::identity::Fingerprint>,
}

pub fn save(
    out: &Path,
    model: &Llama,
    lora: &LoraConfig,
    base: &str,
    opt: &AdamW,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf> {
    let name = format!("checkpoint-{}", state.step);
    let dest = out.join(&name);
    let tmp = out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    peft::save(model, 0, lora, base, &tmp)?;
    let moments: std::collections::HashMap<String, candle_core::Tensor> = opt
        .state()
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let opt_path = tmp.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&moments, &opt_path)
        .map_err(|e| Error::format(&opt_path, e.to_string()))?;
    crate::output::write_bytes(
        &tmp.join(STATE_FILE),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    prune(out, keep, state.run.as_ref())?;
    Ok(dest)
}

/// Completed checkpoints, oldest first.
pub fn list(out: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let step = n.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join(STATE_FILE).exists().then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The run identity recorded in checkpoint `dir` (None if unreadable or from an older ft).
pub fn run_of(dir: &Path) -> Option<super::identity::Fingerprint> {
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
    serde_json::from_str::<TrainerState>(&text).ok()?.run
}

/// Delete this run's oldest checkpoints beyond `keep`; other runs' are never touched.
fn prune(out: &Path, keep: usize, run: Option<&super::identity::Fingerprint>) -> Result<()> {
    let all: Vec<(usize, PathBuf)> = list(out)
        .into_iter()
        .filter(|(_, p)| run_of(p).as_ref() == run)
        .collect();
    for (_, p) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(p).map_err(|e| Error::io(p, e))?;
    }
    Ok(())
}

/// Restore adapter weights and optimizer state from `dir` into `model`/`opt`.
pub fn restore(dir: &Path, model: &mut Llama, opt: &mut AdamW) -> Result<TrainerState> {
    let spath = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&spath).map_err(|e| Error::io(&spath, e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| Error::format(&spath, format!("invalid trainer state: {e}")))?;
    let (_, tensors) = peft::read(dir)?;
    // Copy into the existing Vars so the optimizer keeps pointing at them.
    for (name, var) in &opt.vars {
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::format(dir, format!("checkpoint lacks `{name}`")))?;
        var.set(&t.to_device(var.device())?)?;
    }
    let opt_path = dir.join(OPTIMIZER_FILE);
    let moments = candle_core::safetensors::load(&opt_path, &Device::Cpu)
        .map_err(|e| Error::format(&opt_path, e.to_string()))?;
    opt.load_state(&moments, state.step)?;
    let _ = model;
    Ok(state)
}
