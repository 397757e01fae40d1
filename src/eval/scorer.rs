//! The model side of MMLU: log-probs of the answer letters (or full answer texts) after a
//! prompt. Consecutive prompts share the subject's few-shot prefix, and the session reuses the
//! KV cache of the longest common token prefix, so each question costs only its own tokens.

use super::mmlu::ChoiceScorer;
use crate::error::{Error, Result};
use crate::generate::Session;
use crate::model::{Ctx, Llama};
use crate::tokenizer::{ChatTemplate, Message, Tokenizer};
use candle_core::{DType, D};

pub struct ModelScorer<'m> {
    session: Session<'m>,
    tok: &'m Tokenizer,
    /// Wrap prompts in this chat template as a user turn.
    chat: Option<ChatTemplate>,
    /// Recompute every prompt from scratch (to measure what prefix reuse saves).
    pub reuse_prefix: bool,
}

impl<'m> ModelScorer<'m> {
    pub fn new(model: &'m Llama, tok: &'m Tokenizer, ctx: Ctx, chat: Option<ChatTemplate>) -> Self {
        ModelScorer {
            session: Session::new(model, ctx),
            tok,
            chat,
            reuse_prefix: true,
        }
    }

    fn context_ids(&self, prefix: &str, suffix: &str) -> Result<Vec<u32>> {
        match &self.chat {
            None => self.tok.encode_prompt(&format!("{prefix}{suffix}"), false),
            Some(t) => {
                let msg = Message::new("user", format!("{prefix}{suffix}"));
                self.tok.encode_chat(t, &[msg], true)
            }
        }
    }

    /// Log-softmax (f64) of the logits after the context.
    fn next_logprobs(&mut self, prefix: &str, suffix: &str) -> Result<Vec<f64>> {
        let ids = self.context_ids(prefix, suffix)?;
        if !self.reuse_prefix {
            self.session = Session::new(self.session.model, self.session.ctx);
        }
        let logits = self.session.feed_all(&ids)?;
        let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F64)?, D::Minus1)?;
        Ok(lp.to_vec1::<f64>()?)
    }

    fn single_token(&self, s: &str) -> Result<u32> {
        let ids = self.tok.encode(s, false)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(Error::invalid(format!(
                "`{s}` is not a single token for this tokenizer ({ids:?})"
            ))),
        }
    }
}

impl ChoiceScorer for ModelScorer<'_> {
    fn letter_logprobs(
        &mut self,
        prefix: &str,
        suffix: &str,
        letters: &[&str; 4],
    ) -> Result<[f64; 4]> {
        let lp = self.next_logprobs(prefix, suffix)?;
        let mut out = [0.0; 4];
        for (o, l) in out.iter_mut().zip(letters) {
            // In a chat turn the answer starts the assistant message: no leading space.
            let l = if self.chat.is_some() {
                l.trim_start()
            } else {
                l
            };
            *o = lp[self.single_token(l)? as usize];
        }
        Ok(out)
    }

    fn cloze_logprobs(
        &mut self,
        prefix: &str,
        suffix: &str,
        conts: &[String; 4],
    ) -> Result<[f64; 4]> {
        let first = self.next_logprobs(prefix, suffix)?;
        let mut out = [0.0; 4];
        for (o, c) in out.iter_mut().zip(conts) {
            let ids = self.tok.encode(c, false)?;
            let Some((&head, _)) = ids.split_first() else {
                continue;
            };
            let mut total = first[head as usize];
            if ids.len() > 1 {
                // Score the rest of the continuation on a fork of the cached context.
                let mut s = self.session.fork();
                let logits = s.feed_scores(&ids[..ids.len() - 1])?;
                let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F64)?, D::Minus1)?
                    .to_vec2::<f64>()?;
                for (k, &id) in ids.iter().enumerate().skip(1) {
                    total += lp[k - 1][id as usize];
                }
            }
            *o = total;
        }
        Ok(out)
    }
}
