//! OpenAI's response objects: the model list, and one completion shape that serves as
//! `chat.completion`, `chat.completion.chunk` and `text_completion` (unused parts are omitted).
//! Reference: <https://platform.openai.com/docs/api-reference/chat/object>.

use serde::{Deserialize, Serialize};

use super::backend::ModelCard;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
    /// For an adapter: its base model (vLLM's name for this field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl From<ModelCard> for ModelObject {
    fn from(c: ModelCard) -> Self {
        Self {
            id: c.id,
            object: "model",
            created: c.created,
            owned_by: c.owned_by,
            parent: c.parent,
        }
    }
}

/// `chat.completion`, `chat.completion.chunk`, `text_completion`: one shape with optional parts.
#[derive(Debug, Serialize)]
pub struct CompletionObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct Choice {
    pub index: u32,
    /// Non-stream chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Delta>,
    /// Stream chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// Completions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Always null: not supported, but clients read the key.
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_serialises_like_openai() {
        let obj = CompletionObject {
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk",
            created: 1,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                message: None,
                delta: Some(Delta {
                    role: None,
                    content: Some("hi".into()),
                }),
                text: None,
                logprobs: None,
                finish_reason: None,
            }],
            usage: None,
        };
        let v = serde_json::to_value(&obj).unwrap();
        assert_eq!(v["choices"][0]["delta"]["content"], "hi");
        assert!(v["choices"][0]["finish_reason"].is_null());
        assert!(v["choices"][0].get("logprobs").is_some());
        assert!(v.get("usage").is_none());
    }
}
