//! `pretext export` of the text classifiers a run fine-tunes, read back by pretext's own
//! Hugging Face loader (the loader is checked against `transformers` by tests/hf_text.rs;
//! scripts/check-hf.sh runs the same exports through `transformers` itself):
//! - a `tanh-cls` head is `BertForSequenceClassification`, with the same logits, the run's
//!   class names as `id2label`, and `predict` giving the same answers from either;
//! - a mean-pooled head is `BertModel` + `classifier.safetensors`, whose documented
//!   computation (mean over the attention mask, then the linear layer) gives its logits;
//! - a RoBERTa-positioned classifier is `RobertaForSequenceClassification` exactly;
//! - the recipe refuses a pooler on mean pooling, naming the key.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor, D};
use serde_json::Value;

fn pretext(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = pretext(args);
    assert!(
        o.status.success(),
        "pretext {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn export(src: &Path, out: &Path) -> String {
    let o = pretext(&[
        "export",
        src.to_str().unwrap(),
        "--format",
        "hf",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Two sentences' ids `[2, 8]` from the run's vocabulary (`[CLS]` 2 … `[SEP]` 3, the second
/// padded with 0) and their attention mask.
fn text_inputs() -> HashMap<&'static str, Tensor> {
    let ids: [[i64; 8]; 2] = [[2, 40, 77, 105, 300, 12, 9, 3], [2, 250, 61, 3, 0, 0, 0, 0]];
    let ids = Tensor::new(&ids, &Device::Cpu).unwrap();
    let mask = ids.ne(0i64).unwrap().to_dtype(DType::I64).unwrap();
    HashMap::from([
        ("input_ids", ids),
        ("attention_mask", mask),
        ("labels", Tensor::new(&[1i64, 4], &Device::Cpu).unwrap()),
    ])
}

/// The fine-tuned classifier directories of `run`, in section order.
fn classifiers(run: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(run.join("downstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

const HEADS: &str = "downstream=[\
    { head = \"fine-tune\", pooler = \"tanh-cls\", label_fractions = [1.0], epochs = 1, batch_size = 16 }, \
    { head = \"fine-tune\", pooling = \"mean\", label_fractions = [1.0], epochs = 1, batch_size = 16 }]";

#[test]
fn fine_tuned_text_classifiers_export_and_load_back() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let sets = [&common::TINY_TEXT[..], &[HEADS]].concat();
    ok(&common::run_args(
        "recipes/mlm-shakespeare-sample.toml",
        run.to_str().unwrap(),
        &sets,
    ));
    let dirs = classifiers(&run);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let inputs = text_inputs();
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(dirs[0].join("model.json")).unwrap())
            .unwrap();
    assert_eq!(spec["pooler"], "tanh-cls");
    let classes: Vec<String> = spec["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();

    // tanh-cls: BertForSequenceClassification with the classifier's logits and loss.
    let hf = tmp.path().join("hf-cls");
    let said = export(&dirs[0], &hf);
    assert!(said.contains("BertForSequenceClassification"), "{said}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    for (i, name) in classes.iter().enumerate() {
        assert_eq!(config["id2label"][i.to_string()], name.as_str());
        assert_eq!(config["label2id"][name], i);
    }
    assert!(hf.join("tokenizer.json").is_file());
    let ours = common::forward(&dirs[0], &inputs, tmp.path());
    let theirs = common::forward(&hf, &inputs, tmp.path());
    assert!(max_diff(&ours["logits"], &theirs["logits"]) < 1e-5);
    assert!(max_diff(&ours["loss"], &theirs["loss"]) < 1e-5);
    // The exported directory labels a sentence as the classifier does.
    let sentence = "The computer printed the wrong poem for the politician.";
    let p = |m: &Path| -> Value {
        let out = ok(&[
            "predict",
            "--model",
            m.to_str().unwrap(),
            "--text",
            sentence,
            "--top-k",
            "3",
        ]);
        serde_json::from_str(out.lines().next().unwrap()).unwrap()
    };
    let (a, b) = (p(&dirs[0]), p(&hf));
    assert_eq!(a["label"], b["label"]);
    assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-5);

    // Mean pooling: BertModel + classifier.safetensors, computed as docs/huggingface.md says.
    let enc = tmp.path().join("hf-mean");
    let said = export(&dirs[1], &enc);
    assert!(
        said.contains("BertModel") && said.contains("classifier.safetensors"),
        "{said}"
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(enc.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertModel");
    assert_eq!(config["pretext_classifier"]["pooling"], "mean");
    assert_eq!(config["id2label"]["0"], classes[0].as_str());
    let h = &common::forward(&enc, &inputs, tmp.path())["last_hidden_state"];
    let mask = inputs["attention_mask"]
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(D::Minus1)
        .unwrap();
    let pooled = h
        .broadcast_mul(&mask)
        .unwrap()
        .sum(1)
        .unwrap()
        .broadcast_div(&mask.sum(1).unwrap())
        .unwrap();
    let head =
        candle_core::safetensors::load(enc.join("classifier.safetensors"), &Device::Cpu).unwrap();
    let logits = pooled
        .matmul(&head["weight"].t().unwrap())
        .unwrap()
        .broadcast_add(&head["bias"])
        .unwrap();
    let ours = common::forward(&dirs[1], &inputs, tmp.path());
    assert!(max_diff(&ours["logits"], &logits) < 1e-5);
}

#[test]
fn a_roberta_classifier_exports_as_roberta_for_sequence_classification() {
    use pretext::modality::text::classifier::{TextClassifier, TextClassifierSpec};
    use pretext::modality::text::{TextConfig, TextPositions};

    let tmp = tempfile::tempdir().unwrap();
    // A tokenizer of 600 ids, from a tiny text run.
    let run = tmp.path().join("run");
    let sets = [&common::TINY_TEXT[..], &["downstream=[]"]].concat();
    ok(&common::run_args(
        "recipes/mlm-shakespeare-sample.toml",
        run.to_str().unwrap(),
        &sets,
    ));
    let encoder = pretext::backbone::EncoderConfig {
        dim: 16,
        depth: 2,
        heads: 2,
        mlp_dim: 32,
        ..serde_json::from_value(
            serde_json::from_str::<Value>(
                &std::fs::read_to_string(run.join("text-config.json")).unwrap(),
            )
            .unwrap()["encoder"]
                .clone(),
        )
        .unwrap()
    };
    let text = TextConfig {
        vocab_size: 600,
        max_positions: 34,
        type_vocab_size: 1,
        pad_token_id: 1,
        positions: TextPositions::Roberta,
        embed_norm_eps: encoder.norm_eps,
        encoder,
    };
    let labels: Vec<String> = ["neg", "pos", "odd"].map(String::from).to_vec();
    let spec = TextClassifierSpec::new(text, pretext::backbone::Pooling::Cls, labels)
        .with_pooler(Some(pretext::backbone::Pooler::TanhCls));
    let store = pretext::params::ParamStore::new(11);
    TextClassifier::new(&spec, store.var_builder(&Device::Cpu)).unwrap();
    let cls = tmp.path().join("classifier");
    std::fs::create_dir_all(&cls).unwrap();
    store.save(&cls.join("model.safetensors")).unwrap();
    spec.write(&cls).unwrap();
    std::fs::copy(run.join("tokenizer.json"), cls.join("tokenizer.json")).unwrap();

    let hf = tmp.path().join("hf");
    let said = export(&cls, &hf);
    assert!(said.contains("RobertaForSequenceClassification"), "{said}");
    let weights =
        candle_core::safetensors::load(hf.join("model.safetensors"), &Device::Cpu).unwrap();
    for name in [
        "classifier.dense.weight",
        "classifier.out_proj.weight",
        "roberta.embeddings.word_embeddings.weight",
    ] {
        assert!(weights.contains_key(name), "{name}: {:?}", weights.keys());
    }
    // RoBERTa pads with 1; real tokens elsewhere.
    let ids = Tensor::new(&[[0i64, 40, 77, 105, 2], [0, 250, 2, 1, 1]], &Device::Cpu).unwrap();
    let mask = ids.ne(1i64).unwrap().to_dtype(DType::I64).unwrap();
    let inputs = HashMap::from([("input_ids", ids), ("attention_mask", mask)]);
    let ours = common::forward(&cls, &inputs, tmp.path());
    let theirs = common::forward(&hf, &inputs, tmp.path());
    assert!(max_diff(&ours["logits"], &theirs["logits"]) < 1e-5);
}

#[test]
fn a_pooler_on_mean_pooling_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let bad = "downstream=[{ head = \"fine-tune\", pooling = \"mean\", pooler = \"tanh-cls\" }]";
    let sets = [&common::TINY_TEXT[..], &[bad]].concat();
    let o = pretext(&common::run_args(
        "recipes/mlm-shakespeare-sample.toml",
        run.to_str().unwrap(),
        &sets,
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("downstream[0].pooler") && e.contains("cls"),
        "{e}"
    );
    assert!(!run.exists(), "no run directory for a refused recipe");
}
