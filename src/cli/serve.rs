//! `ft serve`: the OpenAI-compatible HTTP server with the web chat page.

use super::common::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use ft::serve::runner::{Runner, RunnerConfig};
use ft::serve::ServeConfig;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model: a GGUF file or a Hugging Face folder.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// A LoRA adapter served by name, applied per request without merging: NAME=DIR (repeatable).
    #[arg(long = "adapter", value_name = "NAME=DIR")]
    pub adapters: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Context length (prompt + completion) per request.
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Requests decoded at once (round-robin, one token each per turn); the rest queue.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests allowed to wait beyond --parallel before the server answers 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on /v1/*.
    #[arg(long = "api-key", env = "FT_API_KEY")]
    pub api_key: Option<String>,
    /// Longest prompt in tokens (after the chat template); longer ones get 400. Default: the
    /// context length.
    #[arg(long = "max-prompt-tokens", value_name = "N")]
    pub max_prompt_tokens: Option<usize>,
    /// Compute device: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: ft::device::DeviceSpec,
    /// Exact f32 math instead of the fast quantized kernels.
    #[arg(long)]
    pub exact: bool,
    /// Chat template override: chatml, llama3, mistral, or Jinja source.
    #[arg(long = "chat-template")]
    pub chat_template: Option<ft::tokenizer::TemplateSpec>,
    /// Name of the base model in /v1/models (default: the file or folder name).
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!(
            "--api-key (or FT_API_KEY) is empty; give a key, or leave it out to serve without one"
        );
    }
    if a.max_prompt_tokens == Some(0) {
        bail!("--max-prompt-tokens must be at least 1");
    }
    super::common::check_ctx(a.ctx)?;
    let mut names = Vec::new();
    let mut dirs = Vec::new();
    for spec in &a.adapters {
        let Some((name, dir)) = spec.split_once('=') else {
            bail!("--adapter expects NAME=DIR (got `{spec}`)");
        };
        if name.is_empty() || names.iter().any(|n| n == name) {
            bail!("--adapter names must be non-empty and unique (`{name}`)");
        }
        names.push(name.to_string());
        dirs.push(PathBuf::from(dir));
    }
    let margs = ModelArgs {
        model: a.model.clone(),
        adapter: None,
        device: a.device,
        ctx: a.ctx,
        exact: a.exact,
    };
    let opts = ft::model::LoadOptions {
        device: a.device.resolve()?,
        quantize: None,
        max_positions: a.ctx,
        adapters: dirs,
    };
    let loaded =
        ft::model::load(&a.model, &opts).with_context(|| format!("{}", a.model.display()))?;
    let template = super::run::template(&loaded, a.chat_template.as_ref())?;
    // The file or folder name: what users typed, and an id without spaces.
    let stem = a
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ft".into());
    let base_name = a.name.clone().unwrap_or(stem);
    let runner = Runner::start(
        loaded,
        template,
        RunnerConfig {
            parallel: a.parallel.max(1),
            queue: a.queue,
            mode: margs.mode(),
            base_name: base_name.clone(),
            adapters: names.clone(),
            max_prompt_tokens: a.max_prompt_tokens,
        },
    );
    let cfg = ServeConfig {
        host: a.host.clone(),
        port: a.port,
        api_key: a.api_key.clone(),
        parallel: a.parallel.max(1),
        queue: a.queue,
        ..ServeConfig::default()
    };
    eprintln!(
        "ft serve: http://{}:{}/ (models: {}{}), {} parallel",
        a.host,
        a.port,
        base_name,
        names.iter().map(|n| format!(", {n}")).collect::<String>(),
        a.parallel
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(ft::serve::serve(cfg, Arc::new(runner)))?;
    Ok(())
}
