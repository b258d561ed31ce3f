//! Slow tier: needs the full Fashion-MNIST (`scripts/fetch-data.sh fashion-mnist`).
//! Run with `cargo test --release -- --ignored` (`.ci/run` does).

mod common;

use std::path::Path;

use pretext::modality::image::dataset::ImageDataset;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};

const DIR: &str = "data/fashion-mnist";

fn require_data() {
    assert!(
        Path::new(DIR).join("train-images-idx3-ubyte.gz").exists(),
        "{DIR} is missing: run scripts/fetch-data.sh fashion-mnist first"
    );
}

#[test]
#[ignore = "needs scripts/fetch-data.sh fashion-mnist"]
fn full_fashion_mnist_reads_with_balanced_classes() {
    require_data();
    for (split, n) in [("train", 60_000), ("t10k", 10_000)] {
        let d = ImageDataset::from_idx(
            &Path::new(DIR).join(format!("{split}-images-idx3-ubyte.gz")),
            Some(&Path::new(DIR).join(format!("{split}-labels-idx1-ubyte.gz"))),
        )
        .unwrap();
        assert_eq!((d.len, d.size, d.channels), (n, 28, 1));
        let mut counts = [0usize; 10];
        for &l in d.labels.as_ref().unwrap() {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == n / 10), "{split}: {counts:?}");
    }
}

#[test]
#[ignore = "needs scripts/fetch-data.sh fashion-mnist"]
fn pretraining_on_full_data_lowers_the_loss_and_probe_beats_chance() {
    require_data();
    let tmp = tempfile::tempdir().unwrap();
    let set = |k: &str, v: &str| Override::Set(k.into(), v.into());
    let loaded = recipe::load(
        Path::new("recipes/quickstart.toml"),
        &[
            set("data.train.images", "\"data/fashion-mnist/train-images-idx3-ubyte.gz\""),
            set("data.train.labels", "\"data/fashion-mnist/train-labels-idx1-ubyte.gz\""),
            set("data.test.images", "\"data/fashion-mnist/t10k-images-idx3-ubyte.gz\""),
            set("data.test.labels", "\"data/fashion-mnist/t10k-labels-idx1-ubyte.gz\""),
            set("data.test.limit", "2000"),
            set("train.steps", "60"),
            set("train.schedule.warmup_steps", "10"),
            set("train.log_every", "5"),
            set("downstream", "[{ head = \"linear-probe\", pooling = \"mean\", label_fractions = [0.05], epochs = 50 }]"),
        ],
    )
    .unwrap();
    let run_dir = tmp.path().join("run");
    let s = run::start(
        &loaded,
        &RunOptions {
            out: Some(run_dir.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let losses: Vec<f64> = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let first = losses[..2].iter().sum::<f64>() / 2.0;
    let last = losses[losses.len() - 2..].iter().sum::<f64>() / 2.0;
    assert!(last < 0.8 * first, "loss did not fall: {losses:?}");
    let acc = s.downstream[0].test_accuracy;
    assert!(acc > 0.5, "probe on 3,000 labels reached only {acc}");
    assert_eq!(s.downstream[0].train_examples, 3000);
}

/// The raw-pixel baselines of the label-efficiency report, on the whole set: k-NN and the
/// linear probe (logistic regression) at 100 % and 1 % of the labels. scikit-learn's
/// logistic regression reaches 84.4 % / 78.2 % (issue 3); k-NN on Fashion-MNIST pixels is
/// known to reach about 85 %.
#[test]
#[ignore = "needs scripts/fetch-data.sh fashion-mnist"]
fn raw_pixel_baselines_on_the_full_set() {
    require_data();
    let tmp = tempfile::tempdir().unwrap();
    let set = |k: &str, v: &str| Override::Set(k.into(), v.into());
    let loaded = recipe::load(
        Path::new("recipes/mae-fashion-mnist.toml"),
        &[
            set("train.steps", "1"),
            set("train.schedule.warmup_steps", "0"),
            set(
                "downstream",
                r#"[{ head = "knn", input = "pixels", k = 20, label_fractions = [0.01, 1.0] }, { head = "linear-probe", input = "pixels", epochs = 30, label_fractions = [0.01, 1.0] }]"#,
            ),
        ],
    )
    .unwrap();
    let s = run::start(
        &loaded,
        &RunOptions {
            out: Some(tmp.path().join("run")),
            ..Default::default()
        },
    )
    .unwrap();
    let acc: Vec<f64> = s.downstream.iter().map(|r| r.test_accuracy).collect();
    eprintln!("k-NN 1 %, 100 %; probe 1 %, 100 %: {acc:?}");
    assert_eq!(s.downstream[1].train_examples, 60_000);
    assert_eq!(s.downstream[0].train_examples, 600);
    assert!(
        acc[1] > 0.84 && acc[1] < 0.90,
        "k-NN on all labels: {acc:?}"
    );
    assert!(acc[0] > 0.65 && acc[0] < acc[1], "k-NN on 1 %: {acc:?}");
    assert!(
        acc[3] > 0.82 && acc[3] < 0.87,
        "probe on all labels: {acc:?}"
    );
    assert!(acc[2] > 0.70 && acc[2] < acc[3], "probe on 1 %: {acc:?}");
}
