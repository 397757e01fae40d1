//! `ft eval` against the references: MMLU choice log-probs and per-subject counts from PyTorch
//! (lm-evaluation-harness prompt), and perplexity from llama.cpp's llama-perplexity.

mod common;

use ft::eval::mmlu::{self, ChoiceScorer, MmluOptions, Style, LETTERS};
use ft::eval::scorer::ModelScorer;
use ft::model::{load, Ctx, LoadOptions};
use ft::quant::MatmulMode;

fn model() -> Option<ft::model::Loaded> {
    let p = common::real_model()?;
    Some(load(p, &LoadOptions::default()).unwrap())
}

#[test]
fn mmlu_choice_logprobs_match_pytorch() {
    let (Some(m), Some(fx)) = (model(), common::fixture_json("mmlu-reference.json")) else {
        return;
    };
    let mut scorer = ModelScorer::new(
        &m.model,
        &m.tokenizer,
        Ctx::infer(MatmulMode::Exact, None),
        None,
    );
    for case in fx["first_questions"]["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            m.tokenizer.encode(prompt, false).unwrap(),
            ids,
            "prompt tokens"
        );
        let got = scorer.letter_logprobs(prompt, "", &LETTERS).unwrap();
        for (k, letter) in ["A", "B", "C", "D"].iter().enumerate() {
            let want = case["choice_logprobs"][letter].as_f64().unwrap();
            assert!(
                (got[k] - want).abs() <= 2e-3,
                "{letter}: {} vs {want}",
                got[k]
            );
        }
    }
}

#[test]
fn mmlu_subject_counts_match_pytorch_zero_shot() {
    let (Some(m), Some(fx), Some(data)) = (
        model(),
        common::fixture_json("mmlu-reference.json"),
        common::real_mmlu(),
    ) else {
        return;
    };
    let ds = mmlu::load(&data).unwrap();
    assert_eq!(
        ds.skipped.len(),
        2,
        "the two header rows are skipped and counted"
    );
    // The two smallest subjects keep the test short; `ft eval` reproduces the rest the same way.
    for subject in ["us foreign policy", "high school geography"] {
        let names = mmlu::select(&ds, subject).unwrap();
        let opts = MmluOptions {
            shots: 0,
            limit: None,
            style: Style::Letter,
            pool: Some(5),
            chat: false,
        };
        let mut scorer = ModelScorer::new(
            &m.model,
            &m.tokenizer,
            Ctx::infer(MatmulMode::Exact, None),
            None,
        );
        let rep = mmlu::run(&ds, &names, &opts, &mut scorer, |_, _| {}).unwrap();
        let want = &fx["subjects"][subject]["0-shot"];
        let (scored, correct) = (
            want["scored"].as_u64().unwrap() as usize,
            want["correct"].as_u64().unwrap() as i64,
        );
        assert_eq!(rep.micro.scored, scored, "{subject}");
        assert!(
            (rep.micro.correct as i64 - correct).abs() <= 2,
            "{subject}: {} correct vs {correct}",
            rep.micro.correct
        );
    }
}

#[test]
fn perplexity_matches_llama_cpp_within_2_percent() {
    let (Some(m), Some(fx), Some(text)) = (
        model(),
        common::fixture_json("perplexity/llamacpp.json"),
        common::fixture("perplexity/text.txt"),
    ) else {
        return;
    };
    let ids = m
        .tokenizer
        .encode_prompt(&std::fs::read_to_string(text).unwrap(), false)
        .unwrap();
    let p = ft::eval::perplexity::perplexity(
        &m.model,
        &Ctx::infer(MatmulMode::Exact, None),
        &ids,
        512,
        None,
        |_, _| {},
    )
    .unwrap();
    let want = fx["ppl"].as_f64().unwrap();
    assert_eq!(p.chunks as u64, fx["chunks"].as_u64().unwrap());
    assert!(
        (p.ppl - want).abs() / want < 0.02,
        "ppl {} vs llama.cpp {want}",
        p.ppl
    );
}
