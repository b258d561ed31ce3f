//! Downstream heads on the committed Fashion-MNIST sample: fine-tuning (and the classifier
//! it saves), k-NN, the raw-pixel baseline, the label-efficiency table, and reuse of
//! finished results when a run is resumed.

mod common;

use candle_core::Device;
use pretext::backbone::Mode;
use pretext::head::linear_probe::accuracy;
use pretext::modality::image::classifier::{
    ClassifierSpec, ImageClassifier, SPEC_FILE, WEIGHTS_FILE,
};
use pretext::modality::image::dataset::ImageDataset;
use pretext::params::ParamStore;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};

fn set(k: &str, v: &str) -> Override {
    Override::Set(k.into(), v.into())
}

fn run_tiny(dir: &std::path::Path, overrides: &[Override]) -> run::Summary {
    let file = common::write_recipe(dir, &common::tiny_recipe(2, 2));
    let loaded = recipe::load(&file, overrides).unwrap();
    run::start(
        &loaded,
        &RunOptions {
            out: Some(dir.join("run")),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn fine_tuning_learns_and_saves_a_classifier_that_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run_tiny(
        tmp.path(),
        &[
            set("model.dropout", "0.0"),
            set(
                "downstream",
                r#"[{head = "fine-tune", label_fractions = [1.0], epochs = 1, min_steps = 60, batch_size = 32, lr = 3e-3, layer_decay = 0.75, label_smoothing = 0.1}]"#,
            ),
        ],
    );
    let r = &s.downstream[0];
    assert_eq!(r.method, "fine-tune (pretrained)");
    assert_eq!(r.steps, Some(60));
    assert_eq!(r.train_examples, 64);
    // 60 steps on 64 real images: far above the 10 % of chance on what it trained on.
    let train_acc = r.train_accuracy.unwrap();
    assert!(train_acc > 0.6, "train accuracy {train_acc}");
    assert!(r.test_accuracy > 0.2, "test accuracy {}", r.test_accuracy);

    // The saved classifier reloads and gives the same test accuracy.
    let dir = r.model_dir.as_ref().unwrap();
    let spec = ClassifierSpec::read(dir).unwrap();
    assert_eq!(spec.num_labels, 10);
    let store = ParamStore::new(0);
    let model = ImageClassifier::new(&spec, store.var_builder(&Device::Cpu)).unwrap();
    let weights = pretext::tensor_io::read(&dir.join(WEIGHTS_FILE), &Device::Cpu).unwrap();
    store
        .load_tensors(&weights.tensors, &dir.join(WEIGHTS_FILE))
        .unwrap();
    let test = ImageDataset::from_idx(
        std::path::Path::new("data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz"),
        Some(std::path::Path::new(
            "data/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz",
        )),
    )
    .unwrap();
    let idx: Vec<usize> = (0..40).collect();
    let x = test
        .batch(&idx, &[0.2860], &[0.3530], &Device::Cpu)
        .unwrap();
    let y = test.label_batch(&idx, &Device::Cpu).unwrap();
    let logits = model.forward(&x, &mut Mode::Eval).unwrap();
    let acc = accuracy(&logits, &y).unwrap();
    assert!(
        (acc - r.test_accuracy).abs() < 1e-9,
        "{acc} vs {}",
        r.test_accuracy
    );
}

/// The largest difference in the tensor `name` between the classifiers the run's first two
/// heads fine-tuned.
fn max_weight_difference(s: &run::Summary, name: &str) -> f32 {
    let load = |i: usize| {
        let dir = s.downstream[i].model_dir.as_ref().unwrap();
        pretext::tensor_io::read(&dir.join(WEIGHTS_FILE), &Device::Cpu)
            .unwrap()
            .tensors
    };
    let (a, b) = (load(0), load(1));
    (&a[name] - &b[name])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn pretrained_and_scratch_fine_tuning_start_from_different_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run_tiny(
        tmp.path(),
        &[set(
            "downstream",
            r#"[{head = "fine-tune", label_fractions = [0.5], epochs = 1, batch_size = 32},
                {head = "fine-tune", input = "scratch", label_fractions = [0.5], epochs = 1, batch_size = 32}]"#,
        )],
    );
    let diff = max_weight_difference(&s, "vit.patch_embed.weight");
    assert!(diff > 0.0);
    assert_eq!(s.downstream[1].method, "fine-tune (from scratch)");
    // Two steps each (32 of 64 examples → one batch per epoch, no floor): same budget.
    assert_eq!(s.downstream[0].steps, s.downstream[1].steps);
}

#[test]
fn knn_and_pixel_baselines_on_the_whole_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run_tiny(
        tmp.path(),
        &[
            set("data.train.limit", "2000"),
            set("data.test.limit", "500"),
            set(
                "downstream",
                r#"[{head = "knn", input = "pixels", k = 10, label_fractions = [0.1, 1.0]},
                    {head = "linear-probe", input = "pixels", epochs = 30, label_fractions = [1.0]}]"#,
            ),
        ],
    );
    let acc: Vec<f64> = s.downstream.iter().map(|r| r.test_accuracy).collect();
    // k-NN on Fashion-MNIST pixels is a strong baseline (about 80 % with 2,000 examples);
    // more labels help.
    assert!(acc[1] > 0.72, "{acc:?}");
    assert!(acc[1] > acc[0], "{acc:?}");
    assert!(acc[2] > 0.75, "{acc:?}");
    // The table: one row per method, one column per fraction.
    let report = s.label_efficiency.as_ref().unwrap();
    assert_eq!(report.label_fractions, vec![0.1, 1.0]);
    assert_eq!(report.rows.len(), 2);
    assert_eq!(report.rows[0].method, "k-NN (raw pixels)");
    assert_eq!(report.rows[1].test_accuracy[0], None);
    let md = std::fs::read_to_string(tmp.path().join("run/report.md")).unwrap();
    assert!(md.contains("| k-NN (raw pixels) |"), "{md}");
}

