//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template` or
//! `tokenizer_config.json`) rendered with minijinja, or a built-in one by name.

use super::Tokenizer;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
pub const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
pub const MISTRAL: &str = "{{ bos_token }}{% set system = namespace(text='') %}{% for message in messages %}{% if message['role'] == 'system' %}{% set system.text = message['content'] + '\n\n' %}{% elif message['role'] == 'user' %}{{ '[INST] ' + system.text + message['content'] + ' [/INST]' }}{% set system.text = '' %}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

#[derive(Clone, Debug)]
pub struct ChatTemplate {
    pub source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compile-check `source` and bind the tokenizer's BOS/EOS strings.
    pub fn new(source: &str, tok: &Tokenizer) -> Result<Self> {
        let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
        Self::from_str_with(source, &name(tok.bos), &name(tok.eos))
    }

    /// A template from its Jinja source and BOS/EOS strings (what tests use).
    pub fn from_str_with(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let t = ChatTemplate {
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
        };
        // Fail at load, not at the first chat turn.
        t.render(&[Message::new("user", "hi")], true)?;
        Ok(t)
    }

    /// A built-in template by name (chatml, llama3, mistral), or Jinja source given inline.
    pub fn named_or_source(spec: &str, tok: &Tokenizer) -> Result<Self> {
        match builtin(spec) {
            Some(src) => Self::new(src, tok),
            None if spec.contains("{%") || spec.contains("{{") => Self::new(spec, tok),
            None => Err(Error::Template(format!(
                "unknown template `{spec}` (built-ins: chatml, llama3, mistral; or give Jinja source)"
            ))),
        }
    }

    /// `chat_template` from `tokenizer_config.json` (a string, or a list of named templates),
    /// or `chat_template.jinja`.
    pub fn from_hf_dir(dir: &Path, tok: &Tokenizer) -> Result<Option<Self>> {
        let jinja = dir.join("chat_template.jinja");
        if let Ok(src) = std::fs::read_to_string(&jinja) {
            return Self::new(&src, tok).map(Some);
        }
        let path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&path, format!("invalid JSON: {e}")))?;
        let src = match &v["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .or_else(|| list.first())
                .and_then(|t| t["template"].as_str().map(String::from)),
            _ => None,
        };
        src.map(|s| Self::new(&s, tok).map_err(|e| e.context(path.display().to_string())))
            .transpose()
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| Error::Template(e.to_string()))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| Error::Template(e.to_string()))
    }
}

pub fn builtin(name: &str) -> Option<&'static str> {
    match name.to_ascii_lowercase().as_str() {
        "chatml" => Some(CHATML),
        "llama3" | "llama-3" => Some(LLAMA3),
        "mistral" => Some(MISTRAL),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_with_generation_prompt() {
        let t = ChatTemplate::from_str_with(CHATML, "", "<|im_end|>").unwrap();
        let s = t
            .render(
                &[Message::new("system", "S"), Message::new("user", "Hi")],
                true,
            )
            .unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn mistral_folds_system_into_first_user_turn() {
        let t = ChatTemplate::from_str_with(MISTRAL, "<s>", "</s>").unwrap();
        let s = t
            .render(
                &[
                    Message::new("system", "S"),
                    Message::new("user", "Q"),
                    Message::new("assistant", "A"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(s, "<s>[INST] S\n\nQ [/INST]A</s>");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let src = "{{ raise_exception('roles must alternate') }}";
        let e = ChatTemplate::from_str_with(src, "", "").unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
