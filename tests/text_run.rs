//! Text runs end to end on the committed samples: a WordPiece tokenizer trained into the run,
//! MLM on packed Shakespeare with held-out perplexity falling, fortune-topic heads, exact
//! resumption, and the run's checkpoint loaded and exported as a `BertForMaskedLM`.

use std::path::{Path, PathBuf};

use candle_core::Device;
use pretext::modality::text::tokenizer::TextTokenizer;
use pretext::recipe::{self, Override};
use pretext::run::source::{self, AnyModel};
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;

/// The sample recipe shrunk to seconds: a 1-block encoder, a small vocabulary.
fn overrides(steps: usize) -> Vec<Override> {
    [
        "model.dim=32".to_string(),
        "model.depth=1".into(),
        "model.heads=2".into(),
        "model.mlp_dim=64".into(),
        "data.text.max_len=32".into(),
        "data.text.tokenizer.vocab_size=600".into(),
        format!("train.steps={steps}"),
        "train.batch_size=16".into(),
        "train.schedule.warmup_steps=5".into(),
        "train.checkpoint_every=20".into(),
        "downstream[0].epochs=30".into(),
        "downstream[1].epochs=30".into(),
    ]
    .iter()
    .map(|s| Override::parse_set(s).unwrap())
    .collect()
}

