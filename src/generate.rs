//! Text generation: sampling settings, a decoding session that keeps its KV cache (multi-turn
//! chat, serving), incremental detokenization and stop strings.

use crate::error::{Error, Result};
use crate::model::{Ctx, KvCache, Llama};
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
    /// 1.0 = off.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: Some(40),
            top_p: Some(0.95),
            seed: 42,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
        }
    }
}

/// A temperature below this (but above 0) divides logits into infinities; 0 is greedy.
pub const MIN_TEMPERATURE: f64 = 1e-3;
/// Above this, sampling is uniform noise for every vocabulary.
pub const MAX_TEMPERATURE: f64 = 100.0;
/// The smallest nucleus mass: smaller ones round to 0 in f32 and keep no token at all.
pub const MIN_TOP_P: f64 = 1e-6;

/// A sampling setting out of range: `field` is `temperature`, `top_k`, `top_p` or
/// `repeat_penalty` (callers name it their way: a JSON field, a `--flag`).
#[derive(Debug, Clone, PartialEq)]
pub struct BadSampling {
    pub field: &'static str,
    pub message: String,
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// The one range check for sampling settings (`ft run`/`ft chat` flags, `ft serve`
    /// requests, the runner): every value the sampler can turn into NaN or an empty
    /// distribution is refused here, so sampling never fails on settings.
    pub fn validate(&self) -> std::result::Result<(), BadSampling> {
        let bad = |field, message: String| Err(BadSampling { field, message });
        let t = self.temperature;
        if !(t == 0.0 || (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t)) {
            return bad(
                "temperature",
                format!(
                    "must be 0 (greedy) or between {MIN_TEMPERATURE} and {MAX_TEMPERATURE} (got {t})"
                ),
            );
        }
        if self.top_k == Some(0) {
            return bad("top_k", "must be at least 1 (got 0)".into());
        }
        if let Some(p) = self.top_p {
            if !(MIN_TOP_P..=1.0).contains(&p) {
                return bad(
                    "top_p",
                    format!("must be between {MIN_TOP_P} and 1 (got {p})"),
                );
            }
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0 && r <= 100.0) {
            return bad(
                "repeat_penalty",
                format!("must be > 0 and at most 100 (got {r})"),
            );
        }
        Ok(())
    }
}

pub struct Sampler {
    lp: LogitsProcessor,
    params: SamplingParams,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let t = params.temperature;
        let sampling = if t <= 0.0 {
            Sampling::ArgMax
        } else {
            match (params.top_k, params.top_p.filter(|p| *p < 1.0)) {
                (None, None) => Sampling::All { temperature: t },
                (Some(k), None) => Sampling::TopK { k, temperature: t },
                (None, Some(p)) => Sampling::TopP { p, temperature: t },
                (Some(k), Some(p)) => Sampling::TopKThenTopP {
                    k,
                    p,
                    temperature: t,
                },
            }
        };
        Sampler {
            lp: LogitsProcessor::from_sampling(params.seed, sampling),
            params,
        }
    }

    /// Next token from last-position logits (vocab,), given the tokens so far.
    pub fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let logits = logits.to_dtype(DType::F32)?;
        let logits = if self.params.repeat_penalty != 1.0 {
            let start = history.len().saturating_sub(self.params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(
                &logits,
                self.params.repeat_penalty,
                &history[start..],
            )?
        } else {
            logits
        };
        Ok(self.lp.sample(&logits)?)
    }
}

