//! Dataset reading: every format from jsonl, json and parquet (parquet files are written here
//! with ArrowWriter into a tempdir), field mapping, error locations, globs, the eval split, and
//! the shipped datasets/support files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, ListArray, StringArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields};
use arrow::record_batch::RecordBatch;
use ft::data::{expand_paths, read_examples, split_eval, Example, FieldMap, Format, ReadReport};
use ft::tokenizer::Message;
use parquet::arrow::ArrowWriter;

fn ds(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ds")
        .join(name)
}

fn read(name: &str, format: Format) -> ReadReport {
    read_examples(&[ds(name)], format, &FieldMap::default()).unwrap()
}

fn read_err(path: PathBuf, format: Format, fields: &FieldMap) -> String {
    read_examples(&[path], format, fields)
        .unwrap_err()
        .to_string()
}

fn write_parquet(dir: &Path, name: &str, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
    let batch =
        RecordBatch::try_from_iter(columns.into_iter().map(|(n, a)| (n.to_string(), a))).unwrap();
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

fn strings(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

/// `list<struct<role, content>>` from the chat examples.
fn messages_column(chats: &[Vec<(&str, &str)>]) -> ArrayRef {
    let turns: Vec<&(&str, &str)> = chats.iter().flatten().collect();
    let role: ArrayRef = Arc::new(StringArray::from_iter_values(turns.iter().map(|t| t.0)));
    let content: ArrayRef = Arc::new(StringArray::from_iter_values(turns.iter().map(|t| t.1)));
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]);
    let structs = StructArray::new(fields.clone(), vec![role, content], None);
    let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
    let offsets = OffsetBuffer::from_lengths(chats.iter().map(|c| c.len()));
    Arc::new(ListArray::new(item, offsets, Arc::new(structs), None))
}

fn chat_fixture() -> Vec<Vec<(&'static str, &'static str)>> {
    vec![
        vec![
            ("system", "You are terse."),
            ("user", "Capital of France?"),
            ("assistant", "Paris."),
        ],
        vec![
            ("user", "2+2?"),
            ("assistant", "4."),
            ("user", "And 3+3?"),
            ("assistant", "6."),
        ],
        vec![("user", "Say nothing."), ("assistant", "")],
        vec![
            ("user", "Unicode: caf\u{e9} \u{2603}"),
            ("assistant", "Snowman \u{2603}."),
        ],
    ]
}

#[test]
fn chat_jsonl_reads_and_counts_skips() {
    let r = read("chat.jsonl", Format::Chat);
    assert_eq!(r.examples.len(), 3);
    assert_eq!(
        r.examples[0],
        Example::Chat {
            messages: vec![
                Message::new("system", "You are terse."),
                Message::new("user", "Capital of France?"),
                Message::new("assistant", "Paris."),
            ]
        }
    );
    // The empty assistant reply on line 4 (after a blank line) is skipped and reported.
    assert_eq!(
        r.skipped,
        vec![(
            ds("chat.jsonl"),
            4,
            "message 2 (assistant) is empty".to_string()
        )]
    );
}

#[test]
fn json_array_parquet_and_jsonl_read_equal() {
    let jsonl = read("chat.jsonl", Format::Chat);
    let json = read("chat.json", Format::Chat);
    assert_eq!(jsonl.examples, json.examples);
    // The skipped record starts on line 8 of chat.json.
    assert_eq!(json.skipped[0].1, 8);

    let dir = tempfile::tempdir().unwrap();
    let chats = chat_fixture();
    let list = write_parquet(
        dir.path(),
        "list.parquet",
        vec![("messages", messages_column(&chats))],
    );
    let from_list = read_examples(
        std::slice::from_ref(&list),
        Format::Chat,
        &FieldMap::default(),
    )
    .unwrap();
    assert_eq!(from_list.examples, jsonl.examples);
    assert_eq!(
        from_list.skipped,
        vec![(list, 3, "message 2 (assistant) is empty".into())]
    );

    // The same conversations stored as a JSON string column.
    let text: Vec<String> = std::fs::read_to_string(ds("chat.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["messages"].to_string()
        })
        .collect();
    let col: ArrayRef = Arc::new(StringArray::from_iter_values(text));
    let s = write_parquet(dir.path(), "string.parquet", vec![("messages", col)]);
    let from_string = read_examples(&[s], Format::Chat, &FieldMap::default()).unwrap();
    assert_eq!(from_string.examples, jsonl.examples);
}

