//! One generation from the handler's side: admit it, hand it to the backend, wait for the runner
//! to accept the prompt, then either collect the text (one JSON answer) or forward it as
//! Server-Sent Events in OpenAI's chunk format, ending with `data: [DONE]`.
//! A guard travels with the request; when the client goes away it is dropped and cancels the job.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::api::Job;
use super::backend::{CancelToken, FinishReason, GenEvent, GenRequest, ServeError};
use super::http::{error_object, ApiError, AppState};
use super::response::{Choice, CompletionObject, Delta, Usage};

/// Events beyond one per token: `Started`, a flush of held-back stop text, `Done`, one spare.
const EVENT_SLACK: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completion,
}

/// Held for the life of a request (handler future, then SSE stream). Dropping it before the
/// runner finished means the client is gone (or the server is stopping): cancel the job.
struct Inflight {
    cancel: CancelToken,
    finished: bool,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if !self.finished {
            self.cancel.cancel();
        }
    }
}

/// What every response object of one request shares.
struct Meta {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    include_usage: bool,
    echo: Option<String>,
}

pub(crate) async fn generate(
    st: AppState,
    job: Job,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let model = resolve_model(&st, job.model.as_deref())?;
    let slot = st
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ServeError::busy())?;
    // Room for every event a runner sends (see `GenRequest::events`): it never waits on a client.
    let (tx, mut rx) = mpsc::channel(job.sampling.max_tokens + EVENT_SLACK);
    let cancel = CancelToken::new();
    let mut guard = Inflight {
        cancel: cancel.clone(),
        finished: false,
        _slot: slot,
    };
    let s = job.sampling;
    st.backend.submit(GenRequest {
        model: model.clone(),
        prompt: job.prompt,
        max_tokens: s.max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        seed: s.seed,
        stop: s.stop,
        events: tx,
        cancel,
    })?;

    // Errors before `Started` (prompt too long, unknown adapter) are still HTTP errors.
    let first = match rx.recv().await {
        Some(GenEvent::Started { .. }) => None,
        Some(GenEvent::Error(e)) => {
            guard.finished = true;
            return Err(e.into());
        }
        None => {
            guard.finished = true;
            return Err(ServeError::internal("the model runner dropped the request").into());
        }
        // A runner that skips `Started` still gets its events forwarded.
        Some(other) => Some(other),
    };
    let meta = Meta {
        id: new_id(endpoint),
        created: unix_now(),
        model,
        endpoint,
        include_usage: job.include_usage,
        echo: job.echo,
    };
    let events = Events { rx, first, guard };
    if job.stream {
        Ok(stream(meta, events))
    } else {
        collect(meta, events).await
    }
}

/// Empty or missing `model` means the first listed (the base model).
fn resolve_model(st: &AppState, want: Option<&str>) -> Result<String, ServeError> {
    let models = st.backend.models();
    match want {
        None => models
            .first()
            .map(|m| m.id.clone())
            .ok_or_else(|| ServeError::internal("no model is loaded")),
        Some(w) => models
            .iter()
            .find(|m| m.id == w)
            .map(|m| m.id.clone())
            .ok_or_else(|| ServeError::model_not_found(w)),
    }
}

/// The runner's events after `Started`, with the guard that cancels on drop.
struct Events {
    rx: mpsc::Receiver<GenEvent>,
    first: Option<GenEvent>,
    guard: Inflight,
}

impl Events {
    /// The next event; a runner that hangs up without `Done` is an internal error.
    async fn next(&mut self) -> GenEvent {
        let ev = match self.first.take() {
            Some(ev) => ev,
            None => self.rx.recv().await.unwrap_or_else(|| {
                GenEvent::Error(ServeError::internal("the model runner stopped mid-answer"))
            }),
        };
        if matches!(ev, GenEvent::Done { .. } | GenEvent::Error(_)) {
            self.guard.finished = true;
        }
        ev
    }
}

