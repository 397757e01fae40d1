//! Shared helpers for integration tests: where the real assets and fixtures live.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(option_env!("FT_ROOT").unwrap_or(env!("CARGO_MANIFEST_DIR")))
}

/// `../shared/fixtures/<name>` beside the repo.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let p = root().join("../shared/fixtures").join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: fixture {} not found (../shared/fixtures is not beside this checkout)",
            p.display()
        );
        None
    }
}

pub fn fixture_json(name: &str) -> Option<serde_json::Value> {
    let p = fixture(name)?;
    Some(serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
}

/// The real SmolLM2 GGUF, when `scripts/fetch-assets.sh` has run.
pub fn real_model() -> Option<PathBuf> {
    let p = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} not fetched (run scripts/fetch-assets.sh)",
            p.display()
        );
        None
    }
}

pub fn real_mmlu() -> Option<PathBuf> {
    let p = root().join("datasets/mmlu/mmlu.jsonl");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} not fetched (run scripts/fetch-assets.sh)",
            p.display()
        );
        None
    }
}

/// The `ft` binary built for this test run.
pub fn ft_bin() -> PathBuf {
    PathBuf::from(option_env!("CARGO_BIN_EXE_ft").unwrap_or("target/release/ft"))
}

/// Run `ft args`, which must succeed (else panic with its stderr); its stdout as JSON.
pub fn ft_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(ft_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ft {args:?}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// max |a − b| over all elements.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
