//! Flags shared by the commands that load a model.

use anyhow::Result;
use clap::Args;
use ft::device::DeviceSpec;
use ft::model::{LoadOptions, Loaded};
use ft::quant::MatmulMode;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a GGUF file or a Hugging Face folder (config.json, *.safetensors, tokenizer.json).
    #[arg(short = 'm', long = "model", value_name = "PATH")]
    pub model: PathBuf,
    /// LoRA adapter folder (PEFT format) applied at inference without merging.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Compute device: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Context length to allow (default: the model's, capped at 8192).
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Exact f32 math over dequantized weights instead of the fast quantized kernels.
    #[arg(long)]
    pub exact: bool,
}

/// `--ctx` in range (named as the flag, before the model is read).
pub fn check_ctx(ctx: Option<usize>) -> Result<()> {
    match ctx {
        Some(n) if n == 0 || n > ft::model::MAX_POSITIONS => anyhow::bail!(
            "--ctx must be between 1 and {} (got {n})",
            ft::model::MAX_POSITIONS
        ),
        _ => Ok(()),
    }
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded> {
        check_ctx(self.ctx)?;
        let opts = LoadOptions {
            device: self.device.resolve()?,
            quantize: None,
            max_positions: self.ctx,
            adapters: self.adapter.iter().cloned().collect(),
        };
        let t = std::time::Instant::now();
        let loaded = ft::model::load(&self.model, &opts)?;
        eprintln!(
            "ft: loaded {} ({}, {} layers) in {:.2}s",
            self.model.display(),
            loaded.source.format,
            loaded.model.config.num_layers,
            t.elapsed().as_secs_f64()
        );
        Ok(loaded)
    }

    pub fn mode(&self) -> MatmulMode {
        if self.exact {
            MatmulMode::Exact
        } else {
            MatmulMode::Fast
        }
    }

    pub fn adapter_slot(&self) -> Option<usize> {
        self.adapter.as_ref().map(|_| 0)
    }
}
