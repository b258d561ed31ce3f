//! Waveform sequence classifiers (`Wav2Vec2ForSequenceClassification`,
//! `HubertForSequenceClassification`, `Data2VecAudioForSequenceClassification`) in and out:
//! logits and `predict` labels equal to `transformers`', the export of pretext's waveform
//! classifiers (with and without a projector) reloading to the same logits, and the recipe's
//! `projector` key.
//!
//! The fixtures `tests/fixtures/hf/{w2v2,hubert,data2vec_audio}_cls` are tiny random models
//! written by `save_pretrained`, with inputs and the logits `transformers` computes, made by
//! `tests/fixtures/hf/make_audio_classifier_fixtures.py`; `$PRETEXT_HF_FIXTURES` points the
//! parity test at a regenerated set (scripts/check-hf.sh).
//!
//! Tolerance: `max|actual - expected| / max|expected| < 1e-4` (fp32) against `transformers`;
//! pretext's own classifier and its export agree to 1e-5.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pretext::backbone::{Activation, EncoderConfig, Mode, NormPosition};
use pretext::hf::audio::{AudioLoaded, AudioModel};
use pretext::hf::source::{self, AnyModel};
use pretext::modality::audio::classifier::{WaveformClassifier, WaveformClassifierSpec};
use pretext::modality::audio::waveform::{FeatNorm, PosConv, WaveformConfig};
use serde_json::Value;

const REL_TOL: f32 = 1e-4;
const CASES: [(&str, &str, usize); 3] = [
    ("w2v2_cls", "Wav2Vec2ForSequenceClassification", 12),
    ("hubert_cls", "HubertForSequenceClassification", 256),
    (
        "data2vec_audio_cls",
        "Data2VecAudioForSequenceClassification",
        8,
    ),
];

fn load_audio(src: &str) -> AudioLoaded {
    match source::load_any(src, &Device::Cpu).unwrap_or_else(|e| panic!("{e}")) {
        AnyModel::Audio(m) => m,
        other => panic!("{src} loaded as {}", other.describe()),
    }
}

fn logits(m: &AudioLoaded, inputs: &BTreeMap<String, Tensor>) -> Tensor {
    let model = AudioModel::build(m, &Device::Cpu).unwrap();
    let mut out = model.forward(inputs).unwrap_or_else(|e| panic!("{e}"));
    out.remove("logits").expect("a classifier gives logits")
}