/// A running sequence: tokens seen so far and their KV cache.
pub struct Session<'m> {
    pub model: &'m Llama,
    pub ctx: Ctx,
    pub cache: KvCache,
    pub tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Llama, ctx: Ctx) -> Self {
        Session {
            model,
            ctx,
            cache: model.new_cache(),
            tokens: Vec::new(),
        }
    }

    /// Make the session hold exactly `ids`, reusing the cached common prefix, and return the
    /// logits after the last token. Chat turns and shared prompt prefixes cost only the new part.
    pub fn feed_all(&mut self, ids: &[u32]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("empty prompt"));
        }
        let mut common = self
            .tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count();
        if common == ids.len() {
            // Everything is cached, but we need the logits of the last token: recompute it.
            common -= 1;
        }
        self.cache.truncate(common)?;
        self.tokens.truncate(common);
        self.feed(&ids[common..])
    }

    /// Append tokens and return the logits (vocab,) after the last one.
    pub fn feed(&mut self, ids: &[u32]) -> Result<Tensor> {
        let pos = self.tokens.len();
        if pos + ids.len() > self.model.max_positions() {
            return Err(Error::invalid(format!(
                "prompt of {} tokens exceeds the context of {} tokens",
                pos + ids.len(),
                self.model.max_positions()
            )));
        }
        let input = Tensor::new(ids, &self.model.device)?.unsqueeze(0)?;
        let logits = self
            .model
            .forward_last(&input, pos, Some(&mut self.cache), &self.ctx)?;
        self.tokens.extend_from_slice(ids);
        Ok(logits.squeeze(0)?.to_device(&Device::Cpu)?)
    }

    /// Append tokens and return the logits (n, vocab) after each of them (for scoring a
    /// continuation).
    pub fn feed_scores(&mut self, ids: &[u32]) -> Result<Tensor> {
        let pos = self.tokens.len();
        if pos + ids.len() > self.model.max_positions() {
            return Err(Error::invalid(format!(
                "sequence of {} tokens exceeds the context of {} tokens",
                pos + ids.len(),
                self.model.max_positions()
            )));
        }
        let input = Tensor::new(ids, &self.model.device)?.unsqueeze(0)?;
        let logits = self
            .model
            .forward(&input, pos, Some(&mut self.cache), &self.ctx)?;
        self.tokens.extend_from_slice(ids);
        Ok(logits.squeeze(0)?.to_device(&Device::Cpu)?)
    }

    /// A copy that shares the cached keys/values (cheap) and then diverges.
    pub fn fork(&self) -> Session<'m> {
        Session {
            model: self.model,
            ctx: self.ctx,
            cache: self.cache.clone(),
            tokens: self.tokens.clone(),
        }
    }

    pub fn remaining(&self) -> usize {
        self.model.max_positions().saturating_sub(self.tokens.len())
    }
}

/// Turns a growing token list into text deltas without splitting multi-byte characters.
///
/// Decodes only a short window of recent tokens per call (as Hugging Face's text-generation
/// servers do), so a token costs the same at position 2000 as at position 2; decoding the
/// whole list every time made long answers quadratic (~0.5 ms a token at 2000 tokens). The
/// window starts one finished delta back, so decoders that treat the first token specially
/// (SentencePiece's leading-space strip) see the same context on both sides of the difference.
pub struct TextStream<'t> {
    tok: &'t Tokenizer,
    ids: Vec<u32>,
    /// Start of the decode window.
    prefix: usize,
    /// `ids[..read]` are already emitted as text.
    read: usize,
}

impl<'t> TextStream<'t> {
    pub fn new(tok: &'t Tokenizer) -> Self {
        TextStream {
            tok,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Add a token; return the new complete text, if any.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read], true)?;
        let text = self.tok.decode(&self.ids[self.prefix..], true)?;
        // An incomplete UTF-8 sequence decodes to U+FFFD: wait for the rest.
        if text.ends_with('\u{FFFD}') || text.len() <= before.len() {
            return Ok(String::new());
        }
        let Some(delta) = text.get(before.len()..) else {
            return Ok(String::new());
        };
        let delta = delta.to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(delta)
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-turn token or a stop string.
    Stop,
    /// The token limit or the context was reached.
    Length,
}

#[derive(Debug)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: usize,
    pub tokens: Vec<u32>,
    pub finish: Finish,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

