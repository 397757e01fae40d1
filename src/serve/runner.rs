//! The runner that owns the model: one OS thread, a bounded queue, and up to `parallel`
//! sequences decoded in fair round-robin (one token each per turn), each with its own KV cache
//! and adapter slot. Adapters are applied per request without merging, so one base in memory
//! serves several fine-tunes.
//!
//! Waiting requests live in a [`Queue`], not a channel: a client that hangs up while waiting
//! cancels its job, and a cancelled job is dropped before it counts against `queue` or takes a
//! slot (in a channel it would sit there, and the next request would get 503 while `/health`
//! reports a free slot).

use super::backend::{Backend, FinishReason, GenEvent, GenRequest, ModelCard, Prompt, ServeError};
use crate::generate::{Sampler, SamplingParams, Session, StopMatcher, TextStream};
use crate::model::{Ctx, Loaded};
use crate::quant::MatmulMode;
use crate::tokenizer::ChatTemplate;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

pub struct RunnerConfig {
    /// Sequences decoded together.
    pub parallel: usize,
    /// Requests waiting beyond the active ones before the server answers 503.
    pub queue: usize,
    pub mode: MatmulMode,
    /// Name of the base model in /v1/models.
    pub base_name: String,
    /// Adapter names, in slot order (slot i = adapters[i]).
    pub adapters: Vec<String>,
    /// Longer prompts get 400 (`--max-prompt-tokens`); None: the context length.
    pub max_prompt_tokens: Option<usize>,
}

pub struct Runner {
    queue: Arc<Queue>,
    cards: Vec<ModelCard>,
    context: usize,
}

/// Requests waiting for the runner, at most `cap` of them that are not cancelled.
struct Queue {
    state: Mutex<Waiting>,
    ready: Condvar,
    cap: usize,
}

struct Waiting {
    jobs: VecDeque<GenRequest>,
    /// The server is gone: the runner thread ends.
    closed: bool,
}

impl Queue {
    fn new(cap: usize) -> Self {
        Queue {
            state: Mutex::new(Waiting {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            cap,
        }
    }

    /// A panic elsewhere cannot leave the queue inconsistent: every change is one call.
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, req: GenRequest) -> Result<(), ServeError> {
        let mut w = self.lock();
        if w.closed {
            return Err(ServeError::internal("the model runner has stopped"));
        }
        w.jobs.retain(|r| !r.cancel.is_cancelled());
        if w.jobs.len() >= self.cap {
            return Err(ServeError::busy());
        }
        w.jobs.push_back(req);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job whose client is still there, dropping cancelled ones. `wait`: block until
    /// there is one. `Err(())` once the queue is closed.
    fn pop(&self, wait: bool) -> Result<Option<GenRequest>, ()> {
        let mut w = self.lock();
        loop {
            if w.closed {
                return Err(());
            }
            while let Some(r) = w.jobs.pop_front() {
                if !r.cancel.is_cancelled() {
                    return Ok(Some(r));
                }
            }
            if !wait {
                return Ok(None);
            }
            w = self.ready.wait(w).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Runner {
    /// Start the runner thread; `loaded` must already hold the adapters in slots 0..n.
    pub fn start(loaded: Loaded, template: ChatTemplate, cfg: RunnerConfig) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut cards = vec![ModelCard {
            id: cfg.base_name.clone(),
            owned_by: "ft".into(),
            created,
            parent: None,
        }];
        for a in &cfg.adapters {
            cards.push(ModelCard {
                id: a.clone(),
                owned_by: "ft".into(),
                created,
                parent: Some(cfg.base_name.clone()),
            });
        }
        let context = loaded.model.max_positions();
        let queue = Arc::new(Queue::new(cfg.queue.max(1)));
        let names = cards.iter().map(|c| c.id.clone()).collect();
        let q = queue.clone();
        std::thread::Builder::new()
            .name("ft-runner".into())
            .spawn(move || run_loop(loaded, template, cfg, names, &q))
            .expect("spawning the runner thread");
        Runner {
            queue,
            cards,
            context,
        }
    }
}

impl Backend for Runner {
    fn models(&self) -> Vec<ModelCard> {
        self.cards.clone()
    }

    fn context_len(&self) -> usize {
        self.context
    }

    fn submit(&self, req: GenRequest) -> Result<(), ServeError> {
        if !self.cards.iter().any(|c| c.id == req.model) {
            return Err(ServeError::model_not_found(&req.model));
        }
        self.queue.push(req)
    }
}

struct Active<'m> {
    req: GenRequest,
    session: Session<'m>,
    sampler: Sampler,
    stream: TextStream<'m>,
    stops: StopMatcher,
    prompt_tokens: usize,
    generated: usize,
    logits: Option<candle_core::Tensor>,
    prefill_secs: f64,
    /// When the prompt was in: decoding time is measured from here.
    decoding_since: Instant,
}

fn run_loop(
    loaded: Loaded,
    template: ChatTemplate,
    cfg: RunnerConfig,
    names: Vec<String>,
    queue: &Queue,
) {
    let model = &loaded.model;
    let tok = &loaded.tokenizer;
    let mut active: Vec<Active> = Vec::new();
    loop {
        // Admit new work: block only when idle.
        while active.len() < cfg.parallel.max(1) {
            let req = match queue.pop(active.is_empty()) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(()) => return, // server gone
            };
            if let Some(a) = admit(req, model, tok, &template, &cfg, &names) {
                active.push(a);
            }
        }
        // One step for every active sequence, in turn.
        active.retain_mut(|a| {
            step(a, tok).unwrap_or_else(|e| {
                let _ = a.req.events.try_send(GenEvent::Error(e));
                false
            })
        });
    }
}

fn admit<'m>(
    req: GenRequest,
    model: &'m crate::model::Llama,
    tok: &'m crate::tokenizer::Tokenizer,
    template: &ChatTemplate,
    cfg: &RunnerConfig,
    names: &[String],
) -> Option<Active<'m>> {
    let fail = |req: &GenRequest, e: ServeError| {
        let _ = req.events.try_send(GenEvent::Error(e));
        None
    };
    if req.cancel.is_cancelled() {
        return None;
    }
    let slot = match names.iter().position(|n| *n == req.model) {
        Some(0) => None,
        Some(i) => Some(i - 1),
        None => return fail(&req, ServeError::model_not_found(&req.model)),
    };
    let ids = match &req.prompt {
        Prompt::Chat(m) => tok.encode_chat(template, m, true),
        Prompt::Text(t) => tok.encode_prompt(t, true),
    };
    let ids = match ids {
        Ok(i) if !i.is_empty() => i,
        Ok(_) => return fail(&req, ServeError::invalid("prompt", "the prompt is empty")),
        Err(e) => return fail(&req, e.into()),
    };
    if let Some(limit) = cfg.max_prompt_tokens.filter(|&l| ids.len() > l) {
        let param = match req.prompt {
            Prompt::Chat(_) => "messages",
            Prompt::Text(_) => "prompt",
        };
        let msg = format!("prompt has {} tokens, the limit is {limit}", ids.len());
        return fail(
            &req,
            ServeError::invalid(param, msg).with_code("prompt_too_long"),
        );
    }
    if ids.len() >= model.max_positions() {
        return fail(
            &req,
            ServeError::context_length_exceeded(ids.len(), model.max_positions()),
        );
    }
    let params = SamplingParams {
        temperature: req.temperature,
        top_k: None,
        top_p: (req.top_p < 1.0).then_some(req.top_p),
        seed: req.seed.unwrap_or(42),
        repeat_penalty: 1.0,
        repeat_last_n: 64,
    };
    if let Err(e) = params.validate() {
        let msg = format!("`{}` {}", e.field, e.message);
        return fail(&req, ServeError::invalid(e.field, msg));
    }
    let mut session = Session::new(model, Ctx::infer(cfg.mode, slot));
    let t = Instant::now();
    let logits = match session.feed_all(&ids) {
        Ok(l) => l,
        Err(e) => return fail(&req, e.into()),
    };
    if req
        .events
        .try_send(GenEvent::Started {
            prompt_tokens: ids.len(),
        })
        .is_err()
    {
        return None;
    }
    Some(Active {
        stops: StopMatcher::new(&req.stop),
        req,
        session,
        sampler: Sampler::new(params),
        stream: TextStream::new(tok),
        prompt_tokens: ids.len(),
        generated: 0,
        logits: Some(logits),
        prefill_secs: t.elapsed().as_secs_f64(),
        decoding_since: Instant::now(),
    })
}

