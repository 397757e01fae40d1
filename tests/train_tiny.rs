//! Training end to end on a tiny random Llama written to a temp folder: it learns, a killed
//! run resumes to the same weights, packing equals separate examples, and the adapter
//! round-trips through PEFT files and `ft run --adapter`.

mod common;

use candle_core::{Device, Tensor};
use ft::model::{load, Ctx, LoadOptions};
use ft::quant::MatmulMode;
use ft::recipe::Recipe;
use std::path::Path;

/// A tiny HF model plus a tiny chat data set in `dir`; returns a recipe over them.
fn setup(dir: &Path, extra: &str) -> Recipe {
    ft::testing::tiny_hf_dir(&dir.join("model"), 3).unwrap();
    let mut lines = String::new();
    for i in 0..24 {
        let q = format!("What is code {}?", i % 6);
        let a = format!("Code {} means reboot the hub {} times.", i % 6, i % 6 + 1);
        lines.push_str(&serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}).to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("train.jsonl"), &lines).unwrap();
    std::fs::write(
        dir.join("eval.jsonl"),
        lines.lines().take(6).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let yaml = format!(
        "model:\n  path: {d}/model\n  quantize: q8_0\ndataset:\n  train: {d}/train.jsonl\n  eval: {d}/eval.jsonl\n  max_seq_len: 96\n\
         lora:\n  r: 8\n  alpha: 16\n  dropout: 0.1\ntrain:\n  max_steps: 8\n  batch_size: 4\n  lr: 5.0e-3\n  warmup_steps: 1\n  \
         save_every: 4\n  keep_checkpoints: 3\n  output_dir: {d}/out\n  eval_every: 4\nlogging:\n  tensorboard: {d}/tb\n{extra}",
        d = dir.display()
    );
    Recipe::parse(&yaml, "test.yaml", &[]).unwrap()
}

fn run(r: &Recipe, resume: bool, stop_after: Option<usize>) -> ft::train::Summary {
    try_run(r, resume, false, stop_after).unwrap()
}

fn try_run(
    r: &Recipe,
    resume: bool,
    overwrite: bool,
    stop_after: Option<usize>,
) -> ft::Result<ft::train::Summary> {
    let mut loaded = load(&r.model.path, &r.load_options().unwrap()).unwrap();
    let prepared = ft::train::prepare(r, &loaded).unwrap();
    // A "kill" after checkpoint n: the run stops there, with no final eval or save.
    ft::train::train(r, &mut loaded, &prepared, resume, overwrite, |ev| {
        match (ev, stop_after) {
            (ft::train::Event::Saved { step, .. }, Some(n)) => step < n,
            _ => true,
        }
    })
}

fn adapter_tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let (_, t) = ft::model::peft::read(dir).unwrap();
    let mut v: Vec<_> = t
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn tiny_model_learns_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let r = setup(dir.path(), "");
    let s = run(&r, false, None);
    let (before, after) = (s.eval_loss_before.unwrap(), s.eval_loss_after.unwrap());
    assert!(after < before * 0.7, "eval loss {before} -> {after}");
    assert!(r
        .train
        .output_dir
        .join("adapter_model.safetensors")
        .exists());
    // TensorBoard file with the train loss of every step.
    let tb = std::fs::read_dir(dir.path().join("tb"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let scalars = ft::train::tensorboard::read_scalars(&tb).unwrap();
    assert_eq!(scalars.iter().filter(|s| s.0 == "train/loss").count(), 8);
    assert!(scalars.iter().any(|s| s.0 == "eval/loss"));
}

#[test]
fn killed_run_resumes_to_the_same_adapter() {
    let full = tempfile::tempdir().unwrap();
    let r = setup(full.path(), "");
    run(&r, false, None);
    let cut = tempfile::tempdir().unwrap();
    let r2 = setup(cut.path(), "");
    run(&r2, false, Some(4));
    assert!(r2.train.output_dir.join("checkpoint-4").exists());
    run(&r2, true, None);
    let (a, b) = (
        adapter_tensors(&r.train.output_dir),
        adapter_tensors(&r2.train.output_dir),
    );
    assert_eq!(a.len(), b.len());
    for ((na, va), (_, vb)) in a.iter().zip(&b) {
        let d = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-6, "{na}: resumed weights differ by {d}");
    }
}

