//! Every shipped recipe validates; bad recipes fail with one located line that names the key.

use ft::recipe::Recipe;
use std::path::{Path, PathBuf};

fn shipped() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("recipes")
        .expect("recipes/ dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_shipped_recipe_validates_and_round_trips() {
    let files = shipped();
    assert!(
        files.len() >= 2,
        "expected the shipped recipes, found {files:?}"
    );
    for path in files {
        let r = Recipe::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with('#') && text.contains("ft train recipes/"),
            "{} must open with a comment showing the command",
            path.display()
        );
        let yaml = r.to_yaml().unwrap();
        let back = Recipe::from_str(&yaml, &path.display().to_string()).unwrap();
        assert_eq!(r, back, "{}: to_yaml does not load back", path.display());
    }
}

#[test]
fn shipped_recipe_values() {
    let r = Recipe::from_path("recipes/smollm2-support.yaml").unwrap();
    assert_eq!(
        r.model.path,
        Path::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    let mmlu = r.eval.mmlu.as_ref().unwrap();
    assert_eq!(
        mmlu.subjects,
        ["high school geography", "marketing", "us foreign policy"]
    );
    let task = r.eval.task.as_ref().unwrap();
    assert_eq!(task.path, Path::new("datasets/support/heldout.jsonl"));
    assert!(task.system.is_some());
    // The shipped levers: text replay, checkpoint selection on the validation questions.
    assert!(r.dataset.replay.is_some());
    let select = r.train.select.as_ref().unwrap();
    assert_eq!(select.task, Path::new("datasets/support/valid.jsonl"));
    let m = Recipe::from_path("recipes/mistral-support.yaml").unwrap();
    assert!(m.train.grad_checkpointing);
    assert_eq!(m.model.device, ft::recipe::DeviceSpec::Auto);
    // The 7B recipe validates without weights; only check_paths looks at the disk.
    if !m.model.path.exists() {
        let e = m.check_paths().unwrap_err().to_string();
        assert!(
            e.starts_with("model.path: `models/Mistral-7B-Instruct-v0.3` does not exist"),
            "{e}"
        );
    }
}

#[test]
fn readme_documents_every_key() {
    let readme = std::fs::read_to_string("recipes/README.md").unwrap();
    let r = Recipe::from_path("recipes/smollm2-support.yaml").unwrap();
    let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(&r.to_yaml().unwrap()).unwrap();
    fn walk(v: &serde_yaml_ng::Value, prefix: &str, out: &mut Vec<String>) {
        if let Some(m) = v.as_mapping() {
            for (k, v) in m {
                let k = k.as_str().unwrap();
                let full = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_mapping() {
                    walk(v, &full, out);
                } else {
                    out.push(full);
                }
            }
        }
    }
    let mut keys = Vec::new();
    walk(&tree, "", &mut keys);
    assert!(keys.len() > 40, "{keys:?}"); // the leaves
    for k in keys {
        let leaf = k.rsplit('.').next().unwrap();
        let sub = k.split_once('.').map(|x| x.1).unwrap_or(&k); // `mmlu.path` under `eval`
        assert!(
            readme.contains(&format!("`{leaf}`")) || readme.contains(&format!("`{sub}`")),
            "recipes/README.md does not document `{k}`"
        );
    }
}

const BASE: &str = "model:\n  path: m.gguf\ndataset:\n  train: d.jsonl\n";

/// (name, recipe text, --set flags, substrings the one-line error must contain)
#[rustfmt::skip]
fn bad_cases() -> Vec<(&'static str, String, Vec<&'static str>, Vec<&'static str>)> {
    let with = |extra: &str| format!("{BASE}{extra}");
    vec![
        ("unknown key, alias", with("train:\n  learning_rate: 1e-3\n"), vec![],
            vec!["bad.yaml:6:3: ", "unknown key `train.learning_rate`; did you mean `lr`?"]),
        ("unknown key, typo", with("lora:\n  r: 8\n  aplha: 16\n"), vec![],
            vec!["bad.yaml:7:3: ", "unknown key `lora.aplha`; did you mean `alpha`?"]),
        ("unknown key, no near miss", with("lora:\n  zzzzzz: 1\n"), vec![],
            vec!["bad.yaml:6:3: ", "unknown key `lora.zzzzzz`", "valid keys: r, alpha, dropout"]),
        ("unknown section", with("trian:\n  lr: 1\n"), vec![],
            vec!["bad.yaml:5:1: ", "unknown key `trian`; did you mean `train`?"]),
        ("wrong type", with("train:\n  batch_size: four\n"), vec![],
            vec!["bad.yaml:6:", "train.batch_size: invalid type: string \"four\", expected a whole number"]),
        ("r = 0", with("lora:\n  r: 0\n"), vec![],
            vec!["bad.yaml:6:3: ", "lora.r must be > 0 (got 0)"]),
        ("dropout 1.5", with("lora:\n  dropout: 1.5\n"), vec![],
            vec!["bad.yaml:6:3: ", "lora.dropout must be in [0, 1) (got 1.5)"]),
        ("negative lr", with("train:\n  lr: -1e-4\n"), vec![],
            vec!["bad.yaml:6:3: ", "train.lr must be > 0 (got -0.0001)"]),
        ("eval and eval_split", "model:\n  path: m\ndataset:\n  train: d\n  eval: e\n  eval_split: 0.1\n".into(), vec![],
            vec!["bad.yaml:6:3: ", "dataset.eval or dataset.eval_split, not both"]),
        ("eval_split out of range", with("").replace("train: d.jsonl\n", "train: d.jsonl\n  eval_split: 1.0\n"), vec![],
            vec!["bad.yaml:5:3: ", "dataset.eval_split must be in (0, 1) (got 1)"]),
        ("unknown target module", with("lora:\n  target_modules: [q_proj, qkv_proj]\n"), vec![],
            vec!["bad.yaml:6:", "lora.target_modules", "unknown target module `qkv_proj`"]),
        ("unknown scheduler", with("train:\n  scheduler: cosin\n"), vec![],
            vec!["bad.yaml:6:", "train.scheduler", "did you mean `cosine`?"]),
        ("unknown device", with("").replace("path: m.gguf\n", "path: m.gguf\n  device: gpu:0\n"), vec![],
            vec!["bad.yaml:3:", "model.device", "unknown device `gpu:0`"]),
        ("missing model.path", "model:\n  device: cpu\ndataset:\n  train: d\n".into(), vec![],
            vec!["bad.yaml:1:1: ", "missing required key `model.path`"]),
        ("missing dataset.train", "model:\n  path: m\ndataset:\n  format: chat\n".into(), vec![],
            vec!["bad.yaml:3:1: ", "missing required key `dataset.train`"]),
        ("missing dataset section", "model:\n  path: m\n".into(), vec![],
            vec!["bad.yaml:1:1: ", "missing required key `dataset.train`"]),
        ("warmup both", with("train:\n  warmup_steps: 10\n  warmup_ratio: 0.1\n"), vec![],
            vec!["bad.yaml:7:3: ", "train.warmup_steps or train.warmup_ratio, not both"]),
        ("epochs 0 without max_steps", with("train:\n  epochs: 0\n"), vec![],
            vec!["bad.yaml:6:3: ", "train.epochs must be >= 1 unless train.max_steps is set"]),
        ("max_seq_len tiny", with("").replace("train: d.jsonl\n", "train: d.jsonl\n  max_seq_len: 4\n"), vec![],
            vec!["bad.yaml:5:3: ", "dataset.max_seq_len must be >= 8 (got 4)"]),
        ("eval_every without eval data", with("train:\n  eval_every: 10\n"), vec![],
            vec!["bad.yaml:6:3: ", "train.eval_every needs eval data"]),
        ("unknown mmlu subject", with("eval:\n  mmlu:\n    subjects: high school geograpy\n"), vec![],
            vec!["bad.yaml:7:5: ", "eval.mmlu.subjects: unknown subject", "did you mean `high school geography`?"]),
        ("bad --set key", BASE.into(), vec!["train.learning_rate=1e-3"],
            vec!["--set train.learning_rate=1e-3: ", "unknown key `train.learning_rate`; did you mean `lr`?"]),
        ("bad --set value type", BASE.into(), vec!["lora.r=abc"],
            vec!["--set lora.r=abc: ", "lora.r: invalid type: string \"abc\""]),
        ("bad --set value range", BASE.into(), vec!["lora.dropout=1.5"],
            vec!["--set lora.dropout=1.5: ", "lora.dropout must be in [0, 1) (got 1.5)"]),
        ("--set without =", BASE.into(), vec!["lora.r"],
            vec!["--set lora.r: expected key.path=value"]),
        ("file error found with --set present", with("lora:\n  r: zero\n"), vec!["train.lr=1e-3"],
            vec!["bad.yaml:6:3: ", "lora.r: invalid type"]),
        ("invalid YAML", "model:\n  path: [m\n".into(), vec![],
            vec!["bad.yaml:", "invalid YAML"]),
    ]
}

#[test]
fn bad_recipes_fail_with_located_messages() {
    let cases = bad_cases();
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (name, text, sets, want) in cases {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        match Recipe::parse(&text, "recipes/bad.yaml", &sets) {
            Ok(_) => failures.push(format!("{name}: accepted\n{text}")),
            Err(e) => {
                let msg = e.to_string();
                if msg.contains('\n') {
                    failures.push(format!("{name}: not one line: {msg}"));
                }
                for w in want {
                    if !msg.contains(w) {
                        failures.push(format!("{name}: `{msg}` lacks `{w}`"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn load_reads_the_file_and_applies_sets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.yaml");
    std::fs::write(&path, format!("{BASE}lora:\n  r: 0\n")).unwrap();
    let e = Recipe::from_path(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:6:3: lora.r", path.display())),
        "{e}"
    );
    let r = Recipe::load(&path, &["lora.r=8".into(), "train.output_dir=out".into()]).unwrap();
    assert_eq!(r.lora.r, 8);
    assert_eq!(r.logging.tensorboard.as_deref(), Some(Path::new("out/tb")));
    let r = Recipe::load(&path, &["lora.r=8".into()]).unwrap();
    assert_eq!(
        r.train.output_dir,
        Path::new("runs/demo"),
        "default output_dir from the file name"
    );
    let e = Recipe::from_path(dir.path().join("nope.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.yaml"), "{e}");
}

#[test]
fn check_paths_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"x").unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("b.jsonl"), "{}\n").unwrap();
    std::fs::write(data.join("a.jsonl"), "{}\n").unwrap();
    let text = format!(
        "model:\n  path: {}\ndataset:\n  train: '{}/*.jsonl'\n",
        model.display(),
        data.display()
    );
    let r = Recipe::from_str(&text, "x.yaml").unwrap();
    r.check_paths().unwrap();
    let files = r.dataset.train.resolve("dataset.train").unwrap();
    assert_eq!(
        files,
        vec![data.join("a.jsonl"), data.join("b.jsonl")],
        "globs sorted"
    );
    let glob = format!("{}/*.parquet", data.display());
    let r = Recipe::parse(&text, "x.yaml", &[format!("dataset.train={glob}")]).unwrap();
    let e = r.check_paths().unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("dataset.train: no file matches `{glob}`")),
        "{e}"
    );
}

/// Evaluation files never feed training: the general text, the held-out task and the
/// validation questions may not also be a training source.
#[test]
fn training_on_evaluation_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"x").unwrap();
    for f in ["train.jsonl", "heldout.jsonl", "valid.jsonl", "text.txt"] {
        std::fs::write(dir.path().join(f), "{}\n").unwrap();
    }
    let d = dir.path().display();
    let text = format!(
        "model:\n  path: {}\ndataset:\n  train: {d}/train.jsonl\n\
         train:\n  select:\n    task: {d}/valid.jsonl\n    every: 5\n\
         eval:\n  perplexity: {d}/text.txt\n  task:\n    path: {d}/heldout.jsonl\n",
        model.display()
    );
    Recipe::from_str(&text, "x.yaml")
        .unwrap()
        .check_paths()
        .unwrap();
    for (set, key) in [
        (
            format!("dataset.train=[{d}/train.jsonl,{d}/heldout.jsonl]"),
            "eval.task.path",
        ),
        (
            format!("dataset.mix=[{{path: {d}/text.txt, format: text}}]"),
            "eval.perplexity",
        ),
        (
            format!("dataset.train={d}/valid.jsonl"),
            "train.select.task",
        ),
    ] {
        let r = Recipe::parse(&text, "x.yaml", std::slice::from_ref(&set)).unwrap();
        let e = r.check_paths().unwrap_err().to_string();
        assert!(
            e.contains(key) && e.contains("must stay unseen"),
            "{set}: {e}"
        );
    }
}
