//! Audio runs end to end on the committed spoken-word sample (`data/words-sample`, espeak-ng
//! voices; test voices never heard in training): Audio-MAE's reconstruction loss falls,
//! pictures and the feature config are written, the heads run, resumption is exact, and bad
//! recipes and bad WAVs are errors that name the key or the file.

use std::path::{Path, PathBuf};

use candle_core::Device;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;

const RECIPE: &str = "recipes/audio-mae-words-sample.toml";

/// The sample recipe shrunk to seconds.
fn overrides(steps: usize, extra: &[&str]) -> Vec<Override> {
    let mut v: Vec<String> = vec![
        "model.dim=32".into(),
        "model.depth=1".into(),
        "model.heads=2".into(),
        "model.mlp_dim=64".into(),
        "model.dropout=0.1".into(),
        "objective.decoder.dim=16".into(),
        "objective.decoder.heads=2".into(),
        format!("train.steps={steps}"),
        "train.batch_size=16".into(),
        "train.schedule.warmup_steps=5".into(),
        "train.checkpoint_every=30".into(),
        "train.log_every=1".into(),
        "downstream[2].epochs=8".into(),
        "downstream[3].epochs=8".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.iter().map(|s| Override::parse_set(s).unwrap()).collect()
}

fn start(
    steps: usize,
    extra: &[&str],
    out: PathBuf,
    stop_after: Option<usize>,
) -> pretext::error::Result<run::Summary> {
    let loaded = recipe::load(Path::new(RECIPE), &overrides(steps, extra))?;
    run::start(
        &loaded,
        &RunOptions {
            out: Some(out),
            stop_after,
            ..Default::default()
        },
    )
}

fn losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn audio_mae_learns_draws_spectrograms_and_feeds_the_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let s = start(60, &[], dir.clone(), None).unwrap();
    assert_eq!(s.steps, 60);
    // The data wait is the time the steps waited for the prefetching loader.
    assert!(
        s.data_wait_seconds > 0.0 && s.data_wait_seconds < s.pretrain_seconds,
        "data wait {} of {} s",
        s.data_wait_seconds,
        s.pretrain_seconds
    );

    // Reconstruction of removed patches improves well beyond its starting point.
    let l = losses(&dir);
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.85 * first, "loss {first:.4} -> {last:.4}");

    // Pictures at each checkpoint: 3 rows (original, masked, reconstruction) of 8 test clips
    // (the sample's test split has 40), each 64 bands x 96 frames drawn 3x.
    for step in [30, 60] {
        let png = dir.join(format!("pictures/reconstruction-step-{step:07}.png"));
        let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(img.width(), (8 * (96 * 3 + 2) + 2) as u32);
        assert_eq!(img.height(), (3 * (64 * 3 + 2) + 2) as u32);
    }

    // The feature settings and the normalisation the run used, for export and embedding.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("audio-config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["features"]["frames"], 96);
    assert_eq!(cfg["geometry"]["patch_freq"], 8);
    let std = cfg["features"]["std"].as_f64().unwrap();
    assert!(std > 0.5 && std.is_finite(), "log-mel std {std}");

    // Probe and fine-tune, pretrained and scratch, all on the 20-word task (chance 5 %).
    assert_eq!(s.downstream.len(), 4);
    for r in &s.downstream {
        assert_eq!(r.train_examples, 80, "{}", r.method);
        assert!(
            (0.0..=1.0).contains(&r.test_accuracy),
            "{}: {}",
            r.method,
            r.test_accuracy
        );
    }
    let probe = &s.downstream[0];
    assert!(
        probe.train_accuracy.unwrap() > 0.5,
        "a probe fits its 80 training clips: {:?}",
        probe.train_accuracy
    );
    assert!(
        probe.test_accuracy > 0.10,
        "unseen voices: {:.3} (chance 0.05)",
        probe.test_accuracy
    );
    let ft = &s.downstream[2];
    assert!(
        dir.join("downstream").read_dir().unwrap().any(|e| e
            .unwrap()
            .path()
            .join("model.json")
            .is_file()),
        "fine-tuned classifiers are saved"
    );
    assert!(ft.steps.unwrap() > 0);
}