#[test]
fn adapter_applies_at_inference_like_training_model() {
    let dir = tempfile::tempdir().unwrap();
    let r = setup(dir.path(), "");
    run(&r, false, None);
    // Base + adapter through the loader == the trained weights: the adapter changes logits.
    let opts = LoadOptions {
        quantize: Some(candle_core::quantized::GgmlDType::Q8_0),
        adapters: vec![r.train.output_dir.clone()],
        ..Default::default()
    };
    let m = load(&r.model.path, &opts).unwrap();
    let ids = Tensor::new(&[[1u32, 72, 101, 108, 108, 111]], &Device::Cpu).unwrap();
    let base = m
        .model
        .forward(&ids, 0, None, &Ctx::infer(MatmulMode::Exact, None))
        .unwrap();
    let tuned = m
        .model
        .forward(&ids, 0, None, &Ctx::infer(MatmulMode::Exact, Some(0)))
        .unwrap();
    let d = common::max_abs_diff(&base, &tuned);
    assert!(d > 1e-3, "adapter had no effect");
}

#[test]
fn packed_rows_give_each_example_its_own_loss() {
    use ft::data::encode::{pack, packed_batch, pad_batch, Encoded};
    let model = ft::testing::tiny_model(5, None).unwrap();
    let ctx = Ctx::infer(MatmulMode::Exact, None);
    let a = Encoded {
        ids: (0..9).map(|i| 40 + i).collect(),
        mask: vec![true; 9],
    };
    let b = Encoded {
        ids: (0..7).map(|i| 90 + 3 * i).collect(),
        mask: vec![true; 7],
    };
    let rows = pack(&[a.clone(), b.clone()], 32);
    assert_eq!(rows.len(), 1);
    let packed = packed_batch(&[rows[0].as_slice()], 0, &Device::Cpu).unwrap();
    let sep = pad_batch(&[&a, &b], 0, &Device::Cpu).unwrap();
    let loss = |bt: &ft::data::encode::Batch| {
        let h = model
            .forward_hidden(&bt.input, 0, None, bt.segments.as_ref(), &ctx)
            .unwrap();
        let (s, c) =
            ft::model::loss::masked_nll_sum(&model, &h, &ctx, &bt.target, &bt.loss_mask).unwrap();
        (s.to_scalar::<f32>().unwrap() as f64, c)
    };
    let (ps, pc) = loss(&packed);
    let (ss, sc) = loss(&sep);
    assert_eq!(pc, sc, "same number of targets");
    assert!(
        (ps - ss).abs() < 1e-3,
        "packed loss {ps} vs separate {ss}: examples leaked into each other"
    );
}

/// A run is an identity: `--resume` with a changed recipe is refused naming the key; another
/// run into the same folder needs `--overwrite`; pruning keeps to the run's own checkpoints.
#[test]
fn runs_are_identities() {
    use ft::train::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let r = setup(dir.path(), "");
    run(&r, false, Some(4));
    let ckpt = r.train.output_dir.join("checkpoint-4");
    let mine = checkpoint::run_of(&ckpt).expect("the run identity is recorded");
    let mut other = r.clone();
    other.lora.r = 4;
    let e = try_run(&other, true, false, None).unwrap_err().to_string();
    assert!(e.contains("`lora.r` was 8, now 4"), "{e}");
    let e = try_run(&other, false, false, None).unwrap_err().to_string();
    assert!(
        e.contains("--overwrite") && e.contains("checkpoint-4"),
        "{e}"
    );
    assert_eq!(checkpoint::run_of(&ckpt).as_ref(), Some(&mine));

    // A foreign checkpoint beside this run's is never pruned by it.
    let foreign = r.train.output_dir.join("checkpoint-1");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(
        foreign.join(checkpoint::STATE_FILE),
        "{\"step\":1,\"total_steps\":9,\"seed\":0,\"last_loss\":null,\"best_eval_loss\":null}",
    )
    .unwrap();
    run(&r, true, None);
    assert!(foreign.exists(), "another run's checkpoint was pruned");
    // --overwrite starts over: the other run's checkpoints go.
    try_run(&other, false, true, Some(4)).unwrap();
    assert!(!foreign.exists());
    assert_ne!(checkpoint::run_of(&ckpt).as_ref(), Some(&mine));
}
