use super::*;

const MIN: &str = "model:\n  path: m.gguf\ndataset:\n  train: d.jsonl\n";

fn err(text: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    match Recipe::parse(text, "r/x.yaml", &sets) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults() {
    let r = Recipe::from_str(MIN, "recipes/demo.yaml").unwrap();
    assert_eq!(r.model.quantize, BaseQuant::Q4_0);
    assert_eq!(r.model.device, DeviceSpec::Cpu);
    assert_eq!(r.model.chat_template, None);
    assert_eq!(r.dataset.train, Paths(vec!["d.jsonl".into()]));
    assert_eq!(r.dataset.format, Format::Chat);
    assert_eq!(r.dataset.max_seq_len, 512);
    assert_eq!(r.dataset.fields.messages, "messages");
    assert_eq!((r.lora.r, r.lora.alpha, r.lora.dropout), (16, 32.0, 0.05));
    assert_eq!(r.lora.target_modules, TargetModules::AllLinear);
    assert_eq!(r.lora.scale(), 2.0);
    assert_eq!(r.train.lr, 2e-4);
    assert_eq!(r.train.scheduler, Scheduler::Cosine);
    assert_eq!(
        (r.train.batch_size, r.train.grad_accum, r.train.epochs),
        (4, 1, 1)
    );
    assert_eq!(r.train.output_dir, PathBuf::from("runs/demo"));
    assert_eq!(r.logging.tensorboard, Some(PathBuf::from("runs/demo/tb")));
    assert_eq!(
        r.logging.metrics_jsonl,
        Some(PathBuf::from("runs/demo/metrics.jsonl"))
    );
    assert_eq!(r.eval, EvalConfig::default());
}

#[test]
fn values_and_sections() {
    let text = "model:\n  path: m\n  device: cuda:1\n  chat_template: chatml\n  quantize: none\n\
        dataset:\n  train: [a.jsonl, 'b/*.jsonl']\n  eval_split: 0.1\n\
        lora:\n  target_modules: [q_proj, v_proj]\n  rslora: true\n  r: 4\n  alpha: 8\n\
        train:\n  output_dir: out\nlogging:\n  tensorboard: false\n\
        eval:\n  mmlu:\n  task:\n    path: h.jsonl\n";
    let r = Recipe::from_str(text, "x.yaml").unwrap();
    assert_eq!(r.model.device, DeviceSpec::Cuda(1));
    assert_eq!(r.model.chat_template, Some(TemplateSpec::Chatml));
    assert_eq!(r.model.quantize, BaseQuant::Keep);
    assert_eq!(r.dataset.train.0.len(), 2);
    assert_eq!(
        r.lora.target_modules.modules(),
        vec![TargetModule::QProj, TargetModule::VProj]
    );
    assert!(r.lora.target_modules.contains("v_proj") && !r.lora.target_modules.contains("o_proj"));
    assert_eq!(r.lora.scale(), 4.0, "rslora: 8/sqrt(4)");
    assert_eq!(r.logging.tensorboard, None);
    assert_eq!(
        r.logging.metrics_jsonl,
        Some(PathBuf::from("out/metrics.jsonl"))
    );
    assert_eq!(
        r.eval.mmlu,
        Some(MmluConfig::default()),
        "empty `mmlu:` runs with defaults"
    );
    assert_eq!(r.eval.task.as_ref().map(|t| t.max_new_tokens), Some(128));
}

#[test]
fn jinja_template_and_csv_subjects() {
    let text = format!(
        "{MIN}model:\n  path: m\n  chat_template: \"{{% for m in messages %}}{{{{ m.content }}}}{{% endfor %}}\"\n"
    )
    .replacen("model:\n  path: m.gguf\n", "", 1);
    let r = Recipe::from_str(&text, "x").unwrap();
    assert!(matches!(
        r.model.chat_template,
        Some(TemplateSpec::Jinja(_))
    ));
    let text = format!("{MIN}eval:\n  mmlu:\n    subjects: high school geography, marketing\n");
    let r = Recipe::from_str(&text, "x").unwrap();
    assert_eq!(
        r.eval.mmlu.unwrap().subjects,
        vec!["high school geography", "marketing"]
    );
}

#[test]
fn overrides_beat_yaml() {
    let text = format!("{MIN}lora:\n  r: 8\ntrain:\n  lr: 1e-3\n");
    let sets = [
        "lora.r=32".to_string(),
        "train.max_steps=10".into(),
        "model.device=auto".into(),
    ];
    let r = Recipe::parse(&text, "x.yaml", &sets).unwrap();
    assert_eq!(r.lora.r, 32);
    assert_eq!(r.train.lr, 1e-3, "YAML kept where not overridden");
    assert_eq!(r.train.max_steps, Some(10));
    assert_eq!(r.model.device, DeviceSpec::Auto);
    let r = Recipe::parse(&text, "x.yaml", &["lora.target_modules=[q_proj]".into()]).unwrap();
    assert_eq!(
        r.lora.target_modules,
        TargetModules::List(vec![TargetModule::QProj])
    );
    // A --set can supply a required key the file lacks.
    let r = Recipe::parse("dataset:\n  train: d\n", "x", &["model.path=m.gguf".into()]).unwrap();
    assert_eq!(r.model.path, PathBuf::from("m.gguf"));
}

#[test]
fn errors_are_located() {
    let e = err(&format!("{MIN}lora:\n  r: 0\n"), &[]);
    assert_eq!(e, "r/x.yaml:6:3: lora.r must be > 0 (got 0)");
    let e = err(
        &format!("{MIN}train:\n  batch_size: 4\n  learning_rate: 1\n"),
        &[],
    );
    assert_eq!(
        e,
        "r/x.yaml:7:3: unknown key `train.learning_rate`; did you mean `lr`?"
    );
    let e = err(&format!("{MIN}lora:\n  r: abc\n"), &[]);
    assert!(
        e.starts_with("r/x.yaml:6:") && e.contains("lora.r: invalid type: string \"abc\""),
        "{e}"
    );
    let e = err("dataset:\n  train: d\n", &[]);
    assert!(
        e.starts_with("r/x.yaml:1:1: missing required key `model.path`"),
        "{e}"
    );
    let e = err("model:\n  device: cpu\ndataset:\n  train: d\n", &[]);
    assert!(
        e.starts_with("r/x.yaml:1:1: missing required key `model.path`"),
        "{e}"
    );
    let e = err(&format!("{MIN}train:\n  scheduler: cosin\n"), &[]);
    assert!(
        e.starts_with("r/x.yaml:6:") && e.contains("did you mean `cosine`?"),
        "{e}"
    );
    let e = err(MIN, &["lora.r=0"]);
    assert_eq!(e, "--set lora.r=0: lora.r must be > 0 (got 0)");
    let e = err(MIN, &["lora.r=abc"]);
    assert!(
        e.starts_with("--set lora.r=abc: lora.r: invalid type"),
        "{e}"
    );
    let e = err(MIN, &["train.learning_rate=1"]);
    assert!(
        e.contains("unknown key `train.learning_rate`; did you mean `lr`?"),
        "{e}"
    );
    let e = err(&format!("{MIN}train:\n  epochs: 0\n"), &["lora.r=4"]);
    assert_eq!(
        e,
        "r/x.yaml:6:3: train.epochs must be >= 1 unless train.max_steps is set (got 0)"
    );
    let e = err("model: [\n", &[]);
    assert!(
        e.starts_with("r/x.yaml:2:") && e.contains("invalid YAML"),
        "{e}"
    );
}

#[test]
fn to_yaml_round_trips() {
    let text = format!("{MIN}eval:\n  mmlu:\n    subjects: [marketing]\n  task:\n    path: h.jsonl\nlogging:\n  tensorboard: false\n");
    let r = Recipe::from_str(&text, "recipes/a.yaml").unwrap();
    let yaml = r.to_yaml().unwrap();
    let back = Recipe::from_str(&yaml, "other.yaml").unwrap();
    assert_eq!(r, back, "{yaml}");
}

#[test]
fn schema_matches_structs() {
    let mut r = Recipe::from_str(MIN, "x").unwrap();
    r.dataset.eval = Some(Paths(vec!["e".into()]));
    r.eval.mmlu = Some(MmluConfig::default());
    r.eval.task = Some(TaskConfig {
        path: "t".into(),
        max_new_tokens: 1,
        system: None,
    });
    r.dataset.replay = Some(crate::data::replay::ReplaySpec::default());
    r.train.select = Some(crate::eval::SelectConfig {
        task: "v".into(),
        every: 1,
        max_new_tokens: 1,
        patience: 0,
    });
    let tree = serde_yaml_ng::to_value(&r).unwrap();
    for (section, keys) in schema::SECTIONS {
        let mut node = &tree;
        for part in section.split('.').filter(|p| !p.is_empty()) {
            node = &node[part];
        }
        let got: Vec<String> = node
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, keys.to_vec(), "section `{section}`");
    }
}

#[test]
fn step_arithmetic() {
    let mut t = TrainSpec {
        batch_size: 4,
        grad_accum: 2,
        epochs: 3,
        ..TrainSpec::default()
    };
    assert_eq!(t.total_steps(17), 3 * 3, "ceil(ceil(17/4)/2) = 3 per epoch");
    t.warmup_ratio = 0.1;
    assert_eq!(t.warmup_for(95), 10);
    t.max_steps = Some(7);
    assert_eq!(t.total_steps(1000), 7);
}
