//! `ft replay`: the base model's own conversations (or texts), the data a recipe's
//! `dataset.replay` trains on to keep the model's general behaviour. Generated once and cached;
//! this command shows or exports them.

use super::common::ModelArgs;
use anyhow::Result;
use clap::Args;
use ft::data::replay::{load_or_generate, ReplayKind, ReplaySpec};
use ft::tokenizer::ChatTemplate;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// chat (sampled user turns answered greedily) or text (sampled free text).
    #[arg(long, default_value = "chat")]
    pub kind: String,
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    #[arg(long = "max-new-tokens", default_value_t = 320)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also copy the data to this jsonl file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(a: ReplayArgs) -> Result<()> {
    let kind = match a.kind.as_str() {
        "chat" => ReplayKind::Chat,
        "text" => ReplayKind::Text,
        k => anyhow::bail!("--kind must be chat or text (got `{k}`)"),
    };
    let spec = ReplaySpec {
        kind,
        samples: a.samples,
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        seed: a.seed,
        weight: 1.0,
    };
    if let Some(out) = &a.out {
        ft::output::check(out, ft::output::Kind::File, &[&a.model.model], a.overwrite)
            .map_err(|e| anyhow::anyhow!("--out: {e}"))?;
    }
    let loaded = a.model.load()?;
    let template = ChatTemplate::choose(None, loaded.template.as_ref(), &loaded.tokenizer)?;
    let t = std::time::Instant::now();
    let (examples, path, cached) = load_or_generate(
        &a.model.model,
        &loaded.model,
        &loaded.tokenizer,
        &template,
        &spec,
        |what, done, total| eprint!("\r{what}: {done}/{total}   "),
    )?;
    eprintln!(
        "\nft replay: {} examples {} {} ({:.1}s)",
        examples.len(),
        if cached { "read from" } else { "written to" },
        path.display(),
        t.elapsed().as_secs_f64()
    );
    if let Some(out) = &a.out {
        let text = std::fs::read(&path)?;
        ft::output::write_bytes(out, &text)?;
    }
    Ok(())
}