/// Holds back text that could be the start of a stop string.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Feed new text; returns (text safe to emit, whether a stop string was hit).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        self.pending.push_str(delta);
        if let Some(cut) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..cut].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail that is a prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for k in (1..s.len().min(self.pending.len() + 1)).rev() {
                if self.pending.is_char_boundary(self.pending.len() - k)
                    && s.starts_with(&self.pending[self.pending.len() - k..])
                {
                    keep = keep.max(k);
                    break;
                }
            }
        }
        let split = self.pending.len() - keep;
        let out = self.pending[..split].to_string();
        self.pending.drain(..split);
        (out, false)
    }

    /// Whatever is still held back once generation ends without a stop.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Generate up to `max_new` tokens after `prompt`, calling `on_text` with each text delta;
/// `on_text` returning false stops early (a client went away).
pub fn generate(
    session: &mut Session,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &SamplingParams,
    max_new: usize,
    stops: &[String],
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    let t0 = std::time::Instant::now();
    let mut logits = session.feed_all(prompt)?;
    let prefill_secs = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut sampler = Sampler::new(params.clone());
    let mut stream = TextStream::new(tok);
    let mut matcher = StopMatcher::new(stops);
    let mut text = String::new();
    let mut out = Vec::new();
    let mut finish = Finish::Length;
    let mut go_on = true;
    let mut stop_string = false;
    while out.len() < max_new && go_on {
        let next = sampler.sample(&logits, &session.tokens)?;
        if tok.is_stop(next) {
            finish = Finish::Stop;
            break;
        }
        out.push(next);
        let (emit, hit) = matcher.push(&stream.push(next)?);
        if !emit.is_empty() {
            text.push_str(&emit);
            go_on = on_text(&emit);
        }
        if hit {
            finish = Finish::Stop;
            stop_string = true;
            // Keep the stopping token in the cache so a chat session stays consistent.
            session.feed(&[next])?;
            break;
        }
        if session.remaining() == 0 {
            break;
        }
        logits = session.feed(&[next])?;
    }
    // Text held back as a possible stop-string prefix belongs to the answer unless one matched.
    if !stop_string {
        let rest = matcher.flush();
        if !rest.is_empty() {
            text.push_str(&rest);
            on_text(&rest);
        }
    }
    Ok(Generated {
        text,
        prompt_tokens: prompt.len(),
        tokens: out,
        finish,
        prefill_secs,
        decode_secs: t1.elapsed().as_secs_f64(),
    })
}

/// Generate for many prompts at once (task eval, replay data): prompts of similar length are
/// grouped `batch` at a time, left-padded to one length and prefilled as one batch, then each
/// step decodes one token for every unfinished row in one forward pass, so the weights are read
/// once per step for the whole group. Pads are hidden from real tokens by segment ids, and RoPE
/// scores depend only on relative positions, so a row's answer does not depend on its
/// neighbours. Row `i` samples with seed `params.seed + i`. Stops at end-of-turn tokens only
/// (no stop strings). `progress(done)` after each group.
#[allow(clippy::too_many_arguments)]
pub fn generate_batch(
    model: &Llama,
    ctx: Ctx,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    max_new: usize,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Generated>> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut results: Vec<Option<Generated>> = (0..prompts.len()).map(|_| None).collect();
    let mut done = 0;
    for group in order.chunks(batch.max(1)) {
        let rows: Vec<&[u32]> = group.iter().map(|&i| prompts[i].as_slice()).collect();
        let samplers = group
            .iter()
            .map(|&i| {
                Sampler::new(SamplingParams {
                    seed: params.seed.wrapping_add(i as u64),
                    ..params.clone()
                })
            })
            .collect();
        let outs = decode_group(model, ctx, tok, &rows, samplers, max_new)?;
        for (&i, g) in group.iter().zip(outs) {
            results[i] = Some(g);
        }
        done += group.len();
        progress(done);
    }
    Ok(results.into_iter().flatten().collect())
}

