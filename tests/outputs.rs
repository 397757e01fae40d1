//! Writers never destroy what they read or what the user owns, and a writer killed at any
//! moment never leaves a partial output under the final name. Driven through the `ft`
//! binary, as a user would (see `src/output.rs` for the rules).

mod common;
#[path = "common/tiny_files.rs"]
mod tiny_files;

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tiny_files::{peft_adapter, snapshot};

/// Run ft; (exit code, stderr).
fn ft(args: &[&str]) -> (i32, String) {
    let out = Command::new(common::ft_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) {
    let (code, err) = ft(args);
    assert_eq!(code, 0, "{args:?} failed: {err}");
}

/// ft refuses with one `error:` line that mentions `needle`.
fn refused(args: &[&str], needle: &str) {
    let (code, err) = ft(args);
    assert_eq!(
        code, 1,
        "{args:?} should be refused, got exit {code}: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: `{}` lacks `{needle}`",
        lines[0]
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny HF base and a PEFT adapter for it at `runs/x`.
fn base_and_adapter(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("base");
    ft::testing::tiny_hf_dir(&base, 1).unwrap();
    let ad = peft_adapter(&dir.join("runs/x"), &ft::testing::tiny_config(), 4, 7);
    (base, ad)
}

#[test]
fn merge_never_replaces_its_adapter_its_base_or_a_user_folder() {
    let d = tempfile::tempdir().unwrap();
    let (base, ad) = base_and_adapter(d.path());
    let (ad_before, base_before) = (snapshot(&ad), snapshot(&base));
    let merge = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "merge",
            "--base",
            s(&base),
            "--adapter",
            s(&ad),
            "--out",
            s(out),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.push("--no-progress".into());
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run_refused = |out: &Path, extra: &[&str], needle: &str| {
        let args = merge(out, extra);
        refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    };
    // Defect 1: --out the adapter folder deleted the adapter (and its checkpoints).
    run_refused(&ad, &[], "is the input");
    run_refused(&ad.join("merged"), &[], "inside the input");
    run_refused(&ad.join("merged.gguf"), &[], "inside the input");
    run_refused(&base, &[], "is the input");
    run_refused(&d.path().join("runs"), &[], "holds the input");
    // A folder the user owns is never replaced, with or without --overwrite.
    let mine = d.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), b"keep me").unwrap();
    run_refused(&mine, &[], "did not create");
    assert_eq!(snapshot(&ad), ad_before, "the adapter folder changed");
    assert_eq!(snapshot(&base), base_before, "the base folder changed");
    run_refused(&mine, &["--overwrite"], "did not create");
    assert_eq!(std::fs::read(mine.join("notes.txt")).unwrap(), b"keep me");
    // ft's own output: refused without --overwrite, replaced with it.
    let out = d.path().join("merged");
    let args = merge(&out, &[]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.join(".ft-output").is_file() && out.join("model.safetensors").is_file());
    run_refused(&out, &[], "--overwrite");
    let args = merge(&out, &["--overwrite", "--dtype", "f32"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "float32");
    // An empty folder is fine to fill.
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let args = merge(&empty, &[]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(empty.join("config.json").is_file());
    assert_eq!(snapshot(&ad), ad_before);
    assert_eq!(snapshot(&base), base_before);
}

#[test]
fn export_adapter_merge_and_quantize_never_overwrite_their_input() {
    let d = tempfile::tempdir().unwrap();
    let (base, ad) = base_and_adapter(d.path());
    let q = d.path().join("q.gguf");
    ok(&[
        "quantize",
        s(&base),
        "-t",
        "q8_0",
        "-o",
        s(&q),
        "--no-progress",
    ]);
    let ad_before = snapshot(&ad);
    let q_before = std::fs::read(&q).unwrap();
    // Defect 9: the adapter's own weights file as the output.
    let weights = ad.join("adapter_model.safetensors");
    for extra in [&[][..], &["--overwrite"][..]] {
        let mut args = vec![
            "export-adapter",
            "--adapter",
            s(&ad),
            "--base",
            s(&q),
            "--out",
            s(&weights),
        ];
        args.extend_from_slice(extra);
        refused(&args, "inside the input");
    }
    assert_eq!(
        snapshot(&ad),
        ad_before,
        "export-adapter changed its adapter"
    );
    // Defect 9: a GGUF merge whose output is its base file, directly or through links.
    let link = d.path().join("link.gguf");
    std::os::unix::fs::symlink(&q, &link).unwrap();
    let hard = d.path().join("hard.gguf");
    std::fs::hard_link(&q, &hard).unwrap();
    for out in [&q, &link, &hard] {
        refused(
            &[
                "merge",
                "--base",
                s(&q),
                "--adapter",
                s(&ad),
                "--out",
                s(out),
                "-t",
                "f16",
                "--overwrite",
                "--no-progress",
            ],
            "is the input",
        );
        refused(
            &[
                "quantize",
                s(&q),
                "-t",
                "q4_0",
                "-o",
                s(out),
                "--allow-requantize",
                "--overwrite",
            ],
            "is the input",
        );
    }
    assert!(
        std::fs::read(&q).unwrap() == q_before,
        "the base GGUF changed"
    );
    // An existing file is replaced only with --overwrite.
    let other = d.path().join("other.gguf");
    std::fs::write(&other, b"user data").unwrap();
    refused(
        &["quantize", s(&base), "-t", "q8_0", "-o", s(&other)],
        "--overwrite",
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"user data");
    ok(&[
        "quantize",
        s(&base),
        "-t",
        "q8_0",
        "-o",
        s(&other),
        "--overwrite",
        "--no-progress",
    ]);
    assert!(std::fs::read(&other).unwrap() == q_before);
}

/// What a killed writer may leave under the final name: nothing (when allowed) or one of
/// the complete outputs (a file's bytes, or a folder's files).
enum Complete {
    File(Vec<Vec<u8>>),
    Dir(Vec<std::collections::BTreeMap<String, Vec<u8>>>),
}

/// Kill `args` (which writes `out`) with SIGKILL at a random moment of its run, `trials` times,
/// calling `reset` before each. After each kill `out` must hold one of the complete outputs
/// (or be absent when `may_be_absent`), and nothing else may have appeared beside it.
/// Returns how often it was (absent, the first output, a later one).
#[allow(clippy::too_many_arguments)]
fn kill_trials(
    label: &str,
    args: &[&str],
    out: &Path,
    complete: &Complete,
    may_be_absent: bool,
    reset: &dyn Fn(),
    trials: usize,
    rng: &mut rand::rngs::StdRng,
) -> [usize; 3] {
    reset();
    let t0 = Instant::now();
    ok(args);
    let full = t0.elapsed();
    let parent = out.parent().unwrap();
    let visible = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let mut seen = [0usize; 3];
    for trial in 0..trials {
        reset();
        let before = visible();
        let at = full.mul_f64(rng.random_range(0.0..1.5));
        run_killed(args, at);
        let which = if !out.exists() {
            assert!(
                may_be_absent,
                "{label} trial {trial}: {} vanished",
                out.display()
            );
            0
        } else {
            let found = match complete {
                Complete::File(v) => {
                    let got = std::fs::read(out).unwrap();
                    v.iter().position(|x| *x == got)
                }
                Complete::Dir(v) => {
                    let got = snapshot(out);
                    v.iter().position(|x| *x == got)
                }
            };
            match found {
                Some(i) => 1 + i.min(1),
                None => panic!(
                    "{label} trial {trial} (killed {at:?} into a {full:?} run): {} holds a partial output",
                    out.display()
                ),
            }
        };
        seen[which] += 1;
        let mut after = visible();
        after.retain(|n| {
            !before.contains(n) && Some(n.as_str()) != out.file_name().and_then(|f| f.to_str())
        });
        assert!(
            after.is_empty(),
            "{label} trial {trial}: stray files {after:?}"
        );
    }
    eprintln!(
        "{label}: one run {full:?}; {trials} kills -> absent {}, first output {}, new output {}",
        seen[0], seen[1], seen[2]
    );
    seen
}

/// Start `ft args` and kill it (SIGKILL) after `at`.
fn run_killed(args: &[&str], at: std::time::Duration) {
    let mut child = Command::new(common::ft_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(at);
    let _ = child.kill();
    let _ = child.wait();
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn kill_9_during_merge_or_quantize_leaves_no_partial_output() {
    let d = tempfile::tempdir().unwrap();
    // Wide enough that writing takes a visible share of the run.
    let mut cfg = ft::testing::tiny_config();
    cfg.hidden_size = 256;
    cfg.intermediate_size = 768;
    cfg.head_dim = 64;
    cfg.num_layers = 4;
    let base = d.path().join("base");
    ft::testing::write_hf_dir(&base, &cfg, &ft::testing::random_weights(&cfg, 3).unwrap()).unwrap();
    let ad = peft_adapter(&d.path().join("ad"), &cfg, 8, 4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let outs = d.path().join("outs");
    std::fs::create_dir(&outs).unwrap();

    // merge -> HF folder over an earlier ft output (f16), writing a new one (f32).
    let hf = outs.join("merged");
    let merge_hf = |dtype: &str| -> Vec<String> {
        [
            "merge",
            "--base",
            s(&base),
            "--adapter",
            s(&ad),
            "--out",
            s(&hf),
            "--dtype",
            dtype,
            "--overwrite",
            "--no-progress",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let (f16, f32) = (merge_hf("f16"), merge_hf("f32"));
    ok(&as_strs(&f32));
    let new_hf = snapshot(&hf);
    ok(&as_strs(&f16));
    let old_hf = snapshot(&hf);
    let backup = d.path().join("backup");
    copy_dir(&hf, &backup);
    let reset_hf = || {
        std::fs::remove_dir_all(&hf).unwrap();
        copy_dir(&backup, &hf);
    };
    let hf_seen = kill_trials(
        "merge -> HF folder (--overwrite)",
        &as_strs(&f32),
        &hf,
        &Complete::Dir(vec![old_hf, new_hf]),
        false,
        &reset_hf,
        20,
        &mut rng,
    );

    // merge -> GGUF, a new file each trial.
    let g = outs.join("merged.gguf");
    let args = [
        "merge",
        "--base",
        s(&base),
        "--adapter",
        s(&ad),
        "--out",
        s(&g),
        "-t",
        "q8_0",
        "--no-progress",
    ];
    std::fs::remove_file(&g).ok();
    ok(&args);
    let merged = std::fs::read(&g).unwrap();
    let gguf_seen = kill_trials(
        "merge -> GGUF (new file)",
        &args,
        &g,
        &Complete::File(vec![merged]),
        true,
        &|| {
            std::fs::remove_file(&g).ok();
        },
        20,
        &mut rng,
    );

    // quantize -> GGUF over an earlier file (--overwrite): always the old or the new file.
    let q = outs.join("q.gguf");
    ok(&[
        "quantize",
        s(&base),
        "-t",
        "q8_0",
        "-o",
        s(&q),
        "--no-progress",
    ]);
    let new_q = std::fs::read(&q).unwrap();
    std::fs::remove_file(&q).unwrap();
    ok(&[
        "quantize",
        s(&base),
        "-t",
        "q4_0",
        "-o",
        s(&q),
        "--no-progress",
    ]);
    let old_q = std::fs::read(&q).unwrap();
    let args = [
        "quantize",
        s(&base),
        "-t",
        "q8_0",
        "-o",
        s(&q),
        "--overwrite",
        "--no-progress",
    ];
    let q_seen = kill_trials(
        "quantize -> GGUF (--overwrite)",
        &args,
        &q,
        &Complete::File(vec![old_q.clone(), new_q]),
        false,
        &|| std::fs::write(&q, &old_q).unwrap(),
        20,
        &mut rng,
    );
    // Kills must have landed both before and after the final rename, or this proved nothing.
    let before = hf_seen[1] + gguf_seen[0] + q_seen[1];
    let after = hf_seen[2] + gguf_seen[2] + q_seen[2];
    assert!(
        before > 0 && after > 0,
        "kills never straddled the commit: {before} / {after}"
    );
    // Temporary siblings of killed runs are cleaned up by the next run that writes there.
    ok(&args);
    ok(&as_strs(&f32));
    let hidden: Vec<String> = std::fs::read_dir(&outs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && !n.starts_with(".merged.gguf"))
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
}

/// The adapter tensors in `dir`, by name.
fn adapter_weights(dir: &Path) -> Vec<(String, candle_core::Tensor)> {
    let path = dir.join("adapter_model.safetensors");
    let mut v: Vec<_> = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `ft train` killed at a random point, 20 times: every checkpoint folder that is visible is
/// complete, and `--resume` then ends with the adapter of an uninterrupted run.
#[test]
fn kill_9_during_training_then_resume_gives_the_uninterrupted_adapter() {
    let d = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(&d.path().join("model"), 3).unwrap();
    let mut lines = String::new();
    for i in 0..24 {
        lines.push_str(&format!(
            "{{\"messages\":[{{\"role\":\"user\",\"content\":\"what is code E{i}?\"}},{{\"role\":\"assistant\",\"content\":\"code E{i} means step {} of the reset.\"}}]}}\n",
            i % 7
        ));
    }
    std::fs::write(d.path().join("train.jsonl"), lines).unwrap();
    let recipe = |name: &str| {
        let p = d.path().join(format!("{name}.yaml"));
        let root = d.path().display();
        std::fs::write(
            &p,
            format!(
                "model:\n  path: {root}/model\ndataset:\n  train: {root}/train.jsonl\n  max_seq_len: 128\n\
                 lora:\n  r: 4\n  dropout: 0.1\ntrain:\n  max_steps: 12\n  batch_size: 2\n  lr: 1.0e-2\n\
                 \x20 save_every: 1\n  keep_checkpoints: 2\n  output_dir: {root}/{name}\n\
                 logging:\n  tensorboard: false\n"
            ),
        )
        .unwrap();
        (p.display().to_string(), d.path().join(name))
    };
    let (full_recipe, full_out) = recipe("full");
    let t0 = Instant::now();
    ok(&["train", &full_recipe, "--no-progress"]);
    let full_time = t0.elapsed();
    let want = adapter_weights(&full_out);
    let (cut_recipe, cut_out) = recipe("cut");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut resumed_from_checkpoint = 0;
    for trial in 0..20 {
        let _ = std::fs::remove_dir_all(&cut_out);
        let at = full_time.mul_f64(rng.random_range(0.05..0.9));
        run_killed(&["train", &cut_recipe, "--no-progress"], at);
        // Every visible checkpoint is complete.
        let mut checkpoints = 0;
        if let Ok(rd) = std::fs::read_dir(&cut_out) {
            for e in rd {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with("checkpoint-") {
                    continue;
                }
                checkpoints += 1;
                for f in [
                    "adapter_model.safetensors",
                    "adapter_config.json",
                    "optimizer.safetensors",
                    "trainer_state.json",
                ] {
                    assert!(
                        p.join(f).is_file(),
                        "trial {trial} (killed {at:?} into {full_time:?}): {name} lacks {f}"
                    );
                }
                let state = std::fs::read_to_string(p.join("trainer_state.json")).unwrap();
                serde_json::from_str::<serde_json::Value>(&state).unwrap_or_else(|e| {
                    panic!("trial {trial}: {name}/trainer_state.json is partial: {e}")
                });
                adapter_weights(&p);
            }
        }
        // Killed mid-run: checkpoints there, the final adapter not yet written.
        let finished = cut_out.join("adapter_model.safetensors").exists();
        resumed_from_checkpoint += usize::from(checkpoints > 0 && !finished);
        ok(&["train", &cut_recipe, "--no-progress", "--resume"]);
        let got = adapter_weights(&cut_out);
        assert_eq!(got.len(), want.len());
        for ((name, a), (_, b)) in want.iter().zip(&got) {
            let diff = common::max_abs_diff(a, b);
            assert!(
                diff <= 1e-6,
                "trial {trial} (killed {at:?} into {full_time:?}): {name} differs by {diff} after --resume"
            );
        }
    }
    eprintln!(
        "kill -9 during training: 20 kills, {resumed_from_checkpoint} killed mid-run and resumed from a checkpoint"
    );
    assert!(
        resumed_from_checkpoint >= 3,
        "too few kills landed after a checkpoint ({resumed_from_checkpoint}/20): the test would not test resume"
    );
}
