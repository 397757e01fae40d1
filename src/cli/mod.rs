//! Subcommands. Each file turns flags into library calls and prints results; `anyhow` lives
//! here and in `main.rs` only.

pub mod augment;
pub mod bench;
pub mod common;
pub mod dry_run;
pub mod eval;
pub mod export_adapter;
pub mod info;
pub mod merge;
pub mod quantize;
pub mod replay;
pub mod run;
pub mod serve;
pub mod tokenize;
pub mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ft",
    version,
    about = "Fine-tune small open LLMs with QLoRA on commodity hardware and ship them as GGUF",
    long_about = None
)]
pub struct Cli {
    /// CPU threads for all compute (0 = all cores).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate text from a prompt (streams to stdout; logs and timings to stderr).
    Run(run::RunArgs),
    /// Interactive multi-turn chat in the terminal.
    Chat(run::ChatArgs),
    /// Print the token ids of a text as JSON (or decode ids with --decode).
    Tokenize(tokenize::TokenizeArgs),
    /// Fine-tune a LoRA adapter from a YAML recipe (QLoRA: the base stays quantized and frozen).
    Train(train::TrainArgs),
    /// OpenAI-compatible HTTP server (streaming), adapters by name, and a web chat page at /.
    Serve(serve::ServeArgs),
    /// Fold LoRA adapters into the base and write an HF folder (or a GGUF with --out X.gguf).
    Merge(merge::MergeArgs),
    /// Write a GGUF (F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, ...) that llama.cpp and Ollama load.
    Quantize(quantize::QuantizeArgs),
    /// Write a LoRA adapter as a GGUF adapter for llama.cpp (`--lora`).
    ExportAdapter(export_adapter::ExportAdapterArgs),
    /// Evaluate: MMLU, perplexity, the held-out task; base vs fine-tuned side by side.
    Eval(eval::EvalArgs),
    /// Reworded copies of a dataset's questions (templates), as a new jsonl file.
    Augment(augment::AugmentArgs),
    /// The base model's own conversations or texts (self-distillation replay data), cached.
    Replay(replay::ReplayArgs),
    /// Prefill and decode throughput, llama-bench style.
    Bench(bench::BenchArgs),
    /// Show a model's architecture, sizes, quantization mix, vocabulary and chat template.
    Info(info::InfoArgs),
}

pub fn dispatch(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => run::chat(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Augment(a) => augment::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::ExportAdapter(a) => export_adapter::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Train(a) => train::run(a),
    }
}

/// The error and its source chain on one line, without repeating a cause already quoted.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out.replace('\n', " ")
}