#[test]
fn interrupted_audio_run_resumes_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["train.checkpoint_every=2", "downstream=[]"];
    start(6, &extra, tmp.path().join("full"), None).unwrap();
    let err = start(6, &extra, tmp.path().join("cut"), Some(4));
    assert!(err.is_ok(), "{err:?}");
    run::resume(&tmp.path().join("cut"), &[], &RunOptions::default()).unwrap();
    let load = |d: &str| {
        let p = tmp.path().join(d).join("checkpoints");
        checkpoint::load(&checkpoint::latest(&p).unwrap().unwrap(), &Device::Cpu).unwrap()
    };
    let (a, b) = (load("full"), load("cut"));
    assert_eq!(a.state.step, 6);
    assert_eq!(b.state.step, 6);
    for (name, t) in &a.model {
        let u = &b.model[name];
        let d = (t - u).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
}

#[test]
fn manifest_splits_and_structured_masking() {
    let loaded = recipe::load(
        Path::new(RECIPE),
        &overrides(
            6,
            &[
                "data.train={format=\"manifest\", path=\"data/words-sample/manifest.csv\", split=\"train\"}",
                "data.test={format=\"manifest\", path=\"data/words-sample/manifest.csv\", split=\"test\"}",
                "objective.masking=\"time-frequency\"",
            ],
        ),
    )
    .unwrap();
    let report = run::dry_run(&loaded).unwrap();
    assert!(
        report.contains("train: 80 clips, test: 40 clips"),
        "{report}"
    );
    // 12 time x 8 frequency patches; 1 - sqrt(0.25) = half of each axis masked: 6 x 4 kept.
    assert!(report.contains("72 of 96 patches"), "{report}");
    assert!(report.contains("TimeFrequency"), "{report}");
}

#[test]
fn bad_audio_recipes_name_the_key() {
    let cases = [
        ("data.audio.patch_time=7", "data.audio.patch_time"),
        ("data.audio.trim_db=-3.0", "data.audio.trim_db"),
        ("objective.masking=\"block\"", "objective.masking"),
        ("downstream[0].input=\"pixels\"", "downstream[0].input"),
        ("data.audio.mel.n_mels=0", "data.audio.mel"),
        (
            "data.train={format=\"text\", path=\"data/words-sample\"}",
            "data.train.format",
        ),
        ("data.test.split=\"test\"", "data.test.split"),
    ];
    for (set, key) in cases {
        let err = recipe::load(Path::new(RECIPE), &overrides(6, &[set]))
            .err()
            .unwrap_or_else(|| panic!("`{set}` was accepted"));
        let msg = err.to_string();
        assert!(msg.contains(key), "`{set}`: {msg}");
    }
}

#[test]
fn a_corrupt_wav_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("words");
    for split in ["train", "test"] {
        for word in ["go", "stop"] {
            let from = Path::new("data/words-sample").join(split).join(word);
            let to = root.join(split).join(word);
            std::fs::create_dir_all(&to).unwrap();
            for e in std::fs::read_dir(&from).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let bad = root.join("train/go/broken.wav");
    std::fs::write(&bad, b"RIFF\x10\x00\x00\x00WAVEfmt ").unwrap();
    let train = format!("data.train.root=\"{}\"", root.join("train").display());
    let test = format!("data.test.root=\"{}\"", root.join("test").display());
    let err = start(6, &[&train, &test], tmp.path().join("run"), None)
        .expect_err("a truncated WAV must fail the run");
    let msg = err.to_string();
    assert!(msg.contains("broken.wav"), "{msg}");
    assert!(
        !tmp.path().join("run").exists(),
        "no run directory is left behind"
    );
}
