//! Building a `tokenizers::Tokenizer` from a GGUF vocabulary, and the reverse (for export).
//!
//! GPT-2 style (`tokenizer.ggml.model = gpt2`): byte-level BPE from tokens + merges, with the
//! pre-tokenizer named by `tokenizer.ggml.pre`. `smollm` = split every digit, then the GPT-2
//! regex, no prefix space (what llama.cpp does for SmolLM2; candle's own GGUF helper gets this
//! wrong). Sentencepiece style (`llama`): BPE whose merges come from the token scores (as HF's
//! LlamaConverter derives them), byte fallback, `▁` for spaces and a leading `▁`.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// llama.cpp token types.
pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_UNKNOWN: i32 = 2;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_USER_DEFINED: i32 = 4;
pub const TOKEN_BYTE: i32 = 6;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A vocabulary in GGUF's terms.
#[derive(Clone, Debug, Default)]
pub struct GgufVocab {
    /// `gpt2` or `llama`.
    pub model: String,
    /// Pre-tokenizer name (`smollm`, `gpt2`, `llama-bpe`, `qwen2`, ...).
    pub pre: String,
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub scores: Option<Vec<f32>>,
    pub merges: Option<Vec<String>>,
}

fn string_array(f: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| Error::format(&f.path, format!("`{key}` holds a non-string")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(Error::format(&f.path, format!("`{key}` is not an array"))),
    }
}

