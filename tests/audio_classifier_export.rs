//! `pretext export` of an Audio-MAE classifier a run fine-tunes: the encoder in pretext's
//! documented layout (docs/audio-mae-export.md) plus `classifier.safetensors`, with the
//! run's class names as `id2label`. The documented computation — the exported encoder's
//! `last_hidden_state`, pooled as `pretext_classifier.pooling` says (over the patches that
//! hold the clip), through the linear layer — gives the saved classifier's logits.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use serde_json::Value;

fn ok(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pretext {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn classifier(run: &Path) -> PathBuf {
    std::fs::read_dir(run.join("downstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.json").is_file())
        .unwrap()
}

#[test]
fn an_audio_mae_classifier_exports_as_its_encoder_and_linear_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let heads = "downstream=[{ head = \"fine-tune\", pooling = \"mean\", \
                 label_fractions = [1.0], epochs = 1, batch_size = 16 }]";
    let sets = [&common::TINY_AUDIO[..], &[heads]].concat();
    ok(&common::run_args(
        "recipes/audio-mae-words-sample.toml",
        run.to_str().unwrap(),
        &sets,
    ));
    let cls = classifier(&run);
    let out = tmp.path().join("export");
    let said = ok(&[
        "export",
        cls.to_str().unwrap(),
        "--format",
        "hf",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(said.contains("classifier.safetensors"), "{said}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(cls.join("model.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "pretext-audio-mae");
    assert_eq!(config["pretext_classifier"]["pooling"], "mean");
    for (i, name) in spec["classes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(&config["id2label"][i.to_string()], name);
    }

    // Two clips of the recipe's window length, through both.
    let clips = [
        "data/words-sample/test/go/en-us+anika_s175_p50.wav",
        "data/words-sample/test/no/en-us+anika_s175_p50.wav",
    ];
    let rows: Vec<Vec<f32>> = clips
        .iter()
        .map(|c| pretext::modality::audio::resample::load_clip(Path::new(c), 16_000).unwrap())
        .collect();
    let len = rows.iter().map(Vec::len).min().unwrap();
    let flat: Vec<f32> = rows.iter().flat_map(|r| r[..len].to_vec()).collect();
    let x = Tensor::from_vec(flat, (2, len), &Device::Cpu).unwrap();
    let inputs = HashMap::from([("input_values", x)]);
    let logits = common::forward(&cls, &inputs, tmp.path())["logits"].clone();
    let h = common::forward(&out, &inputs, tmp.path())["last_hidden_state"].clone();
    // Both rows are shorter than the window: the mean is over the patches that hold them
    // (docs/audio-mae-export.md, step 2).
    let c: pretext::modality::audio::classifier::AudioClassifierSpec =
        serde_json::from_value(spec.clone()).unwrap();
    assert!(len < c.features.clip_len(), "{len}");
    let frames = c.features.frame_masks(&[len as u32; 2]).unwrap();
    let frames = Tensor::from_vec(frames, (2, c.features.frames), &Device::Cpu).unwrap();
    let keep = pretext::modality::audio::encoder::token_mask(&frames, &c.geometry).unwrap();
    let held = keep.sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(held[0] > 0.0 && held[0] < c.geometry.num_patches() as f32);
    let patches = h.narrow(1, 1, h.dim(1).unwrap() - 1).unwrap();
    let head =
        candle_core::safetensors::load(out.join("classifier.safetensors"), &Device::Cpu).unwrap();
    let theirs = pretext::backbone::masked_mean(&patches, Some(&keep))
        .unwrap()
        .matmul(&head["weight"].t().unwrap())
        .unwrap()
        .broadcast_add(&head["bias"])
        .unwrap();
    let diff = (&logits - &theirs)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{logits} vs {theirs}");
}
