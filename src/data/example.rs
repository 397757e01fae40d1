//! Typed training examples and the rules that turn one dataset record (a JSON object, or a
//! parquet row converted to one) into an [`Example`].
//!
//! Four shapes are supported, chosen by [`Format`]; [`FieldMap`] renames the fields a record uses.
//! A record that is structurally wrong (missing field, wrong type, unknown role) is an error; a
//! record that is valid but has nothing to learn from (blank answer) is skipped with a reason.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tokenizer::Message;

/// One training example, before tokenization and chat-template rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Example {
    /// A conversation; at least one assistant turn.
    Chat { messages: Vec<Message> },
    /// Alpaca-style: `instruction` (+ optional `input`) -> `output`.
    Instruction {
        instruction: String,
        input: Option<String>,
        output: String,
    },
    /// Raw prompt and the completion to learn.
    Completion { prompt: String, completion: String },
    /// Plain text; every token is learned.
    Text { text: String },
}

impl Example {
    pub fn format(&self) -> Format {
        match self {
            Example::Chat { .. } => Format::Chat,
            Example::Instruction { .. } => Format::Instruction,
            Example::Completion { .. } => Format::Completion,
            Example::Text { .. } => Format::Text,
        }
    }
}

crate::config::named_enum!(
    /// The shape of every record in a dataset (`dataset.format`).
    Format, "dataset format", {
        /// `{"messages": [{"role", "content"}, ...]}`
        Chat = "chat",
        /// `{"instruction", "input"?, "output"}` (alpaca)
        Instruction = "instruction",
        /// `{"prompt", "completion"}`
        Completion = "completion",
        /// `{"text"}`: plain language modelling, every token trained
        Text = "text",
    }
);

#[allow(clippy::derivable_impls)] // the enum is declared by a macro
impl Default for Format {
    fn default() -> Self {
        Format::Chat
    }
}

/// Field names records use (`dataset.fields`); each defaults to its own name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldMap {
    pub messages: String,
    pub instruction: String,
    pub input: String,
    pub output: String,
    pub prompt: String,
    pub completion: String,
    pub text: String,
    pub role: String,
    pub content: String,
}

impl Default for FieldMap {
    fn default() -> Self {
        FieldMap {
            messages: "messages".into(),
            instruction: "instruction".into(),
            input: "input".into(),
            output: "output".into(),
            prompt: "prompt".into(),
            completion: "completion".into(),
            text: "text".into(),
            role: "role".into(),
            content: "content".into(),
        }
    }
}

impl FieldMap {
    /// Top-level fields a record of `format` needs, and whether each is required.
    pub(crate) fn columns(&self, format: Format) -> Vec<(&str, bool)> {
        match format {
            Format::Chat => vec![(self.messages.as_str(), true)],
            Format::Instruction => vec![
                (self.instruction.as_str(), true),
                (self.input.as_str(), false),
                (self.output.as_str(), true),
            ],
            Format::Completion => vec![
                (self.prompt.as_str(), true),
                (self.completion.as_str(), true),
            ],
            Format::Text => vec![(self.text.as_str(), true)],
        }
    }
}

/// What one valid record becomes.
#[derive(Debug, PartialEq)]
pub(crate) enum Record {
    Keep(Example),
    /// Valid but empty; the reason is reported in `ReadReport::skipped`.
    Skip(String),
}

/// Convert one record. `Err` holds a one-line message; the caller adds path and line.
pub(crate) fn example_from_record(
    record: &Value,
    format: Format,
    fields: &FieldMap,
) -> Result<Record, String> {
    let obj = match record {
        Value::Object(o) => o,
        other => return Err(format!("expected a JSON object, got {}", kind(other))),
    };
    let rec = Fields {
        obj,
        format,
        what: "field",
    };
    Ok(match format {
        Format::Chat => chat(rec.value(&fields.messages)?, fields)?,
        Format::Instruction => {
            let instruction = rec.string(&fields.instruction)?;
            let input = rec.optional_string(&fields.input)?;
            let output = rec.string(&fields.output)?;
            if is_blank(&instruction) {
                Record::Skip(format!("empty `{}`", fields.instruction))
            } else if is_blank(&output) {
                Record::Skip(format!("empty `{}`", fields.output))
            } else {
                Record::Keep(Example::Instruction {
                    instruction,
                    input: input.filter(|s| !is_blank(s)),
                    output,
                })
            }
        }
        Format::Completion => {
            let prompt = rec.string(&fields.prompt)?;
            let completion = rec.string(&fields.completion)?;
            if is_blank(&completion) {
                Record::Skip(format!("empty `{}`", fields.completion))
            } else {
                Record::Keep(Example::Completion { prompt, completion })
            }
        }
        Format::Text => {
            let text = rec.string(&fields.text)?;
            if is_blank(&text) {
                Record::Skip(format!("empty `{}`", fields.text))
            } else {
                Record::Keep(Example::Text { text })
            }
        }
    })
}

