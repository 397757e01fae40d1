//! Replay data from the frozen base model itself (self-distillation): a fine-tune that also
//! trains on what the base model says keeps its general behaviour close to the base, with no
//! outside data. Two kinds:
//! - `chat`: user turns sampled from the chat template's own user prefix (as Magpie does,
//!   Xu et al. 2024: an aligned model asked to continue `<|im_start|>user\n` writes a typical
//!   user request), each answered greedily by the base model;
//! - `text`: free text sampled after the start-of-document token.
//!
//! Generated once with batched decoding (the quantized kernels) and cached as jsonl, keyed by
//! the model file's identity and the settings, so repeated runs reuse it.

use super::Example;
use crate::error::{Error, Result};
use crate::generate::{generate_batch, Finish, SamplingParams};
use crate::model::{Ctx, Llama};
use crate::quant::MatmulMode;
use crate::tokenizer::{ChatTemplate, Message, Tokenizer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What the base model is asked to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayKind {
    Chat,
    Text,
}

/// `dataset.replay:` how much replay data, and how it is sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySpec {
    pub kind: ReplayKind,
    /// Conversations (or texts) to generate; some are dropped (unfinished, empty).
    pub samples: usize,
    /// Tokens per answer (chat) or per text.
    pub max_new_tokens: usize,
    /// Sampling temperature for the user turns (chat) or the texts.
    pub temperature: f64,
    pub seed: u64,
    /// Copies per epoch when mixed into training (as `dataset.mix[].weight`).
    pub weight: f64,
}

impl Default for ReplaySpec {
    fn default() -> Self {
        ReplaySpec {
            kind: ReplayKind::Chat,
            samples: 256,
            max_new_tokens: 320,
            temperature: 1.0,
            seed: 0,
            weight: 1.0,
        }
    }
}