async fn collect(meta: Meta, mut events: Events) -> Result<Response, ApiError> {
    let mut text = meta.echo.clone().unwrap_or_default();
    let (finish, usage) = loop {
        match events.next().await {
            GenEvent::Started { .. } => {}
            GenEvent::Token(t) => text.push_str(&t),
            GenEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            } => break (finish_reason, Usage::new(prompt_tokens, completion_tokens)),
            GenEvent::Error(e) => return Err(e.into()),
        }
    };
    let choice = match meta.endpoint {
        Endpoint::Chat => Choice {
            message: Some(Delta {
                role: Some("assistant"),
                content: Some(text),
            }),
            ..choice(finish)
        },
        Endpoint::Completion => Choice {
            text: Some(text),
            ..choice(finish)
        },
    };
    let object = match meta.endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completion => "text_completion",
    };
    Ok(Json(meta.object(object, vec![choice], Some(usage))).into_response())
}

fn choice(finish: FinishReason) -> Choice {
    Choice {
        index: 0,
        message: None,
        delta: None,
        text: None,
        logprobs: None,
        finish_reason: Some(finish.as_str()),
    }
}

impl Meta {
    fn object(
        &self,
        object: &'static str,
        choices: Vec<Choice>,
        usage: Option<Usage>,
    ) -> CompletionObject {
        CompletionObject {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }

    /// One streamed chunk carrying `text` (and/or the finish reason).
    fn chunk(&self, text: Option<String>, role: bool, finish: Option<FinishReason>) -> Event {
        let mut c = Choice {
            index: 0,
            message: None,
            delta: None,
            text: None,
            logprobs: None,
            finish_reason: finish.map(FinishReason::as_str),
        };
        let object = match self.endpoint {
            Endpoint::Chat => {
                c.delta = Some(Delta {
                    role: role.then_some("assistant"),
                    content: text,
                });
                "chat.completion.chunk"
            }
            Endpoint::Completion => {
                c.text = Some(text.unwrap_or_default());
                "text_completion"
            }
        };
        json_event(&self.object(object, vec![c], None))
    }
}

struct StreamState {
    meta: Meta,
    events: Events,
    queue: VecDeque<Event>,
    ended: bool,
}

impl StreamState {
    /// Turn one runner event into SSE events.
    fn push(&mut self, ev: GenEvent) {
        match ev {
            GenEvent::Started { .. } => {}
            GenEvent::Token(t) if t.is_empty() => {}
            GenEvent::Token(t) => self.queue.push_back(self.meta.chunk(Some(t), false, None)),
            GenEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            } => {
                let last = self.meta.chunk(None, false, Some(finish_reason));
                self.queue.push_back(last);
                if self.meta.include_usage {
                    let usage = Usage::new(prompt_tokens, completion_tokens);
                    let object = match self.meta.endpoint {
                        Endpoint::Chat => "chat.completion.chunk",
                        Endpoint::Completion => "text_completion",
                    };
                    let obj = self.meta.object(object, Vec::new(), Some(usage));
                    self.queue.push_back(json_event(&obj));
                }
                self.queue.push_back(Event::default().data("[DONE]"));
                self.ended = true;
            }
            // The status line is long gone: report in the stream, as OpenAI does.
            GenEvent::Error(e) => {
                let body = serde_json::json!({ "error": error_object(&e) });
                self.queue.push_back(json_event(&body));
                self.ended = true;
            }
        }
    }
}

fn stream(meta: Meta, events: Events) -> Response {
    let mut queue = VecDeque::new();
    match meta.endpoint {
        Endpoint::Chat => queue.push_back(meta.chunk(Some(String::new()), true, None)),
        Endpoint::Completion => {
            if let Some(echo) = &meta.echo {
                queue.push_back(meta.chunk(Some(echo.clone()), false, None));
            }
        }
    }
    let state = StreamState {
        meta,
        events,
        queue,
        ended: false,
    };
    // Dropping this stream (client gone) drops `state.events.guard`, which cancels the job.
    let body = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if st.ended {
                return None;
            }
            let ev = st.events.next().await;
            st.push(ev);
        }
    });
    let mut resp = Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Tell nginx-style proxies not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn json_event<T: Serialize>(v: &T) -> Event {
    match serde_json::to_string(v) {
        Ok(s) => Event::default().data(s),
        // Our response types always serialise; this only keeps the stream well-formed.
        Err(_) => Event::default().data(
            r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#,
        ),
    }
}

fn new_id(endpoint: Endpoint) -> String {
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    format!(
        "{prefix}-{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