fn chat(messages: &Value, fields: &FieldMap) -> Result<Record, String> {
    let name = &fields.messages;
    let parsed;
    // Parquet files often store the conversation as a JSON string column.
    let messages = match messages {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| {
                format!("field `{name}` is a string but not a JSON list of messages: {e}")
            })?;
            &parsed
        }
        v => v,
    };
    let list = match messages {
        Value::Array(a) => a,
        other => {
            return Err(format!(
                "field `{name}` must be a list of messages, got {}",
                kind(other)
            ))
        }
    };
    if list.is_empty() {
        return Ok(Record::Skip(format!("empty `{name}`")));
    }
    let mut turns = Vec::with_capacity(list.len());
    let mut blank = None;
    for (i, m) in list.iter().enumerate() {
        let n = i + 1;
        let obj = match m {
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "message {n}: expected an object, got {}",
                    kind(other)
                ))
            }
        };
        let rec = Fields {
            obj,
            format: Format::Chat,
            what: "message field",
        };
        let role = normalize_role(
            &rec.string(&fields.role)
                .map_err(|e| format!("message {n}: {e}"))?,
        )
        .map_err(|e| format!("message {n}: {e}"))?;
        // A null content (e.g. a tool-call turn) counts as empty rather than malformed.
        let content = match obj.get(&fields.content) {
            None => {
                return Err(format!(
                    "message {n}: {}",
                    missing(&fields.content, Format::Chat)
                ))
            }
            Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "message {n}: {}",
                    rec.wrong_type(&fields.content, other)
                ))
            }
        };
        if blank.is_none() && matches!(role, "user" | "assistant") && is_blank(&content) {
            blank = Some(format!("message {n} ({role}) is empty"));
        }
        turns.push(Message::new(role, content));
    }
    if !turns.iter().any(|t| t.role == "assistant") {
        return Err("conversation has no assistant turn (nothing to learn)".into());
    }
    Ok(match blank {
        Some(reason) => Record::Skip(reason),
        None => Record::Keep(Example::Chat { messages: turns }),
    })
}

/// Accept the standard roles, plus ShareGPT's `human`/`gpt` (used with `role: from`, `content: value`).
fn normalize_role(role: &str) -> Result<&'static str, String> {
    match role {
        "system" => Ok("system"),
        "user" | "human" => Ok("user"),
        "assistant" | "gpt" => Ok("assistant"),
        "tool" => Ok("tool"),
        other => Err(format!(
            "role `{other}` is not one of system, user, assistant, tool"
        )),
    }
}

/// Field access on one record object with error messages that name the field and format.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    format: Format,
    what: &'static str,
}

impl Fields<'_> {
    fn value(&self, name: &str) -> Result<&Value, String> {
        match self.obj.get(name) {
            Some(Value::Null) | None => Err(missing(name, self.format)),
            Some(v) => Ok(v),
        }
    }

    fn string(&self, name: &str) -> Result<String, String> {
        match self.value(name)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.wrong_type(name, other)),
        }
    }

    fn optional_string(&self, name: &str) -> Result<Option<String>, String> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_type(name, other)),
        }
    }

    fn wrong_type(&self, name: &str, got: &Value) -> String {
        format!(
            "{} `{name}` must be a string, got {} (format {})",
            self.what,
            kind(got),
            self.format
        )
    }
}

