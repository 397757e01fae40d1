//! The real model against independent implementations (fixtures in ../shared/fixtures):
//! llama.cpp's token ids, and PyTorch's log-probs on both the exact and the fast path.

mod common;

use candle_core::{DType, Tensor, D};
use ft::gguf::GgufFile;
use ft::model::{load, Ctx, LoadOptions};
use ft::quant::MatmulMode;
use ft::tokenizer::Tokenizer;

#[test]
fn tokenizer_matches_llama_cpp() {
    let (Some(model), Some(fx)) = (common::real_model(), common::fixture_json("tokenize.json"))
    else {
        return;
    };
    let tok = Tokenizer::from_gguf(&GgufFile::open(&model).unwrap()).unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let special = case["parse_special"].as_bool().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, special).unwrap();
        assert_eq!(got, want, "text {text:?} parse_special={special}");
        // And back: decoding gives the text again.
        assert_eq!(tok.decode(&got, false).unwrap(), text);
    }
}

/// log_softmax in f64 of logits (seq, vocab) -> Vec of rows.
fn log_softmax_rows(logits: &Tensor) -> Vec<Vec<f64>> {
    let l = logits.to_dtype(DType::F64).unwrap();
    let l = candle_nn::ops::log_softmax(&l, D::Minus1).unwrap();
    l.to_vec2::<f64>().unwrap()
}

fn check_logprobs(mode: MatmulMode) {
    let (Some(model), Some(fx)) = (common::real_model(), common::fixture_json("logprobs.json"))
    else {
        return;
    };
    let loaded = load(&model, &LoadOptions::default()).unwrap();
    let ctx = Ctx::infer(mode, None);
    let (mut n, mut sum_abs, mut max_abs, mut top1_same) = (0usize, 0f64, 0f64, 0usize);
    for case in fx["cases"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let input = Tensor::new(ids.as_slice(), &loaded.model.device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = loaded
            .model
            .forward(&input, 0, None, &ctx)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let rows = log_softmax_rows(&logits);
        let target = case["target_logprobs"].as_array().unwrap();
        let top5 = case["top5_per_position"].as_array().unwrap();
        for (p, want) in target.iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = rows[p][ids[p + 1] as usize];
            let d = (got - want).abs();
            if mode == MatmulMode::Exact {
                assert!(
                    d <= 2e-3,
                    "exact path: position {p}: got {got}, want {want}"
                );
            }
            sum_abs += d;
            max_abs = max_abs.max(d);
            n += 1;
            let ref_top = top5[p][0][0].as_u64().unwrap() as usize;
            let our_top = rows[p]
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            top1_same += (ref_top == our_top) as usize;
        }
    }
    let mean = sum_abs / n as f64;
    let top1 = top1_same as f64 / n as f64;
    eprintln!("{mode:?}: {n} positions, mean |d| {mean:.5}, max |d| {max_abs:.5}, top-1 agreement {top1:.3}");
    if mode == MatmulMode::Fast {
        assert!(mean <= 0.05, "fast path mean |delta| {mean}");
        assert!(max_abs <= 0.3, "fast path max |delta| {max_abs}");
        assert!(top1 >= 0.9, "fast path top-1 agreement {top1}");
    }
}

#[test]
fn logprobs_match_pytorch_exact_path() {
    check_logprobs(MatmulMode::Exact);
}

#[test]
fn logprobs_match_pytorch_fast_path() {
    check_logprobs(MatmulMode::Fast);
}

/// The training loss of the base model (fresh adapters: B = 0) on PyTorch + PEFT's first two
/// batches equals PyTorch's step-0 loss within 1e-3.
#[test]
fn training_loss_matches_pytorch_peft_step0() {
    let (Some(model), Some(fx)) = (
        common::real_model(),
        common::fixture_json("peft-reference.json"),
    ) else {
        return;
    };
    let mut loaded = load(&model, &LoadOptions::default()).unwrap();
    let cfg = ft::lora::LoraConfig {
        r: 16,
        alpha: 32.0,
        dropout: 0.0,
        ..Default::default()
    };
    ft::train::attach_adapters(&mut loaded.model, &cfg, 0).unwrap();
    let batches: Vec<Vec<Vec<u32>>> =
        serde_json::from_value(fx["first_two_batches_token_ids"].clone()).unwrap();
    for (i, b) in batches.iter().enumerate() {
        let (bs, t) = (b.len(), b[0].len());
        let x = Tensor::from_vec(
            b.iter().flatten().copied().collect::<Vec<u32>>(),
            (bs, t),
            &loaded.model.device,
        )
        .unwrap();
        let batch = ft::data::encode::Batch {
            input: x.narrow(1, 0, t - 1).unwrap().contiguous().unwrap(),
            target: x.narrow(1, 1, t - 1).unwrap().contiguous().unwrap(),
            loss_mask: Tensor::ones((bs, t - 1), DType::F32, &loaded.model.device).unwrap(),
            segments: None,
            tokens: bs * t,
        };
        let loss = ft::train::batch_loss(&loaded.model, &batch, &ft::model::Ctx::train(0))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let want = fx["loss_fixture"]["batches"][i]["loss_f64_logsoftmax"]
            .as_f64()
            .unwrap();
        eprintln!("batch {i}: loss {loss:.6} vs PyTorch {want:.6}");
        assert!((loss - want).abs() < 1e-3, "batch {i}: {loss} vs {want}");
    }
}
