//! `ft merge --base MODEL --adapter DIR [--adapter DIR2 --weights 0.7,0.3] --out OUT`: fold
//! LoRA adapters into the base weights and write an HF folder (or a GGUF when OUT ends in .gguf).

use anyhow::{bail, Context, Result};
use clap::Args;
use ft::export::hf::parse_dtype;
use ft::export::merge::parse_weights;
use ft::export::{merge, MergeOptions, MergeOutput};
use ft::quant::types::FileType;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Base model: a GGUF file or a Hugging Face folder.
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub base: PathBuf,
    /// PEFT adapter folder (repeat for several).
    #[arg(long = "adapter", value_name = "DIR", required = true)]
    pub adapters: Vec<PathBuf>,
    /// One weight per adapter, comma-separated (default 1 each): W' = W + Σ wᵢ·scaleᵢ·BᵢAᵢ.
    #[arg(long, value_name = "W1,W2,..")]
    pub weights: Option<String>,
    /// Output: an HF folder, or a GGUF file when the name ends in .gguf.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub out: PathBuf,
    /// HF output dtype: f16, bf16 or f32.
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// GGUF output type (llama.cpp names: F16, Q8_0, Q4_K_M, ...).
    #[arg(long = "type", short = 't', default_value = "F16", value_name = "TYPE")]
    pub qtype: String,
    /// Largest safetensors shard before splitting (e.g. 5GB, 500MB).
    #[arg(long = "shard-size", default_value = "5GB")]
    pub shard_size: String,
    /// Allow re-quantizing tensors of a quantized base that no adapter touches.
    #[arg(long = "allow-requantize")]
    pub allow_requantize: bool,
    /// No progress bar.
    #[arg(long = "no-progress")]
    pub no_progress: bool,
    /// Replace OUT when it is an earlier ft output (a file, or a folder holding .ft-output);
    /// ft never replaces an input or a folder it did not create.
    #[arg(long)]
    pub overwrite: bool,
}

/// `5GB`, `500MB`, `2GiB`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_uppercase();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().with_context(|| format!("size `{s}`"))?;
    let mult = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1048576.0,
        "GIB" => 1073741824.0,
        u => bail!("size `{s}`: unknown unit `{u}` (use B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    if n.is_nan() || n <= 0.0 {
        bail!("size `{s}` must be positive");
    }
    Ok((n * mult) as u64)
}

pub fn run(a: MergeArgs) -> Result<()> {
    let weights = match &a.weights {
        Some(w) => parse_weights(w, a.adapters.len())?,
        None => Vec::new(),
    };
    let is_gguf = a
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let output = if is_gguf {
        MergeOutput::Gguf {
            file_type: FileType::parse(&a.qtype)?,
            allow_requantize: a.allow_requantize,
        }
    } else {
        MergeOutput::Hf {
            dtype: parse_dtype(&a.dtype)?,
            shard_bytes: parse_size(&a.shard_size)?,
        }
    };
    let opts = MergeOptions {
        adapters: a.adapters.clone(),
        weights,
        output,
        overwrite: a.overwrite,
    };
    let bar = super::quantize::progress_bar(a.no_progress);
    let r = merge(&a.base, &a.out, &opts, &mut |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("merging into {}", a.base.display()))?;
    bar.finish_and_clear();
    for (p, w, s) in &r.adapters {
        println!("adapter {} × {w} (scale {s:.4})", p.display());
    }
    println!(
        "merged into {} linear layers: W' = W + Σ w·scale·B·A (f32)",
        r.layers_merged
    );
    if r.dequantized_base {
        println!(
            "note: the base is quantized; adapters were merged into its dequantized weights, so the merged model \
             differs slightly from base+adapter run on the quantized base"
        );
    }
    if let Some(h) = &r.hf {
        println!(
            "wrote {} ({} tensors, {:.1} MiB, {}): {}",
            h.dir.display(),
            h.tensors,
            h.bytes as f64 / (1 << 20) as f64,
            a.dtype,
            h.files.join(", ")
        );
        println!("generation stops at eos_token_id {:?}", h.eos_token_ids);
    }
    if let Some(g) = &r.gguf {
        super::quantize::print_report(g);
    }
    Ok(())
}