/// One left-padded group of [`generate_batch`].
fn decode_group(
    model: &Llama,
    ctx: Ctx,
    tok: &Tokenizer,
    prompts: &[&[u32]],
    mut samplers: Vec<Sampler>,
    max_new: usize,
) -> Result<Vec<Generated>> {
    let n = prompts.len();
    let len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::invalid("empty prompt"));
    }
    if len > model.max_positions() {
        return Err(Error::invalid(format!(
            "prompt of {len} tokens exceeds the context of {} tokens",
            model.max_positions()
        )));
    }
    let max_new = max_new.min(model.max_positions() - len);
    let t0 = std::time::Instant::now();
    // (n, len): pads (segment 0) on the left, the prompt (segment 1) on the right.
    let mut ids = vec![0u32; n * len];
    let mut seg = vec![0u32; n * len];
    for (r, p) in prompts.iter().enumerate() {
        let start = r * len + len - p.len();
        ids[start..start + p.len()].copy_from_slice(p);
        seg[start..start + p.len()].fill(1);
    }
    let dev = &model.device;
    let mut cache = model.new_cache();
    let input = Tensor::from_vec(ids, (n, len), dev)?;
    let segments = Tensor::from_vec(seg.clone(), (n, len), dev)?;
    let h = model.forward_hidden(&input, 0, Some(&mut cache), Some(&segments), &ctx)?;
    let mut logits = model
        .logits(&h.narrow(1, len - 1, 1)?.squeeze(1)?, &ctx)?
        .to_device(&Device::Cpu)?;
    let prefill_secs = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut history: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut finish = vec![Finish::Length; n];
    // Original row of each row still in the batch tensors.
    let mut active: Vec<usize> = (0..n).collect();
    let mut seg_rows: Vec<Vec<u32>> = seg.chunks(len.max(1)).map(|c| c.to_vec()).collect();
    let mut pos = len;
    while !active.is_empty() {
        let mut keep = Vec::with_capacity(active.len());
        let mut next_ids = Vec::with_capacity(active.len());
        for (a, &r) in active.iter().enumerate() {
            let next = samplers[r].sample(&logits.get(a)?, &history[r])?;
            if tok.is_stop(next) {
                finish[r] = Finish::Stop;
                continue;
            }
            out[r].push(next);
            history[r].push(next);
            if out[r].len() < max_new {
                keep.push(a);
                next_ids.push(next);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            cache.select_rows(&keep)?;
            active = keep.iter().map(|&a| active[a]).collect();
        }
        let k = active.len();
        let mut seg_step = Vec::with_capacity(k * (pos + 1));
        for &r in &active {
            seg_rows[r].push(1);
            seg_step.extend_from_slice(&seg_rows[r]);
        }
        let input = Tensor::from_vec(next_ids, (k, 1), dev)?;
        let segments = Tensor::from_vec(seg_step, (k, pos + 1), dev)?;
        let h = model.forward_hidden(&input, pos, Some(&mut cache), Some(&segments), &ctx)?;
        logits = model
            .logits(&h.squeeze(1)?, &ctx)?
            .to_device(&Device::Cpu)?;
        pos += 1;
    }
    let decode_secs = t1.elapsed().as_secs_f64();
    out.into_iter()
        .zip(finish)
        .zip(prompts)
        .map(|((tokens, finish), p)| {
            // Like the streaming decoder, drop a multi-byte character cut off by the limit.
            let text = tok.decode(&tokens, true)?;
            Ok(Generated {
                text: text.trim_end_matches('\u{FFFD}').to_string(),
                prompt_tokens: p.len(),
                tokens,
                finish,
                prefill_secs,
                decode_secs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deltas of a stream add up to the decoded whole at every step where the whole is
    /// complete UTF-8: multi-byte characters split over byte tokens, and specials skipped.
    #[test]
    fn text_stream_deltas_add_up_to_the_full_decode() {
        let dir = std::env::temp_dir().join(format!("ft-textstream-{}", std::process::id()));
        crate::testing::tiny_hf_dir(&dir, 1).unwrap();
        let tok = Tokenizer::from_hf_dir(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = "Héllo, wörld! 日本語のテキスト 🦀🦀 done.\nNext line: ½ ∑ ok";
        let mut ids: Vec<u32> = text.bytes().map(u32::from).collect();
        // A special token in the middle (skipped by the decode) and at the end.
        ids.insert(20, 257);
        ids.push(258);
        let mut s = TextStream::new(&tok);
        let mut out = String::new();
        for (i, &id) in ids.iter().enumerate() {
            out.push_str(&s.push(id).unwrap());
            let full = tok.decode(&ids[..=i], true).unwrap();
            if !full.ends_with('\u{FFFD}') {
                assert_eq!(out, full, "after {} tokens", i + 1);
            }
        }
        assert_eq!(out, text);
    }

    /// Batched generation gives every row the tokens it gets alone: left padding, the segment
    /// mask, rows leaving the batch and the shared decode steps change nothing.
    #[test]
    fn batched_generation_equals_one_prompt_at_a_time() {
        let dir = std::env::temp_dir().join(format!("ft-genbatch-{}", std::process::id()));
        crate::testing::tiny_hf_dir(&dir, 3).unwrap();
        let tok = Tokenizer::from_hf_dir(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut model = crate::testing::tiny_model(3, None).unwrap();
        // A quantized copy too: the fast kernels quantize activations per row.
        let quant =
            crate::testing::tiny_model(3, Some(candle_core::quantized::GgmlDType::Q8_0)).unwrap();
        let prompts: Vec<Vec<u32>> = ["a", "hello there", "the quick brown fox jumps", "xy"]
            .iter()
            .map(|t| t.bytes().map(u32::from).collect())
            .collect();
        for (m, mode) in [
            (&mut model, crate::quant::MatmulMode::Exact),
            (&mut quant.clone(), crate::quant::MatmulMode::Fast),
        ] {
            let ctx = Ctx::infer(mode, None);
            let greedy = SamplingParams::greedy();
            // Different max_new per run so that rows leave the batch at different steps.
            for max_new in [1, 9] {
                let batched =
                    generate_batch(m, ctx, &tok, &prompts, &greedy, max_new, 3, |_| {}).unwrap();
                for (p, b) in prompts.iter().zip(&batched) {
                    let mut s = Session::new(m, ctx);
                    let alone = generate(&mut s, &tok, p, &greedy, max_new, &[], |_| true).unwrap();
                    assert_eq!(b.tokens, alone.tokens, "{mode:?}, prompt {p:?}");
                    assert_eq!(b.finish, alone.finish);
                    assert_eq!(b.text, alone.text);
                }
            }
        }
    }

    #[test]
    fn sampling_settings_that_break_the_sampler_are_refused() {
        let ok = SamplingParams::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
        let field = |p: SamplingParams| p.validate().unwrap_err().field;
        for t in [1e-310, -0.5, f64::NAN, f64::INFINITY, 1e-9, 1e6] {
            let p = SamplingParams {
                temperature: t,
                ..ok.clone()
            };
            assert_eq!(field(p), "temperature", "{t}");
        }
        for top_p in [1e-300, 0.0, -1.0, 1.5, f64::NAN] {
            let p = SamplingParams {
                top_p: Some(top_p),
                ..ok.clone()
            };
            assert_eq!(field(p), "top_p", "{top_p}");
        }
        let p = SamplingParams {
            top_k: Some(0),
            ..ok.clone()
        };
        assert_eq!(field(p), "top_k");
        for r in [f32::NAN, 0.0, -1.0, f32::INFINITY] {
            let p = SamplingParams {
                repeat_penalty: r,
                ..ok.clone()
            };
            assert_eq!(field(p), "repeat_penalty", "{r}");
        }
    }

    #[test]
    fn stop_matcher_holds_back_partial_stop() {
        let mut m = StopMatcher::new(&["\nUser:".to_string()]);
        assert_eq!(m.push("Hello"), ("Hello".into(), false));
        assert_eq!(m.push(" there\nUs"), (" there".into(), false));
        assert_eq!(m.push("er: hi"), ("".into(), true));
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push("abc E"), ("abc ".into(), false));
        assert_eq!(m.push("x"), ("Ex".into(), false));
    }
}
