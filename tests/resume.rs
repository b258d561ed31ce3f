//! A run stopped at step k and resumed ends bitwise equal to an uninterrupted run, a
//! `kill -9` during training is recovered by `pretext run RUN_DIR`, and a truncated latest
//! checkpoint makes the run resume from the one before it.

mod common;

use std::process::Command;

use pretext::recipe;
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;

#[test]
fn stopped_and_resumed_run_is_bitwise_equal_to_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(6, 2));
    let loaded = recipe::load(&file, &[]).unwrap();

    let straight = tmp.path().join("straight");
    let s = run::start(
        &loaded,
        &RunOptions {
            out: Some(straight.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.steps, 6);

    let resumed = tmp.path().join("resumed");
    let partial = run::start(
        &loaded,
        &RunOptions {
            out: Some(resumed.clone()),
            stop_after: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(partial.steps, 4);
    assert!(
        partial.downstream.is_empty(),
        "downstream waits for the end of pretraining"
    );
    let r = run::resume(&resumed, &[], &RunOptions::default()).unwrap();
    assert_eq!(r.steps, 6);

    common::assert_same_final_weights(&straight, &resumed);
    // Downstream numbers agree too, and the metrics log has one line per step.
    assert_eq!(s.downstream.len(), 2);
    for (x, y) in s.downstream.iter().zip(&r.downstream) {
        assert_eq!(x.test_accuracy, y.test_accuracy);
    }
    let log = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    // Only the newest `keep_checkpoints` remain, and pictures were drawn at checkpoints.
    let kept: Vec<usize> = checkpoint::list(&resumed.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(kept, vec![4, 6]);
    assert!(resumed
        .join("pictures/reconstruction-step-0000006.png")
        .is_file());
}

#[test]
fn a_truncated_latest_checkpoint_is_set_aside_and_the_previous_one_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(6, 2));
    let loaded = recipe::load(&file, &[]).unwrap();
    let out = |name: &str, stop_after| RunOptions {
        out: Some(tmp.path().join(name)),
        stop_after,
        ..Default::default()
    };
    run::start(&loaded, &out("straight", None)).unwrap();
    let resumed = tmp.path().join("resumed");
    run::start(&loaded, &out("resumed", Some(4))).unwrap();

    // A crash (or a full disk) cut the newest checkpoint short, and a write that never
    // finished left its temporary file behind.
    let ckpts = resumed.join("checkpoints");
    let newest = ckpts.join(checkpoint::file_name(4));
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let stale = ckpts.join(".step-0000006.safetensors.tmp4194303");
    std::fs::write(&stale, b"partial").unwrap();

    let r = run::resume(&resumed, &[], &RunOptions::default()).unwrap();
    assert_eq!(r.steps, 6);
    assert!(!stale.exists(), "the stale temporary file is removed");
    let aside = ckpts.join("step-0000004.safetensors.unreadable");
    assert_eq!(
        std::fs::read(&aside).unwrap().len(),
        bytes.len() / 2,
        "the unreadable checkpoint is kept, moved aside"
    );
    let (a, b) = (
        common::final_weights(&tmp.path().join("straight")),
        common::final_weights(&resumed),
    );
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "tensor `{k}` differs after resuming from step 2"
        );
    }
    let log = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        vec![1, 2, 3, 4, 5, 6],
        "steps 3 and 4 are logged once"
    );
}

