//! `ft augment`: reworded copies of a dataset's questions (templates), written as a new jsonl
//! file that a recipe can train on. The input is never modified.

use anyhow::{Context, Result};
use clap::Args;
use ft::data::augment::{augment, record, Templates};
use ft::data::{read_examples, FieldMap, Format};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AugmentArgs {
    /// Dataset files to augment (jsonl/json/parquet).
    #[arg(required = true)]
    pub input: Vec<PathBuf>,
    /// Output jsonl file (written atomically; never an input; an existing file only with --overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Reworded copies per example.
    #[arg(long, default_value_t = 3)]
    pub copies: usize,
    /// Leave the originals out of the output (by default each original comes first).
    #[arg(long = "no-originals")]
    pub no_originals: bool,
    /// Record shape: chat, instruction, completion, text.
    #[arg(long, default_value = "chat")]
    pub format: String,
    /// Templates (YAML or JSON: frames, personas, openers, closers, casual); default built in.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing --out file.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(a: AugmentArgs) -> Result<()> {
    let format: Format = serde_yaml_ng::from_str(&a.format).map_err(|_| {
        anyhow::anyhow!(
            "--format must be chat, instruction, completion or text (got `{}`)",
            a.format
        )
    })?;
    // Checked before any work: never an input (links and `..` resolved), never an existing
    // file unless --overwrite.
    let inputs: Vec<&std::path::Path> = a.input.iter().map(|p| p.as_path()).collect();
    ft::output::check(&a.out, ft::output::Kind::File, &inputs, a.overwrite).context("--out")?;
    let templates = match &a.templates {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_yaml_ng::from_str::<Templates>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => Templates::default(),
    };
    let read = read_examples(&a.input, format, &FieldMap::default())?;
    let (out, stats) = augment(
        &read.examples,
        &templates,
        a.copies,
        !a.no_originals,
        a.seed,
    )?;
    let mut text = String::new();
    for ex in &out {
        text.push_str(&serde_json::to_string(&record(ex))?);
        text.push('\n');
    }
    ft::output::write_bytes(&a.out, text.as_bytes())?;
    eprintln!(
        "ft augment: {} examples -> {} ({} skipped by the reader) in {}",
        stats.input,
        stats.output,
        read.skipped.len(),
        a.out.display()
    );
    Ok(())
}
