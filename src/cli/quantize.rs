//! `ft quantize INPUT --type Q4_K_M --out OUT.gguf`: write a GGUF with one of llama.cpp's
//! quantization mixes, reporting the tensor types, the row-size fallbacks and the throughput.

use anyhow::{Context, Result};
use clap::Args;
use ft::export::{quantize_file, GgufOptions, GgufReport};
use ft::quant::types::FileType;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The model to quantize: a GGUF file or a Hugging Face folder.
    pub input: PathBuf,
    /// Quantization type: Q4_K_M, Q4_K_S, Q5_K_M, Q5_K_S, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q3_K_M, Q3_K_S, Q3_K_L, Q2_K, F16, BF16, F32 (any case).
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub qtype: String,
    /// Output GGUF file.
    #[arg(long, short = 'o', value_name = "OUT.gguf")]
    pub out: PathBuf,
    /// Convert tensors that are already quantized into another quantized type (rounds twice).
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

pub fn run(a: QuantizeArgs) -> Result<()> {
    let file_type = FileType::parse(&a.qtype)?;
    let opts = GgufOptions {
        file_type,
        allow_requantize: a.allow_requantize,
        overwrite: a.overwrite,
        ..GgufOptions::default()
    };
    let bar = progress_bar(a.no_progress);
    let report = quantize_file(&a.input, &a.out, &opts, &mut |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    })
    .with_context(|| format!("quantizing {}", a.input.display()))?;
    bar.finish_and_clear();
    print_report(&report);
    Ok(())
}

pub fn progress_bar(hidden: bool) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The per-type table, the fallbacks and the throughput of a GGUF write.
pub fn print_report(r: &GgufReport) {
    println!(
        "wrote {} ({}, {} tensors, {:.1} MiB)",
        r.path.display(),
        r.file_type,
        r.tensors,
        r.out_bytes as f64 / (1 << 20) as f64
    );
    for (t, c) in &r.types {
        println!(
            "  {t:<6} {:>4} tensors  {:>9.2} MiB",
            c.tensors,
            c.bytes as f64 / (1 << 20) as f64
        );
    }
    if r.copied > 0 {
        println!(
            "  {} tensors copied unchanged (already in their target type)",
            r.copied
        );
    }
    if r.requantized > 0 {
        println!(
            "  {} already-quantized tensors re-quantized (--allow-requantize)",
            r.requantized
        );
    }
    if r.fallbacks.is_empty() {
        println!("fallbacks: none");
    } else {
        let mut by: BTreeMap<(String, String, usize), usize> = BTreeMap::new();
        for f in &r.fallbacks {
            let key = (
                ft::gguf::dtype_name(f.wanted).to_string(),
                ft::gguf::dtype_name(f.used).to_string(),
                f.ncols,
            );
            *by.entry(key).or_default() += 1;
        }
        println!("fallbacks: {} of {} tensors (rows that do not fit the wanted block size, as llama.cpp does):", r.fallbacks.len(), r.tensors);
        for ((w, u, n), c) in by {
            println!("  {w} -> {u}: {c} tensors with rows of {n}");
        }
    }
    println!(
        "throughput: {:.1} MB of source weights in {:.2}s = {:.1} MB/s",
        r.source_bytes as f64 / 1e6,
        r.seconds,
        r.mb_per_s()
    );
}
