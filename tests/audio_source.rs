//! Audio recipes that start from a Hugging Face waveform model (`model.source`, here the tiny
//! random wav2vec 2.0 fixture): the probe's features are the source's hidden states, the
//! heads fine-tune the source end to end and save the classifier, and recipes that cannot
//! work are errors naming the key.

use std::path::Path;

use candle_core::{Device, Tensor};
use pretext::hf::audio::{self, AudioModel};
use pretext::modality::audio::classifier::WaveformClassifierSpec;
use pretext::modality::audio::clips::fit_length;
use pretext::modality::audio::load_clip;
use pretext::modality::audio::run::waveform;
use pretext::modality::audio::run::waveform::task::WaveformSplits;
use pretext::recipe::{self, DownstreamInput, Override, Pooling};
use pretext::run::classify::Task;
use pretext::run::downstream::DownstreamTask;
use pretext::run::{self, RunOptions};

const RECIPE: &str = "recipes/wav2vec2-words-sample.toml";
const SOURCE: &str = "tests/fixtures/hf/w2v2_stable";

/// The recipe with clips of 0.39 s instead of 0.95 s (the fixture's conv stack gives a frame
/// every 20 samples, so attention over a whole clip is the cost of these tests).
fn load(extra: &[&str]) -> pretext::error::Result<recipe::Loaded> {
    let o: Vec<Override> = ["data.audio.frames=40"]
        .iter()
        .chain(extra)
        .map(|s| Override::parse_set(s).unwrap())
        .collect();
    recipe::load(Path::new(RECIPE), &o)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn probe_features_are_the_sources_mean_pooled_hidden_states() {
    let loaded = load(&["device=\"cpu\""]).unwrap();
    let r = &loaded.recipe;
    let p = waveform::prepare(r, &loaded.file, Device::Cpu).unwrap();
    assert_eq!(p.train.len(), 80);
    assert_eq!(p.test.len(), 40);
    assert_eq!(p.spec.classes.len(), 20);
    let samples = 39 * 160;
    assert_eq!(p.spec.samples, samples);
    assert!(
        p.spec.normalize,
        "no preprocessor_config.json: do_normalize defaults to true"
    );
    let splits = WaveformSplits {
        train: &p.train,
        test: &p.test,
        spec: &p.spec,
    };
    let task = Task::new(splits, &p.model, r.seed).unwrap();
    let (train_x, test_x) = task
        .features(DownstreamInput::Pretrained, Pooling::Mean)
        .unwrap();
    assert_eq!(train_x.dims(), [80, 32]);
    assert_eq!(test_x.dims(), [40, 32]);

    // The same clips, preprocessed here independently and run through the source as
    // `pretext hf` loads it.
    let dev = Device::Cpu;
    let model = AudioModel::build(
        &audio::read_dir(Path::new(SOURCE), &dev, SOURCE).unwrap(),
        &dev,
    )
    .unwrap();
    for i in [0usize, 37, 79] {
        let mut x = fit_length(&load_clip(&p.train.paths[i], 16000).unwrap(), samples);
        audio::zero_mean_unit_var(&mut x);
        let n = x.len();
        let x = Tensor::from_vec(x, (1, n), &dev).unwrap();
        let (h, _) = model.hidden(&x, None).unwrap();
        let want = h.mean(1).unwrap();
        let got = train_x.narrow(0, i, 1).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(d < 1e-5, "clip {i}: max difference {d}");
    }

    // `scratch` is the same architecture with other (seeded) weights.
    let (scratch, _) = task
        .features(DownstreamInput::Scratch, Pooling::Mean)
        .unwrap();
    assert_eq!(scratch.dims(), [80, 32]);
    assert!(max_abs_diff(&scratch, &train_x) > 1e-3);
    // Waveform models have no class token.
    let e = task
        .features(DownstreamInput::Pretrained, Pooling::Cls)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class token"), "{e}");
}

#[test]
fn the_recipe_probes_and_fine_tunes_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let loaded = load(&[
        "device=\"cpu\"",
        "downstream[2].epochs=2",
        "downstream[3].epochs=1",
    ])
    .unwrap();
    let s = run::start(
        &loaded,
        &RunOptions {
            out: Some(dir.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.steps, 0);
    assert_eq!(s.downstream.len(), 4);
    for r in &s.downstream {
        assert!((0.0..=1.0).contains(&r.test_accuracy), "{r:?}");
    }
    assert!(dir.join("summary.json").is_file());

    // The fine-tuned classifier: its spec, and an encoder that moved away from the source.
    let ft = s.downstream[2]
        .model_dir
        .clone()
        .expect("fine-tune saves its model");
    assert!(s.downstream[2].steps.unwrap() > 0);
    let spec: WaveformClassifierSpec =
        serde_json::from_str(&std::fs::read_to_string(ft.join("model.json")).unwrap()).unwrap();
    assert_eq!(spec.kind, "waveform-classifier");
    assert_eq!(spec.model_type, "wav2vec2");
    assert_eq!(spec.classes.len(), 20);
    assert_eq!(spec.config.encoder.dim, 32);
    let dev = Device::Cpu;
    let saved = pretext::tensor_io::read(&ft.join("model.safetensors"), &dev)
        .unwrap()
        .tensors;
    let source = audio::read_dir(Path::new(SOURCE), &dev, SOURCE)
        .unwrap()
        .tensors;
    assert!(saved.contains_key("classifier.weight"));
    let mut moved = 0;
    for (name, t) in &source {
        let u = saved
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` missing from the fine-tuned model"));
        assert_eq!(u.dims(), t.dims(), "{name}");
        if max_abs_diff(u, t) > 1e-6 {
            moved += 1;
        }
    }
    assert!(
        moved * 2 > source.len(),
        "only {moved} of {} encoder tensors changed",
        source.len()
    );
    // Layer-wise decay sees the blocks.
    assert!(source.keys().any(|k| k.contains(".layers.1.")));
}

#[test]
fn mixup_of_waveforms_is_repeatable_and_reaches_fine_tuning() {
    let tmp = tempfile::tempdir().unwrap();
    // One fine-tuning epoch of the source; its classifier's weights.
    let fine_tune = |name: &str, mixup: &str| {
        let head = format!(
            "downstream=[{{ head = \"fine-tune\", pooling = \"mean\", label_fractions = [1.0], \
             epochs = 1, batch_size = 16{mixup} }}]"
        );
        let loaded = load(&["device=\"cpu\"", &head]).unwrap();
        let s = run::start(
            &loaded,
            &RunOptions {
                out: Some(tmp.path().join(name)),
                ..Default::default()
            },
        )
        .unwrap();
        let dir = s.downstream[0].model_dir.clone().unwrap();
        pretext::tensor_io::read(&dir.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .tensors
    };
    let largest = |a: &std::collections::BTreeMap<String, Tensor>,
                   b: &std::collections::BTreeMap<String, Tensor>| {
        a.iter()
            .map(|(n, t)| max_abs_diff(t, &b[n]))
            .fold(0f32, f32::max)
    };
    let mixup = ", mixup = { alpha = 0.5, cutmix_alpha = 0.0 }";
    let (m, again, plain) = (
        fine_tune("mixup", mixup),
        fine_tune("again", mixup),
        fine_tune("plain", ""),
    );
    assert_eq!(
        largest(&m, &again),
        0.0,
        "the same recipe, the same weights"
    );
    assert!(
        largest(&m, &plain) > 1e-6,
        "mixup did not reach fine-tuning"
    );
}

fn error_of(extra: &[&str]) -> String {
    match load(extra) {
        Err(e) => e.to_string(),
        Ok(l) => run::dry_run(&l).expect_err("an error").to_string(),
    }
}

#[test]
fn unusable_recipes_name_the_key() {
    let e = error_of(&["train.steps=10"]);
    assert!(e.contains("train.steps"), "{e}");
    let e = error_of(&["downstream[1].pooling=\"cls\""]);
    assert!(e.contains("downstream[1].pooling"), "{e}");
    for other in [
        "tests/fixtures/hf/bert_model",
        "tests/fixtures/hf/vit_model",
    ] {
        let e = error_of(&[&format!("model.source=\"{other}\""), "device=\"cpu\""]);
        assert!(e.contains("model.source"), "{other}: {e}");
    }
    let e = error_of(&["data.audio.mel.sample_rate=22050"]);
    assert!(e.contains("data.audio.mel.sample_rate"), "{e}");
    // The shape comes from the source.
    let e = error_of(&["model.dim=64"]);
    assert!(e.contains("model.source"), "{e}");
}

#[test]
fn a_waveform_recipe_takes_no_objective_and_no_patch_sizes() {
    let with_objective = std::fs::read_to_string(RECIPE)
        .unwrap()
        .replace("[train]", "[objective]\nkind = \"mae\"\n\n[train]");
    let err = recipe::load_str(&with_objective, Path::new("w.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("w.toml") && err.contains("`objective`") && err.contains("remove [objective]"),
        "{err}"
    );
    let err = load(&["data.audio.patch_freq=8"]).unwrap_err().to_string();
    assert!(
        err.contains("data.audio.patch_freq") && err.contains("remove"),
        "{err}"
    );
}
