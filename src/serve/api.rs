//! OpenAI's request bodies for `/v1/chat/completions` and `/v1/completions`, and their
//! validation into a [`Job`] (the responses are in `response.rs`).
//! Reference: <https://platform.openai.com/docs/api-reference/chat>. Every field is an `Option`
//! so a missing one gets our own message; unknown fields are ignored (OpenAI clients send many).

use serde::Deserialize;

use super::backend::{Prompt, ServeError};
use crate::generate::SamplingParams;
use crate::tokenizer::Message;

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A message as clients send it: `content` may be a string, a list of parts, or null.
#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    pub role: String,
    pub content: Option<WireContent>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WireContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<WireMessage>>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    // Accepted for compatibility (type-checked, not applied).
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub user: Option<String>,
}

/// `prompt`: one string (a one-element list is accepted too).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<PromptField>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub n: Option<i64>,
    pub best_of: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub echo: Option<bool>,
    pub logprobs: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub user: Option<String>,
}

/// Sampling settings after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

/// A validated request, ready for the model: what the handlers act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `None`: the first listed model.
    pub model: Option<String>,
    pub prompt: Prompt,
    pub sampling: Sampling,
    pub stream: bool,
    pub include_usage: bool,
    /// Completions `echo`: the prompt text to put before the completion.
    pub echo: Option<String>,
}

/// Limits that keep a hostile `stop` list from costing more than the generation.
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 512;
/// OpenAI's default for the legacy completions endpoint.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

/// The sampling fields both endpoints share.
struct SamplingFields<'a> {
    max_tokens: Option<i64>,
    max_tokens_param: &'static str,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    stop: Option<&'a StopField>,
    n: Option<i64>,
    default_max_tokens: usize,
    context_len: usize,
}

impl ChatCompletionRequest {
    pub fn validate(
        &self,
        context_len: usize,
        default_max_tokens: usize,
    ) -> Result<Job, ServeError> {
        if self.logprobs == Some(true) {
            return Err(ServeError::invalid(
                "logprobs",
                "logprobs are not supported",
            ));
        }
        let messages = match &self.messages {
            None => return Err(ServeError::invalid("messages", "`messages` is required")),
            Some(m) if m.is_empty() => {
                return Err(ServeError::invalid(
                    "messages",
                    "`messages` must not be empty",
                ))
            }
            Some(m) => m
                .iter()
                .enumerate()
                .map(|(i, m)| chat_message(i, m))
                .collect::<Result<Vec<_>, _>>()?,
        };
        // `max_completion_tokens` is the newer name; it wins when both are given.
        let (max_tokens, max_tokens_param) = match self.max_completion_tokens {
            Some(v) => (Some(v), "max_completion_tokens"),
            None => (self.max_tokens, "max_tokens"),
        };
        let sampling = sampling(SamplingFields {
            max_tokens,
            max_tokens_param,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.as_ref(),
            n: self.n,
            default_max_tokens,
            context_len,
        })?;
        Ok(Job {
            model: model_name(&self.model),
            prompt: Prompt::Chat(messages),
            sampling,
            stream: self.stream.unwrap_or(false),
            include_usage: include_usage(&self.stream_options),
            echo: None,
        })
    }
}

impl CompletionRequest {
    pub fn validate(&self, context_len: usize) -> Result<Job, ServeError> {
        if self.logprobs.is_some_and(|n| n > 0) {
            return Err(ServeError::invalid(
                "logprobs",
                "logprobs are not supported",
            ));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(ServeError::invalid(
                "best_of",
                "only best_of=1 is supported",
            ));
        }
        let text = match &self.prompt {
            None => return Err(ServeError::invalid("prompt", "`prompt` is required")),
            Some(PromptField::One(s)) => s.clone(),
            Some(PromptField::Many(v)) if v.len() == 1 => v[0].clone(),
            Some(PromptField::Many(_)) => {
                return Err(ServeError::invalid(
                    "prompt",
                    "send one prompt per request (batched prompts are not supported)",
                ))
            }
        };
        let sampling = sampling(SamplingFields {
            max_tokens: self.max_tokens,
            max_tokens_param: "max_tokens",
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.as_ref(),
            n: self.n,
            default_max_tokens: COMPLETIONS_DEFAULT_MAX_TOKENS,
            context_len,
        })?;
        Ok(Job {
            model: model_name(&self.model),
            echo: self.echo.unwrap_or(false).then(|| text.clone()),
            prompt: Prompt::Text(text),
            sampling,
            stream: self.stream.unwrap_or(false),
            include_usage: include_usage(&self.stream_options),
        })
    }
}

fn model_name(model: &Option<String>) -> Option<String> {
    model.as_ref().filter(|m| !m.trim().is_empty()).cloned()
}

fn include_usage(opts: &Option<StreamOptions>) -> bool {
    opts.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
}

/// One client message as the runner sees it: text only, role one of system/user/assistant/tool.
fn chat_message(i: usize, m: &WireMessage) -> Result<Message, ServeError> {
    // `developer` is OpenAI's newer name for `system`; chat templates only know the latter.
    let role = match m.role.as_str() {
        "developer" => "system",
        r @ ("system" | "user" | "assistant" | "tool") => r,
        other => {
            return Err(ServeError::invalid(
                &format!("messages[{i}].role"),
                format!("unknown role `{other}` (expected system, user, assistant or tool)"),
            ))
        }
    };
    let content = match &m.content {
        Some(WireContent::Text(s)) => s.clone(),
        Some(WireContent::Parts(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ServeError::invalid(
                            &format!("messages[{i}].content[{j}]"),
                            format!("only text content parts are supported (got `{kind}`)"),
                        ))
                    }
                }
            }
            text
        }
        // An assistant turn that only called tools has no content.
        None if role == "assistant" => String::new(),
        None => {
            return Err(ServeError::invalid(
                &format!("messages[{i}].content"),
                "`content` is required",
            ))
        }
    };
    Ok(Message::new(role, content))
}

