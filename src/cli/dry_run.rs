//! `ft train --dry-run`: the resolved recipe, parameter counts, tokens per epoch and a peak
//! memory estimate (`train::memory`), without loading weights.

use anyhow::Result;
use ft::recipe::Recipe;

pub fn run(r: &Recipe) -> Result<()> {
    println!("# resolved recipe\n{}", r.to_yaml()?);
    match ft::train::memory::for_recipe(r)? {
        None => println!(
            "model: `{}` is not there (or has no config.json); cannot count parameters or estimate memory. \
             Put the model folder (config.json + *.safetensors + tokenizer.json) or GGUF at model.path.",
            r.model.path.display()
        ),
        Some((cfg, e)) => {
            let (b, t) = (r.train.batch_size, r.dataset.max_seq_len);
            let gib = |x: f64| x / (1u64 << 30) as f64;
            println!("model: {} layers, hidden {}, vocab {}", cfg.num_layers, cfg.hidden_size, cfg.vocab_size);
            println!(
                "parameters: {} trainable (LoRA r={}, {} modules), {} frozen ({:.2}%)",
                e.trainable,
                r.lora.r,
                r.lora.target_modules.modules().len(),
                e.frozen,
                100.0 * e.trainable as f64 / e.frozen as f64
            );
            println!(
                "estimated peak memory: {:.2} GiB (base {:.2} + adapter/optimizer {:.2} + activations {:.2} + logits {:.2}) at batch {b} x {t}",
                gib(e.total_bytes()), gib(e.base_bytes), gib(e.adapter_bytes), gib(e.activation_bytes), gib(e.logit_bytes)
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
        // Training would stop here: so does the check (after printing everything else).
        Err(e) => anyhow::bail!("dataset: {e}"),
    }
    Ok(())
}
