//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template` or
//! `tokenizer_config.json`) rendered with minijinja, or one the user names with a
//! [`TemplateSpec`] (a recipe's `model.chat_template`, a `--chat-template` flag): a built-in by
//! name or Jinja source. [`ChatTemplate::choose`] is the one rule for which template applies.

use std::fmt;
use std::str::FromStr;

use super::Tokenizer;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One chat turn: `role` is one of [`ROLES`]. What datasets hold, templates render and the
/// server receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Roles a chat turn may have.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// A chat template chosen by the user: a built-in by name, or Jinja source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSpec {
    Chatml,
    Llama3,
    Mistral,
    Jinja(String),
}

impl TemplateSpec {
    pub const BUILTINS: &'static [&'static str] = &["chatml", "llama3", "mistral"];

    /// The Jinja source.
    pub fn source(&self) -> &str {
        match self {
            TemplateSpec::Chatml => CHATML,
            TemplateSpec::Llama3 => LLAMA3,
            TemplateSpec::Mistral => MISTRAL,
            TemplateSpec::Jinja(s) => s,
        }
    }
}

impl fmt::Display for TemplateSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            TemplateSpec::Chatml => "chatml",
            TemplateSpec::Llama3 => "llama3",
            TemplateSpec::Mistral => "mistral",
            TemplateSpec::Jinja(t) => t,
        })
    }
}

impl FromStr for TemplateSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // A template always has a tag or an expression; a bare word is a builtin name.
        if s.contains("{%") || s.contains("{{") {
            return Ok(TemplateSpec::Jinja(s.to_string()));
        }
        match s.trim().to_ascii_lowercase().as_str() {
            "chatml" => Ok(TemplateSpec::Chatml),
            "llama3" | "llama-3" => Ok(TemplateSpec::Llama3),
            "mistral" => Ok(TemplateSpec::Mistral),
            other => Err(format!(
                "{}, or a Jinja template (containing `{{{{` or `{{%`)",
                crate::config::unknown("builtin chat template", other, Self::BUILTINS)
            )),
        }
    }
}

crate::config::serde_via_str!(
    TemplateSpec,
    "a builtin chat template name or a Jinja template string"
);

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

    /// The template `spec` names, bound to `tok`'s BOS/EOS.
    pub fn from_spec(spec: &TemplateSpec, tok: &Tokenizer) -> Result<Self> {
        Self::new(spec.source(), tok)
    }

    /// The template that applies: the one the user chose (`spec`), else the model's own
    /// (`own`), else ChatML. Training, eval, serving and `ft run` all choose with this.
    pub fn choose(
        spec: Option<&TemplateSpec>,
        own: Option<&ChatTemplate>,
        tok: &Tokenizer,
    ) -> Result<Self> {
        match (spec, own) {
            (Some(s), _) => Self::from_spec(s, tok),
            (None, Some(t)) => Ok(t.clone()),
            (None, None) => Self::from_spec(&TemplateSpec::Chatml, tok),
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
    fn spec_names_and_sources() {
        assert_eq!("Llama-3".parse::<TemplateSpec>(), Ok(TemplateSpec::Llama3));
        assert_eq!(TemplateSpec::Chatml.source(), CHATML);
        let jinja: TemplateSpec = "{{ messages[0]['content'] }}".parse().unwrap();
        assert!(matches!(jinja, TemplateSpec::Jinja(_)));
        let e = "chatm".parse::<TemplateSpec>().unwrap_err();
        assert!(
            e.contains("did you mean `chatml`?") && e.contains("Jinja"),
            "{e}"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let src = "{{ raise_exception('roles must alternate') }}";
        let e = ChatTemplate::from_str_with(src, "", "").unwrap_err();
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
