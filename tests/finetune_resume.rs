//! Fine-tuning runs in the training loop pretraining uses, so it checkpoints and resumes the
//! same way: stopped part-way and continued, it ends bitwise equal to an uninterrupted
//! fine-tuning; `kill -9` during a run's (augmented) fine-tuning is recovered by
//! `pretext run RUN_DIR`; augmentation and mixup are deterministic and take effect.
//! All on the committed Fashion-MNIST sample.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use pretext::backbone::{Activation, EncoderConfig, NormPosition, Pooling};
use pretext::head::finetune::{fine_tune, FineTuneConfig, Scored};
use pretext::modality::image::classifier::{ClassifierSpec, ImageClassifier, WEIGHTS_FILE};
use pretext::modality::image::dataset::ImageDataset;
use pretext::modality::image::ImageGeometry;
use pretext::params::ParamStore;
use pretext::train::checkpoint;

fn bits(tensors: &BTreeMap<String, Tensor>) -> BTreeMap<String, Vec<u32>> {
    tensors
        .iter()
        .map(|(k, t)| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (k.clone(), v.iter().map(|f| f.to_bits()).collect())
        })
        .collect()
}

fn store_bits(store: &ParamStore) -> BTreeMap<String, Vec<u32>> {
    bits(
        &store
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect(),
    )
}

fn spec() -> ClassifierSpec {
    ClassifierSpec::new(
        ImageGeometry {
            size: 28,
            channels: 1,
            patch: 7,
        },
        EncoderConfig {
            dim: 32,
            depth: 2,
            heads: 2,
            mlp_dim: 64,
            norm: NormPosition::Pre,
            activation: Activation::Gelu,
            norm_eps: 1e-6,
            qkv_bias: true,
            // Dropout on: resumption must restore the RNG as well as the data order.
            dropout: 0.1,
            attention_dropout: 0.0,
            drop_path: 0.0,
        },
        10,
        Pooling::Cls,
        Vec::new(),
    )
}

fn config(stop_after: Option<usize>) -> FineTuneConfig {
    FineTuneConfig {
        epochs: 3,
        min_steps: 0,
        lr: 2e-3,
        weight_decay: 0.05,
        batch_size: 24, // 100 examples: partial last batches, 5 steps an epoch
        warmup_fraction: 0.2,
        layer_decay: 0.75,
        label_smoothing: 0.1,
        seed: 11,
        lengths: None,
        checkpoint_every: 4,
        label: String::new(),
        stop_after,
    }
}

/// Fine-tunes a fresh classifier on 100 sample images into `dir`; returns its weights.
fn fine_tune_into(dir: &Path, stop_after: Option<usize>) -> (ParamStore, usize) {
    let data = ImageDataset::from_idx(
        Path::new("data/fashion-mnist-sample/train-images-idx3-ubyte.gz"),
        Some(Path::new(
            "data/fashion-mnist-sample/train-labels-idx1-ubyte.gz",
        )),
    )
    .unwrap();
    let dev = Device::Cpu;
    let spec = spec();
    let store = ParamStore::new(11);
    let model = ImageClassifier::new(&spec, store.var_builder(&dev)).unwrap();
    let chosen: Vec<usize> = (0..100).map(|i| i * 3).collect();
    let logits = |idx: &[usize],
                  _draws: &pretext::draws::Draws,
                  mode: &mut pretext::backbone::Mode|
     -> pretext::error::Result<Scored> {
        let x = data.batch(idx, &[0.2860], &[0.3530], &dev)?;
        Ok(Scored::plain(
            model.forward(&x, mode)?,
            data.label_batch(idx, &dev)?,
        ))
    };
    let done = fine_tune(
        &store,
        spec.encoder.depth,
        &logits,
        &chosen,
        &config(stop_after),
        dir,
    )
    .unwrap();
    (store, done.steps)
}

