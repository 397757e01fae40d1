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

/// HF's SentencePieceExtractor: every split of a token into two vocabulary pieces is a merge,
/// ranked by the merged token's score (higher first), ties by the pieces' ids.
///
/// Looking each split's two pieces up by their text costs O(len) per split, O(len²) per token:
/// one 300k-character token took 10 s. Here each piece is found by a polynomial hash of its
/// bytes (mod 2^61−1, random base) computed from prefix hashes in O(1), and compared byte for
/// byte only when the hash and length match, so the work is linear in the vocabulary's bytes
/// plus the merges found; a vocabulary whose merges would exceed [`MAX_MERGE_BYTES_PER_BYTE`]
/// times its own size is refused.
fn spm_merges(
    tokens: &[String],
    scores: &[f32],
    vocab: &tokenizers::models::bpe::Vocab,
) -> Result<Vec<(String, String)>> {
    const P: u64 = (1 << 61) - 1;
    let mul = |a: u64, b: u64| ((a as u128 * b as u128) % P as u128) as u64;
    let base = 256 + rand::random::<u64>() % (P - 512);
    let hash = |bytes: &[u8]| {
        bytes
            .iter()
            .fold(0u64, |h, &b| (mul(h, base) + b as u64) % P)
    };
    // (hash, byte length, id) of every distinct token text, sorted for lookups.
    let mut index: Vec<(u64, usize, u32)> = vocab
        .iter()
        .map(|(t, &id)| (hash(t.as_bytes()), t.len(), id))
        .collect();
    index.sort_unstable();
    let find = |h: u64, piece: &[u8]| -> Option<u32> {
        let start = index.partition_point(|e| (e.0, e.1) < (h, piece.len()));
        index[start..]
            .iter()
            .take_while(|e| (e.0, e.1) == (h, piece.len()))
            .find(|e| tokens.get(e.2 as usize).map(|t| t.as_bytes()) == Some(piece))
            .map(|e| e.2)
    };
    let total: usize = tokens.iter().map(String::len).sum();
    let budget = MAX_MERGE_BYTES_PER_BYTE * total + (1 << 20);
    let mut used = 0usize;
    let (mut prefix, mut pow): (Vec<u64>, Vec<u64>) = (vec![0], vec![1]);
    let mut merges: Vec<(f32, u32, u32, usize, usize)> = Vec::new();
    for (ti, (tok, &score)) in tokens.iter().zip(scores).enumerate() {
        let b = tok.as_bytes();
        prefix.truncate(1);
        for &c in b {
            let h = *prefix.last().unwrap_or(&0);
            prefix.push((mul(h, base) + c as u64) % P);
        }
        while pow.len() <= b.len() {
            let p = *pow.last().unwrap_or(&1);
            pow.push(mul(p, base));
        }
        let n = b.len();
        for (i, _) in tok.char_indices().skip(1) {
            let hl = prefix[i];
            let hr = (prefix[n] + P - mul(prefix[i], pow[n - i])) % P;
            if let (Some(li), Some(ri)) = (find(hl, &b[..i]), find(hr, &b[i..])) {
                used += n;
                if used > budget {
                    return Err(Error::Tokenizer(format!(
                        "the vocabulary's {} tokens ({total} bytes) derive more than {budget} bytes of merges; refusing a crafted vocabulary",
                        tokens.len()
                    )));
                }
                merges.push((score, li, ri, ti, i));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(merges
        .into_iter()
        .map(|(_, _, _, ti, i)| {
            let (l, r) = tokens[ti].split_at(i);
            (l.to_string(), r.to_string())
        })
        .collect())
}

/// Merges may hold this many bytes per byte of token text (real sentencepiece vocabularies: ~2).
const MAX_MERGE_BYTES_PER_BYTE: usize = 16;

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
        let merges = spm_merges(&self.tokens, &scores, &vocab)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: every char-boundary split whose two halves are tokens.
    fn naive(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
        let vocab: std::collections::HashMap<&str, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let mut m: Vec<(f32, u32, u32, String, String)> = Vec::new();
        for (tok, &score) in tokens.iter().zip(scores) {
            for (i, _) in tok.char_indices().skip(1) {
                let (l, r) = tok.split_at(i);
                if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                    m.push((score, li, ri, l.to_string(), r.to_string()));
                }
            }
        }
        m.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        m.into_iter().map(|x| (x.3, x.4)).collect()
    }

    fn spm(tokens: &[&str]) -> GgufVocab {
        let tokens: Vec<String> = tokens.iter().map(|s| s.to_string()).collect();
        let n = tokens.len();
        GgufVocab {
            model: "llama".into(),
            pre: "default".into(),
            types: (0..n)
                .map(|i| if i == 0 { TOKEN_UNKNOWN } else { 1 })
                .collect(),
            // Ties on purpose: the order then comes from the piece ids.
            scores: Some((0..n).map(|i| -((i / 3) as f32)).collect()),
            merges: None,
            tokens,
        }
    }

    #[test]
    fn merges_match_the_pairwise_definition() {
        let v = spm(&[
            "<unk>", "a", "b", "ab", "ba", "aba", "abab", "é", "aé", "éa", "▁", "▁a", "▁ab", "b",
            "ééé", "éé",
        ]);
        let scores = v.scores.clone().unwrap();
        let got = spm_merges(&v.tokens, &scores, &v.vocab_map()).unwrap();
        assert_eq!(got, naive(&v.tokens, &scores));
        assert!(got.len() > 8, "{got:?}");
        v.build().unwrap();
    }

    #[test]
    fn a_very_long_token_builds_in_linear_time() {
        // Defect 13: one 300k-character token made the build quadratic (10 s and more).
        let long = "ab".repeat(150_000);
        let v = spm(&["<unk>", "a", "b", "ab", &long]);
        let t = std::time::Instant::now();
        v.build().unwrap();
        let s = t.elapsed().as_secs_f64();
        assert!(s < 2.0, "building took {s:.1}s");
    }

    #[test]
    fn a_vocabulary_that_derives_a_flood_of_merges_is_refused() {
        // Runs of one letter, every length: each run splits into two runs at every position.
        let runs: Vec<String> = (1..=600).map(|n| "a".repeat(n)).collect();
        let mut tokens = vec!["<unk>"];
        tokens.extend(runs.iter().map(String::as_str));
        let v = spm(&tokens);
        let e = v.build().unwrap_err().to_string();
        assert!(e.contains("merges"), "{e}");
    }
}
