//! Gradients reach every trainable tensor, and agree with finite differences.
//!
//! The trap this guards against (DESIGN.md): in candle-nn 0.11 some fused ops
//! (`ops::softmax_last_dim`, `ops::layer_norm`, `LayerNorm::forward` on contiguous input) have no
//! backward pass, so gradients silently stop there and the parameters before them never train.
//! A missing gradient shows up here as a parameter absent from the `GradStore`.

use candle_core::{DType, Device, Tensor, Var};
use pretext::backbone::{Activation, Encoder, EncoderConfig, Mode, NormPosition};
use pretext::draws::Draws;
use pretext::modality::image::ImageGeometry;
use pretext::objective::mae::{ImageMae, ImageMaeConfig};
use pretext::objective::masking::Masking;
use pretext::params::ParamStore;

fn encoder_cfg(dim: usize, depth: usize, heads: usize, mlp_dim: usize) -> EncoderConfig {
    EncoderConfig {
        dim,
        depth,
        heads,
        mlp_dim,
        norm: NormPosition::Pre,
        activation: Activation::Gelu,
        norm_eps: 1e-6,
        qkv_bias: true,
        dropout: 0.0,
        attention_dropout: 0.0,
        drop_path: 0.0,
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn l2(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// The key projection's bias adds `q_i · b_k` to every score of query `i`, a constant per row
/// that softmax cancels: its gradient is zero in exact arithmetic (only rounding noise is left).
fn gradient_is_zero_by_symmetry(name: &str) -> bool {
    name.ends_with("attn.k.bias")
}

/// Backward from `loss`; every parameter of `store` must get a finite gradient that is
/// non-zero, except those whose gradient vanishes by symmetry, which must be ~0.
fn assert_every_parameter_gets_a_gradient(what: &str, store: &ParamStore, loss: &Tensor) {
    let grads = loss.backward().unwrap();
    let vars = store.vars();
    assert!(!vars.is_empty());
    let mut norms = Vec::new();
    let mut missing = Vec::new();
    for (name, var) in &vars {
        match grads.get(var.as_tensor()) {
            None => missing.push(name.clone()),
            Some(g) => {
                assert_eq!(g.dims(), var.dims(), "{what}: gradient shape of `{name}`");
                let v = values(g);
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{what}: non-finite gradient for `{name}`"
                );
                norms.push((name.clone(), l2(&v) / (v.len() as f32).sqrt()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{what}: no gradient reached {} of {} parameters: {missing:?}",
        missing.len(),
        vars.len()
    );
    let typical = {
        let mut rms: Vec<f32> = norms.iter().map(|(_, n)| *n).collect();
        rms.sort_by(f32::total_cmp);
        rms[rms.len() / 2]
    };
    assert!(typical > 0.0, "{what}: median gradient is zero");
    for (name, rms) in &norms {
        if gradient_is_zero_by_symmetry(name) {
            assert!(
                *rms <= 1e-3 * typical,
                "{what}: `{name}` should have a ~zero gradient by symmetry, found rms {rms:e} \
                 (median over parameters {typical:e})"
            );
        } else {
            assert!(
                *rms > 1e-6 * typical,
                "{what}: gradient of `{name}` is zero (rms {rms:e}, median over parameters \
                 {typical:e}): backward does not reach it"
            );
        }
    }
}

fn tiny_mae_config() -> ImageMaeConfig {
    let mut encoder = encoder_cfg(32, 2, 4, 64);
    // Dropout on, so the training-mode path (mask multiply) is differentiated too.
    encoder.dropout = 0.1;
    encoder.attention_dropout = 0.1;
    ImageMaeConfig {
        geometry: ImageGeometry {
            size: 16,
            channels: 1,
            patch: 4,
        },
        encoder,
        decoder: encoder_cfg(16, 1, 2, 32),
        mask_ratio: 0.75,
        masking: Masking::Random,
        norm_pix_loss: true,
    }
}

#[test]
fn every_mae_parameter_gets_a_finite_nonzero_gradient() {
    let dev = test_device();
    let store = ParamStore::new(11);
    let mae = ImageMae::new(&tiny_mae_config(), store.var_builder(&dev)).unwrap();
    let draws = Draws::new(5, 0, 0, 4);
    let imgs = Tensor::randn(0f32, 1.0, (4, 1, 16, 16), &dev).unwrap();
    let noise = mae.sample_noise(&draws, &dev).unwrap();
    let out = mae.forward(&imgs, &noise, &mut Mode::train(draws)).unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    // Sanity: the store holds the whole model (encoder, decoder, tokens, patch embedding).
    let names: Vec<String> = store.vars().into_iter().map(|(n, _)| n).collect();
    for expected in [
        "vit.patch_embed.weight",
        "vit.cls_token",
        "vit.encoder.norm.weight",
        "decoder.mask_token",
        "decoder.embed.weight",
        "decoder.blocks.norm.bias",
        "decoder.pred.weight",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no parameter `{expected}`"
        );
    }
    assert_every_parameter_gets_a_gradient("mae", &store, &out.loss);
}

/// The backbone variants the MAE test does not cover: post-norm, tanh GELU, ReLU, no qkv
/// bias, and a padding mask.
#[test]
fn every_backbone_parameter_gets_a_gradient_in_all_variants() {
    let dev = test_device();
    for (norm, activation, qkv_bias) in [
        (NormPosition::Post, Activation::GeluTanh, true),
        (NormPosition::Post, Activation::Relu, false),
        (NormPosition::Pre, Activation::GeluTanh, false),
    ] {
        let cfg = EncoderConfig {
            norm,
            activation,
            qkv_bias,
            ..encoder_cfg(16, 2, 2, 32)
        };
        let store = ParamStore::new(3);
        let enc = Encoder::new(&cfg, store.var_builder(&dev)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 5, 16), &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 1., 1.], [1., 1., 1., 0., 0.]], &dev).unwrap();
        let readout = Tensor::randn(0f32, 1.0, (2, 5, 16), &dev).unwrap();
        let out = enc.forward(&x, Some(&mask), &mut Mode::Eval).unwrap();
        let loss = (out * readout).unwrap().sum_all().unwrap();
        assert_every_parameter_gets_a_gradient(
            &format!("{norm:?}/{activation:?}/qkv_bias={qkv_bias}"),
            &store,
            &loss,
        );
    }
}

/// The device the tests run on: `PRETEXT_TEST_DEVICE` (auto, cpu, cuda:N, metal), default
/// auto: a GPU in a build with its feature when one is present, else the CPU.
fn test_device() -> Device {
    let spec = std::env::var("PRETEXT_TEST_DEVICE").unwrap_or_else(|_| "auto".into());
    pretext::device::open(pretext::device::parse(&spec).unwrap()).unwrap()
}

/// The fused CPU kernels (linear, attention, layer norm, softmax, GELU) and the composed
/// candle ops that CUDA and Metal run give the same outputs and gradients, on every
/// backbone variant, with a padding mask.
#[test]
fn fused_cpu_kernels_match_the_composed_path() {
    let dev = Device::Cpu;
    for (norm, activation, qkv_bias) in [
        (NormPosition::Pre, Activation::Gelu, true),
        (NormPosition::Post, Activation::GeluTanh, false),
    ] {
        let cfg = EncoderConfig {
            norm,
            activation,
            qkv_bias,
            ..encoder_cfg(24, 2, 3, 48)
        };
        let store = ParamStore::new(8);
        let enc = Encoder::new(&cfg, store.var_builder(&dev)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 7, 24), &dev).unwrap();
        let mask = Tensor::new(
            &[
                [1f32, 1., 1., 1., 1., 1., 1.],
                [1., 1., 1., 1., 0., 0., 0.],
                [1., 1., 0., 0., 0., 0., 0.],
            ],
            &dev,
        )
        .unwrap();
        let readout = Tensor::randn(0f32, 1.0, (3, 7, 24), &dev).unwrap();
        let run = |fused: bool| {
            pretext::backbone::set_fused_cpu_ops(fused);
            let out = enc.forward(&x, Some(&mask), &mut Mode::Eval).unwrap();
            let grads = (&out * &readout)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            pretext::backbone::set_fused_cpu_ops(true);
            let g: Vec<Vec<f32>> = store
                .vars()
                .iter()
                .map(|(_, v)| values(grads.get(v.as_tensor()).expect("a gradient")))
                .collect();
            (values(&out), g)
        };
        let (out_f, grads_f) = run(true);
        let (out_c, grads_c) = run(false);
        let close = |a: &[f32], b: &[f32], what: &str| {
            let diff: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            let rel = l2(&diff) / l2(b).max(1e-12);
            assert!(
                rel < 1e-5,
                "{norm:?}/{activation:?}: {what} differs by {rel:.2e} (relative)"
            );
        };
        close(&out_f, &out_c, "the output");
        for ((name, _), (gf, gc)) in store.vars().iter().zip(grads_f.iter().zip(&grads_c)) {
            // Zero up to rounding on both paths, so only an absolute bound means anything.
            if gradient_is_zero_by_symmetry(name) {
                assert!(l2(gf) < 1e-4 && l2(gc) < 1e-4, "{name}");
                continue;
            }
            close(gf, gc, &format!("the gradient of {name}"));
        }
    }
}

fn set_element(var: &Var, index: usize, value: f32) {
    let mut v = values(var.as_tensor());
    v[index] = value;
    var.set(&Tensor::from_vec(v, var.shape(), var.device()).unwrap())
        .unwrap();
}

/// Central differences (f32, eps 1e-2) on the element with the largest analytic gradient
/// of three parameters of a tiny backbone, against `backward`, within 5 % relative. The
/// loss is a fixed random linear read-out of the (layer-normalised) output, so it is smooth
/// and O(1)-conditioned.
#[test]
fn backbone_gradients_match_finite_differences() {
    let dev = test_device();
    let cfg = encoder_cfg(8, 1, 2, 16);
    let store = ParamStore::new(21);
    let enc = Encoder::new(&cfg, store.var_builder(&dev)).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 4, 8), &dev).unwrap();
    let mask = Tensor::new(&[[1f32, 1., 1., 1.], [1., 1., 1., 0.]], &dev).unwrap();
    let readout = Tensor::randn(0f32, 1.0, (2, 4, 8), &dev).unwrap();
    let loss_of = || -> Tensor {
        let out = enc.forward(&x, Some(&mask), &mut Mode::Eval).unwrap();
        (out * &readout).unwrap().sum_all().unwrap()
    };

    let loss = loss_of();
    let grads = loss.backward().unwrap();
    let vars: std::collections::BTreeMap<String, Var> = store.vars().into_iter().collect();
    let eps = 1e-2f32;
    for name in [
        "layers.0.attn.q.weight",
        "layers.0.mlp.fc1.weight",
        "layers.0.norm1.weight",
    ] {
        let var = &vars[name];
        let g = values(grads.get(var.as_tensor()).expect("gradient"));
        let (index, &analytic) = g
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        let w0 = values(var.as_tensor())[index];
        set_element(var, index, w0 + eps);
        let plus = loss_of().to_scalar::<f32>().unwrap();
        set_element(var, index, w0 - eps);
        let minus = loss_of().to_scalar::<f32>().unwrap();
        set_element(var, index, w0);
        let numeric = (plus - minus) / (2.0 * eps);
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-6);
        eprintln!(
            "{name}[{index}]: analytic {analytic:.6}, finite difference {numeric:.6} \
             (relative {rel:.2e})"
        );
        assert!(analytic.abs() > 1e-3, "{name}: gradient too small to test");
        assert!(
            rel < 0.05,
            "{name}[{index}]: analytic gradient {analytic} vs finite difference {numeric}"
        );
    }
}

/// A batch of no examples, or of empty sequences, goes through the encoder (fused kernels
/// and composed ops alike) as an empty output of the right shape, not a panic.
#[test]
fn empty_batches_and_sequences_give_empty_outputs() {
    let dev = Device::Cpu;
    for norm in [NormPosition::Pre, NormPosition::Post] {
        let cfg = EncoderConfig {
            norm,
            ..encoder_cfg(16, 2, 2, 32)
        };
        let store = ParamStore::new(1);
        let enc = Encoder::new(&cfg, store.var_builder(&dev)).unwrap();
        for (b, t) in [(2, 0), (0, 5)] {
            let x = Tensor::zeros((b, t, 16), DType::F32, &dev).unwrap();
            let mask = Tensor::ones((b, t), DType::F32, &dev).unwrap();
            for m in [None, Some(&mask)] {
                let out = enc.forward(&x, m, &mut Mode::Eval).unwrap();
                assert_eq!(out.dims(), [b, t, 16], "{norm:?} [{b}, {t}]");
            }
        }
    }
}
