//! Tokenizers: from an HF `tokenizer.json`, or built from GGUF metadata (GPT-2 style BPE with
//! merges and a named pre-tokenizer, or a sentencepiece/llama vocabulary with scores), plus
//! the chat templates in [`template`].
//!
//! Special tokens (`<|im_start|>`, BOS/EOS) are recognised in text when `parse_special` is on
//! and are plain text when it is off, as llama.cpp's `--no-parse-special` does. A chat is
//! encoded with [`Tokenizer::encode_chat`] ([`parts`]): special tokens come from the template's
//! markup only, never from what a message says.

mod build;
pub mod parts;
pub mod template;

pub use build::GgufVocab;
pub use parts::{Part, Rendered};
pub use template::{ChatTemplate, Message, TemplateSpec, ROLES};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use std::path::Path;

#[derive(Clone)]
pub struct Tokenizer {
    /// Splits special tokens out of the text.
    special: tokenizers::Tokenizer,
    /// Treats special tokens' text as ordinary text.
    plain: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Prepend BOS when encoding a whole prompt (llama/sentencepiece vocabularies).
    pub add_bos: bool,
    /// Tokens that end generation: EOS and the end-of-turn tokens the vocabulary has.
    pub stop: Vec<u32>,
    /// The vocabulary as GGUF stores it, for export.
    pub vocab: GgufVocab,
    /// Special tokens' text and id, longest first: what [`Tokenizer::encode_parts`] looks for
    /// in template markup.
    specials: Vec<(String, u32)>,
    /// Whether some special token starts with this byte (a fast reject while scanning).
    special_first_bytes: [bool; 256],
}

/// End-of-turn markers of common chat formats: generation stops at whichever the vocab has.
const END_OF_TURN: [&str; 7] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "</s>",
    "<|end|>",
    "<end_of_turn>",
];

impl Tokenizer {
    fn from_parts(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        vocab: GgufVocab,
    ) -> Self {
        let mut specials: Vec<(String, u32)> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(id, t)| (t.content, id))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut special_first_bytes = [false; 256];
        for (s, _) in &specials {
            special_first_bytes[s.as_bytes()[0] as usize] = true;
        }
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        let mut special = inner;
        special.set_encode_special_tokens(false);
        let mut stop: Vec<u32> = eos.into_iter().collect();
        for t in END_OF_TURN {
            if let Some(id) = special.token_to_id(t) {
                if !stop.contains(&id) {
                    stop.push(id);
                }
            }
        }
        Tokenizer {
            special,
            plain,
            bos,
            eos,
            add_bos,
            stop,
            vocab,
            specials,
            special_first_bytes,
        }
    }

    /// Build from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let vocab = GgufVocab::from_gguf(f)?;
        let inner = vocab.build()?;
        let id = |k: &str| f.get_u64(k).map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let mut eos = id("tokenizer.ggml.eos_token_id");
        // SmolLM2's GGUF names <|im_start|> as EOS; keep the end-of-turn token as the real one.
        if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
            eos = eos.or(Some(eot));
        }
        // HF GPT-2 style tokenizers never prepend BOS; sentencepiece ones follow the flag.
        let add_bos = vocab.model == "llama"
            && f.get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
        let mut t = Self::from_parts(inner, bos, eos, add_bos, vocab);
        if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
            if !t.stop.contains(&eot) {
                t.stop.push(eot);
            }
        }
        Ok(t)
    }

    /// Load `tokenizer.json` (+ `tokenizer_config.json`, `generation_config.json`) from an HF folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let json = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let cfg = read_json(&dir.join("tokenizer_config.json"))?;
        let gen = read_json(&dir.join("generation_config.json"))?;
        Self::from_json_str(&json, cfg.as_ref(), gen.as_ref())
            .map_err(|e| e.context(path.display().to_string()))
    }

    /// From `tokenizer.json` text and the optional config JSONs (what tests use).
    pub fn from_json_str(
        json: &str,
        tokenizer_config: Option<&serde_json::Value>,
        generation_config: Option<&serde_json::Value>,
    ) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| Error::Tokenizer(format!("invalid tokenizer.json: {e}")))?;
        let token_id = |key: &str| -> Option<u32> {
            let v = tokenizer_config?.get(key)?;
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            inner.token_to_id(s)
        };
        let bos = token_id("bos_token");
        let eos = generation_config
            .and_then(|g| g.get("eos_token_id"))
            .and_then(|v| v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()))
            .map(|v| v as u32)
            .or_else(|| token_id("eos_token"));
        let add_bos = tokenizer_config
            .and_then(|c| c.get("add_bos_token"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let vocab = GgufVocab::from_hf(&inner)?;
        let mut t = Self::from_parts(inner, bos, eos, add_bos, vocab);
        if let Some(ids) = generation_config
            .and_then(|g| g.get("eos_token_id"))
            .and_then(|v| v.as_array())
        {
            for id in ids.iter().filter_map(|v| v.as_u64()) {
                if !t.stop.contains(&(id as u32)) {
                    t.stop.push(id as u32);
                }
            }
        }
        Ok(t)
    }

    /// Token ids of `text`; `parse_special` recognises special tokens written in the text.
    /// BOS is never added here (see [`Tokenizer::encode_prompt`]).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tk = if parse_special {
            &self.special
        } else {
            &self.plain
        };
        let enc = tk
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A whole prompt: BOS first when the vocabulary wants one and the text lacks it.
    /// For a chat, use [`Tokenizer::encode_chat`]: it keeps message content plain text.
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut ids = self.encode(text, parse_special)?;
        self.prepend_bos(&mut ids);
        Ok(ids)
    }

    fn prepend_bos(&self, ids: &mut Vec<u32>) {
        if self.add_bos {
            if let Some(b) = self.bos {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        for &id in ids {
            if id as usize >= self.vocab_size() {
                return Err(Error::Tokenizer(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.vocab_size()
                )));
            }
        }
        self.special
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.special.get_vocab_size(true)
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.special.token_to_id(s)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.special.id_to_token(id)
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop.contains(&id)
    }

    /// The underlying HF tokenizer (special-token parsing on), e.g. to save `tokenizer.json`.
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.special
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| Error::format(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}
