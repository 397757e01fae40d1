//! Merge and adapter export: merge == base + adapter (also into a quantized base), the adapter
//! GGUF's llama.cpp layout, and the `ft merge` / `ft quantize` / `ft export-adapter` commands end
//! to end.

mod common;
mod export_support;

// The CLI files (wired into `ft` by src/cli/mod.rs) compiled and driven here directly.
#[allow(dead_code)]
#[path = "../src/cli"]
mod cli {
    pub mod export_adapter;
    pub mod merge;
    pub mod quantize;
}

use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
use export_support::*;
use ft::export::{self, GgufOptions, MergeOptions, MergeOutput};
use ft::gguf::GgufFile;
use ft::lora::Lora;
use ft::model::{load, LoadOptions, Loaded};
use ft::quant::types::FileType;
use std::path::Path;

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
        overwrite: false,
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
        overwrite: false,
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
        overwrite: false,
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
        let r = export::export_adapter(&ad, &base, &out, dtype, false).unwrap();
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
        false,
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
