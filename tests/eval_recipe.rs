//! `ft eval RECIPE` evaluates exactly the model `ft train RECIPE` trained: the same device,
//! base quantization, chat template, dataset format and field names, and held-out data.
//! Checked by number through the CLI (the held-out loss `ft eval` reports for the base and
//! tuned columns equals the eval loss `ft train` measured before and after training), and in
//! the library: the plan `Recipe::eval_plan` builds carries the recipe's settings.

mod common;

use std::path::Path;

/// A custom template (not the tiny model's own ChatML) that renders growing prefixes.
const TEMPLATE: &str = "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'Q: ' + m['content'] + '\\n' }}{% else %}{{ 'A: ' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}";

/// A tiny HF base, a data set and a recipe that quantizes the base and overrides the chat
/// template; with `renamed`, the data are instruction records under non-standard field names
/// that the recipe maps, else standard chat records. Returns the recipe path.
fn setup(dir: &Path, renamed: bool) -> std::path::PathBuf {
    ft::testing::tiny_hf_dir(&dir.join("model"), 11).unwrap();
    let mut lines = String::new();
    for i in 0..20 {
        let (q, a) = (
            format!("What does light {} mean?", i % 5),
            format!("Light {} means restart step {}.", i % 5, i % 5 + 2),
        );
        let row = if renamed {
            serde_json::json!({"question": q, "reply": a})
        } else {
            serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        };
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("train.jsonl"), &lines).unwrap();
    let heldout: Vec<&str> = lines.lines().take(5).collect();
    std::fs::write(dir.join("heldout.jsonl"), heldout.join("\n")).unwrap();
    let data = if renamed {
        "  format: instruction\n  fields:\n    instruction: question\n    output: reply\n"
    } else {
        "  format: chat\n"
    };
    let yaml = format!(
        "# ft train recipes/x.yaml\nmodel:\n  path: {d}/model\n  quantize: q8_0\n  device: cpu\n  chat_template: \"{t}\"\n\
         dataset:\n  train: {d}/train.jsonl\n  eval: {d}/heldout.jsonl\n{data}  max_seq_len: 64\n\
         lora:\n  r: 4\n  alpha: 8\n  dropout: 0.0\ntrain:\n  max_steps: 3\n  batch_size: 4\n  lr: 1.0e-2\n  output_dir: {d}/out\n\
         logging:\n  tensorboard: false\n  metrics_jsonl: false\n",
        d = dir.display(),
        t = TEMPLATE.replace('\\', "\\\\").replace('"', "\\\""),
    );
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn check(renamed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let recipe = setup(dir.path(), renamed);
    let recipe = recipe.to_str().unwrap();
    let summary = common::ft_json(&["train", recipe, "--no-progress"]);
    let before = summary["eval_loss_before"].as_f64().unwrap();
    let after = summary["eval_loss_after"].as_f64().unwrap();
    let file = dir.path().join("card.json");
    let report = common::ft_json(&[
        "eval",
        recipe,
        "--format",
        "json",
        "--report",
        file.to_str().unwrap(),
    ]);
    let cols = report.as_array().unwrap();
    // The report file holds the same columns and the quality card built from them.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["columns"], report);
    let card = written["card"].as_array().unwrap();
    let held_out = card
        .iter()
        .find(|r| r["metric"] == "held-out loss")
        .unwrap();
    assert_eq!(held_out["base"], cols[0]["dataset_loss"]);
    assert_eq!(held_out["tuned"], cols[1]["dataset_loss"]);
    assert_eq!(cols.len(), 2, "{report}");
    let loss = |i: usize| {
        cols[i]["dataset_loss"]
            .as_f64()
            .unwrap_or_else(|| panic!("no held-out loss in column {i}: {report}"))
    };
    for (label, got, want) in [("base", loss(0), before), ("tuned", loss(1), after)] {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{label}: ft eval held-out loss {got} != ft train's eval loss {want}: \
             eval measured a different model or different data"
        );
    }
    assert!(
        (before - after).abs() > 1e-4,
        "training changed nothing ({before} -> {after}); the check would be vacuous"
    );
}

#[test]
fn eval_uses_the_recipes_quantization_and_template() {
    check(false);
}

#[test]
fn eval_uses_the_recipes_dataset_fields() {
    check(true);
}

#[test]
fn eval_plan_carries_the_recipes_model_template_and_data() {
    use ft::eval::EvalSettings;
    let dir = tempfile::tempdir().unwrap();
    let path = setup(dir.path(), true);
    let r = ft::recipe::Recipe::load(&path, &["model.device=auto".into()]).unwrap();
    let settings = EvalSettings::default();
    let e = r.eval_plan(&settings).unwrap_err().to_string();
    assert!(e.contains("no trained adapter"), "{e}");
    // A stand-in adapter folder: planning only checks it is there.
    std::fs::create_dir_all(&r.train.output_dir).unwrap();
    std::fs::write(r.train.output_dir.join(ft::model::peft::CONFIG_FILE), "{}").unwrap();
    let plan = r.eval_plan(&settings).unwrap();
    let trained = r.load_options().unwrap();
    assert_eq!(plan.model, r.model.path);
    assert_eq!(plan.load.quantize, trained.quantize);
    assert_eq!(
        plan.load.quantize,
        Some(candle_core::quantized::GgmlDType::Q8_0)
    );
    assert!(plan.load.device.same_device(&trained.device));
    assert_eq!(plan.load.adapters, vec![r.train.output_dir.clone()]);
    assert_eq!(plan.template, r.model.chat_template);
    assert!(matches!(
        plan.template,
        Some(ft::tokenizer::TemplateSpec::Jinja(_))
    ));
    let labels: Vec<_> = plan
        .columns
        .iter()
        .map(|c| (c.label.as_str(), c.adapter))
        .collect();
    assert_eq!(labels, [("base", None), ("tuned", Some(0))]);
    let loss = plan.loss.as_ref().expect("held-out loss planned");
    assert_eq!(loss.data, r.dataset);
    assert_eq!(loss.data.fields.output, "reply");
    assert_eq!(
        (loss.seed, loss.batch_size),
        (r.train.seed, r.train.batch_size)
    );
    assert_eq!(
        loss.examples().unwrap(),
        r.dataset.read(r.train.seed).unwrap().eval
    );
}
