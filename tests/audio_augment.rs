//! Audio augmentation end to end on the committed sample of the harder spoken-word set
//! (`data/words-hard-sample`: words at random positions, levels, speeds and pitches): an
//! augmented pretraining run differs from a plain one and resumes bitwise, augmented and
//! mixed (mixup, CutMix) fine-tuning trains on other batches than plain fine-tuning, and augmentation keys that do
//! not fit the recipe are errors naming the key.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;

const RECIPE: &str = "recipes/audio-mae-words-sample.toml";
const AUGMENT: &str = "data.augment={ time_shift = 0.1, gain_db = 6.0, noise = { snr_db = [5.0, 30.0], probability = 0.5 }, time_masks = { count = 2, width = 10 }, freq_masks = { count = 2, width = 8 } }";

/// The sample recipe (96 frames in 8 x 8 patches) on the harder sample, shrunk to seconds.
fn overrides(steps: usize, extra: &[&str]) -> Vec<Override> {
    let mut v: Vec<String> = vec![
        "data.train={format=\"manifest\", path=\"data/words-hard-sample/manifest.csv\", split=\"train\"}".into(),
        "data.test={format=\"manifest\", path=\"data/words-hard-sample/manifest.csv\", split=\"test\"}".into(),
        "model.dim=32".into(),
        "model.depth=1".into(),
        "model.heads=2".into(),
        "model.mlp_dim=64".into(),
        "objective.decoder.dim=16".into(),
        "objective.decoder.heads=2".into(),
        format!("train.steps={steps}"),
        "train.batch_size=8".into(),
        "train.schedule.warmup_steps=2".into(),
        "train.checkpoint_every=2".into(),
        "train.log_every=1".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.iter().map(|s| Override::parse_set(s).unwrap()).collect()
}

fn start(steps: usize, extra: &[&str], out: PathBuf, stop_after: Option<usize>) {
    let loaded = recipe::load(Path::new(RECIPE), &overrides(steps, extra)).unwrap();
    run::start(
        &loaded,
        &RunOptions {
            out: Some(out),
            stop_after,
            ..Default::default()
        },
    )
    .unwrap();
}

/// The largest difference between two tensors of the same name in two checkpoints'
/// models, over the names `keep` selects.
fn largest_difference(a: &Path, b: &Path, keep: impl Fn(&str) -> bool) -> f32 {
    let load = |d: &Path| {
        let p = d.join("checkpoints");
        checkpoint::load(&checkpoint::latest(&p).unwrap().unwrap(), &Device::Cpu).unwrap()
    };
    let (a, b) = (load(a), load(b));
    let mut worst = 0f32;
    for (name, t) in a.model.iter().filter(|(n, _)| keep(n)) {
        worst = worst.max(common::max_abs_diff(t, &b.model[name]));
    }
    worst
}

#[test]
fn augmented_pretraining_differs_from_plain_and_resumes_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |n: &str| tmp.path().join(n);
    start(6, &["downstream=[]", AUGMENT], d("full"), None);
    start(6, &["downstream=[]", AUGMENT], d("cut"), Some(4));
    run::resume(&d("cut"), &[], &RunOptions::default()).unwrap();
    assert_eq!(largest_difference(&d("full"), &d("cut"), |_| true), 0.0);
    start(6, &["downstream=[]"], d("plain"), None);
    let moved = largest_difference(&d("full"), &d("plain"), |n| n.starts_with("audio."));
    assert!(
        moved > 1e-4,
        "augmentation left the encoder as it was ({moved})"
    );
}