/// Produce one token for `a`; false when the sequence is finished or abandoned.
fn step(a: &mut Active, tok: &crate::tokenizer::Tokenizer) -> Result<bool, ServeError> {
    if a.req.cancel.is_cancelled() {
        return Ok(false);
    }
    let logits = match a.logits.take() {
        Some(l) => l,
        None => return Ok(false),
    };
    let next = a.sampler.sample(&logits, &a.session.tokens)?;
    // Held-back text (a possible stop-string prefix) is sent unless a stop string matched.
    let done = |a: &mut Active, reason: FinishReason, flush: bool| {
        let rest = a.stops.flush();
        if flush && !rest.is_empty() {
            let _ = a.req.events.try_send(GenEvent::Token(rest));
        }
        let _ = a.req.events.try_send(GenEvent::Done {
            finish_reason: reason,
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.generated,
        });
        // Like `ft run`'s timings; with several requests running, decoding shares the model.
        let secs = a.decoding_since.elapsed().as_secs_f64();
        eprintln!(
            "ft serve: {}: prompt {} tokens in {:.2}s, generated {} tokens in {:.2}s ({:.1} tok/s), {}",
            a.req.model,
            a.prompt_tokens,
            a.prefill_secs,
            a.generated,
            secs,
            a.generated as f64 / secs.max(1e-9),
            reason.as_str()
        );
        Ok(false)
    };
    if tok.is_stop(next) {
        return done(a, FinishReason::Stop, true);
    }
    a.generated += 1;
    let (text, hit) = a.stops.push(&a.stream.push(next)?);
    if !text.is_empty() && a.req.events.try_send(GenEvent::Token(text)).is_err() {
        return Ok(false); // client gone
    }
    if hit {
        return done(a, FinishReason::Stop, false);
    }
    if a.generated >= a.req.max_tokens || a.session.remaining() == 0 {
        return done(a, FinishReason::Length, true);
    }
    a.logits = Some(a.session.feed(&[next])?);
    Ok(true)
}