fn logged_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_fine_tuning_stopped_and_continued_equals_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let (a, steps) = fine_tune_into(&straight, None);
    assert_eq!(steps, 15);

    // Stopped after step 9 (checkpoints at 4 and 8, and at the stop): continue from 9.
    let resumed = tmp.path().join("resumed");
    let (_, partial) = fine_tune_into(&resumed, Some(9));
    assert_eq!(partial, 9);
    let ckpt = checkpoint::latest(&resumed.join("checkpoints"))
        .unwrap()
        .unwrap();
    let state = checkpoint::load(&ckpt, &Device::Cpu).unwrap().state;
    assert_eq!(
        state.step, 8,
        "the newest checkpoint is the last multiple of 4"
    );
    assert_eq!(state.order.as_ref().map(Vec::len), Some(100));
    let (b, steps) = fine_tune_into(&resumed, None);
    assert_eq!(steps, 15);
    let (a, b) = (store_bits(&a), store_bits(&b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "parameter `{k}` differs after resumption");
    }
    // One metrics line per logged step, none repeated by the resumption.
    assert_eq!(logged_steps(&straight), logged_steps(&resumed));
    // Weights moved: the fine-tuning trained (a stand-in loop would leave them).
    let fresh = ParamStore::new(11);
    ImageClassifier::new(&spec(), fresh.var_builder(&Device::Cpu)).unwrap();
    let fresh = store_bits(&fresh);
    assert!(a.iter().any(|(k, v)| v != &fresh[k]));
}

#[test]
fn kill_dash_nine_during_fine_tuning_then_resume_continues_it() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = common::tiny_recipe(2, 2).replace(
        "[[downstream]]\nhead = \"linear-probe\"\npooling = \"cls\"\nlabel_fractions = [0.5, 1.0]\nepochs = 5\n",
        // Augmented: the crops and flips a resumed fine-tuning draws must be the ones an
        // uninterrupted one draws.
        "[[downstream]]\nhead = \"fine-tune\"\nlabel_fractions = [1.0]\nepochs = 1\nmin_steps = 1500\nbatch_size = 16\ncheckpoint_every = 5\naugment = { random_resized_crop = { scale = [0.5, 1.0] }, hflip = 0.5 }\n",
    );
    assert!(recipe.contains("min_steps = 1500"));
    let file = common::write_recipe(tmp.path(), &recipe);
    let killed = tmp.path().join("killed");
    let ckpts = killed
        .join("downstream")
        .join("00-fine-tune-pretrained-100pct")
        .join("checkpoints");
    let at_kill = common::kill_after_first_checkpoint(common::spawn_run(&file, &killed), &ckpts);
    assert!(
        at_kill < 1500,
        "fine-tuning finished before it could be killed"
    );
    assert!(!killed.join("summary.json").exists());

    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["run", killed.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("step {at_kill})")),
        "the fine-tuning did not resume from step {at_kill}: {stderr}"
    );
    assert!(
        !ckpts.exists(),
        "checkpoints are removed once the classifier is saved"
    );

    let straight = tmp.path().join("straight");
    assert!(common::spawn_run(&file, &straight)
        .wait()
        .unwrap()
        .success());
    let summary = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
    };
    let (s, k) = (summary(&straight), summary(&killed));
    assert_eq!(s["downstream"][0]["steps"], 1500);
    assert_eq!(
        s["downstream"][0]["test_accuracy"],
        k["downstream"][0]["test_accuracy"]
    );
    assert!(
        classifier_bits(&straight) == classifier_bits(&killed),
        "the resumed fine-tuning's classifier differs from an uninterrupted one's"
    );
}

/// The weights a run's one fine-tuned classifier saved, as bits.
fn classifier_bits(run: &Path) -> BTreeMap<String, Vec<u32>> {
    let file = run
        .join("downstream/00-fine-tune-pretrained-100pct")
        .join(WEIGHTS_FILE);
    bits(
        &pretext::tensor_io::read(&file, &Device::Cpu)
            .unwrap()
            .tensors,
    )
}