#[test]
fn finished_results_are_reused_and_changed_settings_are_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run_tiny(tmp.path(), &[]);
    let run_dir = tmp.path().join("run");
    let result = run_dir.join("downstream/00-linear-probe-pretrained-50pct/result.json");
    let before = std::fs::read_to_string(&result).unwrap();
    let again = run::resume(&run_dir, &[], &RunOptions::default()).unwrap();
    assert_eq!(std::fs::read_to_string(&result).unwrap(), before);
    assert_eq!(
        again.downstream[0].test_accuracy,
        s.downstream[0].test_accuracy
    );
    // A different number of epochs is a different experiment: computed again.
    run::resume(
        &run_dir,
        &[set("downstream[0].epochs", "7")],
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let seven = std::fs::read_to_string(&result).unwrap();
    assert_ne!(seven, before);
    // The earlier result is kept, not overwritten, and comes back with its settings.
    let kept = run_dir.join("downstream/replaced/00-linear-probe-pretrained-50pct-1/result.json");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), before);
    // (The override persists in the run's recipe: going back takes the old value again.)
    let back = run::resume(
        &run_dir,
        &[set("downstream[0].epochs", "5")],
        &RunOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read_to_string(&result).unwrap(), before);
    assert_eq!(
        back.downstream[0].test_accuracy,
        s.downstream[0].test_accuracy
    );
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), seven);
}