pub(crate) fn missing(name: &str, format: Format) -> String {
    format!("missing field `{name}` (format {format}; map other names with dataset.fields)")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(v: Value, format: Format) -> Result<Record, String> {
        example_from_record(&v, format, &FieldMap::default())
    }

    #[test]
    fn chat_record() {
        let r = conv(
            json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "id": 7}),
            Format::Chat,
        );
        let want = Example::Chat {
            messages: vec![Message::new("user", "hi"), Message::new("assistant", "yo")],
        };
        assert_eq!(r, Ok(Record::Keep(want)));
    }

    #[test]
    fn chat_messages_as_json_string_and_sharegpt_roles() {
        let fields = FieldMap {
            messages: "conversations".into(),
            role: "from".into(),
            content: "value".into(),
            ..FieldMap::default()
        };
        let s = r#"[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]"#;
        let r = example_from_record(&json!({ "conversations": s }), Format::Chat, &fields);
        let want = Example::Chat {
            messages: vec![Message::new("user", "q"), Message::new("assistant", "a")],
        };
        assert_eq!(r, Ok(Record::Keep(want)));
    }

    #[test]
    fn chat_errors() {
        let bad_role = json!({"messages": [{"role": "bot", "content": "x"}]});
        assert!(conv(bad_role, Format::Chat)
            .unwrap_err()
            .contains("role `bot`"));
        let no_assistant = json!({"messages": [{"role": "user", "content": "x"}]});
        assert!(conv(no_assistant, Format::Chat)
            .unwrap_err()
            .contains("no assistant turn"));
        let no_content = json!({"messages": [{"role": "user"}]});
        let e = conv(no_content, Format::Chat).unwrap_err();
        assert!(e.starts_with("message 1: missing field `content`"), "{e}");
        let not_list = json!({"messages": 3});
        assert!(conv(not_list, Format::Chat)
            .unwrap_err()
            .contains("must be a list"));
    }

    #[test]
    fn chat_skips_empty() {
        let empty_answer = json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]});
        assert_eq!(
            conv(empty_answer, Format::Chat),
            Ok(Record::Skip("message 2 (assistant) is empty".into()))
        );
        let null_answer = json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null}]});
        assert!(matches!(
            conv(null_answer, Format::Chat),
            Ok(Record::Skip(_))
        ));
        assert!(matches!(
            conv(json!({"messages": []}), Format::Chat),
            Ok(Record::Skip(_))
        ));
        // An empty system prompt is harmless and kept.
        let empty_system = json!({"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]});
        assert!(matches!(
            conv(empty_system, Format::Chat),
            Ok(Record::Keep(_))
        ));
    }

    #[test]
    fn instruction_rules() {
        let r = conv(
            json!({"instruction": "i", "input": "", "output": "o"}),
            Format::Instruction,
        );
        let want = Example::Instruction {
            instruction: "i".into(),
            input: None,
            output: "o".into(),
        };
        assert_eq!(r, Ok(Record::Keep(want)));
        let e = conv(json!({"instruction": "i"}), Format::Instruction).unwrap_err();
        assert_eq!(
            e,
            "missing field `output` (format instruction; map other names with dataset.fields)"
        );
        let e = conv(
            json!({"instruction": "i", "output": 4}),
            Format::Instruction,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "field `output` must be a string, got a number (format instruction)"
        );
        let skip = conv(
            json!({"instruction": "i", "output": ""}),
            Format::Instruction,
        );
        assert_eq!(skip, Ok(Record::Skip("empty `output`".into())));
    }

    #[test]
    fn completion_and_text() {
        let r = conv(json!({"prompt": "", "completion": "c"}), Format::Completion);
        assert!(matches!(r, Ok(Record::Keep(Example::Completion { .. }))));
        assert!(matches!(
            conv(json!({"prompt": "p", "completion": ""}), Format::Completion),
            Ok(Record::Skip(_))
        ));
        assert_eq!(
            conv(json!({"text": "t"}), Format::Text),
            Ok(Record::Keep(Example::Text { text: "t".into() }))
        );
        assert!(conv(json!([1]), Format::Text)
            .unwrap_err()
            .contains("expected a JSON object"));
    }

    #[test]
    fn format_and_fieldmap_deserialize() {
        let f: Format = serde_json::from_str("\"instruction\"").unwrap();
        assert_eq!(f, Format::Instruction);
        let m: FieldMap = serde_json::from_str(r#"{"output": "response"}"#).unwrap();
        assert_eq!(m.output, "response");
        assert_eq!(m.instruction, "instruction");
        assert!(serde_json::from_str::<FieldMap>(r#"{"outptu": "x"}"#).is_err());
    }
}
