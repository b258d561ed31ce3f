//! `pretext forward` on the text and audio classifiers a run fine-tunes: inputs named as in
//! `transformers` give the logits whose softmax `predict` reports, padding (an attention
//! mask) changes nothing, and labels add the loss; `embed` says it reads encoders instead.

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
    String::from_utf8(o.stdout).unwrap()
}

/// The one fine-tuned classifier directory of `run`.
fn classifier(run: &Path) -> PathBuf {
    std::fs::read_dir(run.join("downstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("model.json").is_file())
        .unwrap()
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::MIN, f32::max);
    let e: Vec<f64> = logits.iter().map(|l| f64::from(l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// `predict` on one input: each class's probability, by class name.
fn predicted(model: &Path, flag: &str, input: &str) -> HashMap<String, f64> {
    let out = ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        flag,
        input,
        "--top-k",
        "100",
    ]);
    let line: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    line["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["label"].as_str().unwrap().to_string(),
                t["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn classes(classifier: &Path, key: &str) -> Vec<String> {
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(classifier.join("model.json")).unwrap())
            .unwrap();
    serde_json::from_value(spec[key].clone()).unwrap()
}

fn assert_same(probs: &[f64], names: &[String], predicted: &HashMap<String, f64>) {
    assert_eq!(predicted.len(), names.len());
    for (p, n) in probs.iter().zip(names) {
        assert!(
            (p - predicted[n]).abs() < 1e-5,
            "{n}: forward {p}, predict {}",
            predicted[n]
        );
    }
}

const FINE_TUNE: &str = "downstream=[{ head = \"fine-tune\", pooling = \"mean\", \
     label_fractions = [1.0], epochs = 1, batch_size = 16 }]";

#[test]
fn a_text_classifier_runs_on_input_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let sets = [&common::TINY_TEXT[..], &[FINE_TUNE]].concat();
    ok(&common::run_args(
        "recipes/mlm-shakespeare-sample.toml",
        run.to_str().unwrap(),
        &sets,
    ));
    let cls = classifier(&run);
    let sentence = "The computer printed the wrong poem for the politician.";
    let tok =
        pretext::modality::text::tokenizer::TextTokenizer::from_file(run.join("tokenizer.json"))
            .unwrap();
    let enc = tok.encode(sentence, false).unwrap();
    let ids = pretext::modality::text::pack::classification_ids(&tok, &enc.ids, 32);
    let n = ids.len();
    let row = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let out = common::forward(&cls, &HashMap::from([("input_ids", row)]), tmp.path());
    let logits = out["logits"].to_vec2::<f32>().unwrap()[0].clone();
    let names = classes(&cls, "labels");
    assert_same(
        &softmax(&logits),
        &names,
        &predicted(&cls, "--text", sentence),
    );

    // Padded with garbage ids that the attention mask hides, with labels: same logits, a loss.
    let mut padded = ids.clone();
    padded.extend([7, 7, 7]);
    let mask: Vec<u32> = (0..n + 3).map(|i| u32::from(i < n)).collect();
    let out = common::forward(
        &cls,
        &HashMap::from([
            (
                "input_ids",
                Tensor::new(padded.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            ),
            (
                "attention_mask",
                Tensor::new(mask.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            ),
            ("labels", Tensor::new(&[1i64], &Device::Cpu).unwrap()),
        ]),
        tmp.path(),
    );
    let again = out["logits"].to_vec2::<f32>().unwrap()[0].clone();
    for (a, b) in logits.iter().zip(&again) {
        assert!((a - b).abs() < 1e-5, "{logits:?} vs {again:?}");
    }
    let loss = out["loss"].to_scalar::<f32>().unwrap();
    let expected = -softmax(&logits)[1].ln();
    assert!(
        (f64::from(loss) - expected).abs() < 1e-4,
        "{loss} vs {expected}"
    );

    // `embed` reads encoders: said as such, not as a field the image reader misses.
    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args([
            "embed",
            "--model",
            cls.to_str().unwrap(),
            "--text",
            sentence,
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("`text-classifier`") && e.contains("embed") && e.contains("run"),
        "{e}"
    );
}

#[test]
fn an_audio_classifier_runs_on_input_values() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let sets = [&common::TINY_AUDIO[..], &[FINE_TUNE]].concat();
    ok(&common::run_args(
        "recipes/audio-mae-words-sample.toml",
        run.to_str().unwrap(),
        &sets,
    ));
    let cls = classifier(&run);
    let clip = "data/words-sample/test/go/en-us+anika_s175_p50.wav";
    let samples = pretext::modality::audio::resample::load_clip(Path::new(clip), 16_000).unwrap();
    let x = Tensor::new(samples.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let out = common::forward(&cls, &HashMap::from([("input_values", x)]), tmp.path());
    let logits = out["logits"].to_vec2::<f32>().unwrap()[0].clone();
    let names = classes(&cls, "classes");
    assert_same(&softmax(&logits), &names, &predicted(&cls, "--audio", clip));
}
