//! `ft tokenize`: text -> token ids as JSON, or ids -> text with --decode.

use anyhow::{Context, Result};
use clap::Args;
use ft::gguf::GgufFile;
use ft::tokenizer::Tokenizer;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Model whose tokenizer to use (GGUF file or HF folder).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Input file; `-` or nothing reads stdin.
    pub file: Option<PathBuf>,
    /// Treat special-token text (<|im_start|>) as plain text.
    #[arg(long = "no-special")]
    pub no_special: bool,
    /// Decode: the input is a JSON array of ids; print the text.
    #[arg(long)]
    pub decode: bool,
}

/// Only the tokenizer: no weights are loaded.
pub fn load_tokenizer(model: &Path) -> Result<Tokenizer> {
    let meta = std::fs::metadata(model).with_context(|| format!("{}", model.display()))?;
    Ok(if meta.is_dir() {
        Tokenizer::from_hf_dir(model)?
    } else {
        Tokenizer::from_gguf(&GgufFile::open(model)?)?
    })
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let tok = load_tokenizer(&a.model)?;
    let mut input = String::new();
    match a.file.as_deref() {
        None => std::io::stdin()
            .read_to_string(&mut input)
            .context("reading stdin")?,
        Some(p) if p == Path::new("-") => std::io::stdin()
            .read_to_string(&mut input)
            .context("reading stdin")?,
        Some(p) => {
            input = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            input.len()
        }
    };
    if a.decode {
        let ids: Vec<u32> = serde_json::from_str(input.trim())
            .context("--decode expects a JSON array of token ids, e.g. [504, 2365]")?;
        print!("{}", tok.decode(&ids, false)?);
    } else {
        let ids = tok.encode(&input, !a.no_special)?;
        println!("{}", serde_json::to_string(&ids)?);
    }
    Ok(())
}