impl ReplaySpec {
    pub fn validate(&self) -> Result<()> {
        if self.samples == 0 || self.samples > 100_000 {
            return Err(Error::invalid(format!(
                "replay.samples must be in 1..=100000 (got {})",
                self.samples
            )));
        }
        if self.max_new_tokens == 0 || self.max_new_tokens > 4096 {
            return Err(Error::invalid(format!(
                "replay.max_new_tokens must be in 1..=4096 (got {})",
                self.max_new_tokens
            )));
        }
        if !(self.weight.is_finite() && (0.0..=100.0).contains(&self.weight)) {
            return Err(Error::invalid(format!(
                "replay.weight must be in [0, 100] (got {})",
                self.weight
            )));
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(Error::invalid(format!(
                "replay.temperature must be in [0, 2] (got {})",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// Questions decoded together.
const BATCH: usize = 16;
/// Tokens for a sampled user turn.
const QUESTION_TOKENS: usize = 96;

/// Generate replay examples from `model` (whatever adapter `ctx` selects; none for the base).
pub fn generate(
    model: &Llama,
    tok: &Tokenizer,
    template: &ChatTemplate,
    spec: &ReplaySpec,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Vec<Example>> {
    spec.validate()?;
    let ctx = Ctx::infer(MatmulMode::Fast, None);
    // Texts are sampled from the full distribution: an unbiased sample of what the base model
    // says is what self-distillation needs (and needs no sort of the vocabulary per token).
    // User turns keep a nucleus of 0.95, so that a rare junk token does not derail a question.
    let sampled = SamplingParams {
        temperature: spec.temperature,
        top_k: None,
        top_p: match spec.kind {
            ReplayKind::Text => None,
            ReplayKind::Chat => Some(0.95),
        },
        seed: spec.seed,
        ..Default::default()
    };
    let n = spec.samples;
    match spec.kind {
        ReplayKind::Text => {
            let start = document_start(tok)?;
            let prompts = vec![vec![start]; n];
            let outs = generate_batch(
                model,
                ctx,
                tok,
                &prompts,
                &sampled,
                spec.max_new_tokens,
                BATCH,
                |d| progress("replay text", d, n),
            )?;
            Ok(outs
                .into_iter()
                .filter(|g| g.text.trim().len() >= 16)
                .map(|g| Example::Text { text: g.text })
                .collect())
        }
        ReplayKind::Chat => {
            let prefix = tok.encode_prompt(&user_prefix(template)?, true)?;
            let prompts = vec![prefix; n];
            let qs = generate_batch(
                model,
                ctx,
                tok,
                &prompts,
                &sampled,
                QUESTION_TOKENS,
                BATCH,
                |d| progress("replay questions", d, n),
            )?;
            let questions: Vec<String> = qs
                .into_iter()
                .filter(|g| g.finish == Finish::Stop)
                .map(|g| g.text.trim().to_string())
                .filter(|q| q.len() >= 8)
                .collect();
            let prompts = questions
                .iter()
                .map(|q| tok.encode_chat(template, &[Message::new("user", q.clone())], true))
                .collect::<Result<Vec<_>>>()?;
            let m = prompts.len();
            let answers = generate_batch(
                model,
                ctx,
                tok,
                &prompts,
                &SamplingParams::greedy(),
                spec.max_new_tokens,
                BATCH,
                |d| progress("replay answers", d, m),
            )?;
            Ok(questions
                .into_iter()
                .zip(answers)
                .filter(|(_, a)| a.finish == Finish::Stop && !a.text.trim().is_empty())
                .map(|(q, a)| Example::Chat {
                    messages: vec![
                        Message::new("user", q),
                        Message::new("assistant", a.text.trim()),
                    ],
                })
                .collect())
        }
    }
}

/// The rendered template up to where a user's first message begins (with the template's
/// default system prompt, if it adds one).
pub fn user_prefix(template: &ChatTemplate) -> Result<String> {
    const MARK: &str = "\u{2063}FT-REPLAY-USER\u{2063}";
    let text = template.render(&[Message::new("user", MARK)], false)?;
    text.find(MARK)
        .map(|i| text[..i].to_string())
        .ok_or_else(|| Error::Template("the chat template drops the user's message".into()))
}

/// The token a document starts after: BOS for vocabularies that prepend it, else the
/// end-of-text token that separates documents in pre-training, else EOS.
fn document_start(tok: &Tokenizer) -> Result<u32> {
    if tok.add_bos {
        if let Some(b) = tok.bos {
            return Ok(b);
        }
    }
    ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"]
        .iter()
        .find_map(|t| tok.token_to_id(t))
        .or(tok.eos)
        .or(tok.bos)
        .ok_or_else(|| Error::invalid("replay text: the vocabulary has no BOS/EOS token"))
}

/// Where the replay data for this model and spec is cached: `$FT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/ft`, else `~/.cache/ft`, then `replay/<key>.jsonl`. The key hashes the model
/// file's identity (path, size, modification time, and its first and last MiB), the template
/// and the spec.
pub fn cache_path(
    model_path: &Path,
    template: &ChatTemplate,
    spec: &ReplaySpec,
) -> Result<PathBuf> {
    let root = std::env::var_os("FT_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("ft")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ft")))
        .unwrap_or_else(|| PathBuf::from(".ft-cache"));
    let mut h = Sha256::new();
    h.update(model_identity(model_path)?);
    h.update(template.source.as_bytes());
    // Bumped when the way replay data is sampled changes.
    h.update(b"replay-v2");
    // What is generated, not how much of it is mixed in.
    h.update(serde_json::to_vec(&ReplaySpec {
        weight: 1.0,
        ..spec.clone()
    })?);
    let key = crate::model::identity::hex(&h.finalize()[..12]);
    Ok(root.join("replay").join(format!("{key}.jsonl")))
}

/// The model's canonical path, then its content identity (both change the cache key).
fn model_identity(path: &Path) -> Result<Vec<u8>> {
    let mut id = std::fs::canonicalize(path)
        .map_err(|e| Error::io(path, e))?
        .to_string_lossy()
        .into_owned()
        .into_bytes();
    id.extend(crate::model::identity::content_identity(path)?);
    Ok(id)
}

/// Cached replay examples, or generate and cache them. Returns the examples and the cache file.
pub fn load_or_generate(
    model_path: &Path,
    model: &Llama,
    tok: &Tokenizer,
    template: &ChatTemplate,
    spec: &ReplaySpec,
    progress: impl FnMut(&str, usize, usize),
) -> Result<(Vec<Example>, PathBuf, bool)> {
    let path = cache_path(model_path, template, spec)?;
    if path.is_file() {
        let format = match spec.kind {
            ReplayKind::Chat => super::Format::Chat,
            ReplayKind::Text => super::Format::Text,
        };
        let read = super::read_examples(
            std::slice::from_ref(&path),
            format,
            &super::FieldMap::default(),
        )?;
        return Ok((read.examples, path, true));
    }
    let examples = generate(model, tok, template, spec, progress)?;
    if examples.is_empty() {
        return Err(Error::invalid(
            "replay: the base model produced no usable sample (every answer unfinished or empty); raise replay.max_new_tokens",
        ));
    }
    let mut text = String::new();
    for ex in &examples {
        text.push_str(&serde_json::to_string(&super::augment::record(ex))?);
        text.push('\n');
    }
    crate::output::write_bytes(&path, text.as_bytes())?;
    Ok((examples, path, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_prefix_is_where_the_first_user_message_begins() {
        let t = ChatTemplate::from_str_with(crate::tokenizer::template::CHATML, "", "").unwrap();
        assert_eq!(user_prefix(&t).unwrap(), "<|im_start|>user\n");
        let smol = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        let t = ChatTemplate::from_str_with(smol, "", "").unwrap();
        assert_eq!(
            user_prefix(&t).unwrap(),
            "<|im_start|>system\nYou are SmolLM<|im_end|>\n<|im_start|>user\n"
        );
    }

    #[test]
    fn replay_from_a_tiny_model_is_deterministic_and_well_formed() {
        let dir = std::env::temp_dir().join(format!("ft-replay-{}", std::process::id()));
        crate::testing::tiny_hf_dir(&dir, 5).unwrap();
        let tok = Tokenizer::from_hf_dir(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let model = crate::testing::tiny_model(5, None).unwrap();
        let tmpl = ChatTemplate::new(crate::tokenizer::template::CHATML, &tok).unwrap();
        let spec = ReplaySpec {
            kind: ReplayKind::Text,
            samples: 6,
            max_new_tokens: 24,
            ..Default::default()
        };
        let a = generate(&model, &tok, &tmpl, &spec, |_, _, _| {}).unwrap();
        let b = generate(&model, &tok, &tmpl, &spec, |_, _, _| {}).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|e| matches!(e, Example::Text { .. })));
        // Different seeds sample different texts.
        let c = generate(
            &model,
            &tok,
            &tmpl,
            &ReplaySpec {
                seed: 1,
                ..spec.clone()
            },
            |_, _, _| {},
        )
        .unwrap();
        assert_ne!(a, c);
        assert!(ReplaySpec {
            samples: 0,
            ..spec.clone()
        }
        .validate()
        .is_err());
        assert!(ReplaySpec {
            temperature: f64::NAN,
            ..spec
        }
        .validate()
        .is_err());
    }
}
