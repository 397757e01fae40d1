//! MMLU scoring bookkeeping with fake scorers (no model): both layouts give the same report,
//! counts from known scorers, reports round-trip and compare, NaN log-probs are errors. The
//! real-data tests need datasets/mmlu/mmlu.jsonl and ../shared/fixtures/mmlu-reference.json and
//! skip with a message without them.

mod mmlu_support;

use ft::eval::mmlu::{self, ChoiceScorer, Dataset, MmluOptions, Style};
use ft::eval::report::{compare, MmluReport};
use mmlu_support::*;

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