#[test]
fn instruction_jsonl_and_parquet() {
    let r = read("instruction.jsonl", Format::Instruction);
    assert_eq!(r.examples.len(), 3);
    assert_eq!(
        r.examples[0],
        Example::Instruction {
            instruction: "Translate to French.".into(),
            input: Some("Good morning".into()),
            output: "Bonjour".into()
        }
    );
    // null and "" inputs both mean no input.
    assert!(matches!(
        &r.examples[1],
        Example::Instruction { input: None, .. }
    ));
    assert!(matches!(
        &r.examples[2],
        Example::Instruction { input: None, .. }
    ));
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(
        (r.skipped[0].1, r.skipped[0].2.as_str()),
        (3, "empty `output`")
    );

    let dir = tempfile::tempdir().unwrap();
    let p = write_parquet(
        dir.path(),
        "instr.parquet",
        vec![
            (
                "instruction",
                strings(&[
                    Some("Translate to French."),
                    Some("Name a primary colour."),
                    Some("Say something."),
                    Some("Count to three."),
                ]),
            ),
            (
                "input",
                strings(&[Some("Good morning"), None, None, Some("")]),
            ),
            (
                "output",
                strings(&[Some("Bonjour"), Some("Red"), Some("   "), Some("1, 2, 3")]),
            ),
            // Columns the format does not use may have any type.
            (
                "id",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef,
            ),
        ],
    );
    let q = read_examples(
        std::slice::from_ref(&p),
        Format::Instruction,
        &FieldMap::default(),
    )
    .unwrap();
    assert_eq!(q.examples, r.examples);
    assert_eq!(q.skipped, vec![(p, 3, "empty `output`".into())]);
}

#[test]
fn completion_and_text() {
    let c = read("completion.jsonl", Format::Completion);
    assert_eq!(
        c.examples,
        vec![
            Example::Completion {
                prompt: "The sky is".into(),
                completion: " blue.".into()
            },
            Example::Completion {
                prompt: "".into(),
                completion: "Once upon a time.".into()
            },
        ]
    );
    let t = read("text.jsonl", Format::Text);
    assert_eq!(t.examples.len(), 2);
    assert_eq!(t.skipped[0].1, 2);

    let dir = tempfile::tempdir().unwrap();
    let p = write_parquet(
        dir.path(),
        "text.parquet",
        vec![(
            "text",
            strings(&[
                Some("The quick brown fox."),
                Some(""),
                Some("Jumps over the lazy dog."),
            ]),
        )],
    );
    let q = read_examples(&[p], Format::Text, &FieldMap::default()).unwrap();
    assert_eq!(q.examples, t.examples);
}

#[test]
fn field_mapping() {
    let fields: FieldMap = serde_json::from_str(
        r#"{"instruction": "question", "input": "context", "output": "answer"}"#,
    )
    .unwrap();
    let r = read_examples(&[ds("mapped.jsonl")], Format::Instruction, &fields).unwrap();
    assert_eq!(
        r.examples[0],
        Example::Instruction {
            instruction: "What is 7 times 6?".into(),
            input: Some("Arithmetic.".into()),
            output: "42".into()
        }
    );
    assert_eq!(r.examples.len(), 2);

    let sharegpt = FieldMap {
        messages: "conversations".into(),
        role: "from".into(),
        content: "value".into(),
        ..FieldMap::default()
    };
    let r = read_examples(&[ds("sharegpt.jsonl")], Format::Chat, &sharegpt).unwrap();
    assert_eq!(
        r.examples,
        vec![Example::Chat {
            messages: vec![
                Message::new("user", "Hi"),
                Message::new("assistant", "Hello!")
            ]
        }]
    );
    // Unmapped, the same file is missing `messages` on line 1.
    let e = read_err(ds("sharegpt.jsonl"), Format::Chat, &FieldMap::default());
    assert!(e.ends_with("sharegpt.jsonl:1: missing field `messages` (format chat; map other names with dataset.fields)"), "{e}");
}

#[test]
fn errors_name_file_and_line() {
    let d = FieldMap::default();
    let e = read_err(ds("bad_json.jsonl"), Format::Text, &d);
    assert!(e.contains("bad_json.jsonl:3: invalid JSON:"), "{e}");

    let e = read_err(ds("missing_output.jsonl"), Format::Instruction, &d);
    assert!(
        e.ends_with("missing_output.jsonl:2: missing field `output` (format instruction; map other names with dataset.fields)"),
        "{e}"
    );
    let e = read_err(ds("instruction.jsonl"), Format::Text, &d);
    assert!(
        e.contains("instruction.jsonl:1: missing field `text`"),
        "{e}"
    );

    let e = read_err(ds("bad_role.jsonl"), Format::Chat, &d);
    assert!(
        e.contains("bad_role.jsonl:2: message 2: role `bot` is not one of"),
        "{e}"
    );
    let e = read_err(ds("no_assistant.jsonl"), Format::Chat, &d);
    assert!(
        e.contains("no_assistant.jsonl:1: conversation has no assistant turn"),
        "{e}"
    );
    let e = read_err(ds("bad.json"), Format::Text, &d);
    assert!(e.contains("bad.json:3: invalid JSON"), "{e}");
    let e = read_err(ds("data.csv"), Format::Text, &d);
    assert!(e.contains("unsupported dataset file type `csv`"), "{e}");
    assert_eq!(e.lines().count(), 1);
    let e = read_err(ds("nope.jsonl"), Format::Text, &d);
    assert!(e.contains("nope.jsonl"), "{e}");
}