fn evals(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn start(steps: usize, out: PathBuf, stop_after: Option<usize>) -> run::Summary {
    let loaded = recipe::load(
        Path::new("recipes/mlm-shakespeare-sample.toml"),
        &overrides(steps),
    )
    .unwrap();
    run::start(
        &loaded,
        &RunOptions {
            out: Some(out),
            stop_after,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn mlm_run_lowers_held_out_perplexity_and_feeds_the_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let s = start(60, dir.clone(), None);
    assert_eq!(s.steps, 60);
    // The data wait is the time the steps waited for the prefetching loader.
    assert!(
        s.data_wait_seconds > 0.0 && s.data_wait_seconds < s.pretrain_seconds,
        "data wait {} of {} s",
        s.data_wait_seconds,
        s.pretrain_seconds
    );

    // Held-out perplexity at step 0 and at every checkpoint; it falls by far.
    let e = evals(&dir);
    let steps: Vec<u64> = e.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![0, 20, 40, 60]);
    let ppl = |r: &serde_json::Value| r["perplexity"].as_f64().unwrap();
    let (first, last) = (ppl(&e[0]), ppl(&e[3]));
    assert!(
        first > 400.0,
        "an untrained model guesses among ~600 tokens: {first}"
    );
    assert!(last < first * 0.6, "perplexity {first} -> {last}");
    let held_out = s.held_out_mlm.expect("held-out evaluation in the summary");
    assert!((held_out.perplexity - last).abs() < 1e-6 * last);
    assert!(held_out.accuracy > 0.03, "{held_out:?}");

    // The run is self-contained: its tokenizer is saved and reloads identically.
    let tok = TextTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.vocab_size(), 600);
    let enc = tok.encode("To be, or not to be", true).unwrap();
    assert_eq!(enc.ids.first(), Some(&tok.cls_id()));

    // Both heads ran on the fortunes sample (6 topics, 601 train and 150 test texts).
    assert_eq!(s.downstream.len(), 2);
    for r in &s.downstream {
        assert_eq!(r.train_examples, 601);
        // The probe fits its 601 examples better than the majority class (24 %) would,
        // and is scored on the 150 test texts.
        let fit = r.train_accuracy.expect("probe train accuracy");
        assert!(fit > 0.3, "{}: train accuracy {fit}", r.method);
        let hits = r.test_accuracy * 150.0;
        assert!((hits - hits.round()).abs() < 1e-6, "{}", r.test_accuracy);
    }

    // The run's checkpoint is a BertForMaskedLM, and exports as one.
    let AnyModel::Text(m) = source::load_any(dir.to_str().unwrap(), &Device::Cpu).unwrap() else {
        panic!("a text run loads as a text model")
    };
    assert_eq!(m.spec.hf_class(), "BertForMaskedLM");
    assert_eq!(m.spec.config.vocab_size, 600);
    let out = tmp.path().join("export");
    pretext::hf::text::write_hf(&m, &out).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertForMaskedLM");
    assert_eq!(cfg["vocab_size"], 600);
}

#[test]
fn stopped_and_resumed_text_run_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    start(40, straight.clone(), None);
    let resumed = tmp.path().join("resumed");
    let partial = start(40, resumed.clone(), Some(20));
    assert_eq!(partial.steps, 20);
    let loaded = recipe::load(&resumed.join("recipe.toml"), &[]).unwrap();
    assert_eq!(loaded.recipe.train.steps, 40);
    let s = run::resume(&resumed, &[], &RunOptions::default()).unwrap();
    assert_eq!(s.steps, 40);

    let weights = |d: &Path| {
        let c = checkpoint::load(
            &checkpoint::latest(&d.join("checkpoints")).unwrap().unwrap(),
            &Device::Cpu,
        )
        .unwrap();
        c.model
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(weights(&straight), weights(&resumed));
    assert_eq!(evals(&straight), evals(&resumed));
}

#[test]
fn text_recipe_errors_name_the_key() {
    let base = std::fs::read_to_string("recipes/mlm-shakespeare-sample.toml").unwrap();
    let check = |text: &str, key: &str, what: &str| {
        let err = match recipe::load_str(text, Path::new("t.toml"), &[]) {
            Ok(l) => run::dry_run(&l).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(key) && err.contains(what), "{key}: {err}");
    };
    check(
        &base.replace(
            "tokenizer = { train = \"wordpiece\", vocab_size = 2000, lowercase = true }",
            "tokenizer = { train = \"wordpiece\", file = \"x.json\" }",
        ),
        "data.text.tokenizer",
        "exactly one",
    );
    check(
        &base.replace("kind = \"mlm\"", "kind = \"mae\""),
        "objective.kind",
        "mlm",
    );
    // An IDX source has no `path` (whichever split serde reads first is named).
    check(
        &base.replace("format = \"text\", path", "format = \"idx\", path"),
        ".path` for format = \"idx\"",
        "images, labels, limit",
    );
    check(
        &base.replace(
            "data/shakespeare-sample/train\"",
            "data/shakespeare-sample/none\"",
        ),
        "data.train.path",
        "none",
    );
}

#[test]
fn non_utf8_training_text_names_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    std::fs::write(
        corpus.join("a.txt"),
        b"Fair is foul,\nand foul is fair\xff here",
    )
    .unwrap();
    let base = std::fs::read_to_string("recipes/mlm-shakespeare-sample.toml").unwrap();
    let text = base.replace("data/shakespeare-sample/train", corpus.to_str().unwrap());
    let loaded = recipe::load_str(&text, Path::new("t.toml"), &[]).unwrap();
    let err = run::dry_run(&loaded).unwrap_err().to_string();
    assert!(
        err.contains("a.txt") && err.contains("byte offset 30") && err.contains("0xff"),
        "{err}"
    );
}

#[test]
fn bpe_tokenizer_recipe_trains_one_masked_batch() {
    let mut sets = overrides(10);
    sets.push(Override::parse_set("data.text.tokenizer.train=bpe").unwrap());
    let loaded = recipe::load(Path::new("recipes/mlm-shakespeare-sample.toml"), &sets).unwrap();
    let report = run::dry_run(&loaded).unwrap();
    assert!(report.contains("tokenizer: 600 tokens"), "{report}");
    // A byte-level BPE never needs an unknown token; the loss starts near ln(600) = 6.4.
    let loss: f64 = report
        .split("initial loss: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!((loss - 600f64.ln()).abs() < 0.5, "{report}");
}
