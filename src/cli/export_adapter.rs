//! `ft export-adapter --adapter DIR --base MODEL --out ADAPTER.gguf`: a PEFT adapter as a GGUF
//! LoRA that llama.cpp loads with `--lora` (and Ollama with `ADAPTER`).

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use clap::Args;
use ft::export::export_adapter;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportAdapterArgs {
    /// PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: PathBuf,
    /// The base model the adapter was trained on (GGUF or HF folder; only its config is read).
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub base: PathBuf,
    /// Output GGUF file.
    #[arg(long, short = 'o', value_name = "ADAPTER.gguf")]
    pub out: PathBuf,
    /// Tensor type: f32 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Replace OUT if it exists (never an input, never a file inside the adapter folder).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(a: ExportAdapterArgs) -> Result<()> {
    let dtype = match a.dtype.to_ascii_lowercase().as_str() {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        d => bail!("--dtype `{d}`: expected f32 or f16"),
    };
    let r = export_adapter(&a.adapter, &a.base, &a.out, dtype, a.overwrite)
        .with_context(|| format!("exporting {}", a.adapter.display()))?;
    println!(
        "wrote {} ({} arch, {} A/B pairs, rank {}, {})",
        r.path.display(),
        r.arch,
        r.pairs,
        r.rank,
        ft::gguf::dtype_name(r.dtype)
    );
    if r.rslora {
        println!(
            "rsLoRA: scale alpha/√r = {:.4}; stored adapter.lora.alpha = scale·r = {:.4} (llama.cpp scales by alpha/r)",
            r.scale, r.alpha
        );
    } else {
        println!(
            "adapter.lora.alpha = {} (scale alpha/r = {:.4})",
            r.alpha, r.scale
        );
    }
    println!("use: llama-cli -m BASE.gguf --lora {}", r.path.display());
    Ok(())
}