fn model_inputs(io: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    io.iter()
        .filter(|(k, _)| ["input_values", "attention_mask"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn pretext_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = pretext_bin(args);
    assert!(
        out.status.success(),
        "pretext {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sequence_classifiers_match_transformers() {
    for (name, class, proj) in CASES {
        let dir = common::fixtures().join(name);
        let m = load_audio(dir.to_str().unwrap());
        assert_eq!(m.spec.hf_class(), class);
        assert_eq!(m.spec.head.map(|h| h.proj), Some(proj), "{name}");
        let io = common::read(&dir.join("io.safetensors"));
        // The second row is padded: its mean runs over its real frames only.
        let err = common::rel_err(&logits(&m, &model_inputs(&io)), &io["logits"]);
        eprintln!("{name} logits: max relative error {err:.2e}");
        assert!(err < REL_TOL, "{name}: relative error {err}");
    }
}

#[test]
fn forward_cli_gives_the_logits_and_loss() {
    let dir = common::committed().join("w2v2_cls");
    let io = common::read(&dir.join("io.safetensors"));
    let tmp = tempfile::tempdir().unwrap();
    let (inputs, out) = (
        tmp.path().join("in.safetensors"),
        tmp.path().join("out.safetensors"),
    );
    let mut list: Vec<(String, Tensor)> = model_inputs(&io).into_iter().collect();
    list.push((
        "labels".into(),
        Tensor::new(&[2i64, 0], &Device::Cpu).unwrap(),
    ));
    pretext::tensor_io::write(&inputs, &list, Default::default()).unwrap();
    ok(&[
        "forward",
        "--model",
        dir.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let got = common::read(&out);
    assert!(common::rel_err(&got["logits"], &io["logits"]) < REL_TOL);
    assert_eq!(got["loss"].dims(), &[] as &[usize]);
}

#[test]
fn predict_labels_a_clip_with_the_models_label_names() {
    for (name, _, _) in CASES {
        let dir = common::committed().join(name);
        let io = common::read(&dir.join("io.safetensors"));
        let clip = common::committed().join("../audio/clip_espeak_16k.wav");
        let text = ok(&[
            "predict",
            "--model",
            dir.to_str().unwrap(),
            "--audio",
            clip.to_str().unwrap(),
            "--top-k",
            "9",
            "--device",
            "cpu",
        ]);
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let expected = io["clip_logits"].to_vec2::<f32>().unwrap()[0].clone();
        let max = expected.iter().cloned().fold(f32::MIN, f32::max);
        let sum: f32 = expected.iter().map(|l| (l - max).exp()).sum();
        let words = ["yes", "no", "up", "down"];
        let top = line["top_k"].as_array().unwrap();
        assert_eq!(top.len(), expected.len(), "{name}: {line}");
        for t in top {
            let i = words.iter().position(|w| *w == t["label"]).unwrap();
            let p = (expected[i] - max).exp() / sum;
            let got = t["score"].as_f64().unwrap();
            assert!((got - p as f64).abs() < 1e-5, "{name}: {t} vs {p}");
        }
        assert_eq!(line["windows"], 1, "{line}");
    }
}

#[test]
fn a_weighted_layer_sum_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::committed().join("w2v2_cls");
    for f in ["model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["use_weighted_layer_sum"] = Value::Bool(true);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let err = source::load_any(tmp.path().to_str().unwrap(), &Device::Cpu)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("use_weighted_layer_sum"), "{err}");
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn a_hugging_face_classifier_exports_with_the_keys_it_came_with() {
    for (name, class, _) in CASES {
        let dir = common::committed().join(name);
        let m = load_audio(dir.to_str().unwrap());
        let tmp = tempfile::tempdir().unwrap();
        pretext::hf::audio::write_hf(&m, tmp.path()).unwrap();
        let keys = |p: &Path| -> Vec<String> {
            common::read(&p.join("model.safetensors"))
                .into_keys()
                .collect()
        };
        assert_eq!(keys(tmp.path()), keys(&dir), "{name}");
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["architectures"][0], class);
        let io = common::read(&dir.join("io.safetensors"));
        let back = load_audio(tmp.path().to_str().unwrap());
        assert_eq!(back.spec, m.spec);
        let inputs = model_inputs(&io);
        assert_eq!(
            common::rel_err(&logits(&back, &inputs), &logits(&m, &inputs)),
            0.0
        );
    }
}

fn tiny_config() -> WaveformConfig {
    WaveformConfig {
        conv_dim: vec![8, 8],
        conv_kernel: vec![10, 3],
        conv_stride: vec![5, 2],
        conv_bias: false,
        feat_extract_norm: FeatNorm::Group,
        feat_extract_activation: Activation::Gelu,
        feat_proj_layer_norm: true,
        feat_proj_dropout: 0.0,
        pos_conv: PosConv::WeightNorm {
            kernel: 4,
            groups: 2,
        },
        layer_norm_eps: 1e-5,
        mask_embed: true,
        encoder: EncoderConfig {
            dim: 16,
            depth: 1,
            heads: 2,
            mlp_dim: 24,
            norm: NormPosition::Post,
            activation: Activation::Gelu,
            norm_eps: 1e-5,
            qkv_bias: true,
            dropout: 0.0,
            attention_dropout: 0.0,
            drop_path: 0.0,
        },
    }
}

/// A pretext waveform classifier saved in `dir` (random weights), with `projector`.
fn save_classifier(dir: &Path, projector: Option<usize>) -> WaveformClassifierSpec {
    let spec = WaveformClassifierSpec {
        kind: WaveformClassifierSpec::KIND.into(),
        model_type: "hubert".into(),
        config: tiny_config(),
        sample_rate: 16_000,
        samples: 400,
        normalize: false,
        classes: vec!["left".into(), "right".into(), "stop".into()],
        projector,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    WaveformClassifier::new(&spec, vb).unwrap();
    // Non-zero biases, so that a dropped or misplaced bias shows.
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.ends_with("bias") {
            let t = Tensor::randn(0f32, 0.5, var.dims(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    spec.write(dir).unwrap();
    spec
}

#[test]
fn pretext_waveform_classifiers_export_and_reload_to_the_same_logits() {
    for projector in [None, Some(6)] {
        let tmp = tempfile::tempdir().unwrap();
        let saved = tmp.path().join("classifier");
        let spec = save_classifier(&saved, projector);
        let out = tmp.path().join("export");
        let e = pretext::apply::export(saved.to_str().unwrap(), &out, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.class, "HubertForSequenceClassification");
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["classifier_proj_size"], projector.unwrap_or(16));
        assert_eq!(cfg["use_weighted_layer_sum"], false);
        assert_eq!(cfg["id2label"]["2"], "stop");
        assert_eq!(cfg["label2id"]["right"], 1);
        let pre: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("preprocessor_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(pre["do_normalize"], false);
        let names: Vec<String> = common::read(&out.join("model.safetensors"))
            .into_keys()
            .collect();
        for n in &names {
            assert!(
                n.starts_with("hubert.")
                    || n.starts_with("projector.")
                    || n.starts_with("classifier."),
                "{n}"
            );
        }
        assert!(names.contains(&"hubert.masked_spec_embed".to_string()));

        // pretext's classifier and the export, on the same two waveforms.
        let x = Tensor::randn(0f32, 1.0, (2, 400), &Device::Cpu).unwrap();
        let tensors: HashMap<String, Tensor> = common::read(&saved.join("model.safetensors"))
            .into_iter()
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let ours = WaveformClassifier::new(&spec, vb)
            .unwrap()
            .forward(&x, &mut Mode::Eval)
            .unwrap();
        let exported = load_audio(out.to_str().unwrap());
        let inputs = BTreeMap::from([("input_values".to_string(), x)]);
        let err = common::rel_err(&logits(&exported, &inputs), &ours);
        eprintln!("projector {projector:?}: export vs pretext, max relative error {err:.2e}");
        assert!(err < 1e-5, "projector {projector:?}: {err}");
    }
}

#[test]
fn old_waveform_classifier_files_load_without_a_projector() {
    let tmp = tempfile::tempdir().unwrap();
    save_classifier(tmp.path(), None);
    let text = std::fs::read_to_string(tmp.path().join("model.json")).unwrap();
    assert!(!text.contains("projector"), "{text}");
    let spec: WaveformClassifierSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(spec.projector, None);
}

fn recipe_error(recipe: &str, sets: &[&str]) -> String {
    let overrides: Vec<_> = sets
        .iter()
        .map(|s| pretext::recipe::Override::parse_set(s).unwrap())
        .collect();
    match pretext::recipe::load(Path::new(recipe), &overrides) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_recipe_projector_is_for_waveform_fine_tuning_only() {
    let w2v = "recipes/wav2vec2-words-sample.toml";
    let head = |extra: &str| {
        format!(
            "downstream=[{{ head = \"fine-tune\", pooling = \"mean\", label_fractions = [1.0]{extra} }}]"
        )
    };
    assert_eq!(recipe_error(w2v, &[&head(", projector = 256")]), "");
    let err = recipe_error(w2v, &[&head(", projector = 0")]);
    assert!(
        err.contains("downstream[0].projector") && err.contains("positive"),
        "{err}"
    );
    // Another head's key: the parser names the keys a probe takes.
    let probe = "downstream=[{ head = \"linear-probe\", pooling = \"mean\", projector = 8 }]";
    let err = recipe_error(w2v, &[probe]);
    assert!(err.contains("projector"), "{err}");
    // Not a waveform encoder.
    let image = "recipes/quickstart.toml";
    let err = recipe_error(
        image,
        &["downstream=[{ head = \"fine-tune\", projector = 8 }]"],
    );
    assert!(
        err.contains("downstream[0].projector") && err.contains("waveform"),
        "{err}"
    );
}

#[test]
fn a_fine_tuned_projector_head_exports_from_its_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = run.to_str().unwrap();
    ok(&common::run_args(
        "recipes/wav2vec2-words-sample.toml",
        out,
        &[
            "device=\"cpu\"",
            "downstream=[{ head = \"fine-tune\", pooling = \"mean\", label_fractions = [1.0], \
             epochs = 1, batch_size = 16, projector = 8 }]",
        ],
    ));
    let classifier = std::fs::read_dir(run.join("downstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.json").is_file())
        .expect("a fine-tuned classifier");
    let spec: WaveformClassifierSpec =
        serde_json::from_str(&std::fs::read_to_string(classifier.join("model.json")).unwrap())
            .unwrap();
    assert_eq!(spec.projector, Some(8));
    // The run exports its classifier, as predict picks it.
    let export = tmp.path().join("export");
    ok(&[
        "export",
        out,
        "--format",
        "hf",
        "--out",
        export.to_str().unwrap(),
    ]);
    let m = load_audio(export.to_str().unwrap());
    assert_eq!(m.spec.hf_class(), "Wav2Vec2ForSequenceClassification");
    assert_eq!(m.spec.head.map(|h| h.proj), Some(8));
    assert_eq!(m.normalize, spec.normalize);
}