#[test]
fn augmented_fine_tuning_is_deterministic_and_changes_what_is_learnt() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    let run = |name: &str, augment: &str| -> BTreeMap<String, Vec<u32>> {
        let out = tmp.path().join(name);
        let head = format!(
            "downstream=[{{ head = \"fine-tune\", label_fractions = [1.0], epochs = 2, \
             batch_size = 16{augment} }}]"
        );
        let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
            .args(["run", file.to_str().unwrap(), "--out"])
            .arg(&out)
            .args(["--set", &head])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        classifier_bits(&out)
    };
    let augment = ", augment = { random_resized_crop = { scale = [0.3, 1.0] }, hflip = 0.5 }";
    let a = run("a", augment);
    assert!(a == run("b", augment), "the same recipe, the same weights");
    let plain = run("plain", "");
    assert!(a != plain, "augmentation changed nothing");
    // Random erasing: the same, and it changes what is learnt.
    let erasing = ", augment = { random_erasing = { prob = 0.5 } }";
    let e = run("erasing", erasing);
    assert!(
        e == run("erasing-again", erasing),
        "random erasing: the same recipe, the same weights"
    );
    assert!(e != plain, "random erasing changed nothing");
    // Mixup and CutMix: the same, and each changes what is learnt.
    let mixup = ", mixup = { alpha = 0.8, cutmix_alpha = 1.0 }";
    let m = run("mixup", mixup);
    assert!(
        m == run("mixup-again", mixup),
        "mixup: the same recipe, the same weights"
    );
    assert!(m != plain, "mixup changed nothing");
    let cutmix = run("cutmix", ", mixup = { alpha = 0.0, cutmix_alpha = 1.0 }");
    assert!(
        cutmix != plain && cutmix != m,
        "CutMix alone is its own training"
    );

    // Only image fine-tuning augments and mixes; a probe has no such key.
    let check_in = |recipe: &str, set: &str| -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
            .args(["recipe", "check", recipe, "--set", set])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let check = |set: &str| check_in(file.to_str().unwrap(), set);
    let e = check("downstream=[{ head = \"linear-probe\", augment = { hflip = 0.5 } }]");
    assert!(e.contains("augment"), "{e}");
    let e = check("downstream=[{ head = \"fine-tune\", augment = { hflip = 1.5 } }]");
    assert!(e.contains("downstream[0].augment.hflip"), "{e}");
    let e = check("downstream=[{ head = \"linear-probe\", mixup = { alpha = 0.8 } }]");
    assert!(e.contains("mixup"), "{e}");
    let e =
        check("downstream=[{ head = \"fine-tune\", mixup = { alpha = 0.0, cutmix_alpha = 0.0 } }]");
    assert!(
        e.contains("downstream[0].mixup") && e.contains("both 0"),
        "{e}"
    );
    let e = check("downstream=[{ head = \"fine-tune\", mixup = { alpha = -1.0 } }]");
    assert!(e.contains("downstream[0].mixup.alpha"), "{e}");
    let e = check("downstream=[{ head = \"fine-tune\", mixup = { switch_prob = 2.0 } }]");
    assert!(e.contains("downstream[0].mixup.switch_prob"), "{e}");
    let e = check("downstream=[{ head = \"fine-tune\", mixup = { beta = 1.0 } }]");
    assert!(e.contains("beta"), "{e}");
    let e = check_in(
        "recipes/mlm-shakespeare-sample.toml",
        "downstream=[{ head = \"fine-tune\", augment = { hflip = 0.5 } }]",
    );
    assert!(
        e.contains("downstream[0].augment") && e.contains("text takes no augmentation"),
        "{e}"
    );
    let e = check_in(
        "recipes/audio-mae-words-sample.toml",
        "downstream=[{ head = \"fine-tune\", augment = { random_erasing = { prob = 0.25 } } }]",
    );
    assert!(
        e.contains("downstream[0].augment.random_erasing") && e.contains("image augmentation"),
        "{e}"
    );
    let e = check(
        "downstream=[{ head = \"fine-tune\", augment = { random_erasing = { prob = -0.1 } } }]",
    );
    assert!(
        e.contains("downstream[0].augment.random_erasing.prob"),
        "{e}"
    );
    // Audio mixes spectrograms (mixup and CutMix) and waveforms (mixup only); text neither.
    let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args([
            "recipe",
            "check",
            "recipes/audio-mae-words-sample.toml",
            "--set",
        ])
        .arg("downstream=[{ head = \"fine-tune\", mixup = { alpha = 0.5 } }]")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = check_in(
        "recipes/mlm-shakespeare-sample.toml",
        "downstream=[{ head = \"fine-tune\", mixup = { alpha = 0.8 } }]",
    );
    assert!(
        e.contains("downstream[0].mixup") && e.contains("text head takes neither"),
        "{e}"
    );
    let e = check_in(
        "recipes/wav2vec2-words-sample.toml",
        "downstream=[{ head = \"fine-tune\", pooling = \"mean\", mixup = { alpha = 0.5 } }]",
    );
    assert!(
        e.contains("downstream[0].mixup.cutmix_alpha") && e.contains("mixup only"),
        "{e}"
    );
}
