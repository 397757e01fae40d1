//! `ft train --dry-run`: the resolved recipe, parameter counts, tokens per epoch and a peak
//! memory estimate, without loading weights (sizes come from config.json or GGUF metadata).

use anyhow::Result;
use ft::model::Config;
use ft::recipe::Recipe;

/// The model's config without loading weights.
fn peek_config(r: &Recipe) -> Result<Option<(Config, f64)>> {
    let p = &r.model.path;
    if p.is_dir() {
        let cj = p.join("config.json");
        if !cj.exists() {
            return Ok(None);
        }
        let cfg = Config::from_hf_json(&cj)?;
        // Bytes per weight of the in-memory base.
        let bpw = r.model.quantize.bytes_per_weight();
        Ok(Some((cfg, bpw)))
    } else if p.is_file() {
        let f = ft::gguf::GgufFile::open(p)?;
        let cfg = Config::from_gguf(&f)?;
        let bytes: usize = f.tensors.iter().map(|t| t.size).sum();
        Ok(Some((cfg.clone(), bytes as f64 / cfg.param_count() as f64)))
    } else {
        Ok(None)
    }
}

pub fn run(r: &Recipe) -> Result<()> {
    println!("# resolved recipe\n{}", r.to_yaml()?);
    let lcfg = &r.lora;
    match peek_config(r)? {
        None => println!(
            "model: `{}` is not there (or has no config.json); cannot count parameters or estimate memory. \
             Put the model folder (config.json + *.safetensors + tokenizer.json) or GGUF at model.path.",
            r.model.path.display()
        ),
        Some((cfg, bpw)) => {
            let trainable: usize = (0..cfg.num_layers)
                .map(|_| {
                    lcfg.target_modules
                        .modules()
                        .iter()
                        .filter_map(|m| cfg.proj_shape(m.as_str()))
                        .map(|(i, o)| lcfg.r * (i + o))
                        .sum::<usize>()
                })
                .sum();
            let frozen = cfg.param_count();
            let (b, t) = (r.train.batch_size, r.dataset.max_seq_len);
            let gib = |x: f64| x / (1u64 << 30) as f64;
            let base = frozen as f64 * bpw;
            // Adapter: weights, gradients and two AdamW moments, f32.
            let adapter = trainable as f64 * 4.0 * 4.0;
            // Activations kept for backward: ~ (14 hidden + 5 ffn)-sized f32 tensors per layer
            // per token, attention scores and probabilities, then logits + log-softmax + grads.
            let per_tok = (14 * cfg.hidden_size + 5 * cfg.intermediate_size) as f64 * 4.0;
            let attn = (2 * cfg.num_heads * t) as f64 * 4.0 * 2.0;
            let act = (b * t) as f64 * (per_tok + attn) * cfg.num_layers as f64;
            let logits = (b * t * cfg.vocab_size) as f64 * 4.0 * 4.0;
            println!("model: {} layers, hidden {}, vocab {}", cfg.num_layers, cfg.hidden_size, cfg.vocab_size);
            println!("parameters: {trainable} trainable (LoRA r={}, {} modules), {frozen} frozen ({:.2}%)",
                lcfg.r, lcfg.target_modules.modules().len(), 100.0 * trainable as f64 / frozen as f64);
            println!(
                "estimated peak memory: {:.2} GiB (base {:.2} + adapter/optimizer {:.2} + activations {:.2} + logits {:.2}) at batch {b} x {t}",
                gib(base + adapter + act + logits), gib(base), gib(adapter), gib(act), gib(logits)
            );
        }
    }
    match r.dataset.train.resolve("dataset.train") {
        Ok(paths) => {
            let read = ft::data::read_examples(&paths, r.dataset.format, &r.dataset.fields)?;
            let chars: usize = read.examples.iter().map(|e| format!("{e:?}").len()).sum();
            println!(
                "dataset: {} training examples ({} skipped), about {} tokens per epoch (≈ chars/4); {} optimizer steps",
                read.examples.len(),
                read.skipped.len(),
                chars / 4,
                r.train.total_steps(read.examples.len())
            );
        }
        Err(e) => println!("dataset: {e}"),
    }
    Ok(())
}
