//! Export path: GGUF write -> read round trips per type, merge == base + adapter, exported GGUF
//! models read back through ft's own loader with the same logits, adapter GGUF layout, the
//! quantization mixes on the real SmolLM2 file, and gguf-py's independent reading of it all.

mod common;

// The CLI files (wired into `ft` by src/cli/mod.rs) compiled and driven here directly.
#[allow(dead_code)]
#[path = "../src/cli"]
mod cli {
    pub mod export_adapter;
    pub mod merge;
    pub mod quantize;
}

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use ft::export::{self, GgufOptions, MergeOptions, MergeOutput};
use ft::gguf::write::{write, TensorOut};
use ft::gguf::GgufFile;
use ft::lora::{Lora, LoraConfig};
use ft::model::{load, Config, Ctx, LoadOptions, Loaded};
use ft::quant::types::FileType;
use ft::quant::MatmulMode;
use rand::{Rng, SeedableRng};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

const PROMPT: [u32; 8] = [72, 101, 108, 108, 111, 258, 32, 257];

fn logits(l: &Loaded, slot: Option<usize>) -> Vec<f32> {
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

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn corr(a: &[f32], b: &[f32]) -> f32 {
    let (ma, mb) = (
        a.iter().sum::<f32>() / a.len() as f32,
        b.iter().sum::<f32>() / b.len() as f32,
    );
    let cov: f32 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f32 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn open(p: &Path) -> Loaded {
    load(p, &LoadOptions::default()).unwrap()
}

/// A tiny random HF model; `wide` makes rows 256 so k-quants apply without fallback.
fn tiny_hf(dir: &Path, wide: bool, seed: u64) -> PathBuf {
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
fn random_adapter(
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
fn py_check(file: &Path, expect: Option<serde_json::Value>) {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import gguf"])
        .output();
    if !ok.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIP: python3 with the `gguf` package is not available; gguf-py check not run");
        return;
    }
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(common::root().join("scripts/check_gguf.py"))
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

#[test]
fn every_type_round_trips_within_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let v: Vec<f32> = (0..16 * 512)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let src = Tensor::from_vec(v.clone(), (16, 512), &Device::Cpu).unwrap();
    let rms = |a: &[f32]| (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
    // Relative RMS error bounds: a few times what each type gives on uniform data.
    let cases = [
        (GgmlDType::F32, 0.0),
        (GgmlDType::F16, 1e-3),
        (GgmlDType::BF16, 5e-3),
        (GgmlDType::Q8_0, 0.01),
        (GgmlDType::Q6K, 0.02),
        (GgmlDType::Q5_0, 0.05),
        (GgmlDType::Q5_1, 0.05),
        (GgmlDType::Q5K, 0.05),
        (GgmlDType::Q4_0, 0.1),
        (GgmlDType::Q4_1, 0.1),
        (GgmlDType::Q4K, 0.1),
        (GgmlDType::Q3K, 0.2),
        (GgmlDType::Q2K, 0.4),
    ];
    let mut tensors = Vec::new();
    for (dt, _) in cases {
        let bytes = export::quantize_bytes(&src, dt).unwrap();
        tensors.push(TensorOut {
            name: format!("w.{}", ft::gguf::dtype_name(dt)),
            shape: vec![16, 512],
            dtype: dt,
            data: Cow::Owned(bytes),
        });
    }
    let path = dir.path().join("types.gguf");
    write(
        &path,
        &[(
            "general.architecture".into(),
            ft::gguf::Value::String("llama".into()),
        )],
        &tensors,
    )
    .unwrap();
    let f = GgufFile::open(&path).unwrap();
    for ((dt, bound), t) in cases.iter().zip(&tensors) {
        let info = f.tensor_info(&t.name).unwrap();
        assert_eq!(info.dtype, *dt);
        assert_eq!(info.ggml_dims, vec![512, 16]);
        assert!(
            f.tensor_bytes(info) == t.data.as_ref(),
            "{} bytes differ",
            t.name
        );
        let back = f
            .qtensor(&t.name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let back = back.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let err: Vec<f32> = back.iter().zip(&v).map(|(a, b)| a - b).collect();
        let rel = rms(&err) / rms(&v);
        assert!(
            rel <= *bound,
            "{}: relative RMS error {rel} > {bound}",
            t.name
        );
        if *dt != GgmlDType::F32 {
            assert!(rel > 0.0, "{}: lossy type came back exact", t.name);
        }
    }
    py_check(
        &path,
        Some(
            serde_json::json!({"tensor_count": cases.len(), "tensors": {"w.Q4_K": {"shape": [512, 16], "type": "Q4_K"}}}),
        ),
    );
}

#[test]
fn gguf_export_reads_back_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_hf(dir.path(), false, 1);
    let src = open(&base);
    let want = logits(&src, None);
    for (ft_, tol) in [
        (FileType::F32, 1e-5),
        (FileType::F16, 0.05),
        (FileType::Q8_0, 0.15),
    ] {
        let out = dir.path().join(format!("tiny-{ft_}.gguf"));
        let opts = GgufOptions {
            file_type: ft_,
            ..GgufOptions::default()
        };
        let r = export::write_model(&out, &src, &opts, &mut export::no_progress).unwrap();
        let back = open(&out);
        let d = max_diff(&logits(&back, None), &want);
        assert!(d <= tol, "{ft_}: logits differ by {d}");
        let mut cfg = back.model.config.clone();
        assert!(
            (cfg.rms_norm_eps - src.model.config.rms_norm_eps).abs() < 1e-9,
            "{ft_}: eps"
        );
        cfg.rms_norm_eps = src.model.config.rms_norm_eps;
        assert_eq!(cfg, src.model.config, "{ft_}: config");
        assert_eq!(r.tensors, 2 + 2 * 9 + 1);
        // The tokenizer and template survive, and the end-of-turn token is the EOS.
        let text = "<|im_start|>user\nHi 42<|im_end|>";
        assert_eq!(
            back.tokenizer.encode(text, true).unwrap(),
            src.tokenizer.encode(text, true).unwrap()
        );
        assert_eq!(back.tokenizer.eos, back.tokenizer.token_to_id("<|im_end|>"));
        assert_eq!(
            back.template.as_ref().unwrap().source,
            src.template.as_ref().unwrap().source
        );
    }
    let f = GgufFile::open(dir.path().join("tiny-F16.gguf")).unwrap();
    assert_eq!(f.get_u64("general.file_type"), Some(1));
    assert_eq!(f.get_u64("llama.rope.dimension_count"), Some(16));
    assert_eq!(f.get_u64("tokenizer.ggml.eot_token_id"), Some(258));
    assert_eq!(
        f.tensor_info("blk.0.attn_norm.weight").unwrap().dtype,
        GgmlDType::F32
    );
    py_check(
        &dir.path().join("tiny-Q8_0.gguf"),
        Some(serde_json::json!({
            "metadata": {"general.architecture": "llama", "general.file_type": 7, "llama.block_count": 2,
                         "llama.attention.head_count_kv": 2, "tokenizer.ggml.eos_token_id": 258},
            "tensor_count": 21,
            "tensors": {"blk.1.attn_k.weight": {"shape": [64, 32], "type": "Q8_0"},
                        "output.weight": {"shape": [64, 259], "type": "Q8_0"},
                        "output_norm.weight": {"shape": [64], "type": "F32"}},
            // gguf-py's own Q8_0 decoder against the F32 file: same values, same q/k row order.
            "compare": {"path": dir.path().join("tiny-F32.gguf"), "max_rel_rms": {"Q8_0": 0.01, "F32": 0.0}}
        })),
    );
}

#[test]
fn k_quant_mixes_choose_types_and_count_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let wide = open(&tiny_hf(dir.path(), true, 2));
    let out = dir.path().join("wide-q4km.gguf");
    let opts = GgufOptions {
        file_type: FileType::Q4_K_M,
        ..GgufOptions::default()
    };
    let r = export::write_model(&out, &wide, &opts, &mut export::no_progress).unwrap();
    // 256-wide rows fit k-quants: no fallback; of 3 layers use_more_bits picks the last.
    assert!(r.fallbacks.is_empty(), "{:?}", r.fallbacks);
    let f = GgufFile::open(&out).unwrap();
    let ty = |n: &str| f.tensor_info(n).unwrap().dtype;
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlDType::Q4K);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlDType::Q4K);
    assert_eq!(ty("blk.2.attn_v.weight"), GgmlDType::Q6K);
    assert_eq!(ty("blk.2.ffn_down.weight"), GgmlDType::Q6K);
    assert_eq!(ty("output.weight"), GgmlDType::Q6K);
    assert_eq!(ty("token_embd.weight"), GgmlDType::Q4K);
    let back = open(&out);
    let (a, b) = (logits(&wide, None), logits(&back, None));
    let c = corr(&a, &b);
    // Random weights amplify rounding: Q4 gives ~0.97 here, Q6_K ~0.998, Q8_0 ~0.9999.
    let o = dir.path().join("wide-q6k.gguf");
    export::write_model(
        &o,
        &wide,
        &GgufOptions {
            file_type: FileType::Q6_K,
            ..GgufOptions::default()
        },
        &mut export::no_progress,
    )
    .unwrap();
    let c6 = corr(&a, &logits(&open(&o), None));
    assert!(c6 > 0.99, "Q6_K logits correlate only {c6}");
    assert!(c > 0.95, "Q4_K_M logits correlate only {c}");
    // 64-wide rows do not fit 256: every matrix falls back, as llama.cpp does.
    let tiny = open(&tiny_hf(dir.path(), false, 1));
    let out = dir.path().join("tiny-q4km.gguf");
    let r = export::write_model(&out, &tiny, &opts, &mut export::no_progress).unwrap();
    let f = GgufFile::open(&out).unwrap();
    // q/k/v/o/gate/up (64 wide) and token_embd fall back; down (128 wide) too; output -> Q8_0 directly.
    assert_eq!(r.fallbacks.len(), 2 * 7 + 1, "{:?}", r.fallbacks);
    assert_eq!(
        f.tensor_info("blk.0.attn_q.weight").unwrap().dtype,
        GgmlDType::Q5_0
    );
    assert_eq!(
        f.tensor_info("blk.0.attn_v.weight").unwrap().dtype,
        GgmlDType::Q5_0
    );
    assert_eq!(
        f.tensor_info("blk.1.attn_v.weight").unwrap().dtype,
        GgmlDType::Q8_0
    );
    assert_eq!(
        f.tensor_info("output.weight").unwrap().dtype,
        GgmlDType::Q8_0
    );
    py_check(&out, None);
}

#[test]
fn merged_model_matches_base_plus_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_hf(dir.path(), false, 1);
    let a1 = random_adapter(&base, &dir.path().join("a1"), 4, 8.0, false, 11);
    let a2 = random_adapter(&base, &dir.path().join("a2"), 2, 4.0, true, 12);
    let with = load(
        &base,
        &LoadOptions {
            adapters: vec![a1.clone()],
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let want = logits(&with, Some(0));
    assert!(
        max_diff(&want, &logits(&with, None)) > 0.1,
        "the adapter changes nothing: the test could not fail"
    );
    // HF folder, f32, split into shards.
    let hf_out = dir.path().join("merged-hf");
    let opts = MergeOptions {
        adapters: vec![a1.clone()],
        weights: vec![],
        output: MergeOutput::Hf {
            dtype: candle_core::DType::F32,
            shard_bytes: 60_000,
        },
    };
    let r = export::merge(&base, &hf_out, &opts, &mut export::no_progress).unwrap();
    assert_eq!(r.layers_merged, 14);
    assert!(!r.dequantized_base);
    let hf = r.hf.unwrap();
    assert!(
        hf.files.iter().any(|f| f == "model.safetensors.index.json"),
        "{:?}",
        hf.files
    );
    assert_eq!(hf.eos_token_ids[0], 258);
    let merged = open(&hf_out);
    let d = max_diff(&logits(&merged, None), &want);
    assert!(d < 1e-4, "merged HF logits differ by {d}");
    let tc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(hf_out.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert!(tc["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(merged.tokenizer.eos, Some(258));
    // Straight to GGUF, f32.
    let g_out = dir.path().join("merged.gguf");
    let opts = MergeOptions {
        output: MergeOutput::Gguf {
            file_type: FileType::F32,
            allow_requantize: false,
        },
        ..opts
    };
    export::merge(&base, &g_out, &opts, &mut export::no_progress).unwrap();
    let d = max_diff(&logits(&open(&g_out), None), &want);
    assert!(d < 1e-4, "merged GGUF logits differ by {d}");
    // Two adapters with weights == one adapter holding both, each scaled by its weight.
    let both = load(
        &base,
        &LoadOptions {
            adapters: vec![a1.clone(), a2.clone()],
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let mut combined = both.model.clone();
    for block in combined.blocks.iter_mut() {
        for (_, lin) in block.linears_mut() {
            let (l1, l2) = (
                lin.adapter(0).unwrap().clone(),
                lin.adapter(1).unwrap().clone(),
            );
            let a = Tensor::cat(&[&l1.a, &l2.a], 0).unwrap();
            let b = Tensor::cat(
                &[
                    &(&l1.b * (0.7 * l1.scale)).unwrap(),
                    &(&l2.b * (0.3 * l2.scale)).unwrap(),
                ],
                1,
            )
            .unwrap();
            lin.set_adapter(
                2,
                Some(Lora {
                    a,
                    b,
                    scale: 1.0,
                    dropout: 0.0,
                    salt: 0,
                }),
            );
        }
    }
    let want2 = logits(
        &Loaded {
            model: combined,
            ..both
        },
        Some(2),
    );
    let w_out = dir.path().join("weighted");
    let opts = MergeOptions {
        adapters: vec![a1, a2],
        weights: vec![0.7, 0.3],
        output: MergeOutput::Hf {
            dtype: candle_core::DType::F32,
            shard_bytes: u64::MAX,
        },
    };
    export::merge(&base, &w_out, &opts, &mut export::no_progress).unwrap();
    assert!(w_out.join("model.safetensors").exists());
    let d = max_diff(&logits(&open(&w_out), None), &want2);
    assert!(d < 1e-4, "weighted merge logits differ by {d}");
}

#[test]
fn merging_into_a_quantized_base_uses_its_dequantized_weights() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_hf(dir.path(), false, 1);
    let q8 = dir.path().join("base-q8.gguf");
    let opts = GgufOptions {
        file_type: FileType::Q8_0,
        ..GgufOptions::default()
    };
    export::write_model(&q8, &open(&base), &opts, &mut export::no_progress).unwrap();
    let a1 = random_adapter(&base, &dir.path().join("a1"), 4, 8.0, false, 11);
    let want = logits(
        &load(
            &q8,
            &LoadOptions {
                adapters: vec![a1.clone()],
                ..LoadOptions::default()
            },
        )
        .unwrap(),
        Some(0),
    );
    let out = dir.path().join("merged-from-q8");
    let opts = MergeOptions {
        adapters: vec![a1.clone()],
        weights: vec![],
        output: MergeOutput::Hf {
            dtype: candle_core::DType::F32,
            shard_bytes: u64::MAX,
        },
    };
    let r = export::merge(&q8, &out, &opts, &mut export::no_progress).unwrap();
    assert!(r.dequantized_base);
    let d = max_diff(&logits(&open(&out), None), &want);
    assert!(d < 1e-4, "logits differ by {d}");
    // Re-quantizing the untouched Q8_0 embedding into another quantized type needs the flag.
    let opts = MergeOptions {
        output: MergeOutput::Gguf {
            file_type: FileType::Q4_0,
            allow_requantize: false,
        },
        ..opts
    };
    let e = export::merge(
        &q8,
        &dir.path().join("x.gguf"),
        &opts,
        &mut export::no_progress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("allow-requantize") && e.contains("token_embd.weight"),
        "{e}"
    );
    assert!(!dir.path().join("x.gguf").exists());
}

#[test]
fn adapter_gguf_has_llama_cpp_layout() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_hf(dir.path(), false, 1);
    // The third case gives one module its own alpha (PEFT's alpha_pattern): llama.cpp has one
    // alpha per file, so that module's B carries the difference.
    for (rslora, dtype, pattern) in [
        (false, GgmlDType::F32, false),
        (true, GgmlDType::F16, false),
        (false, GgmlDType::F32, true),
    ] {
        let name = format!("ad-{rslora}{}", if pattern { "-pattern" } else { "" });
        let ad = random_adapter(&base, &dir.path().join(&name), 4, 8.0, rslora, 5);
        if pattern {
            let cfg_path = ad.join("adapter_config.json");
            let mut c: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
            c["alpha_pattern"] = serde_json::json!({"model.layers.0.mlp.down_proj": 24.0});
            std::fs::write(&cfg_path, c.to_string()).unwrap();
        }
        let out = dir.path().join(format!("{name}.gguf"));
        let r = export::export_adapter(&ad, &base, &out, dtype).unwrap();
        assert_eq!(r.pairs, 14);
        let scale = if rslora { 8.0 / 2.0 } else { 8.0 / 4.0 };
        assert!(
            (r.alpha / 4.0 - scale).abs() < 1e-9,
            "stored alpha {} gives llama.cpp scale {}",
            r.alpha,
            r.alpha / 4.0
        );
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.get_str("general.type"), Some("adapter"));
        assert_eq!(f.get_str("adapter.type"), Some("lora"));
        assert!(matches!(
            f.get("adapter.lora.alpha"),
            Some(ft::gguf::Value::F32(_))
        ));
        // lora_a: ne = [in, r]; lora_b: ne = [r, out] (attn_k: out = 2 kv heads · 16).
        assert_eq!(
            f.tensor_info("blk.0.attn_k.weight.lora_a")
                .unwrap()
                .ggml_dims,
            vec![64, 4]
        );
        assert_eq!(
            f.tensor_info("blk.0.attn_k.weight.lora_b")
                .unwrap()
                .ggml_dims,
            vec![4, 32]
        );
        // (alpha/r)·B_gguf·A equals the PEFT delta with q/k rows permuted like the base weights.
        let with = load(
            &base,
            &LoadOptions {
                adapters: vec![ad.clone()],
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let (alpha, pairs) = export::adapter::read_adapter(&out).unwrap();
        for (name, a, b) in pairs {
            let (i, short) = match name.split('.').collect::<Vec<_>>()[..] {
                [_, i, m, _] => (i.parse::<usize>().unwrap(), m.to_string()),
                _ => panic!("{name}"),
            };
            let lin = with.model.blocks[i].linears().into_iter().find(|(s, _)| {
                ft::model::names::hf_to_gguf(&ft::model::names::layer(
                    i,
                    ft::model::names::proj_path(s),
                    "weight",
                ))
                .unwrap()
                    == name
            });
            let (s, lin) = lin.unwrap_or_else(|| panic!("{name} ({short})"));
            let mut want = lin.adapter(0).unwrap().delta_weight().unwrap();
            let cfg = &with.model.config;
            if s == "q_proj" {
                want = export::permute_rows(&want, cfg.num_heads).unwrap();
            } else if s == "k_proj" {
                want = export::permute_rows(&want, cfg.num_kv_heads).unwrap();
            }
            let got = (b.matmul(&a).unwrap() * (alpha / 4.0)).unwrap();
            let d = common::max_abs_diff(&got, &want);
            let tol = if dtype == GgmlDType::F16 { 2e-2 } else { 1e-5 };
            assert!(d < tol, "{name}: delta differs by {d}");
        }
        py_check(
            &out,
            Some(serde_json::json!({
                "metadata": {"general.type": "adapter", "adapter.type": "lora", "general.architecture": "llama"},
                "tensor_count": 28,
                "tensors": {"blk.1.ffn_down.weight.lora_a": {"shape": [128, 4], "type": if rslora { "F16" } else { "F32" }}}
            })),
        );
    }
    // A base of another shape is refused with the tensor named.
    let wide = tiny_hf(dir.path(), true, 2);
    let e = export::export_adapter(
        &dir.path().join("ad-false"),
        &wide,
        &dir.path().join("bad.gguf"),
        GgmlDType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("wrong --base"), "{e}");
}

#[test]
fn cli_commands_run_end_to_end() {
    use clap::Parser;
    #[derive(Parser)]
    enum T {
        Quantize(cli::quantize::QuantizeArgs),
        Merge(cli::merge::MergeArgs),
        ExportAdapter(cli::export_adapter::ExportAdapterArgs),
    }
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_hf(dir.path(), false, 1);
    let ad = random_adapter(&base, &dir.path().join("ad"), 4, 8.0, false, 5);
    let p = |x: &Path| x.display().to_string();
    let run =
        |args: Vec<String>| match T::try_parse_from(std::iter::once("t".to_string()).chain(args))
            .unwrap()
        {
            T::Quantize(a) => cli::quantize::run(a),
            T::Merge(a) => cli::merge::run(a),
            T::ExportAdapter(a) => cli::export_adapter::run(a),
        };
    let q = dir.path().join("q.gguf");
    run(vec![
        "quantize".into(),
        p(&base),
        "--type".into(),
        "q8_0".into(),
        "--out".into(),
        p(&q),
        "--no-progress".into(),
    ])
    .unwrap();
    assert_eq!(
        GgufFile::open(&q).unwrap().get_u64("general.file_type"),
        Some(7)
    );
    let e = run(vec![
        "quantize".into(),
        p(&q),
        "-t".into(),
        "Q4_K_M".into(),
        "-o".into(),
        p(&dir.path().join("r.gguf")),
        "--no-progress".into(),
    ])
    .unwrap_err();
    assert!(format!("{e:#}").contains("--allow-requantize"), "{e:#}");
    let m = dir.path().join("m.gguf");
    run(vec![
        "merge".into(),
        "--base".into(),
        p(&base),
        "--adapter".into(),
        p(&ad),
        "--out".into(),
        p(&m),
        "--type".into(),
        "f16".into(),
        "--no-progress".into(),
    ])
    .unwrap();
    assert!(m.exists());
    let e = run(vec![
        "merge".into(),
        "--base".into(),
        p(&base),
        "--adapter".into(),
        p(&ad),
        "--weights".into(),
        "0.5,0.5".into(),
        "--out".into(),
        p(&dir.path().join("mm")),
        "--no-progress".into(),
    ])
    .unwrap_err();
    assert!(format!("{e:#}").contains("2 values for 1"), "{e:#}");
    run(vec![
        "export-adapter".into(),
        "--adapter".into(),
        p(&ad),
        "--base".into(),
        p(&q),
        "--out".into(),
        p(&dir.path().join("a.gguf")),
    ])
    .unwrap();
    assert_eq!(cli::merge::parse_size("500MB").unwrap(), 500_000_000);
    assert!(cli::merge::parse_size("5XB").is_err());
}

#[test]
fn real_model_quantizes_like_llama_cpp() {
    let Some(model) = common::real_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = open(&model);
    let src_logits = logits(&src, None);
    // The source's own mix (Q4_1, embedding Q8_0) copies every tensor: bytes identical, q/k included.
    let same = dir.path().join("same.gguf");
    let opts = GgufOptions {
        file_type: FileType::Q4_1,
        ..GgufOptions::default()
    };
    let r = export::write_model(&same, &src, &opts, &mut export::no_progress).unwrap();
    assert_eq!(r.copied, 211);
    let (a, b) = (
        GgufFile::open(&model).unwrap(),
        GgufFile::open(&same).unwrap(),
    );
    for t in &a.tensors {
        let u = b
            .tensor_info(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert!(
            a.tensor_bytes(t) == b.tensor_bytes(u),
            "{}: bytes differ",
            t.name
        );
    }
    assert_eq!(logits(&open(&same), None), src_logits);
    // Q4_K_M from a Q4_1 file needs --allow-requantize ...
    let out = dir.path().join("q4km.gguf");
    let opts = GgufOptions {
        file_type: FileType::Q4_K_M,
        ..GgufOptions::default()
    };
    let e = export::write_model(&out, &src, &opts, &mut export::no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("allow-requantize"), "{e}");
    // ... and then falls back on every 576-wide matrix: q, k, v, o, gate, up in 30 layers.
    let opts = GgufOptions {
        allow_requantize: true,
        ..opts
    };
    let r = export::write_model(&out, &src, &opts, &mut export::no_progress).unwrap();
    eprintln!("Q4_K_M: {:?}, {:.1} MB/s", r.types, r.mb_per_s());
    assert_eq!(r.fallbacks.len(), 180);
    assert!(r.fallbacks.iter().all(|f| f.ncols == 576));
    let count = |t: &str| r.types.get(t).map(|c| c.tensors).unwrap_or(0);
    // ffn_down (1536 wide) keeps k-quants: Q6_K on use_more_bits layers (14 of 30), Q4_K elsewhere.
    assert_eq!((count("Q6_K"), count("Q4_K")), (14, 16));
    // attn_v: Q6_K -> Q8_0 on those 14 layers, + the tied embedding; the rest Q4_K -> Q5_0.
    assert_eq!((count("Q8_0"), count("Q5_0")), (15, 30 * 5 + 16));
    assert_eq!(count("F32"), 61);
    let q = open(&out);
    let b = logits(&q, None);
    let c = corr(&b, &src_logits);
    assert!(
        c > 0.95,
        "Q4_K_M logits correlate only {c} with the Q4_1 source's"
    );
    py_check(
        &out,
        Some(
            serde_json::json!({"metadata": {"general.file_type": 15, "llama.embedding_length": 576}, "tensor_count": 272,
        "tensors": {"token_embd.weight": {"shape": [576, 49152], "type": "Q8_0"}, "blk.0.attn_v.weight": {"shape": [576, 192], "type": "Q8_0"},
                    "blk.3.ffn_down.weight": {"shape": [1536, 576], "type": "Q4_K"}},
        // Every tensor against llama.cpp's own converted file, decoded by gguf-py: a wrong q/k
        // row order or block encoding would differ by ~100%.
        "compare": {"path": model, "max_rel_rms": {"F32": 0.0, "Q8_0": 0.02, "Q6_K": 0.05, "Q5_0": 0.1, "Q4_K": 0.1}}}),
        ),
    );
}
