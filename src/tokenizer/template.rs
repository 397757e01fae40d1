//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template` or
//! `tokenizer_config.json`) rendered with minijinja, or one the user names with a
//! [`TemplateSpec`] (a recipe's `model.chat_template`, a `--chat-template` flag): a built-in by
//! name or Jinja source. [`ChatTemplate::choose`] is the one rule for which template applies.
//!
//! A template from a file (or given as Jinja source) is untrusted code: it renders with bounded
//! fuel, output and memory (see [`ChatTemplate::render`]), and every error names where the
//! template came from. ft's built-ins render in place.

use std::fmt;
use std::str::FromStr;

use super::Tokenizer;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    /// Where the source came from, for errors: a file, a GGUF key, or a built-in's name.
    origin: String,
    /// ft's own built-ins render in place; templates from files run under a memory budget.
    trusted: bool,
    /// Set once a render ran over its memory budget: the template is refused from then on.
    poisoned: Arc<AtomicBool>,
}

/// How much a template may do for one render, scaled by what it is given: `input` bytes of
/// messages (plus BOS/EOS) in `messages` messages. Real templates use a few hundred
/// instructions and print little more than their input; these bounds are far above that.
struct Limits {
    /// minijinja instructions (its `fuel`): bounds loops, e.g. nested range(100000).
    fuel: u64,
    /// Bytes of output.
    output: usize,
    /// Bytes allocated at once (net), enforced where [`crate::budget`] is installed.
    memory: usize,
}

impl Limits {
    fn for_input(input: usize, messages: usize) -> Self {
        Limits {
            fuel: 1_000_000 + 10_000 * messages as u64,
            output: (1 << 20) + 4 * input,
            memory: (64 << 20) + 16 * input,
        }
    }
}

/// A `String` sink that refuses to grow past its cap.
struct Capped {
    out: Vec<u8>,
    cap: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.cap {
            self.over = true;
            return Err(std::io::Error::other("output cap"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl ChatTemplate {
    /// Compile-check `source` and bind the tokenizer's BOS/EOS strings.
    pub fn new(source: &str, tok: &Tokenizer) -> Result<Self> {
        Self::from_origin(source, tok, "chat template")
    }

    /// Like [`ChatTemplate::new`], naming where `source` came from in every error (a file, or
    /// `tokenizer.chat_template of MODEL.gguf`).
    pub fn from_origin(source: &str, tok: &Tokenizer, origin: &str) -> Result<Self> {
        let (bos, eos) = bos_eos(tok);
        Self::build(source, &bos, &eos, origin, false)
    }

    /// A template from its Jinja source and BOS/EOS strings (what tests use).
    pub fn from_str_with(source: &str, bos: &str, eos: &str) -> Result<Self> {
        Self::build(source, bos, eos, "chat template", false)
    }

    fn build(source: &str, bos: &str, eos: &str, origin: &str, trusted: bool) -> Result<Self> {
        let t = ChatTemplate {
            source: source.to_string(),
            bos: bos.to_string(),
            eos: eos.to_string(),
            origin: origin.to_string(),
            trusted,
            poisoned: Arc::new(AtomicBool::new(false)),
        };
        // Fail at load, not at the first chat turn.
        t.render(&[Message::new("user", "hi")], true)?;
        Ok(t)
    }

    /// The template `spec` names, bound to `tok`'s BOS/EOS. Built-ins are ft's own source and
    /// render in place; Jinja source given by the user is sandboxed like a file's.
    pub fn from_spec(spec: &TemplateSpec, tok: &Tokenizer) -> Result<Self> {
        let (bos, eos) = bos_eos(tok);
        match spec {
            TemplateSpec::Jinja(src) => {
                Self::build(src, &bos, &eos, "the given chat template", false)
            }
            builtin => Self::build(
                builtin.source(),
                &bos,
                &eos,
                &format!("built-in {builtin}"),
                true,
            ),
        }
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
            return Self::from_origin(&src, tok, &jinja.display().to_string()).map(Some);
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
        src.map(|s| Self::from_origin(&s, tok, &path.display().to_string()))
            .transpose()
    }

    /// Render `messages`. Templates from files run sandboxed: bounded instructions (fuel),
    /// output and memory ([`Limits`]); a template that exceeds them is a one-line error naming
    /// where it came from, never a hang or an abort.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let fail = |msg: String| Error::Template(format!("{}: {msg}", self.origin));
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(fail("disabled after it ran over its memory budget".into()));
        }
        let input = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum::<usize>()
            + self.bos.len()
            + self.eos.len();
        let limits = Limits::for_input(input, messages.len());
        let job = Job {
            source: self.source.clone(),
            messages: messages.to_vec(),
            add_generation_prompt,
            bos: self.bos.clone(),
            eos: self.eos.clone(),
        };
        let result = if self.trusted {
            job.run(limits.fuel, limits.output)
        } else {
            let (fuel, output) = (limits.fuel, limits.output);
            match crate::budget::run_limited(limits.memory, move || job.run(fuel, output)) {
                Ok(r) => r,
                Err(Some(crate::budget::OverBudget)) => {
                    self.poisoned.store(true, Ordering::Relaxed);
                    Err(format!(
                        "needs more than {} MiB of memory to render {input} bytes of messages; refusing it",
                        limits.memory >> 20
                    ))
                }
                Err(None) => Err("rendering crashed".into()),
            }
        };
        result.map_err(|m| fail(m.replace('\n', " ")))
    }
}

/// The tokenizer's BOS and EOS as text (empty when it has none).
fn bos_eos(tok: &Tokenizer) -> (String, String) {
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    (name(tok.bos), name(tok.eos))
}

/// One render, owned so it can run on a budgeted thread.
struct Job {
    source: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    bos: String,
    eos: String,
}

impl Job {
    fn run(self, fuel: u64, output: usize) -> std::result::Result<String, String> {
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
        env.set_fuel(Some(fuel));
        env.add_template("chat", &self.source)
            .map_err(|e| e.to_string())?;
        let tmpl = env.get_template("chat").map_err(|e| e.to_string())?;
        let mut sink = Capped {
            out: Vec::new(),
            cap: output,
            over: false,
        };
        let rendered = tmpl.render_captured_to(
            minijinja::context! {
                messages => self.messages,
                add_generation_prompt => self.add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
            },
            &mut sink,
        );
        match rendered {
            Err(_) if sink.over => Err(format!(
                "output exceeds {output} bytes for {} message(s); refusing it",
                self.messages.len()
            )),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(format!(
                "ran out of its {fuel} instructions (a loop that does not end?); refusing it"
            )),
            Err(e) => Err(e.to_string()),
            Ok(_) => String::from_utf8(sink.out).map_err(|e| e.to_string()),
        }
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