#[test]
fn parquet_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = FieldMap::default();
    let p = write_parquet(
        dir.path(),
        "a.parquet",
        vec![
            ("instruction", strings(&[Some("a"), Some("b")])),
            ("response", strings(&[Some("x"), Some("y")])),
        ],
    );
    let e = read_err(p, Format::Instruction, &d);
    assert!(
        e.contains("missing field `output`") && e.contains("columns are: instruction, response"),
        "{e}"
    );

    let p = write_parquet(
        dir.path(),
        "b.parquet",
        vec![
            ("instruction", strings(&[Some("a"), Some("b")])),
            ("output", strings(&[Some("x"), None])),
        ],
    );
    let e = read_err(p, Format::Instruction, &d);
    assert!(e.contains("b.parquet:2: missing field `output`"), "{e}");

    let p = write_parquet(
        dir.path(),
        "c.parquet",
        vec![("text", Arc::new(Int64Array::from(vec![5])) as ArrayRef)],
    );
    let e = read_err(p, Format::Text, &d);
    assert!(
        e.contains("c.parquet:1: field `text` must be a string, got a number"),
        "{e}"
    );

    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"not parquet at all").unwrap();
    assert!(read_err(junk, Format::Text, &d).contains("not a readable parquet file"));
}

#[test]
fn globs_directories_and_order() {
    let pattern = ds("parts/*.jsonl").to_string_lossy().into_owned();
    let paths = expand_paths(std::slice::from_ref(&pattern)).unwrap();
    assert_eq!(
        paths,
        vec![ds("parts/part-1.jsonl"), ds("parts/part-2.jsonl")]
    );

    // A folder means its dataset files (not notes.txt); duplicates are dropped, order kept.
    let dir = ds("parts").to_string_lossy().into_owned();
    let single = ds("parts/part-2.jsonl").to_string_lossy().into_owned();
    let paths = expand_paths(&[single, dir, pattern]).unwrap();
    assert_eq!(
        paths,
        vec![ds("parts/part-2.jsonl"), ds("parts/part-1.jsonl")]
    );

    let r = read_examples(&paths, Format::Text, &FieldMap::default()).unwrap();
    let texts: Vec<_> = r
        .examples
        .iter()
        .map(|e| match e {
            Example::Text { text } => text.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(texts, vec!["part two", "part one a", "part one b"]);

    let none = ds("parts/*.parquet").to_string_lossy().into_owned();
    let e = expand_paths(&[none]).unwrap_err().to_string();
    assert!(e.contains("matched no files"), "{e}");
    let missing = ds("parts/absent.jsonl").to_string_lossy().into_owned();
    assert!(expand_paths(&[missing]).is_err());
}

#[test]
fn split_is_deterministic() {
    let r = read_examples(
        &[
            ds("chat.jsonl"),
            ds("instruction.jsonl"),
            ds("completion.jsonl"),
        ],
        Format::Chat,
        &FieldMap::default(),
    );
    // Mixed formats in one read fail at the first non-chat file.
    assert!(r.is_err());
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/support/train.jsonl");
    let ex = read_examples(&[support], Format::Chat, &FieldMap::default())
        .unwrap()
        .examples;
    let a = split_eval(ex.clone(), 0.25, 3);
    let b = split_eval(ex.clone(), 0.25, 3);
    assert_eq!(a, b);
    assert_eq!(a.0.len() + a.1.len(), ex.len());
    assert_eq!(a.1.len(), (ex.len() as f64 * 0.25).round() as usize);
}

/// The shipped support data set reads cleanly and keeps the promises its README makes.
#[test]
fn support_dataset_is_consistent() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/support");
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let train = read_examples(
        &[root.join("train.jsonl")],
        Format::Chat,
        &FieldMap::default(),
    )
    .unwrap();
    let eval = read_examples(
        &[root.join("eval.jsonl")],
        Format::Chat,
        &FieldMap::default(),
    )
    .unwrap();
    assert!(train.examples.len() >= 300 && train.skipped.is_empty());
    assert!(eval.examples.len() >= 35 && eval.skipped.is_empty());

    let (mut users, mut answers) = (Vec::new(), Vec::new());
    for ex in &train.examples {
        let Example::Chat { messages } = ex else {
            panic!("not chat")
        };
        for t in messages {
            match t.role.as_str() {
                "user" => users.push(norm(&t.content)),
                "assistant" => answers.push(norm(&t.content)),
                _ => {}
            }
        }
    }
    let heldout = std::fs::read_to_string(root.join("heldout.jsonl")).unwrap();
    let mut n = 0;
    for line in heldout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let q = norm(v["question"].as_str().unwrap());
        assert!(
            !users.iter().any(|u| u.contains(&q)),
            "held-out question in train: {q}"
        );
        let facts = v["facts"].as_array().unwrap();
        assert!(!facts.is_empty());
        for f in facts {
            let f = norm(f.as_str().unwrap());
            assert!(
                answers.iter().any(|a| a.contains(&f)),
                "fact `{f}` not taught"
            );
        }
        n += 1;
    }
    assert!(n >= 60);
}
