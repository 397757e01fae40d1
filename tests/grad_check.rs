//! LoRA gradients against finite differences on a tiny random Llama, with the frozen base
//! dense and quantized (candle's QMatMul alone would give ~100% wrong gradients here).

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor, Var};
use ft::data::encode::{pad_batch, Encoded};
use ft::model::Llama;
use ft::testing::tiny_model;
use ft::train::{attach_adapters, batch_loss};
use rand::{Rng, SeedableRng};

fn setup(quant: Option<GgmlDType>) -> (Llama, Vec<(String, Var)>, ft::data::encode::Batch) {
    let mut model = tiny_model(7, quant).unwrap();
    let cfg = ft::lora::LoraConfig {
        dropout: 0.0,
        ..Default::default()
    };
    let vars = attach_adapters(&mut model, &cfg, 1).unwrap();
    // B starts at zero; give it values so A's gradient is not trivially zero.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for (name, v) in &vars {
        if name.contains("lora_B") {
            let vals: Vec<f32> = (0..v.elem_count())
                .map(|_| rng.random_range(-0.05f32..0.05))
                .collect();
            v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let e1 = Encoded {
        ids: (0..24).map(|i| (i * 7 + 3) % 250).collect(),
        mask: vec![true; 24],
    };
    let e2 = Encoded {
        ids: (0..17).map(|i| (i * 11 + 5) % 250).collect(),
        mask: (0..17).map(|i| i > 4).collect(),
    };
    let batch = pad_batch(&[&e1, &e2], 0, &Device::Cpu).unwrap();
    (model, vars, batch)
}

fn loss(model: &Llama, b: &ft::data::encode::Batch) -> f64 {
    batch_loss(model, b, &ft::model::Ctx::train(0))
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

fn check(quant: Option<GgmlDType>) {
    let (model, vars, batch) = setup(quant);
    let l = batch_loss(&model, &batch, &ft::model::Ctx::train(0)).unwrap();
    let grads = l.backward().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut worst = 0f64;
    // Directional derivatives along random directions over all adapter parameters.
    for _ in 0..3 {
        let dirs: Vec<Tensor> = vars
            .iter()
            .map(|(_, v)| {
                let d: Vec<f32> = (0..v.elem_count())
                    .map(|_| rng.random_range(-1f32..1.0))
                    .collect();
                Tensor::from_vec(d, v.shape(), &Device::Cpu).unwrap()
            })
            .collect();
        let analytic: f64 = vars
            .iter()
            .zip(&dirs)
            .map(|((_, v), d)| {
                let g = grads
                    .get(v.as_tensor())
                    .expect("every adapter var gets a gradient");
                (g * d)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap() as f64
            })
            .sum();
        let eps = 1e-3;
        let orig: Vec<Tensor> = vars
            .iter()
            .map(|(_, v)| v.as_tensor().copy().unwrap())
            .collect();
        let shift = |s: f64| {
            for (((_, v), d), o) in vars.iter().zip(&dirs).zip(&orig) {
                v.set(&(o + (d * s).unwrap()).unwrap()).unwrap();
            }
        };
        shift(eps);
        let lp = loss(&model, &batch);
        shift(-eps);
        let lm = loss(&model, &batch);
        shift(0.0);
        let numeric = (lp - lm) / (2.0 * eps);
        let rel = (numeric - analytic).abs() / numeric.abs().max(1e-3);
        eprintln!("{quant:?}: analytic {analytic:.6} numeric {numeric:.6} rel {rel:.2e}");
        worst = worst.max(rel);
    }
    assert!(worst < 2e-2, "{quant:?}: LoRA gradient off by {worst}");
}

#[test]
fn lora_gradients_match_finite_differences_dense_base() {
    check(None);
}

#[test]
fn lora_gradients_match_finite_differences_q8_0_base() {
    check(Some(GgmlDType::Q8_0));
}

#[test]
fn lora_gradients_match_finite_differences_q4_0_base() {
    check(Some(GgmlDType::Q4_0));
}

#[test]
fn trainable_parameter_count_is_exact() {
    let mut model = tiny_model(1, None).unwrap();
    let vars = attach_adapters(&mut model, &ft::lora::LoraConfig::default(), 0).unwrap();
    // r=16 on all seven projections of 2 layers: r * (in + out) each.
    let c = &model.config;
    let per_layer: usize = ft::lora::TargetModule::ALL
        .iter()
        .map(|m| {
            let (i, o) = c.proj_shape(m.as_str()).unwrap();
            16 * (i + o)
        })
        .sum();
    assert_eq!(ft::train::trainable_params(&vars), per_layer * c.num_layers);
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let (model, vars, batch) = setup(Some(GgmlDType::Q8_0));
    let l = batch_loss(&model, &batch, &ft::model::Ctx::train(5)).unwrap();
    let lv = l.to_scalar::<f32>().unwrap() as f64;
    let store = l.backward().unwrap();
    let (cl, cg) =
        ft::train::checkpointed_grads(&model, &batch, &ft::model::Ctx::train(5), &vars).unwrap();
    assert!((lv - cl).abs() < 1e-6, "{lv} vs {cl}");
    for ((name, v), g) in vars.iter().zip(&cg) {
        let want = store.get(v.as_tensor()).unwrap();
        let d = common::max_abs_diff(want, g);
        assert!(d < 1e-5, "{name}: max diff {d}");
    }
}