/// Heads rerun on a run whose head data changed are trained and tested again: a result
/// cached for the old split is not reported for the new one.
#[test]
fn changed_head_data_is_not_served_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    run_tiny(tmp.path(), &[]);
    let run_dir = tmp.path().join("run");
    let result = run_dir.join("downstream/00-linear-probe-pretrained-50pct/result.json");
    let before = std::fs::read_to_string(&result).unwrap();
    let again = run::resume(
        &run_dir,
        &[set("data.test.limit", "20")],
        &RunOptions {
            allow_changed: vec!["data.test".into()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let after = std::fs::read_to_string(&result).unwrap();
    assert_ne!(after, before);
    assert!(after.contains("\"limit\": 20"), "{after}");
    // Tested on 20 images now, not 40.
    let acc = again.downstream[0].test_accuracy * 20.0;
    assert!((acc - acc.round()).abs() < 1e-6, "{acc}");
}

#[test]
fn a_fine_tuned_head_on_pixels_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    let err = recipe::load(
        &file,
        &[set(
            "downstream",
            r#"[{head = "fine-tune", input = "pixels"}]"#,
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("downstream[0].input"), "{err}");
}

/// Stochastic depth changes what fine-tuning learns (two blocks: the first block's rate is
/// 0, the last's the recipe's), and stays out of the classifier's saved spec.
#[test]
fn fine_tuning_with_drop_path_trains_another_model() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run_tiny(
        tmp.path(),
        &[
            set("model.depth", "2"),
            set(
                "downstream",
                r#"[{head = "fine-tune", label_fractions = [0.5], epochs = 2, batch_size = 16},
                    {head = "fine-tune", label_fractions = [0.5], epochs = 2, batch_size = 16, drop_path = 0.5}]"#,
            ),
        ],
    );
    let dir = |i: usize| s.downstream[i].model_dir.clone().unwrap();
    let diff = max_weight_difference(&s, "vit.encoder.layers.1.mlp.fc2.weight");
    assert!(
        diff > 0.0,
        "drop_path = 0.5 trained the same weights as none"
    );
    let spec = |i: usize| {
        let text = std::fs::read_to_string(dir(i).join(SPEC_FILE)).unwrap();
        assert!(!text.contains("drop_path"), "{text}");
        text
    };
    assert_eq!(spec(0), spec(1));
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    let bad = set(
        "downstream",
        r#"[{head = "fine-tune", label_fractions = [0.5], drop_path = 1.5}]"#,
    );
    let err = recipe::load(&file, &[bad]).err().unwrap().to_string();
    assert!(err.contains("downstream[0].drop_path"), "{err}");
}

/// The sample's labelled training split as an inline IDX source, first `limit` images.
fn sample_train(limit: usize) -> String {
    format!(
        r#"{{ format = "idx", images = "data/fashion-mnist-sample/train-images-idx3-ubyte.gz", labels = "data/fashion-mnist-sample/train-labels-idx1-ubyte.gz", limit = {limit} }}"#
    )
}

#[test]
fn image_heads_train_and_test_on_data_labelled_after_unlabelled_pretraining() {
    let tmp = tempfile::tempdir().unwrap();
    // Pretraining on images without a labels file (the sample's test images); the heads on
    // `data.labelled`, whose test split here is 100 of its own 300 training images, so
    // 1-NN on the pixels finds each one itself: 100 %, which `data.test` (held-out
    // images) would not give.
    let s = run_tiny(
        tmp.path(),
        &[
            set(
                "data.train",
                r#"{ format = "idx", images = "data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz", limit = 64 }"#,
            ),
            set(
                "data.labelled",
                &format!(
                    "{{ train = {}, test = {} }}",
                    sample_train(300),
                    sample_train(100)
                ),
            ),
            set(
                "downstream",
                r#"[{head = "knn", input = "pixels", k = 1, label_fractions = [1.0]},
                    {head = "linear-probe", label_fractions = [1.0], epochs = 5}]"#,
            ),
        ],
    );
    assert_eq!(s.downstream[0].train_examples, 300);
    assert_eq!(s.downstream[0].test_accuracy, 1.0);
    assert_eq!(s.downstream[1].train_examples, 300);
}

