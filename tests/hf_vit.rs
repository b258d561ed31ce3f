//! Hugging Face checkpoints in: parity with `transformers` itself, and errors that name
//! the tensor or field.
//!
//! The fixtures in `tests/fixtures/hf/<case>/` are tiny random models written by
//! `save_pretrained` (`config.json`, `model.safetensors`) with inputs and outputs computed by
//! `transformers` (`io.safetensors`), made by `tests/fixtures/hf/make_hf_fixtures.py`;
//! `$PRETEXT_HF_FIXTURES` points the tests at a regenerated set (scripts/check-hf.sh).
//!
//! Tolerance: `max|actual - expected| / max|expected| < 1e-4` per tensor (fp32); `mask` and
//! `ids_restore` exactly equal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use pretext::hf::{source, Model};

const REL_TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    match std::env::var_os("PRETEXT_HF_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf"),
    }
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    pretext::tensor_io::read(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"))
        .tensors
}

fn rel_err(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let a = actual.to_dtype(DType::F32).unwrap();
    let e = expected.to_dtype(DType::F32).unwrap();
    let diff = (a - &e).unwrap().abs().unwrap().max_all().unwrap();
    let scale = e.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-12)
}

/// Loads fixture `name`, runs it on its inputs and compares every output it holds.
fn check(name: &str) {
    let dir = fixtures().join(name);
    let loaded =
        source::load(dir.to_str().unwrap(), &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let model = Model::build(&loaded, &Device::Cpu).unwrap();
    let io = read(&dir.join("io.safetensors"));
    let inputs: BTreeMap<String, Tensor> = io
        .iter()
        .filter(|(k, _)| ["pixel_values", "noise", "labels"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let out = model.forward(&inputs).unwrap();
    let mut compared = 0;
    for (key, expected) in &io {
        if inputs.contains_key(key) {
            continue;
        }
        let actual = out
            .get(key)
            .unwrap_or_else(|| panic!("{name}: no output `{key}`"));
        if key == "mask" || key == "ids_restore" {
            assert_eq!(actual.dtype(), expected.dtype(), "{name}: {key} dtype");
            let a = actual.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
            let e = expected
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap();
            assert_eq!(
                a.to_vec1::<f32>().unwrap(),
                e.to_vec1::<f32>().unwrap(),
                "{name}: {key}"
            );
        } else {
            let r = rel_err(actual, expected);
            eprintln!("{name}: {key} max relative error {r:.2e}");
            assert!(r < REL_TOL, "{name}: {key} relative error {r}");
        }
        compared += 1;
    }
    assert!(compared >= 2, "{name}: compared only {compared} outputs");
}

#[test]
fn vit_model_with_pooler_matches_transformers() {
    check("vit_model");
}

#[test]
fn vit_classifier_matches_transformers() {
    check("vit_classifier");
}

#[test]
fn vit_mae_norm_pix_matches_transformers() {
    check("vit_mae_norm_pix");
}

#[test]
fn vit_mae_raw_pixels_matches_transformers() {
    check("vit_mae_raw");
}

/// A copy of committed fixture `name` (whose sizes the messages below quote) in a temporary
/// directory, for breaking.
fn copy_case(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(committed.join(name).join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut t = read(&path);
    edit(&mut t);
    let list: Vec<(String, Tensor)> = t.into_iter().collect();
    pretext::tensor_io::write(&path, &list, Default::default()).unwrap();
}

fn load_err(dir: &Path) -> String {
    match source::load(dir.to_str().unwrap(), &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let tmp = copy_case("vit_classifier");
    rewrite_weights(tmp.path(), |t| {
        t.remove("vit.encoder.layer.1.intermediate.dense.weight");
    });
    let msg = load_err(tmp.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(
        msg.contains("missing tensor `encoder.layer.1.intermediate.dense.weight`"),
        "{msg}"
    );
    assert!(msg.contains("[24, 16]"), "{msg}");
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    let tmp = copy_case("vit_model");
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "embeddings.cls_token".into(),
            Tensor::zeros((1, 1, 8), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = load_err(tmp.path());
    assert!(msg.contains("`embeddings.cls_token`"), "{msg}");
    assert!(
        msg.contains("expected shape [1, 1, 16], found [1, 1, 8]"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtypes_are_named() {
    for (dtype, found) in [(DType::F64, "float64"), (DType::I64, "int64")] {
        let tmp = copy_case("vit_mae_raw");
        rewrite_weights(tmp.path(), |t| {
            let name = "decoder.decoder_embed.bias";
            let v = t[name].to_dtype(dtype).unwrap();
            t.insert(name.into(), v);
        });
        let msg = load_err(tmp.path());
        assert!(msg.contains("`decoder.decoder_embed.bias`"), "{msg}");
        assert!(
            msg.contains(&format!(
                "expected dtype float32 (or float16/bfloat16), found {found}"
            )),
            "{msg}"
        );
    }
}

#[test]
fn unexpected_tensor_is_an_error() {
    let tmp = copy_case("vit_model");
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "encoder.layer.7.extra".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let msg = load_err(tmp.path());
    assert!(
        msg.contains("unexpected tensor `encoder.layer.7.extra`"),
        "{msg}"
    );
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn config_missing_field_names_file_and_field() {
    for field in ["hidden_size", "patch_size", "decoder_hidden_size"] {
        let tmp = copy_case("vit_mae_norm_pix");
        edit_config(tmp.path(), |m| {
            m.remove(field);
        });
        let msg = load_err(tmp.path());
        assert!(msg.contains("config.json"), "{msg}");
        assert!(msg.contains(&format!("`{field}`: missing")), "{msg}");
    }
}

#[test]
fn unsupported_config_values_name_the_field() {
    let cases: [(&str, serde_json::Value); 3] = [
        ("hidden_act", "swish".into()),
        ("image_size", serde_json::json!([16, 12])),
        (
            "architectures",
            serde_json::json!(["ViTForMaskedImageModeling"]),
        ),
    ];
    for (field, value) in cases {
        let tmp = copy_case("vit_model");
        edit_config(tmp.path(), |m| {
            m.insert(field.into(), value);
        });
        let msg = load_err(tmp.path());
        assert!(msg.contains("config.json"), "{msg}");
        assert!(msg.contains(&format!("`{field}`")), "{msg}");
    }
}

#[test]
fn hub_decoder_names_load_too() {
    // The fixtures hold what transformers 5's save_pretrained writes
    // (decoder.decoder_encoder.layer.{i}); the hub and transformers 4 hold decoder_layers.{i}.
    let tmp = copy_case("vit_mae_raw");
    rewrite_weights(tmp.path(), |t| {
        let renamed: BTreeMap<String, Tensor> = std::mem::take(t)
            .into_iter()
            .map(|(k, v)| {
                (
                    k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."),
                    v,
                )
            })
            .collect();
        *t = renamed;
    });
    source::load(tmp.path().to_str().unwrap(), &Device::Cpu).unwrap();
}

#[test]
fn vit_model_keys_load_with_the_vit_prefix() {
    let tmp = copy_case("vit_model");
    rewrite_weights(tmp.path(), |t| {
        let renamed: BTreeMap<String, Tensor> = std::mem::take(t)
            .into_iter()
            .map(|(k, v)| (format!("vit.{k}"), v))
            .collect();
        *t = renamed;
    });
    let m = source::load(tmp.path().to_str().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(m.spec.kind, pretext::hf::Kind::Encoder { pooler: Some(16) });
}

#[test]
fn vit_model_without_pooler_loads_without_pooler_output() {
    let tmp = copy_case("vit_model");
    rewrite_weights(tmp.path(), |t| {
        t.remove("pooler.dense.weight");
        t.remove("pooler.dense.bias");
    });
    let m = source::load(tmp.path().to_str().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(m.spec.kind, pretext::hf::Kind::Encoder { pooler: None });
    assert!(pretext::hf::export::notes(&m)
        .unwrap()
        .contains("add_pooling_layer=False"));
    let model = Model::build(&m, &Device::Cpu).unwrap();
    let committed = read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/vit_model/io.safetensors"),
    );
    let inputs = BTreeMap::from([(
        "pixel_values".to_string(),
        committed["pixel_values"].clone(),
    )]);
    let out = model.forward(&inputs).unwrap();
    assert!(!out.contains_key("pooler_output"));
    assert!(rel_err(&out["last_hidden_state"], &committed["last_hidden_state"]) < REL_TOL);
}
