//! The seam between the HTTP layer and the model: handlers build a [`GenRequest`] and hand it
//! to a [`Backend`]; whatever owns the model (a runner thread, or a fake in tests) answers on
//! the request's `events` channel with `Started`, any number of `Token`s, then `Done` or `Error`.
//! Nothing here knows about tensors or about HTTP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::tokenizer::Message;

/// What to continue: a chat (rendered by the model's chat template) or raw text.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<Message>),
    Text(String),
}

/// One generation job. `max_tokens` is already validated (`1..=context_len`); the runner also
/// stops at the end of the context window and reports `FinishReason::Length` there.
#[derive(Debug)]
pub struct GenRequest {
    /// A base model id or an adapter id, exactly as listed by [`Backend::models`].
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: usize,
    /// 0.0 means greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1.0 disables it.
    pub top_p: f64,
    pub seed: Option<u64>,
    /// Stop strings (never empty); `crate::generate::StopMatcher` applies them. The matched text
    /// is not sent.
    pub stop: Vec<String>,
    /// Has room for `max_tokens + 4` events (`Started`, one `Token` per generated token, a final
    /// flush, `Done`), so a runner can `try_send` and never block; a send fails only when the
    /// client has gone.
    pub events: mpsc::Sender<GenEvent>,
    pub cancel: CancelToken,
}

/// What a runner reports, in this order: `Started`, `Token`*, then `Done` or `Error`.
/// An `Error` before `Started` becomes an HTTP error status; after it, an error event in the
/// stream.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// The prompt was tokenized and admitted (it fits the context).
    Started {
        prompt_tokens: usize,
    },
    /// A text delta: complete UTF-8, stop strings already removed.
    Token(String),
    Done {
        finish_reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(ServeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-turn/EOS token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context window is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Set by the HTTP layer when the client disconnects (or the server shuts down); the runner
/// checks it between tokens and drops the sequence.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// One entry of `GET /v1/models`: the base model, or an adapter on top of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    pub id: String,
    pub owned_by: String,
    /// Unix seconds (e.g. the file's mtime); 0 if unknown.
    pub created: u64,
    /// For an adapter: the id of the base model it applies to.
    pub parent: Option<String>,
}

/// The model side of the server. Called from async handlers, so `submit` must not block:
/// enqueue (e.g. `try_send` on a bounded channel) and return; a full queue is `ServeError::busy`.
pub trait Backend: Send + Sync + 'static {
    fn models(&self) -> Vec<ModelCard>;
    /// Tokens of context (prompt + completion) the model supports.
    fn context_len(&self) -> usize;
    fn submit(&self, req: GenRequest) -> Result<(), ServeError>;
}

/// An error the client sees as OpenAI JSON: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ServeError {
    /// HTTP status code.
    pub status: u16,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `server_error`.
    pub kind: &'static str,
    pub code: Option<&'static str>,
    /// The request field at fault, e.g. `messages[0].content`.
    pub param: Option<String>,
    pub message: String,
}

impl ServeError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
        }
    }

    /// 400 about one request field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message).with_param(param)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            format!("The model `{model}` does not exist (see GET /v1/models)"),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// For the runner: the tokenized prompt (plus at least one new token) does not fit.
    pub fn context_length_exceeded(prompt_tokens: usize, context_len: usize) -> Self {
        Self::new(
            400,
            "invalid_request_error",
            format!(
                "This model's maximum context length is {context_len} tokens, \
                 but the prompt is {prompt_tokens} tokens; shorten the messages"
            ),
        )
        .with_param("messages")
        .with_code("context_length_exceeded")
    }

    /// The queue is full; clients (the openai package included) retry a 503.
    pub fn busy() -> Self {
        Self::new(
            503,
            "server_error",
            "The server is busy with other requests; retry shortly",
        )
        .with_code("server_busy")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", message)
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

/// Library errors from the runner: request-shaped ones are the client's fault (400), the rest 500.
impl From<crate::Error> for ServeError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Invalid(msg) => Self::new(400, "invalid_request_error", msg),
            crate::Error::Template(_) | crate::Error::Tokenizer(_) => {
                Self::new(400, "invalid_request_error", e.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_token_is_shared_between_clones() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        a.cancel();
        assert!(b.is_cancelled());
    }

    #[test]
    fn library_errors_map_to_status() {
        assert_eq!(ServeError::from(crate::Error::invalid("bad")).status, 400);
        let e = ServeError::from(crate::Error::Unsupported("x".into()));
        assert_eq!((e.status, e.kind), (500, "server_error"));
        let e = ServeError::context_length_exceeded(9000, 8192);
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert!(e.message.contains("8192"));
    }
}
