//! Parity with the PyTorch reference (`benches/reference/pretext_ref.py`).
//!
//! The fixtures in `tests/fixtures/` were produced by `tests/fixtures/make_fixtures.py`
//! (regenerate with `python3 tests/fixtures/make_fixtures.py` from the repository root). Each
//! case is `NAME.weights.safetensors` (a PyTorch `state_dict` under our parameter names) and
//! `NAME.io.safetensors` (inputs, expected eval-mode outputs, and the config as JSON in the
//! metadata key `config`).
//!
//! Weights are loaded through `ParamStore::load_tensors`, which rejects missing *and*
//! unexpected names, so these tests also pin the parameter names shared with the reference.
//!
//! Tolerance: floating-point outputs must satisfy `max|actual - expected| / max|expected| <
//! 1e-5` (error relative to the largest expected magnitude of the tensor, not elementwise);
//! the loss must be within 1e-5 relative; the mask and `ids_restore` must be exactly equal.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use pretext::backbone::{Encoder, EncoderConfig, Mode};
use pretext::modality::image::ImageGeometry;
use pretext::objective::mae::{ImageMae, ImageMaeConfig};
use pretext::objective::masking::Masking;
use pretext::params::ParamStore;

const REL_TOL: f32 = 1e-5;

/// The committed fixtures, or those in `$PRETEXT_FIXTURES` (scripts/check-parity.sh
/// regenerates them there with the installed PyTorch).
fn fixture(file: &str) -> PathBuf {
    match std::env::var_os("PRETEXT_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(file),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(file),
    }
}

struct Case {
    weights_path: PathBuf,
    weights: BTreeMap<String, Tensor>,
    io: HashMap<String, Tensor>,
    config: serde_json::Value,
}