fn sampling(f: SamplingFields) -> Result<Sampling, ServeError> {
    if let Some(n) = f.n {
        if n != 1 {
            return Err(ServeError::invalid(
                "n",
                format!("only n=1 is supported (got {n})"),
            ));
        }
    }
    let max_tokens = match f.max_tokens {
        None => f.default_max_tokens.min(f.context_len).max(1),
        Some(v) if v < 1 => {
            return Err(ServeError::invalid(
                f.max_tokens_param,
                format!("`{}` must be at least 1 (got {v})", f.max_tokens_param),
            ))
        }
        Some(v) if v as u64 > f.context_len as u64 => {
            return Err(ServeError::invalid(
                f.max_tokens_param,
                format!(
                    "`{}` is {v}, more than the model's context of {} tokens",
                    f.max_tokens_param, f.context_len
                ),
            ))
        }
        Some(v) => v as usize,
    };
    let mut temperature = f.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ServeError::invalid(
            "temperature",
            format!("`temperature` must be between 0 and 2 (got {temperature})"),
        ));
    }
    let mut top_p = f.top_p.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&top_p) {
        return Err(ServeError::invalid(
            "top_p",
            format!("`top_p` must be between 0 and 1 (got {top_p})"),
        ));
    }
    // OpenAI accepts top_p=0; keeping no probability mass means the most likely token.
    if top_p == 0.0 {
        temperature = 0.0;
        top_p = 1.0;
    }
    // What the sampler itself can take (denormal temperatures, a top_p that rounds to 0).
    check_sampling(temperature, top_p)?;
    let stop: Vec<String> = match f.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s.clone()],
        Some(StopField::Many(v)) => v.clone(),
    };
    if stop.len() > MAX_STOPS || stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ServeError::invalid(
            "stop",
            format!("`stop` takes at most {MAX_STOPS} strings of at most {MAX_STOP_BYTES} bytes"),
        ));
    }
    Ok(Sampling {
        max_tokens,
        temperature,
        top_p,
        // Seeds are opaque: a negative one is as good as any.
        seed: f.seed.map(|s| s as u64),
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
    })
}

/// [`SamplingParams::validate`] on a request's `temperature` and `top_p`: a 400 naming the
/// field. The runner checks again, so no backend ever samples with them.
pub fn check_sampling(temperature: f64, top_p: f64) -> Result<(), ServeError> {
    let p = SamplingParams {
        temperature,
        top_k: None,
        top_p: Some(top_p),
        ..SamplingParams::default()
    };
    p.validate()
        .map_err(|e| ServeError::invalid(e.field, format!("`{}` {}", e.field, e.message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> Result<Job, ServeError> {
        let req: ChatCompletionRequest =
            serde_json::from_str(json).map_err(|e| ServeError::invalid("body", e.to_string()))?;
        req.validate(100, 50)
    }

    #[test]
    fn chat_defaults_and_normalisation() {
        let job = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
               {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
               "stop":"\n","top_p":0,"seed":-1,"user":"x","frequency_penalty":0,"tools":[]}"#,
        )
        .unwrap();
        assert_eq!(job.model.as_deref(), Some("m"));
        let Prompt::Chat(m) = &job.prompt else {
            panic!("chat prompt")
        };
        assert_eq!(
            (m[0].role.as_str(), m[1].content.as_str()),
            ("system", "ab")
        );
        let s = &job.sampling;
        assert_eq!((s.max_tokens, s.temperature, s.top_p), (50, 0.0, 1.0));
        assert_eq!(s.seed, Some(u64::MAX));
        assert_eq!(s.stop, vec!["\n".to_string()]);
        assert!(!job.stream);
    }

    #[test]
    fn chat_rejections_name_the_field() {
        let cases = [
            (r#"{"messages":[]}"#, "messages"),
            (r#"{}"#, "messages"),
            (
                r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "messages[0].content[0]",
            ),
            (r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#, "n"),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":101}"#,
                "max_completion_tokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":2.5}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_p":-1}"#,
                "top_p",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"top_p":1e-300}"#,
                "top_p",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":1e-310}"#,
                "temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"logprobs":true}"#,
                "logprobs",
            ),
        ];
        for (json, param) in cases {
            let e = chat(json).expect_err(json);
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{json}");
        }
    }

    #[test]
    fn completion_prompt_forms() {
        let v = |json: &str| {
            serde_json::from_str::<CompletionRequest>(json)
                .unwrap()
                .validate(100)
        };
        let job = v(r#"{"prompt":["once"],"echo":true}"#).unwrap();
        assert_eq!(job.prompt, Prompt::Text("once".into()));
        assert_eq!(job.echo.as_deref(), Some("once"));
        assert_eq!(job.sampling.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS);
        assert_eq!(
            v(r#"{"prompt":["a","b"]}"#).unwrap_err().param.as_deref(),
            Some("prompt")
        );
        assert_eq!(
            v(r#"{"model":"x"}"#).unwrap_err().param.as_deref(),
            Some("prompt")
        );
        assert_eq!(v(r#"{"prompt":"a","best_of":3}"#).unwrap_err().status, 400);
    }
}
