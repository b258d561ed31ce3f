//! `pretext forward / export / embed` on audio models (wav2vec2, HuBERT, data2vec-audio)
//! through the real binary, on the fixtures of `tests/fixtures/hf/make_audio_fixtures.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};

const CASES: [&str; 6] = [
    "w2v2_group",
    "w2v2_stable",
    "hubert",
    "hubert_ln",
    "data2vec_audio",
    "w2v2_legacy",
];
const INPUTS: [&str; 2] = ["input_values", "attention_mask"];

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn pretext(args: &[&str]) -> String {
    let (ok, out, err) = run(args);
    assert!(ok, "pretext {args:?} failed: {out}{err}");
    out
}

fn pretext_fails(args: &[&str]) -> String {
    let (ok, out, err) = run(args);
    assert!(!ok, "pretext {args:?} should fail: {out}{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    pretext::tensor_io::read(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}"))
        .tensors
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn max_rel(a: &Tensor, e: &Tensor) -> f32 {
    assert_eq!(a.dims(), e.dims());
    let a = a.to_dtype(DType::F32).unwrap();
    let e = e.to_dtype(DType::F32).unwrap();
    let d = (a - &e).unwrap().abs().unwrap().max_all().unwrap();
    let m = e.abs().unwrap().max_all().unwrap();
    d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-12)
}

fn write_inputs(path: &Path, io: &BTreeMap<String, Tensor>, mask_dtype: DType) {
    let list: Vec<(String, Tensor)> = io
        .iter()
        .filter(|(k, _)| INPUTS.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = if k == "attention_mask" {
                v.to_dtype(mask_dtype).unwrap()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    pretext::tensor_io::write(path, &list, Default::default()).unwrap();
}

#[test]
fn forward_writes_transformers_outputs_for_any_mask_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let io = read(&fixture(case).join("io.safetensors"));
        for dtype in [DType::I64, DType::U8, DType::F32] {
            let inputs = tmp.path().join(format!("{case}-{dtype:?}.in.safetensors"));
            write_inputs(&inputs, &io, dtype);
            let out_path = tmp.path().join(format!("{case}.out.safetensors"));
            pretext(&[
                "forward",
                "--model",
                s(&fixture(case)),
                "--inputs",
                s(&inputs),
                "--out",
                s(&out_path),
            ]);
            let out = read(&out_path);
            let keys: Vec<&String> = out.keys().collect();
            assert_eq!(keys, ["extract_features", "last_hidden_state"], "{case}");
            for k in ["last_hidden_state", "extract_features"] {
                let r = max_rel(&out[k], &io[k]);
                assert!(r < 1e-4, "{case} {dtype:?}: {k} relative error {r}");
            }
        }
    }
}

#[test]
fn forward_input_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in.safetensors");
    let ids = Tensor::zeros((1, 800), DType::F32, &Device::Cpu).unwrap();
    pretext::tensor_io::write(
        &inputs,
        &[("input_ids".to_string(), ids)],
        Default::default(),
    )
    .unwrap();
    let err = pretext_fails(&[
        "forward",
        "--model",
        s(&fixture("hubert")),
        "--inputs",
        s(&inputs),
        "--out",
        s(&tmp.path().join("out.safetensors")),
    ]);
    assert!(
        err.contains("input_values") && err.contains(s(&inputs)),
        "{err}"
    );
}

#[test]
fn export_writes_the_base_model_and_embed_says_what_to_use() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    let stdout = pretext(&[
        "export",
        s(&fixture("data2vec_audio")),
        "--format",
        "hf",
        "--out",
        s(&out),
    ]);
    assert!(stdout.contains("Data2VecAudioModel"), "{stdout}");
    assert!(out.join("config.json").is_file() && out.join("model.safetensors").is_file());
    let err = pretext_fails(&[
        "embed",
        "--model",
        s(&fixture("w2v2_group")),
        "--text",
        "hi",
    ]);
    assert!(
        err.contains("audio model") && err.contains("--audio"),
        "{err}"
    );
}