impl Case {
    fn load(name: &str) -> Case {
        let dev = Device::Cpu;
        let weights_path = fixture(&format!("{name}.weights.safetensors"));
        let io_path = fixture(&format!("{name}.io.safetensors"));
        let weights = candle_core::safetensors::load(&weights_path, &dev)
            .unwrap_or_else(|e| panic!("{}: {e}", weights_path.display()))
            .into_iter()
            .collect();
        let io = candle_core::safetensors::load(&io_path, &dev)
            .unwrap_or_else(|e| panic!("{}: {e}", io_path.display()));
        let bytes = std::fs::read(&io_path).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let config = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("config"))
            .unwrap_or_else(|| panic!("{}: no `config` in metadata", io_path.display()));
        Case {
            weights_path,
            weights,
            io,
            config: serde_json::from_str(config).unwrap(),
        }
    }

    fn tensor(&self, key: &str) -> &Tensor {
        self.io
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no tensor `{key}`"))
    }

    /// Overwrites every parameter of `store` with the fixture's weights (exact name match).
    fn load_into(&self, store: &ParamStore) {
        store
            .load_tensors(&self.weights, &self.weights_path)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn encoder_config(v: &serde_json::Value) -> EncoderConfig {
    serde_json::from_value(v.clone()).unwrap()
}

fn mae_config(v: &serde_json::Value) -> ImageMaeConfig {
    let geometry: ImageGeometry = serde_json::from_value(v["geometry"].clone()).unwrap();
    ImageMaeConfig {
        geometry,
        encoder: encoder_config(&v["encoder"]),
        decoder: encoder_config(&v["decoder"]),
        mask_ratio: v["mask_ratio"].as_f64().unwrap(),
        masking: Masking::Random,
        norm_pix_loss: v["norm_pix_loss"].as_bool().unwrap(),
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max|a - e| / max|e|`, after checking the shapes agree.
fn rel_err(what: &str, actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(
        actual.dims(),
        expected.dims(),
        "{what}: shape differs from the reference"
    );
    let (a, e) = (flat(actual), flat(expected));
    let max_diff = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = e.iter().map(|y| y.abs()).fold(0f32, f32::max).max(1e-30);
    let err = max_diff / scale;
    assert!(err.is_finite(), "{what}: non-finite error");
    err
}

fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    let err = rel_err(what, actual, expected);
    eprintln!("{what}: max relative error {err:.2e}");
    assert!(
        err < REL_TOL,
        "{what}: max |actual - expected| / max |expected| = {err:.3e} >= {REL_TOL:e}"
    );
}

/// A fixture case and the encoder built from its config and weights.
fn load_backbone(name: &str) -> (Case, Encoder) {
    let case = Case::load(name);
    let cfg = encoder_config(&case.config);
    let store = ParamStore::new(0);
    let enc = Encoder::new(&cfg, store.var_builder(&Device::Cpu)).unwrap();
    case.load_into(&store);
    (case, enc)
}

fn check_backbone(name: &str) {
    let (case, enc) = load_backbone(name);
    let x = case.tensor("x");
    let mask = case.tensor("padding_mask");
    let out = enc.forward(x, Some(mask), &mut Mode::Eval).unwrap();
    assert_close(&format!("{name}: output"), &out, case.tensor("out"));
}

#[test]
fn backbone_pre_norm_exact_gelu_matches_pytorch() {
    check_backbone("backbone_pre_gelu");
}

#[test]
fn backbone_post_norm_tanh_gelu_qkv_bias_matches_pytorch() {
    check_backbone("backbone_post_gelu_tanh");
}

/// Replacing the padded tokens' embeddings by large arbitrary values must leave every real
/// token's output unchanged (the additive `f32::MIN` key bias gives them exactly zero weight).
fn check_padding_is_invisible(name: &str) {
    let (case, enc) = load_backbone(name);
    let x = case.tensor("x");
    let mask = case.tensor("padding_mask");
    let (b, t, d) = x.dims3().unwrap();
    let m = flat(mask);
    assert!(m.contains(&0.0), "{name}: fixture has no padding to test");

    // x' = x + (1 - mask) * big, with `big` varying per element.
    let big = Tensor::randn(0f32, 1.0, (b, t, d), &Device::Cpu)
        .and_then(|r| r.affine(50.0, 7.0))
        .unwrap();
    let pad = mask.unsqueeze(2).and_then(|m| m.affine(-1.0, 1.0)).unwrap();
    let x_perturbed = x.add(&big.broadcast_mul(&pad).unwrap()).unwrap();
    assert!(rel_err("perturbation", &x_perturbed, x) > 1.0);

    let out = flat(&enc.forward(x, Some(mask), &mut Mode::Eval).unwrap());
    let out_p = flat(
        &enc.forward(&x_perturbed, Some(mask), &mut Mode::Eval)
            .unwrap(),
    );
    let mut max_diff = 0f32;
    for (pos, &keep) in m.iter().enumerate() {
        if keep == 0.0 {
            continue;
        }
        for k in 0..d {
            max_diff = max_diff.max((out[pos * d + k] - out_p[pos * d + k]).abs());
        }
    }
    eprintln!("{name}: real tokens moved by at most {max_diff:e} when padding changed");
    assert!(
        max_diff <= 1e-6,
        "{name}: changing padded tokens moved real tokens' outputs by {max_diff:e}"
    );
}

#[test]
fn padding_does_not_leak_into_real_tokens_pre_norm() {
    check_padding_is_invisible("backbone_pre_gelu");
}

#[test]
fn padding_does_not_leak_into_real_tokens_post_norm() {
    check_padding_is_invisible("backbone_post_gelu_tanh");
}

#[test]
fn mae_matches_pytorch() {
    let case = Case::load("mae_tiny");
    let cfg = mae_config(&case.config);
    let store = ParamStore::new(0);
    let mae = ImageMae::new(&cfg, store.var_builder(&Device::Cpu)).unwrap();
    case.load_into(&store);
    let imgs = case.tensor("imgs");
    let noise = case.tensor("noise");
    let out = mae.forward(imgs, noise, &mut Mode::Eval).unwrap();

    let mask: Vec<f32> = flat(&out.mask);
    assert_eq!(
        mask,
        flat(case.tensor("mask")),
        "mask differs from the reference"
    );
    let ids: Vec<i64> = out
        .ids_restore
        .to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let ids_ref: Vec<i64> = case
        .tensor("ids_restore")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(ids, ids_ref, "ids_restore differs from the reference");

    assert_close("mae: pred", &out.pred, case.tensor("pred"));
    let loss = out.loss.to_scalar::<f32>().unwrap();
    let loss_ref = flat(case.tensor("loss"))[0];
    let loss_err = (loss - loss_ref).abs() / loss_ref.abs();
    eprintln!("mae: loss {loss} vs reference {loss_ref} (relative error {loss_err:.2e})");
    assert!(
        loss_err < REL_TOL,
        "mae loss {loss} vs reference {loss_ref}: relative error {loss_err:e}"
    );

    // The encoder on all patches (the inference path the benchmark times).
    let full = mae.encoder.forward(imgs, &mut Mode::Eval).unwrap();
    assert_close("mae: vit on full images", &full, case.tensor("vit_out"));
}
