//! Helpers shared by the export tests (`tests/export_gguf.rs`, `tests/export_merge.rs`): tiny
//! models and adapters, logits of a fixed prompt, and gguf-py's independent check.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use ft::lora::{Lora, LoraConfig};
use ft::model::{load, Config, Ctx, LoadOptions, Loaded};
use ft::quant::MatmulMode;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

pub const PROMPT: [u32; 8] = [72, 101, 108, 108, 111, 258, 32, 257];

pub fn logits(l: &Loaded, slot: Option<usize>) -> Vec<f32> {
    let x = Tensor::new(&PROMPT, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let y = l
        .model
        .forward(&x, 0, None, &Ctx::infer(MatmulMode::Exact, slot))
        .unwrap();
    y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn corr(a: &[f32], b: &[f32]) -> f32 {
    let (ma, mb) = (
        a.iter().sum::<f32>() / a.len() as f32,
        b.iter().sum::<f32>() / b.len() as f32,
    );
    let cov: f32 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f32 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

pub fn open(p: &Path) -> Loaded {
    load(p, &LoadOptions::default()).unwrap()
}

/// A tiny random HF model; `wide` makes rows 256 so k-quants apply without fallback.
pub fn tiny_hf(dir: &Path, wide: bool, seed: u64) -> PathBuf {
    let mut cfg: Config = ft::testing::tiny_config();
    if wide {
        cfg.hidden_size = 256;
        cfg.intermediate_size = 512;
        cfg.head_dim = 64;
        cfg.num_layers = 3;
    }
    let p = dir.join(if wide { "wide" } else { "base" });
    ft::testing::write_hf_dir(&p, &cfg, &ft::testing::random_weights(&cfg, seed).unwrap()).unwrap();
    p
}

/// A PEFT adapter with random, non-zero A and B on every projection, saved to `dir`.
pub fn random_adapter(
    base: &Path,
    dir: &Path,
    r: usize,
    alpha: f64,
    rslora: bool,
    seed: u64,
) -> PathBuf {
    let mut l = open(base);
    let cfg = LoraConfig {
        r,
        alpha,
        dropout: 0.0,
        rslora,
        ..LoraConfig::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut rand = |rows: usize, cols: usize| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-0.3f32..0.3))
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    };
    for block in l.model.blocks.iter_mut() {
        for (_, lin) in block.linears_mut() {
            let (fin, fout) = lin.features();
            let lora = Lora {
                a: rand(r, fin),
                b: rand(fout, r),
                scale: cfg.scale(),
                dropout: 0.0,
                salt: 0,
            };
            lin.set_adapter(0, Some(lora));
        }
    }
    ft::model::peft::save(&l.model, 0, &cfg, "tiny", dir).unwrap();
    dir.to_path_buf()
}

/// `python3 scripts/check_gguf.py FILE [EXPECT]` when python3 + gguf are importable.
pub fn py_check(file: &Path, expect: Option<serde_json::Value>) {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import gguf"])
        .output();
    if !ok.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIP: python3 with the `gguf` package is not available; gguf-py check not run");
        return;
    }
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(crate::common::root().join("scripts/check_gguf.py"))
        .arg(file);
    let spec = file.with_extension("expect.json");
    if let Some(e) = expect {
        std::fs::write(&spec, e.to_string()).unwrap();
        cmd.arg(&spec);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gguf-py rejects {}:\n{text}",
        file.display()
    );
}
