//! The levers a recipe has for a fine-tune that learns the task and keeps the model, on a tiny
//! random Llama: weighted data mixing, self-distillation replay (generated once, then cached),
//! NEFTune, LoRA+ and choosing the final adapter by the task metric (`train.select`), each
//! exercised end to end, and a killed run with all of them on resuming to the same adapter.

use ft::model::load;
use ft::recipe::Recipe;
use std::path::Path;

/// A tiny HF model, chat data, a text source, validation questions; a recipe with every lever.
fn setup(dir: &Path, out: &str) -> Recipe {
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
        lines.lines().take(4).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let texts: String = (0..6)
        .map(|i| {
            serde_json::json!({"body": format!("A plain text number {i}.")}).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.join("text.jsonl"), texts).unwrap();
    // Facts a half-trained tiny model sometimes states ("the", a letter), so the scores differ
    // between evaluations and the choice is not trivially the first one.
    let valid: String = (0..6)
        .map(|i| {
            let facts = [["the"], ["b"], ["o"]][i % 3];
            serde_json::json!({"question": format!("code {i}, what does it mean"), "facts": facts})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("valid.jsonl"), valid).unwrap();
    let yaml = format!(
        "model:\n  path: {d}/model\n  quantize: q8_0\n\
         dataset:\n  train: {d}/train.jsonl\n  eval: {d}/eval.jsonl\n  max_seq_len: 96\n  packing: true\n\
         \x20 mix:\n    - path: {d}/text.jsonl\n      format: text\n      fields: {{text: body}}\n      weight: 0.5\n\
         \x20 replay:\n    kind: text\n    samples: 4\n    max_new_tokens: 12\n    weight: 2\n\
         lora:\n  r: 8\n  alpha: 16\n  dropout: 0.1\n\
         train:\n  max_steps: 8\n  batch_size: 2\n  lr: 5.0e-3\n  warmup_steps: 1\n  save_every: 4\n  keep_checkpoints: 3\n\
         \x20 output_dir: {d}/{out}\n  neftune_alpha: 5\n  lora_plus_ratio: 4\n\
         \x20 select:\n    task: {d}/valid.jsonl\n    every: 2\n    max_new_tokens: 12\n\
         logging:\n  tensorboard: false\n",
        d = dir.display()
    );
    Recipe::parse(&yaml, "levers.yaml", &[]).unwrap()
}

struct Outcome {
    summary: ft::train::Summary,
    /// (step, fact-match, recall) of every selection evaluation.
    scores: Vec<(usize, f64, f64)>,
    sources: Vec<ft::data::Source>,
    replay_cached: bool,
}

fn run(r: &Recipe, resume: bool, stop_after: Option<usize>) -> Outcome {
    let mut loaded = load(&r.model.path, &r.load_options().unwrap()).unwrap();
    let prepared = ft::train::prepare(r, &loaded).unwrap();
    let mut scores = Vec::new();
    let summary = ft::train::train(r, &mut loaded, &prepared, resume, false, |ev| match ev {
        ft::train::Event::Selected {
            step,
            fact_match,
            fact_recall,
            ..
        } => {
            scores.push((step, fact_match, fact_recall));
            true
        }
        ft::train::Event::Saved { step, .. } => stop_after.is_none_or(|n| step < n),
        _ => true,
    })
    .unwrap();
    Outcome {
        summary,
        scores,
        sources: prepared.sources.clone(),
        replay_cached: prepared.replay.as_ref().is_some_and(|(_, c)| *c),
    }
}

fn adapter(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let (_, t) = ft::model::peft::read(dir).unwrap();
    let mut v: Vec<_> = t
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn every_lever_runs_and_the_best_checkpoint_becomes_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    // The replay cache goes to the test's own folder.
    std::env::set_var("FT_CACHE_DIR", dir.path().join("cache"));
    let r = setup(dir.path(), "a");
    let a = run(&r, false, None);

    // Sources: the task data, half of the text source, the replay twice.
    let counts: Vec<usize> = a.sources.iter().map(|s| s.examples).collect();
    assert_eq!(counts[..2], [24, 3], "{:?}", a.sources);
    assert_eq!(a.sources.len(), 3);
    assert!(
        counts[2] > 0 && counts[2].is_multiple_of(2),
        "replay x2: {counts:?}"
    );
    assert!(!a.replay_cached, "first run generates the replay data");

    // Selection: evaluated every 2 steps; the kept step has the best (match, recall), the
    // earliest on ties; its adapter is best/ and the final adapter.
    let steps: Vec<usize> = a.scores.iter().map(|s| s.0).collect();
    assert_eq!(steps, vec![2, 4, 6, 8]);
    let best = a.summary.selected.expect("train.select reports its choice");
    let top = a
        .scores
        .iter()
        .fold(None::<(usize, f64, f64)>, |acc, &s| match acc {
            Some(b) if (b.1, b.2) >= (s.1, s.2) => Some(b),
            _ => Some(s),
        })
        .unwrap();
    assert_eq!(best.step, top.0, "{:?}", a.scores);
    let out = &r.train.output_dir;
    assert_eq!(adapter(out), adapter(&out.join("best")));
    if best.step != 8 {
        // The last step's weights (checkpoint-8) are not the adapter that was kept.
        assert_ne!(adapter(out), adapter(&out.join("checkpoint-8")));
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("select_fact_match"), "{metrics}");

    // A second run reads the replay data from the cache and trains the same adapter.
    let r2 = setup(dir.path(), "b");
    let b = run(&r2, false, None);
    assert!(b.replay_cached);
    assert_eq!(adapter(out), adapter(&r2.train.output_dir));

    // Killed after checkpoint 4, then resumed: the same adapter and the same choice.
    let r3 = setup(dir.path(), "c");
    run(&r3, false, Some(4));
    let c = run(&r3, true, None);
    assert_eq!(c.summary.selected.map(|s| s.step), Some(best.step));
    assert_eq!(adapter(out), adapter(&r3.train.output_dir));
}

#[test]
fn choosing_checkpoints_on_the_held_out_set_is_refused() {
    let yaml = "model:\n  path: m.gguf\ndataset:\n  train: t.jsonl\n\
                train:\n  select:\n    task: heldout.jsonl\n    every: 10\n\
                eval:\n  task:\n    path: heldout.jsonl\n";
    let e = Recipe::parse(yaml, "x.yaml", &[]).unwrap_err().to_string();
    assert!(e.contains("train.select.task is eval.task.path"), "{e}");
}
