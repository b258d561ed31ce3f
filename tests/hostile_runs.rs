//! Real run directories damaged one file at a time, through the binary under the budget of
//! `tests/hostile.rs`: an audio run's feature description (`audio-config.json`), the record
//! of what the checkpoints were trained with (`settings.json`), a fine-tuned classifier's
//! `model.json` and weights, and a downstream head's cached result. Every verb that reads the file must
//! fail with exit code 1 and an error naming it, never panic or block; a damaged cache is
//! recomputed, not trusted.

mod common;
mod hostile_support;

use std::path::{Path, PathBuf};

use hostile_support::{pretext, refused, scratch};

const CLIP: &str = "data/words-sample/test/go/en-us+anika_s175_p50.wav";
const IMAGE: &str = "data/image-folder-sample/train/bag/00023.png";

/// Cuts `file` to a third of its bytes; returns what it held.
fn cut(file: &Path) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    std::fs::write(file, &bytes[..bytes.len() / 3]).unwrap();
    bytes
}

/// The one fine-tuned classifier directory under `run/downstream`.
fn classifier(run: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(run.join("downstream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.json").is_file())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

#[test]
fn an_audio_runs_feature_description_cut_short_is_named() {
    let dir = scratch("damaged-audio-config");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let sets = [&common::TINY_AUDIO[..], &["downstream=[]"]].concat();
    let o = pretext(&common::run_args(
        "recipes/audio-mae-words-sample.toml",
        r,
        &sets,
    ));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let export = dir.join("export");
    // The feature description every audio verb needs to turn a WAV into model input.
    cut(&run.join("audio-config.json"));
    for args in [
        &["embed", "--model", r, "--audio", CLIP][..],
        &[
            "export",
            r,
            "--format",
            "hf",
            "--out",
            export.to_str().unwrap(),
        ][..],
    ] {
        refused(args, &["audio-config.json"]);
    }
    assert!(!export.exists(), "nothing is exported from a damaged run");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_file_of_a_damaged_run_directory_is_named_by_the_verbs_that_read_it() {
    let dir = scratch("damaged-run-files");
    let recipe = common::write_recipe(&dir, &common::tiny_recipe(4, 2));
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let o = pretext(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        r,
        "--set",
        "downstream=[{ head = \"fine-tune\", pooling = \"cls\", label_fractions = [1.0], \
         epochs = 1, batch_size = 16 }]",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let export = dir.join("export");
    let ex = export.to_str().unwrap();
    let cls = classifier(&run);
    let c = cls.to_str().unwrap();

    // What the checkpoints were trained with: resuming cannot check the recipe against it.
    let file = run.join("settings.json");
    let held = cut(&file);
    refused(&["run", r], &["settings.json"]);
    std::fs::write(&file, held).unwrap();

    // A fine-tuned classifier's description, then its weights.
    let file = cls.join("model.json");
    let held = cut(&file);
    for args in [
        &["embed", "--model", c, "--image", IMAGE][..],
        &["predict", "--model", c, "--image", IMAGE][..],
        &["predict", "--model", r, "--image", IMAGE][..],
        &["export", c, "--format", "hf", "--out", ex][..],
    ] {
        refused(args, &["model.json"]);
    }
    std::fs::write(&file, held).unwrap();
    let file = cls.join("model.safetensors");
    let held = cut(&file);
    for args in [
        &["embed", "--model", c, "--image", IMAGE][..],
        &["predict", "--model", c, "--image", IMAGE][..],
        &["export", c, "--format", "hf", "--out", ex][..],
    ] {
        refused(args, &["model.safetensors"]);
    }
    std::fs::write(&file, held).unwrap();
    assert!(!export.exists(), "nothing is exported from a damaged run");

    // A head's cached result cut short is recomputed on resume, not trusted or fatal.
    let file = cls.join("result.json");
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    cut(&file);
    let o = pretext(&["run", r]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        before["result"]["test_accuracy"], after["result"]["test_accuracy"],
        "the head, run again, gives the same result"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