#[test]
fn unlabelled_images_cannot_train_a_head() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    let unlabelled =
        r#"{ format = "idx", images = "data/fashion-mnist-sample/t10k-images-idx3-ubyte.gz" }"#;
    // Without `data.labelled` the heads would need labels on `data.train` ...
    let err = recipe::load(&file, &[set("data.train", unlabelled)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.train.labels"), "{err}");
    // ... and `data.labelled` has to be labelled.
    let labelled = format!("{{ train = {unlabelled}, test = {} }}", sample_train(10));
    let err = recipe::load(&file, &[set("data.labelled", &labelled)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.labelled.train") && err.contains("IDX with `labels`"),
        "{err}"
    );
}

#[test]
fn label_draws_train_each_draw_apart_and_the_report_averages_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = run_tiny(
        tmp.path(),
        &[
            set("data.train.limit", "400"),
            set("data.test.limit", "200"),
            set(
                "downstream",
                r#"[{head = "knn", input = "pixels", k = 5, label_fractions = [0.05, 1.0], draws = 3},
                    {head = "knn", input = "pixels", k = 5, label_fractions = [0.05]},
                    {head = "fine-tune", input = "scratch", label_fractions = [0.05], epochs = 1, batch_size = 8, draws = 2}]"#,
            ),
        ],
    );
    // The two k-NN sections are told apart by their index: `… #0` and `… #1`.
    let knn: Vec<_> = (s.downstream.iter())
        .filter(|r| r.method.ends_with("#0") && r.label_fraction < 1.0)
        .collect();
    let draws: Vec<_> = knn.iter().map(|r| r.draw).collect();
    assert_eq!(draws, [Some(1), Some(2), Some(3)]);
    // Each draw is its own stratified set of 20 labels: on 200 test images, three draws
    // giving one accuracy would mean one draw used three times.
    let acc: Vec<f64> = knn.iter().map(|r| r.test_accuracy).collect();
    assert!(acc[0] != acc[1] || acc[1] != acc[2], "{acc:?}");
    // The first draw is the single-draw section's (same seed, same labels, same result),
    // which keeps the directory a single draw has.
    let single = s
        .downstream
        .iter()
        .find(|r| r.method.ends_with("#1"))
        .unwrap();
    assert_eq!(single.draw, None);
    assert_eq!(single.test_accuracy, acc[0]);
    // All the labels are drawn once: three draws would be the same 400 examples.
    let all: Vec<_> = (s.downstream.iter())
        .filter(|r| r.method.ends_with("#0") && r.label_fraction == 1.0)
        .collect();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].draw, all[0].train_examples), (None, 400));
    let dirs = tmp.path().join("run/downstream");
    for d in [
        "00-knn-pixels-5pct-draw1",
        "00-knn-pixels-5pct-draw3",
        "00-knn-pixels-100pct",
        "01-knn-pixels-5pct",
        "02-fine-tune-scratch-5pct-draw2",
    ] {
        assert!(dirs.join(d).join("result.json").exists(), "{d}");
    }
    // Two fine-tuned classifiers, one per draw.
    let tuned: Vec<_> = s
        .downstream
        .iter()
        .filter(|r| r.head == recipe::HeadKind::FineTune)
        .collect();
    assert_eq!(tuned.len(), 2);
    assert_ne!(tuned[0].model_dir, tuned[1].model_dir);

    // The report: the mean of the draws, their spread, and a line saying so.
    let report = std::fs::read_to_string(tmp.path().join("run/report.md")).unwrap();
    let mean = acc.iter().sum::<f64>() / 3.0;
    let row = report.lines().find(|l| l.contains("#0 |")).unwrap();
    assert!(row.contains(&format!("{:.1} ±", mean * 100.0)), "{report}");
    assert!(
        report.contains("over 3 or 2 label draws") || report.contains("over 2 or 3 label draws"),
        "{report}"
    );
}

#[test]
fn label_draws_must_be_between_one_and_a_hundred() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    for n in ["0", "101"] {
        let err = recipe::load(
            &file,
            &[set(
                "downstream",
                &format!(r#"[{{head = "knn", draws = {n}}}]"#),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("downstream[0].draws") && err.contains(n),
            "{err}"
        );
    }
}