impl GgufVocab {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| {
                Error::format(
                    &f.path,
                    "no tokenizer in this GGUF (`tokenizer.ggml.model` missing)",
                )
            })?
            .to_string();
        let tokens = string_array(f, "tokenizer.ggml.tokens")?
            .ok_or_else(|| Error::format(&f.path, "`tokenizer.ggml.tokens` missing"))?;
        let types = match f
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
        {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1) as i32).collect(),
            None => vec![TOKEN_NORMAL; tokens.len()],
        };
        let scores = f
            .get("tokenizer.ggml.scores")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect());
        let merges = string_array(f, "tokenizer.ggml.merges")?;
        if types.len() != tokens.len() {
            return Err(Error::format(
                &f.path,
                "token_type and tokens differ in length",
            ));
        }
        Ok(GgufVocab {
            model,
            pre: f
                .get_str("tokenizer.ggml.pre")
                .unwrap_or("default")
                .to_string(),
            tokens,
            types,
            scores,
            merges,
        })
    }

    /// The `tokenizers` pipeline for this vocabulary.
    pub fn build(&self) -> Result<tokenizers::Tokenizer> {
        let mut tk = match self.model.as_str() {
            "gpt2" => self.build_gpt2()?,
            "llama" => self.build_spm()?,
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer model `{other}` (ft supports gpt2 and llama vocabularies)"
                )))
            }
        };
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (tok, &ty) in self.tokens.iter().zip(&self.types) {
            match ty {
                TOKEN_CONTROL => special.push(AddedToken::from(tok.clone(), true)),
                TOKEN_USER_DEFINED => user.push(AddedToken::from(tok.clone(), false)),
                _ => {}
            }
        }
        tk.add_special_tokens(special)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tk.add_tokens(user)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(tk)
    }

    fn vocab_map(&self) -> tokenizers::models::bpe::Vocab {
        self.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect()
    }

    fn build_gpt2(&self) -> Result<tokenizers::Tokenizer> {
        let merges = self
            .merges
            .as_ref()
            .ok_or_else(|| {
                Error::Tokenizer("gpt2 vocabulary without `tokenizer.ggml.merges`".into())
            })?
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("malformed merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(self.vocab_map(), merges)
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let split = |re: &str| -> Result<PreTokenizerWrapper> {
            Ok(Split::new(
                SplitPattern::Regex(re.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .into())
        };
        let pre: PreTokenizerWrapper = match self.pre.as_str() {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" | "default" | "gpt-2" | "starcoder" | "refact" => byte_level.into(),
            "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => Sequence::new(vec![
                split(LLAMA3_REGEX)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            "qwen2" => Sequence::new(vec![
                split(QWEN2_REGEX)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            other => {
                return Err(Error::Unsupported(format!(
                    "pre-tokenizer `{other}` (ft knows smollm, gpt2, llama-bpe, qwen2)"
                )))
            }
        };
        tk.with_pre_tokenizer(Some(pre));
        tk.with_decoder(Some(DecoderWrapper::from(ByteLevel::new(
            false, true, true,
        ))));
        Ok(tk)
    }

    fn build_spm(&self) -> Result<tokenizers::Tokenizer> {
        let scores = self
            .scores
            .clone()
            .unwrap_or_else(|| (0..self.tokens.len()).map(|i| -(i as f32)).collect());
        let vocab = self.vocab_map();
        // HF's SentencePieceExtractor: every split of a token into two known pieces is a merge,
        // ranked by the merged token's score (higher first).
        let mut merges: Vec<(f32, u32, u32, String, String)> = Vec::new();
        for (tok, &score) in self.tokens.iter().zip(&scores) {
            for (i, _) in tok.char_indices().skip(1) {
                let (l, r) = tok.split_at(i);
                if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                    merges.push((score, li, ri, l.to_string(), r.to_string()));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let merges = merges.into_iter().map(|m| (m.3, m.4)).collect();
        let unk = self
            .types
            .iter()
            .position(|&t| t == TOKEN_UNKNOWN)
            .map(|i| self.tokens[i].clone())
            .unwrap_or_else(|| "<unk>".into());
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk)
            .byte_fallback(true)
            .fuse_unk(true)
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        let norm = tokenizers::normalizers::Sequence::new(vec![
            NormalizerWrapper::from(Prepend::new("▁".into())),
            NormalizerWrapper::from(
                Replace::new(" ", "▁").map_err(|e| Error::Tokenizer(e.to_string()))?,
            ),
        ]);
        tk.with_normalizer(Some(norm))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let dec = DecoderSequence::new(vec![
            DecoderWrapper::from(
                tokenizers::normalizers::Replace::new("▁", " ")
                    .map_err(|e| Error::Tokenizer(e.to_string()))?,
            ),
            DecoderWrapper::from(ByteFallback::new()),
            DecoderWrapper::from(Fuse::new()),
            DecoderWrapper::from(Strip::new(' ', 1, 0)),
        ]);
        tk.with_decoder(Some(dec));
        Ok(tk)
    }

    /// Derive the GGUF view of an HF tokenizer (for writing GGUF from an HF folder).
    pub fn from_hf(tk: &tokenizers::Tokenizer) -> Result<Self> {
        let n = tk.get_vocab_size(true);
        let mut tokens = vec![String::new(); n];
        for (t, id) in tk.get_vocab(true) {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = t;
            }
        }
        let json: serde_json::Value = serde_json::from_str(
            &tk.to_string(false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?,
        )?;
        let special: std::collections::HashSet<String> = json["added_tokens"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t["special"].as_bool().unwrap_or(false))
                    .filter_map(|t| t["content"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let byte_fallback = json["model"]["byte_fallback"].as_bool().unwrap_or(false);
        let merges: Vec<String> = json["model"]["merges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| match m {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Array(p) => {
                            Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let types = tokens
            .iter()
            .map(|t| {
                if special.contains(t) {
                    TOKEN_CONTROL
                } else if byte_fallback && t.len() == 6 && t.starts_with("<0x") {
                    TOKEN_BYTE
                } else {
                    TOKEN_NORMAL
                }
            })
            .collect();
        let pre_json = json["pre_tokenizer"].to_string();
        let pre = if pre_json.contains("\"individual_digits\":true") {
            "smollm"
        } else if pre_json.contains("\\\\p{N}{1,3}") {
            "llama-bpe"
        } else {
            "gpt2"
        };
        Ok(if byte_fallback {
            let ntok = tokens.len();
            GgufVocab {
                model: "llama".into(),
                pre: "default".into(),
                tokens,
                types,
                scores: Some((0..ntok).map(|i| -(i as f32)).collect()),
                merges: None,
            }
        } else {
            GgufVocab {
                model: "gpt2".into(),
                pre: pre.into(),
                tokens,
                types,
                scores: None,
                merges: Some(merges),
            }
        })
    }
}
