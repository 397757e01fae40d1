//! GGUF export: write -> read round trips per type, exported models read back through ft's own
//! loader with the same logits, the quantization mixes (on tiny models and on the real SmolLM2
//! file), and gguf-py's independent reading of it all.

mod common;
mod export_support;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use export_support::*;
use ft::export::{self, GgufOptions};
use ft::gguf::write::{write, TensorOut};
use ft::gguf::GgufFile;
use ft::quant::types::FileType;
use rand::{Rng, SeedableRng};
use std::borrow::Cow;

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
