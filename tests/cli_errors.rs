//! Bad input gets a clear message naming the file and key, never a panic, and nothing
//! trains: each case runs the real binary.

mod common;

use std::process::Command;

fn pretext(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_failure(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("stack backtrace"), "backtrace: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
fn misspelled_key_fails_before_training_with_suggestion() {
    let tmp = tempfile::tempdir().unwrap();
    let text = common::tiny_recipe(5, 5).replace("mask_ratio = 0.75", "mask_rato = 0.75");
    let file = common::write_recipe(tmp.path(), &text);
    let runs = tmp.path().join("runs");
    let (ok, _, err) = pretext(&[
        "run",
        file.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_clean_failure(&err);
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(
        err.contains("objective.mask_rato") && err.contains("did you mean `objective.mask_ratio`"),
        "{err}"
    );
    assert!(
        !runs.exists(),
        "nothing may be created before the recipe is valid"
    );
}

#[test]
fn missing_data_file_names_path_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let text = common::tiny_recipe(5, 5).replace("t10k-labels-idx1-ubyte.gz", "no-such-labels.gz");
    let file = common::write_recipe(tmp.path(), &text);
    for args in [
        vec!["recipe", "check", file.to_str().unwrap()],
        vec!["run", file.to_str().unwrap()],
    ] {
        let (ok, _, err) = pretext(&args);
        assert!(!ok);
        assert_clean_failure(&err);
        assert!(
            err.contains("data.test.labels") && err.contains("no-such-labels.gz"),
            "{err}"
        );
    }
}

#[test]
fn malformed_toml_and_wrong_types() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), "name = \"x\"\n[model\ndim = 3\n");
    let (ok, _, err) = pretext(&["recipe", "check", file.to_str().unwrap()]);
    assert!(!ok);
    assert_clean_failure(&err);
    assert!(
        err.contains("invalid TOML") && err.contains("line 2"),
        "{err}"
    );

    let file = common::write_recipe(
        tmp.path(),
        &common::tiny_recipe(5, 5).replace("batch_size = 16", "batch_size = \"big\""),
    );
    let (ok, _, err) = pretext(&["recipe", "check", file.to_str().unwrap()]);
    assert!(!ok);
    assert_clean_failure(&err);
    assert!(err.contains("train.batch_size"), "{err}");

    let (ok, _, err) = pretext(&[
        "run",
        "recipes/quickstart.toml",
        "--set",
        "objective.mask_ratio=1.2",
    ]);
    assert!(!ok);
    assert!(
        err.contains("objective.mask_ratio") && err.contains("(0, 1)"),
        "{err}"
    );
}

#[test]
fn unreadable_idx_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("truncated.gz");
    let good = std::fs::read("data/fashion-mnist-sample/train-images-idx3-ubyte.gz").unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let text = common::tiny_recipe(5, 5).replace(
        "data/fashion-mnist-sample/train-images-idx3-ubyte.gz",
        bad.to_str().unwrap(),
    );
    let file = common::write_recipe(tmp.path(), &text);
    let runs = tmp.path().join("runs");
    for args in [
        vec!["recipe", "check", file.to_str().unwrap()],
        vec![
            "run",
            file.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
    ] {
        let (ok, _, err) = pretext(&args);
        assert!(!ok);
        assert_clean_failure(&err);
        assert!(err.contains("truncated.gz"), "{err}");
    }
    assert!(
        !runs.exists(),
        "a run that cannot start leaves no directory behind"
    );
}

#[test]
fn recipe_show_resolved_applies_preset_and_overrides() {
    let (ok, out, err) = pretext(&[
        "recipe",
        "show",
        "recipes/quickstart.toml",
        "--resolved",
        "--set",
        "train.steps=700",
    ]);
    assert!(ok, "{err}");
    let v: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(v["train"]["steps"].as_integer(), Some(700));
    assert_eq!(
        v["model"]["dim"].as_integer(),
        Some(128),
        "preset values are filled in"
    );
    assert_eq!(
        v["train"]["grad_accum"].as_integer(),
        Some(1),
        "defaults are filled in"
    );
}

#[test]
fn inspect_lists_tensors_of_a_checkpoint_and_rejects_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    let run_dir = tmp.path().join("run");
    let (ok, _, err) = pretext(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = pretext(&["inspect", run_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("model.vit.encoder.layers.0.attn.q.weight") && out.contains("[32, 32]"),
        "{out}"
    );
    assert!(out.contains("training checkpoint: step 2"), "{out}");

    let garbage = tmp.path().join("bad.safetensors");
    std::fs::write(&garbage, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let (ok, _, err) = pretext(&["inspect", garbage.to_str().unwrap()]);
    assert!(!ok);
    assert_clean_failure(&err);
    assert!(
        err.contains("bad.safetensors") && err.contains("truncated or corrupt"),
        "{err}"
    );
}
