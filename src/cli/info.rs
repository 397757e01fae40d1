//! `ft info`: what a model file is.

use anyhow::Result;
use clap::Args;
use ft::model::{load, LoadOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A GGUF file or a Hugging Face folder.
    pub model: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let loaded = load(&a.model, &LoadOptions::default())?;
    let m = &loaded.model;
    let c = &m.config;
    let mut mix: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut add = |w: &ft::quant::FrozenWeight| {
        let e = mix.entry(w.type_name()).or_default();
        e.0 += 1;
        e.1 += w.storage_bytes();
    };
    add(&m.embed_tokens);
    for b in &m.blocks {
        for (_, l) in b.linears() {
            add(&l.weight);
        }
    }
    if !c.tie_word_embeddings {
        add(&m.lm_head.weight);
    }
    let tok = &loaded.tokenizer;
    let name = |id: Option<u32>| {
        id.and_then(|i| tok.id_to_token(i))
            .unwrap_or_else(|| "-".into())
    };
    if a.json {
        let v = serde_json::json!({
            "path": a.model, "format": loaded.source.format, "name": loaded.source.name,
            "config": c, "parameters": c.param_count(),
            "tensor_types": mix.iter().map(|(k, (n, b))| (k.clone(), serde_json::json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
            "vocab_size": tok.vocab_size(), "tokenizer": {"model": tok.vocab.model, "pre": tok.vocab.pre},
            "bos": name(tok.bos), "eos": name(tok.eos),
            "stop_tokens": tok.stop.iter().map(|&i| name(Some(i))).collect::<Vec<_>>(),
            "chat_template": loaded.template.as_ref().map(|t| t.source.clone()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "model          {} ({})",
        loaded.source.name, loaded.source.format
    );
    println!("path           {}", a.model.display());
    println!("architecture   {}", c.arch.name());
    println!("parameters     {:.1} M", c.param_count() as f64 / 1e6);
    println!("layers         {}", c.num_layers);
    println!(
        "hidden         {} (ffn {})",
        c.hidden_size, c.intermediate_size
    );
    println!(
        "heads          {} query / {} key-value, head dim {}",
        c.num_heads, c.num_kv_heads, c.head_dim
    );
    println!(
        "context        {} (rope theta {})",
        c.max_position_embeddings, c.rope_theta
    );
    println!("rms eps        {:e}", c.rms_norm_eps);
    println!("tied embedding {}", c.tie_word_embeddings);
    if let Some(w) = c.sliding_window {
        println!("sliding window {w}");
    }
    println!("weights:");
    for (t, (n, b)) in &mix {
        println!(
            "  {t:<6} {n:>4} tensors  {:>8.1} MiB",
            *b as f64 / (1 << 20) as f64
        );
    }
    println!(
        "vocabulary     {} tokens ({} / pre-tokenizer {})",
        tok.vocab_size(),
        tok.vocab.model,
        tok.vocab.pre
    );
    println!("bos / eos      {} / {}", name(tok.bos), name(tok.eos));
    println!(
        "stop tokens    {}",
        tok.stop
            .iter()
            .map(|&i| name(Some(i)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    match &loaded.template {
        Some(t) => println!("chat template\n{}", t.source),
        None => println!("chat template  (none; ft uses chatml)"),
    }
    Ok(())
}
