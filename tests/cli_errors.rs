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
fn eval_report_is_written_and_never_replaces_a_file_silently() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    ft::testing::tiny_hf_dir(&model, 1).unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "hello world, this is some text to score. ".repeat(20),
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let (m, t, rep) = (
        model.to_str().unwrap(),
        text.to_str().unwrap(),
        report.to_str().unwrap(),
    );
    let args = |extra: &[&'static str]| -> Vec<&str> {
        let base = [
            "eval",
            "-m",
            m,
            "--perplexity",
            t,
            "--ctx",
            "16",
            "--report",
            rep,
        ];
        base.iter().chain(extra).copied().collect()
    };
    let printed = common::ft_json(&args(&["--format", "json"]));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(printed, written["columns"]);
    assert!(written["columns"][0]["perplexity"]["ppl"].as_f64().unwrap() > 1.0);
    assert!(written["card"].is_null(), "one column has no card");
    // A second run refuses to replace it, before doing any work; --overwrite replaces it.
    assert_one_line_error(&args(&[]), "already exists; pass --overwrite");
    let (code, err) = ft(&args(&["--overwrite"]));
    assert_eq!(code, 0, "{err}");
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

/// A tiny model, a one-line data set and a recipe over them, with its output in `dir`.
fn tiny_recipe(dir: &std::path::Path) -> String {
    ft::testing::tiny_hf_dir(&dir.join("model"), 1).unwrap();
    let line =
        r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#;
    std::fs::write(dir.join("train.jsonl"), format!("{line}\n")).unwrap();
    let d = dir.display();
    let r = dir.join("r.yaml");
    std::fs::write(
        &r,
        format!(
            "model:\n  path: {d}/model\ndataset:\n  train: {d}/train.jsonl\n  max_seq_len: 64\n\
             train:\n  max_steps: 1\n  output_dir: {d}/out\n"
        ),
    )
    .unwrap();
    r.display().to_string()
}

#[test]
fn sizes_beyond_reason_are_refused_not_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let r = tiny_recipe(dir.path());
    let m = dir.path().join("model");
    let m = m.to_str().unwrap();
    assert_one_line_error(
        &["run", "-m", m, "--ctx", "1000000000000000", "-p", "hi"],
        "--ctx",
    );
    for (set, key) in [
        ("lora.r=1000000000000", "lora.r"),
        ("lora.r=1000", "lora.r"),
        (
            "dataset.max_seq_len=1000000000000000",
            "dataset.max_seq_len",
        ),
    ] {
        assert_one_line_error(&["train", &r, "--set", set], key);
    }
    assert_one_line_error(
        &["train", &r, "--dry-run", "--set", "lora.r=1000000000000"],
        "lora.r",
    );
}

#[test]
fn dry_run_fails_when_the_data_set_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let r = tiny_recipe(dir.path());
    let (code, _) = ft(&["train", &r, "--dry-run"]);
    assert_eq!(code, 0);
    assert_one_line_error(
        &[
            "train",
            &r,
            "--dry-run",
            "--set",
            "dataset.train=/nonexistent/x.jsonl",
        ],
        "dataset.train",
    );
}

/// Start `ft serve` with `args`; give it up to 60 s to exit on its own.
fn serve_exits(args: &[&str]) -> Option<(i32, String)> {
    let mut child = Command::new(common::ft_bin())
        .arg("serve")
        .args(args)
        .env_remove("FT_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            return Some((out.status.code().unwrap_or(-1), err));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn serve_refuses_an_empty_api_key() {
    let dir = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(dir.path(), 1).unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, err) = serve_exits(&["-m", d, "--port", "0", "--api-key", ""])
        .expect("ft serve started with an empty --api-key");
    assert_ne!(code, 0);
    assert!(
        err.contains("--api-key") && !err.contains("panicked"),
        "{err}"
    );
}

/// One HTTP/1.1 exchange with `Connection: close`: (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, out))
}

#[test]
fn serve_max_prompt_tokens_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    ft::testing::tiny_hf_dir(dir.path(), 1).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(common::ft_bin())
        .args(["serve", "-m", dir.path().to_str().unwrap()])
        .args(["--port", &port.to_string(), "--max-prompt-tokens", "30"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if http(port, "GET", "/health", "").is_ok_and(|(s, _)| s == 200) {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let chat = |text: &str| {
        let body =
            serde_json::json!({"messages": [{"role": "user", "content": text}], "max_tokens": 1});
        http(port, "POST", "/v1/chat/completions", &body.to_string()).unwrap()
    };
    let result = up.then(|| (chat("hi"), chat("a message longer than thirty tokens")));
    let _ = child.kill();
    let _ = child.wait();
    let ((ok, _), (status, body)) = result.expect("ft serve did not start");
    assert_eq!(ok, 200);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("tokens, the limit is 30"), "{body}");
}

#[test]
fn augment_never_replaces_its_input_or_an_existing_file_silently() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    let row = r#"{"messages": [{"role": "user", "content": "How long is the return window?"}, {"role": "assistant", "content": "45 days."}]}"#;
    std::fs::write(&data, format!("{row}\n")).unwrap();
    let before = std::fs::read(&data).unwrap();
    let d = data.to_str().unwrap();
    assert_one_line_error(&["augment", d, "--out", d], "input");
    assert_one_line_error(&["augment", d, "--out", d, "--overwrite"], "input");
    assert_eq!(
        std::fs::read(&data).unwrap(),
        before,
        "the input was touched"
    );
    let out = dir.path().join("aug.jsonl");
    let o = out.to_str().unwrap();
    let (code, err) = ft(&["augment", d, "--out", o]);
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(first.lines().count() >= 2, "{first}");
    assert_one_line_error(
        &["augment", d, "--out", o],
        "already exists; pass --overwrite",
    );
    let (code, err) = ft(&["augment", d, "--out", o, "--overwrite", "--seed", "1"]);
    assert_eq!(code, 0, "{err}");
}