#[test]
fn augmented_and_mixed_fine_tuning_trains_on_other_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let head = |augment: &str| {
        format!(
            "downstream=[{{ head = \"fine-tune\", pooling = \"mean\", label_fractions = [1.0], epochs = 2, batch_size = 8{augment} }}]"
        )
    };
    let with = head(
        ", augment = { time_shift = 0.2, gain_db = 10.0, time_masks = { count = 2, width = 20 } }",
    );
    // The fine-tuned classifier's weights, from the run's summary.
    let weights = |dir: &Path| {
        let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        let s: serde_json::Value = serde_json::from_str(&text).unwrap();
        let model = PathBuf::from(s["downstream"][0]["model_dir"].as_str().unwrap());
        common::read(&model.join("model.safetensors"))
    };
    let d = |n: &str| tmp.path().join(n);
    start(2, &[&with], d("aug"), None);
    start(2, &[&head("")], d("plain"), None);
    start(2, &[&head("")], d("again"), None);
    let (a, p, q) = (
        weights(&d("aug")),
        weights(&d("plain")),
        weights(&d("again")),
    );
    type Weights = std::collections::BTreeMap<String, candle_core::Tensor>;
    let diff = |x: &Weights, y: &Weights| {
        x.iter()
            .map(|(n, t)| common::max_abs_diff(t, &y[n]))
            .fold(0f32, f32::max)
    };
    // Fine-tuning is deterministic; with augmentation only the batches differ.
    assert_eq!(diff(&p, &q), 0.0);
    assert!(
        diff(&a, &p) > 1e-5,
        "augmentation did not reach fine-tuning"
    );
    // Mixup (Audio-MAE's: mixup alone) and CutMix of the spectrograms: repeatable, and each
    // trains on other batches and targets.
    let mixup = head(", mixup = { alpha = 0.5, cutmix_alpha = 0.0 }");
    start(2, &[&mixup], d("mixup"), None);
    start(2, &[&mixup], d("mixup-again"), None);
    start(
        2,
        &[&head(", mixup = { alpha = 0.0, cutmix_alpha = 1.0 }")],
        d("cutmix"),
        None,
    );
    let (m, m2, c) = (
        weights(&d("mixup")),
        weights(&d("mixup-again")),
        weights(&d("cutmix")),
    );
    assert_eq!(
        diff(&m, &m2),
        0.0,
        "mixup: the same recipe, the same weights"
    );
    assert!(diff(&m, &p) > 1e-5, "mixup did not reach fine-tuning");
    assert!(
        diff(&c, &p) > 1e-5 && diff(&c, &m) > 1e-5,
        "CutMix of spectrograms is its own training"
    );
}

#[test]
fn augmentation_keys_that_do_not_fit_are_errors_naming_the_key() {
    let cases = [
        ("data.augment={ hflip = 0.5 }", "data.augment.hflip"),
        (
            "data.augment={ noise = { snr_db = [30.0, 5.0] } }",
            "data.augment.noise.snr_db",
        ),
        ("data.augment={ gain_db = -3.0 }", "data.augment.gain_db"),
        (
            "data.augment={ time_shift_within = \"padding\" }",
            "data.augment.time_shift_within",
        ),
        (
            "data.augment={ time_shift = 0.1, time_shift_within = \"edges\" }",
            "time_shift_within",
        ),
        (
            "data.augment={ time_masks = { count = 1, width = 0 } }",
            "data.augment.time_masks.width",
        ),
        (
            "downstream[0].augment={ gain_db = 3.0 }",
            "downstream[0].augment",
        ),
    ];
    for (set, key) in cases {
        let err = recipe::load(Path::new(RECIPE), &overrides(2, &[set]))
            .err()
            .unwrap_or_else(|| panic!("`{set}` was accepted"));
        let msg = err.to_string();
        assert!(msg.contains(key), "`{set}`: {msg}");
    }
    let image = recipe::load(
        Path::new("recipes/simmim-fashion-mnist-sample.toml"),
        &[Override::parse_set("data.augment={ gain_db = 3.0 }").unwrap()],
    );
    let msg = image.expect_err("an image recipe took gain_db").to_string();
    assert!(msg.contains("data.augment.gain_db"), "{msg}");
}
