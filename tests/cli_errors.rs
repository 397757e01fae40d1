//! Bad input never panics or hangs: each case exits non-zero with one line naming the problem.

mod common;

use std::process::Command;

/// Run ft, return (exit code, stderr).
fn ft(args: &[&str]) -> (i32, String) {
    let out = Command::new(common::ft_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, err) = ft(args);
    assert_ne!(code, 0, "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{args:?}: no error line in {err}"));
    assert!(
        line.contains(needle),
        "{args:?}: `{line}` should mention `{needle}`"
    );
}

#[test]
fn missing_model_file() {
    assert_one_line_error(
        &["run", "-m", "/nonexistent/model.gguf", "-p", "hi"],
        "/nonexistent/model.gguf",
    );
}

#[test]
fn not_a_gguf_and_truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a model").unwrap();
    assert_one_line_error(
        &["run", "-m", junk.to_str().unwrap(), "-p", "hi"],
        "not a GGUF file",
    );
    let Some(real) = common::real_model() else {
        return;
    };
    let bytes = std::fs::read(real).unwrap();
    for cut in [100usize, 4000, 2_000_000, bytes.len() - 10] {
        let t = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let (code, err) = ft(&["run", "-m", t.to_str().unwrap(), "-p", "hi"]);
        assert_ne!(code, 0);
        assert!(
            !err.contains("panicked") && err.contains("truncated"),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(dir.path(), 1).unwrap();
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"llama\"", "\"gpt_neox\"")
        .replace("LlamaForCausalLM", "GPTNeoXForCausalLM");
    std::fs::write(&cfg, text).unwrap();
    assert_one_line_error(
        &["run", "-m", dir.path().to_str().unwrap(), "-p", "hi"],
        "gpt_neox",
    );
}

#[test]
fn prompt_longer_than_context() {
    let dir = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(dir.path(), 1).unwrap();
    let long = "word ".repeat(200);
    assert_one_line_error(
        &[
            "run",
            "-m",
            dir.path().to_str().unwrap(),
            "--ctx",
            "64",
            "-p",
            &long,
        ],
        "exceeds the context",
    );
}

#[test]
fn bad_flags_and_recipe() {
    let dir = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(dir.path(), 1).unwrap();
    assert_one_line_error(
        &[
            "run",
            "-m",
            dir.path().to_str().unwrap(),
            "-p",
            "x",
            "--temp=-1",
        ],
        "--temp",
    );
    let r = dir.path().join("r.yaml");
    std::fs::write(
        &r,
        "model:\n  path: m.gguf\ndataset:\n  train: d.jsonl\ntrain:\n  learning_rate: 1\n",
    )
    .unwrap();
    assert_one_line_error(&["train", r.to_str().unwrap()], "did you mean `lr`");
}

#[test]
fn tiny_model_runs_and_tokenizes() {
    let dir = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(dir.path(), 1).unwrap();
    let out = Command::new(common::ft_bin())
        .args([
            "run",
            "-m",
            dir.path().to_str().unwrap(),
            "-p",
            "hello",
            "-n",
            "5",
            "--temp",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(common::ft_bin())
        .args(["tokenize", "-m", dir.path().to_str().unwrap(), "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"hi<|im_end|>")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids, vec![104, 105, 258], "bytes, then the special token");
}

#[test]
fn sampling_flags_the_sampler_cannot_take_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(dir.path(), 1).unwrap();
    let d = dir.path().to_str().unwrap();
    for (flag, value) in [
        ("--top-p", "1e-300"),
        ("--temp", "1e-310"),
        ("--repeat-penalty", "NaN"),
        ("--top-p", "NaN"),
    ] {
        let arg = format!("{flag}={value}");
        assert_one_line_error(&["run", "-m", d, "-p", "hi", "-n", "4", &arg], flag);
    }
}
