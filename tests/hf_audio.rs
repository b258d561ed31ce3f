//! Hugging Face audio checkpoints (wav2vec2, HuBERT, data2vec-audio) in and out: parity with
//! `transformers` itself, export round trips, and errors that name the file and tensor.
//!
//! The fixtures in `tests/fixtures/hf/{w2v2_*,hubert*,data2vec_audio}` are tiny random models
//! written by `save_pretrained` with inputs (a padded second row and its attention mask) and
//! the outputs `transformers` computes (`io.safetensors`), made by
//! `tests/fixtures/hf/make_audio_fixtures.py`; `$PRETEXT_HF_FIXTURES` points the parity tests
//! at a regenerated set (scripts/check-hf.sh).
//!
//! Tolerance: `max|actual - expected| / max|expected| < 1e-4` per tensor (fp32).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use pretext::backbone::{Activation, EncoderConfig, Mode, NormPosition};
use pretext::hf::audio::{self, AudioLoaded, AudioModel};
use pretext::hf::source::{self, AnyModel};
use pretext::hf::wav2vec2::AudioFamily;
use pretext::modality::audio::waveform::{FeatNorm, PosConv, WaveformConfig, WaveformEncoder};

const REL_TOL: f32 = 1e-4;
const CASES: [&str; 6] = [
    "w2v2_group",
    "w2v2_stable",
    "hubert",
    "hubert_ln",
    "data2vec_audio",
    "w2v2_legacy",
];
const INPUTS: [&str; 2] = ["input_values", "attention_mask"];

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn fixtures() -> PathBuf {
    match std::env::var_os("PRETEXT_HF_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => committed(),
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

fn load_audio(src: &str) -> AudioLoaded {
    match source::load_any(src, &Device::Cpu).unwrap_or_else(|e| panic!("{e}")) {
        AnyModel::Audio(m) => m,
        other => panic!("{src} loaded as {}", other.describe()),
    }
}

fn inputs_of(io: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    io.iter()
        .filter(|(k, _)| INPUTS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Runs `loaded` on the inputs in `io` and compares both outputs; returns the largest
/// relative error.
fn compare(name: &str, loaded: &AudioLoaded, io: &BTreeMap<String, Tensor>) -> f32 {
    let model = AudioModel::build(loaded, &Device::Cpu).unwrap();
    let out = model.forward(&inputs_of(io)).unwrap();
    let mut worst = 0f32;
    for key in ["last_hidden_state", "extract_features"] {
        let err = rel_err(&out[key], &io[key]);
        eprintln!("{name} {key}: max relative error {err:.2e}");
        assert!(err < REL_TOL, "{name} {key}: relative error {err}");
        worst = worst.max(err);
    }
    worst
}

fn check(name: &str) -> f32 {
    let dir = fixtures().join(name);
    let loaded = load_audio(dir.to_str().unwrap());
    compare(name, &loaded, &read(&dir.join("io.safetensors")))
}

#[test]
fn wav2vec2_group_norm_post_norm_matches_transformers() {
    check("w2v2_group");
}

#[test]
fn wav2vec2_stable_layer_norm_matches_transformers() {
    check("w2v2_stable");
}

#[test]
fn hubert_matches_transformers() {
    check("hubert");
}

#[test]
fn hubert_with_feature_projection_norm_matches_transformers() {
    check("hubert_ln");
}

#[test]
fn data2vec_audio_matches_transformers() {
    check("data2vec_audio");
}

#[test]
fn legacy_weight_norm_names_load_and_match() {
    check("w2v2_legacy");
}

#[test]
fn padding_does_not_change_the_real_frames() {
    // The padded row, cut to its real samples and run alone, gives the same real frames
    // (with layer-normed convs: a group-normed first conv normalises over the padding too,
    // in transformers as here).
    let dir = committed().join("w2v2_stable");
    let loaded = load_audio(dir.to_str().unwrap());
    let model = AudioModel::build(&loaded, &Device::Cpu).unwrap();
    let io = read(&dir.join("io.safetensors"));
    let x = &io["input_values"];
    let mask = &io["attention_mask"];
    let n = mask
        .get(1)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as usize;
    let (padded, fmask) = model.hidden(x, Some(mask)).unwrap();
    let alone = x
        .get(1)
        .unwrap()
        .narrow(0, 0, n)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let (h, none) = model.hidden(&alone, None).unwrap();
    assert!(none.is_none());
    let t = h.dim(1).unwrap();
    assert_eq!(model.encoder.output_lengths(&[n])[0], t);
    let fmask = fmask.unwrap();
    let real: f32 = fmask
        .get(1)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(real as usize, t);
    let row = padded
        .get(1)
        .unwrap()
        .narrow(0, 0, t)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    // The positional conv sees zeros past the end in both cases.
    let err = rel_err(&row, &h);
    assert!(err < REL_TOL, "padded vs alone: {err}");
}

fn families() -> Vec<(&'static str, AudioFamily)> {
    vec![
        ("w2v2_group", AudioFamily::Wav2Vec2),
        ("w2v2_stable", AudioFamily::Wav2Vec2),
        ("hubert", AudioFamily::Hubert),
        ("hubert_ln", AudioFamily::Hubert),
        ("data2vec_audio", AudioFamily::Data2VecAudio),
        ("w2v2_legacy", AudioFamily::Wav2Vec2),
    ]
}

#[test]
fn specs_follow_the_config_and_the_weights() {
    for (name, family) in families() {
        let m = load_audio(committed().join(name).to_str().unwrap());
        assert_eq!(m.spec.family, family, "{name}");
        assert_eq!(m.spec.wrapper, None);
        let c = &m.spec.config;
        assert_eq!(c.conv_dim, vec![16, 16, 16]);
        assert_eq!(c.encoder.dim, 32);
        assert_eq!(c.mask_embed, name != "w2v2_legacy", "{name}");
    }
    let c = load_audio(committed().join("w2v2_stable").to_str().unwrap())
        .spec
        .config;
    assert_eq!(c.encoder.norm, NormPosition::Pre);
    assert_eq!(c.feat_extract_norm, FeatNorm::Layer);
    assert!(c.conv_bias);
    assert_eq!(
        c.pos_conv,
        PosConv::WeightNorm {
            kernel: 5,
            groups: 4
        }
    );
    let c = load_audio(committed().join("hubert").to_str().unwrap())
        .spec
        .config;
    assert!(!c.feat_proj_layer_norm);
    let c = load_audio(committed().join("data2vec_audio").to_str().unwrap())
        .spec
        .config;
    assert!(matches!(
        c.pos_conv,
        PosConv::Stack {
            layers: 2,
            kernel: 5,
            groups: 4
        }
    ));
}

fn copy_case(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "io.safetensors"] {
        std::fs::copy(committed().join(name).join(f), tmp.path().join(f)).unwrap();
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
    match source::load_any(dir.to_str().unwrap(), &Device::Cpu) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn wrapper_prefixes_and_heads_are_accepted() {
    // A ForCTC checkpoint: every base name under `wav2vec2.`, plus the CTC head.
    let tmp = copy_case("w2v2_group");
    rewrite_weights(tmp.path(), |t| {
        let old = std::mem::take(t);
        for (k, v) in old {
            t.insert(format!("wav2vec2.{k}"), v);
        }
        t.insert(
            "lm_head.weight".into(),
            Tensor::zeros((5, 32), DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            "lm_head.bias".into(),
            Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let cfg_path = tmp.path().join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"Wav2Vec2Model\"", "\"Wav2Vec2ForCTC\"");
    std::fs::write(&cfg_path, cfg).unwrap();
    let m = load_audio(tmp.path().to_str().unwrap());
    assert_eq!(m.spec.wrapper.as_deref(), Some("Wav2Vec2ForCTC"));
    assert!(audio::notes(&m.spec).unwrap().contains("Wav2Vec2Model"));
    let io = read(&tmp.path().join("io.safetensors"));
    compare("w2v2_group as ForCTC", &m, &io);
}

#[test]
fn missing_tensor_is_named_with_the_file() {
    let tmp = copy_case("w2v2_group");
    rewrite_weights(tmp.path(), |t| {
        t.remove("encoder.layers.1.feed_forward.output_dense.weight");
    });
    let err = load_err(tmp.path());
    assert!(
        err.contains("encoder.layers.1.feed_forward.output_dense.weight")
            && err.contains("model.safetensors")
            && err.contains("missing"),
        "{err}"
    );
    let tmp = copy_case("w2v2_group");
    rewrite_weights(tmp.path(), |t| {
        t.remove("encoder.pos_conv_embed.conv.parametrizations.weight.original1");
    });
    let err = load_err(tmp.path());
    assert!(err.contains("parametrizations.weight.original1"), "{err}");
}

#[test]
fn unexpected_tensor_is_named() {
    let tmp = copy_case("hubert");
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "encoder.extra.weight".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(tmp.path());
    assert!(
        err.contains("unexpected tensor `encoder.extra.weight`"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let tmp = copy_case("data2vec_audio");
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "feature_projection.projection.weight".into(),
            Tensor::zeros((32, 15), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(tmp.path());
    assert!(
        err.contains("feature_projection.projection.weight")
            && err.contains("[32, 16]")
            && err.contains("[32, 15]"),
        "{err}"
    );
}

#[test]
fn truncated_safetensors_names_the_file() {
    let tmp = copy_case("w2v2_stable");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn unsupported_configs_name_the_field() {
    for (key, value, case) in [
        ("conv_pos_batch_norm", "true", "hubert"),
        ("add_adapter", "true", "w2v2_group"),
        ("feat_extract_norm", "\"batch\"", "w2v2_group"),
        ("architectures", "[\"Wav2Vec2ForXVector\"]", "w2v2_group"),
    ] {
        let tmp = copy_case(case);
        let path = tmp.path().join("config.json");
        let mut cfg: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg.insert(key.into(), serde_json::from_str(value).unwrap());
        std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
        let err = load_err(tmp.path());
        assert!(
            err.contains(key) && err.contains("config.json"),
            "{key}: {err}"
        );
    }
}

#[test]
fn bad_inputs_are_usage_errors() {
    let m = load_audio(committed().join("w2v2_group").to_str().unwrap());
    let model = AudioModel::build(&m, &Device::Cpu).unwrap();
    let err = model.forward(&BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("input_values"), "{err}");
    let ids = Tensor::zeros((1, 800), DType::I64, &Device::Cpu).unwrap();
    let err = model
        .forward(&BTreeMap::from([("input_values".to_string(), ids)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("float"), "{err}");
    let short = Tensor::zeros((1, 9), DType::F32, &Device::Cpu).unwrap();
    let err = model
        .forward(&BTreeMap::from([("input_values".to_string(), short)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("too few"), "{err}");
}

#[test]
fn loaded_checkpoints_export_and_load_back_unchanged() {
    for name in CASES {
        let m = load_audio(committed().join(name).to_str().unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let files = audio::write_hf(&m, tmp.path()).unwrap();
        // config.json, model.safetensors and the feature extractor's preprocessor_config.json.
        assert_eq!(files.len(), 3);
        let back_norm = audio::do_normalize(tmp.path().to_str().unwrap()).unwrap();
        assert_eq!(back_norm, m.normalize, "{name}");
        // transformers 5 names: the weight-norm parametrizations, never the legacy names.
        let written = read(&tmp.path().join("model.safetensors"));
        assert!(written
            .keys()
            .all(|k| !k.ends_with("weight_g") && !k.ends_with("weight_v")));
        let back = load_audio(tmp.path().to_str().unwrap());
        assert_eq!(back.spec, m.spec, "{name}");
        assert_eq!(back.tensors.len(), m.tensors.len());
        for (k, v) in &m.tensors {
            assert_eq!(rel_err(&back.tensors[k], v), 0.0, "{name} {k}");
        }
        let io = read(&committed().join(name).join("io.safetensors"));
        compare(&format!("{name} exported"), &back, &io);
    }
}

fn tiny_config() -> WaveformConfig {
    WaveformConfig {
        conv_dim: vec![8, 8],
        conv_kernel: vec![5, 3],
        conv_stride: vec![3, 2],
        conv_bias: true,
        feat_extract_norm: FeatNorm::Layer,
        feat_extract_activation: Activation::Gelu,
        feat_proj_layer_norm: true,
        feat_proj_dropout: 0.1,
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
            dropout: 0.1,
            attention_dropout: 0.1,
            drop_path: 0.0,
        },
    }
}

#[test]
fn waveform_encoder_is_trainable_and_exports() {
    let cfg = tiny_config();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let enc = WaveformEncoder::new(&cfg, vb.pp("audio")).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 200), &Device::Cpu).unwrap();
    let train = &mut Mode::train(pretext::draws::Draws::new(0, 0, 0, 2));
    let out = enc.forward(&x, None, train).unwrap();
    let loss = out.last_hidden_state.sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    for (name, var) in vars.iter() {
        if name == "audio.mask_embed" {
            continue; // only used by masked objectives
        }
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "no gradient for {name}"
        );
    }
    // The trained tensors export as a Wav2Vec2Model and load back.
    let tensors: BTreeMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    drop(vars);
    let m = AudioLoaded {
        spec: pretext::hf::wav2vec2::AudioSpec {
            family: AudioFamily::Wav2Vec2,
            config: cfg,
            wrapper: None,
            head: None,
        },
        tensors,
        hf_config: None,
        origin: "test".into(),
        sample_rate: 16_000,
        normalize: true,
    };
    let tmp = tempfile::tempdir().unwrap();
    audio::write_hf(&m, tmp.path()).unwrap();
    let back = load_audio(tmp.path().to_str().unwrap());
    assert_eq!(back.spec, m.spec);
    let a = AudioModel::build(&m, &Device::Cpu).unwrap();
    let b = AudioModel::build(&back, &Device::Cpu).unwrap();
    let inputs = BTreeMap::from([("input_values".to_string(), x)]);
    let (oa, ob) = (a.forward(&inputs).unwrap(), b.forward(&inputs).unwrap());
    assert_eq!(
        rel_err(&oa["last_hidden_state"], &ob["last_hidden_state"]),
        0.0
    );
}

#[test]
fn hub_cache_sources_load() {
    // Laid out as the hub cache does: blobs aside, a snapshot directory and refs/main.
    let tmp = tempfile::tempdir().unwrap();
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let repo = tmp.path().join("models--org--tiny-hubert");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(committed().join("hubert_ln").join(f), snap.join(f)).unwrap();
    }
    // The only test in this binary that reads the hub cache.
    std::env::set_var("HF_HUB_CACHE", tmp.path());
    let io = read(&committed().join("hubert_ln/io.safetensors"));
    for src in [
        "hf:org/tiny-hubert",
        &format!("hf:org/tiny-hubert@{commit}"),
    ] {
        compare(src, &load_audio(src), &io);
    }
}
