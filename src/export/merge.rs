//! `ft merge`: a base model (GGUF or HF folder) plus one or more PEFT adapters, each with a
//! weight, folded into plain weights: W' = W + Σ wᵢ · scaleᵢ · BᵢAᵢ, computed in f32 with the
//! adapters' own `delta_weight()` (the definition training uses). A quantized base is merged
//! into its dequantized weights, so the merged model differs slightly from the original
//! quantized one; the report says so. Output: an HF folder, or a GGUF file directly.

use super::gguf_model::{write_model, GgufOptions, GgufReport};
use super::hf::{write_hf, HfOptions, HfReport};
use super::Progress;
use crate::error::{Error, Result};
use crate::model::{load, LoadOptions};
use crate::output::Kind;
use crate::quant::types::FileType;
use crate::quant::FrozenWeight;
use candle_core::DType;
use std::path::{Path, PathBuf};

/// What the merged model is written as.
#[derive(Clone, Debug)]
pub enum MergeOutput {
    Hf {
        dtype: DType,
        shard_bytes: u64,
    },
    Gguf {
        file_type: FileType,
        allow_requantize: bool,
    },
}

#[derive(Clone, Debug)]
pub struct MergeOptions {
    /// PEFT adapter folders.
    pub adapters: Vec<PathBuf>,
    /// One weight per adapter; empty means 1.0 each.
    pub weights: Vec<f64>,
    pub output: MergeOutput,
    /// Replace the output when it is an earlier ft output (never an input or a user's folder).
    pub overwrite: bool,
}

#[derive(Clone, Debug)]
pub struct MergeReport {
    /// (adapter folder, weight, scale alpha/r or alpha/√r).
    pub adapters: Vec<(PathBuf, f64, f64)>,
    /// Linear layers that received at least one delta.
    pub layers_merged: usize,
    /// The base had quantized weights, so the merge used their dequantized values.
    pub dequantized_base: bool,
    pub hf: Option<HfReport>,
    pub gguf: Option<GgufReport>,
}

/// `0.7,0.3` -> [0.7, 0.3], checked against the adapter count.
pub fn parse_weights(s: &str, n_adapters: usize) -> Result<Vec<f64>> {
    let w = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| Error::invalid(format!("--weights: `{}` is not a number", p.trim())))
        })
        .collect::<Result<Vec<_>>>()?;
    if w.len() != n_adapters {
        return Err(Error::invalid(format!(
            "--weights has {} values for {n_adapters} adapter(s)",
            w.len()
        )));
    }
    Ok(w)
}

/// Merge `opts.adapters` into `base` and write the result to `out`.
pub fn merge(
    base: &Path,
    out: &Path,
    opts: &MergeOptions,
    progress: Progress<'_>,
) -> Result<MergeReport> {
    if opts.adapters.is_empty() {
        return Err(Error::invalid("merge needs at least one adapter"));
    }
    let weights = if opts.weights.is_empty() {
        vec![1.0; opts.adapters.len()]
    } else if opts.weights.len() == opts.adapters.len() {
        opts.weights.clone()
    } else {
        return Err(Error::invalid(format!(
            "{} weights for {} adapters",
            opts.weights.len(),
            opts.adapters.len()
        )));
    };
    // Refuse a destructive output before the long load.
    let kind = match opts.output {
        MergeOutput::Hf { .. } => Kind::Dir,
        MergeOutput::Gguf { .. } => Kind::File,
    };
    let inputs: Vec<&Path> = std::iter::once(base)
        .chain(opts.adapters.iter().map(PathBuf::as_path))
        .collect();
    crate::output::check(out, kind, &inputs, opts.overwrite)?;
    let load_opts = LoadOptions {
        adapters: opts.adapters.clone(),
        ..LoadOptions::default()
    };
    let loaded = load(base, &load_opts)?;
    let slots: Vec<(usize, f64)> = weights.iter().copied().enumerate().collect();
    let mut layers_merged = 0;
    let mut dequantized_base = false;
    let mut scales = vec![0.0; opts.adapters.len()];
    for block in &loaded.model.blocks {
        for (_, lin) in block.linears() {
            let mut any = false;
            for &(slot, _) in &slots {
                if let Some(l) = lin.adapter(slot) {
                    scales[slot] = l.scale;
                    any = true;
                }
            }
            if any {
                layers_merged += 1;
                dequantized_base |= matches!(lin.weight, FrozenWeight::Quantized(_));
            }
        }
    }
    let adapters = opts
        .adapters
        .iter()
        .cloned()
        .zip(weights.iter().copied())
        .zip(scales)
        .map(|((p, w), s)| (p, w, s))
        .collect();
    let finetune = opts
        .adapters
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join("+");
    let mut report = MergeReport {
        adapters,
        layers_merged,
        dequantized_base,
        hf: None,
        gguf: None,
    };
    match &opts.output {
        MergeOutput::Hf { dtype, shard_bytes } => {
            let o = HfOptions {
                dtype: *dtype,
                shard_bytes: *shard_bytes,
                merge: slots,
                overwrite: opts.overwrite,
            };
            report.hf = Some(write_hf(out, &loaded, &o, progress)?);
        }
        MergeOutput::Gguf {
            file_type,
            allow_requantize,
        } => {
            let o = GgufOptions {
                file_type: *file_type,
                allow_requantize: *allow_requantize,
                merge: slots,
                name: Some(format!("{} {finetune}", loaded.source.name)),
                finetune: Some(finetune),
                base_model: Some(loaded.source.name.clone()),
                overwrite: opts.overwrite,
            };
            report.gguf = Some(write_model(out, &loaded, &o, progress)?);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_must_match_adapters() {
        assert_eq!(parse_weights("0.7, 0.3", 2).unwrap(), vec![0.7, 0.3]);
        assert!(parse_weights("0.7", 2)
            .unwrap_err()
            .to_string()
            .contains("1 values for 2"));
        assert!(parse_weights("a,1", 2)
            .unwrap_err()
            .to_string()
            .contains("`a`"));
    }
}