#[test]
fn kill_dash_nine_then_resume_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let steps = 60;
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(steps, 5));
    let run_dir = tmp.path().join("run");
    let child = common::spawn_run(&file, &run_dir);
    let at_kill = common::kill_after_first_checkpoint(child, &run_dir.join("checkpoints"));
    assert!(
        at_kill < steps,
        "training finished before it could be killed"
    );
    // Pictures are drawn before their checkpoint is written: none is missing after a kill.
    for (step, _) in checkpoint::list(&run_dir.join("checkpoints")).unwrap() {
        let picture = run_dir.join(format!("pictures/reconstruction-step-{step:07}.png"));
        assert!(picture.is_file(), "{} is missing", picture.display());
    }
    assert!(!run_dir.join("summary.json").exists());

    let out = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["run", run_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["steps"], steps);
    assert!(summary["downstream"][0]["test_accuracy"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_run_in_training_is_refused_to_a_second_process_and_released_when_it_dies() {
    let tmp = tempfile::tempdir().unwrap();
    // Far more steps than the test lets it take: the run is killed below.
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(100_000, 5));
    let run_dir = tmp.path().join("run");
    let mut child = common::spawn_run(&file, &run_dir);
    common::wait_for_first_checkpoint(&run_dir.join("checkpoints"));
    let recipe_before = std::fs::read(run_dir.join("recipe.toml")).unwrap();

    let second = Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["run", run_dir.to_str().unwrap(), "--set", "train.steps=7"])
        .args(["--allow-changed", "train"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("is in use") && stderr.contains(&format!("process {}", child.id())),
        "{stderr}"
    );
    assert!(!stderr.contains("resuming from"), "{stderr}");
    // Refused before writing: the running run's recipe is as it was, and it trains on.
    assert_eq!(
        std::fs::read(run_dir.join("recipe.toml")).unwrap(),
        recipe_before
    );
    assert!(child.try_wait().unwrap().is_none(), "the first run stopped");

    // A run killed with SIGKILL leaves no stale lock.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(run::dir::lock(&run_dir).is_ok());
}

#[test]
fn a_resume_with_changed_training_settings_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(6, 2));
    let loaded = recipe::load(&file, &[]).unwrap();
    let run_dir = tmp.path().join("run");
    let opts = |allow: &[&str], restart| RunOptions {
        allow_changed: allow.iter().map(|s| s.to_string()).collect(),
        restart,
        ..Default::default()
    };
    run::start(
        &loaded,
        &RunOptions {
            out: Some(run_dir.clone()),
            stop_after: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    let recipe_file = run_dir.join("recipe.toml");
    let text = std::fs::read_to_string(&recipe_file).unwrap();
    assert!(text.contains("mask_ratio = 0.75"), "{text}");
    std::fs::write(
        &recipe_file,
        text.replace("mask_ratio = 0.75", "mask_ratio = 0.5"),
    )
    .unwrap();

    let err = run::resume(&run_dir, &[], &opts(&[], false))
        .expect_err("a changed mask ratio is refused")
        .to_string();
    assert!(err.contains("objective.mask_ratio: 0.75 -> 0.5"), "{err}");
    assert!(
        err.contains("--allow-changed objective.mask_ratio"),
        "{err}"
    );
    // `--set` goes through the same check, and a refused resume rewrites nothing.
    let lr = pretext::recipe::Override::parse_set("train.optimizer.lr=0.5").unwrap();
    let err = run::resume(&run_dir, &[lr], &opts(&["objective"], false))
        .expect_err("a changed learning rate is refused")
        .to_string();
    assert!(err.contains("train.optimizer.lr"), "{err}");
    assert!(
        !err.contains("mask_ratio"),
        "a section allows its keys: {err}"
    );
    assert!(!std::fs::read_to_string(&recipe_file)
        .unwrap()
        .contains("lr = 0.5"));

    // Allowed by name, with more steps (always allowed), it resumes from step 4.
    let steps = pretext::recipe::Override::parse_set("train.steps=8").unwrap();
    let s = run::resume(&run_dir, &[steps], &opts(&["objective.mask_ratio"], false)).unwrap();
    assert_eq!(s.steps, 8);
    // The changed settings are now the run's: resuming again needs no permission.
    run::resume(&run_dir, &[], &opts(&[], false)).unwrap();

    // With its checkpoints gone, the run will not silently start over its metrics log.
    std::fs::remove_dir_all(run_dir.join("checkpoints")).unwrap();
    let err = run::resume(&run_dir, &[], &opts(&[], false))
        .expect_err("no checkpoint over a metrics log is refused")
        .to_string();
    assert!(
        err.contains("logs steps up to 8") && err.contains("--restart"),
        "{err}"
    );
    let s = run::resume(&run_dir, &[], &opts(&[], true)).unwrap();
    assert_eq!(s.steps, 8);
    let log = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        log.lines().count(),
        8,
        "the restarted run rewrote its log: {log}"
    );
}

#[test]
fn extending_a_finished_run_says_what_it_does_to_the_learning_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(6, 2));
    let run_dir = tmp.path().join("run");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_pretext"))
            .arg("run")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        stderr
    };
    let first = run(&[file.to_str().unwrap(), "--out", run_dir.to_str().unwrap()]);
    assert!(!first.contains("note: train.steps"), "{first}");
    // The cosine schedule ended at 0 after 6 steps; over 12 it is back near its top at step 6.
    let extended = run(&[run_dir.to_str().unwrap(), "--set", "train.steps=12"]);
    assert!(
        extended.contains("note: train.steps is now 12 where the checkpoint's schedule spanned 6")
            && extended.contains("learning rate at step 6 is")
            && extended.contains("instead of 0.000e0, a jump up without warm-up"),
        "{extended}"
    );
    let lr_at = |step: u64| -> f64 {
        std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["step"] == step)
            .unwrap_or_else(|| panic!("step {step} is logged"))["lr"]
            .as_f64()
            .unwrap()
    };
    assert!(
        lr_at(7) > 0.5 * lr_at(3),
        "the extension trains at a real rate"
    );
    // Resumed again under the same count: nothing to say.
    let again = run(&[run_dir.to_str().unwrap()]);
    assert!(!again.contains("note: train.steps"), "{again}");
}
