//! Slow tier: `pretext embed --audio` on real recordings, the WAVs of Debian's
//! pocketsphinx-testdata (`scripts/fetch-data.sh pocketsphinx`: 10 files, 16 kHz mono,
//! 1.1–7.1 s, 34 s in all). Run with `cargo test --release -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

use pretext::modality::audio::wav::read_wav;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};

const DIR: &str = "data/pocketsphinx";
const RECIPE: &str = "recipes/audio-mae-words-sample.toml";

fn wavs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["cards", "librivox"] {
        let dir = Path::new(DIR).join(sub);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run scripts/fetch-data.sh pocketsphinx first",
                dir.display()
            )
        });
        files.extend(
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "wav")),
        );
    }
    files.sort();
    assert_eq!(files.len(), 10, "{files:?}");
    files
}

/// A short Audio-MAE run (tiny encoder) on the committed spoken-word sample.
fn tiny_run(out: &Path) {
    let sets = [
        "model.dim=32",
        "model.depth=1",
        "model.heads=2",
        "model.mlp_dim=64",
        "objective.decoder.dim=16",
        "objective.decoder.heads=2",
        "train.steps=10",
        "train.batch_size=16",
        "train.schedule.warmup_steps=2",
        "train.checkpoint_every=10",
        "train.log_every=5",
        "device=cpu",
        "downstream=[]",
    ];
    let overrides: Vec<Override> = sets
        .iter()
        .map(|s| Override::parse_set(s).unwrap())
        .collect();
    let loaded = recipe::load(Path::new(RECIPE), &overrides).unwrap();
    run::start(
        &loaded,
        &RunOptions {
            out: Some(out.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
#[ignore = "needs scripts/fetch-data.sh pocketsphinx"]
fn audio_mae_embeds_every_pocketsphinx_recording() {
    let files = wavs();
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    tiny_run(&run_dir);
    let out = tmp.path().join("pocketsphinx.jsonl");
    let mut args: Vec<String> = vec![
        "embed".into(),
        "--model".into(),
        run_dir.display().to_string(),
        "--audio".into(),
    ];
    args.extend(files.iter().map(|p| p.display().to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    let res = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");

    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), files.len());
    let mut embeddings: Vec<Vec<f64>> = Vec::new();
    let mut total_windows = 0;
    for (row, path) in rows.iter().zip(&files) {
        assert_eq!(row["audio"], path.display().to_string());
        let w = read_wav(path).unwrap();
        assert_eq!(w.sample_rate, 16_000);
        let seconds = w.samples.len() as f64 / 16_000.0;
        assert!((row["seconds"].as_f64().unwrap() - seconds).abs() < 1e-9);
        let window = row["window_seconds"].as_f64().unwrap();
        let windows = row["windows"].as_u64().unwrap();
        assert_eq!(windows, (w.samples.len() as f64 / 15_200.0).ceil() as u64);
        assert!((windows as f64 - 1.0) * window < seconds && seconds <= windows as f64 * window);
        total_windows += windows;
        if windows > 1 {
            assert!(stderr.contains(&format!("embedded as {windows} consecutive windows")));
        }
        let e: Vec<f64> = row["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 32);
        assert!(e.iter().all(|v| v.is_finite()), "{}", path.display());
        embeddings.push(e);
    }
    // 34.4 s of audio in 0.95 s windows.
    assert_eq!(total_windows, 42);
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            let d: f64 = embeddings[i]
                .iter()
                .zip(&embeddings[j])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                d > 1e-6,
                "{} and {} embed alike",
                files[i].display(),
                files[j].display()
            );
        }
    }
}
