//! Data-parallel training under `mpirun` (built with `--features mpi`, OpenMPI installed):
//! two ranks on the same global batch train the same model as one process, a run resumes
//! under another world size, metrics are logged once, and a killed rank stops the job.
//!
//!   cargo test --release --features mpi --test distributed
#![cfg(feature = "mpi")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use safetensors::SafeTensors;

const BIN: &str = env!("CARGO_BIN_EXE_pretext");

/// The quickstart recipe (MAE on the committed Fashion-MNIST sample) cut to 30 steps.
const IMAGE: &[&str] = &[
    "recipes/quickstart.toml",
    "--unset",
    "downstream",
    "--set",
    "train.steps=30",
    "--set",
    "train.schedule.warmup_steps=5",
    "--set",
    "train.checkpoint_every=10",
    "--set",
    "train.keep_checkpoints=5",
    "--set",
    "train.log_every=5",
];

/// `pretext run ARGS`, under `mpirun -np N` when `ranks` is given.
fn pretext(ranks: Option<usize>, args: &[&str]) -> Command {
    let mut cmd = match ranks {
        None => Command::new(BIN),
        Some(n) => {
            let mut c = Command::new("mpirun");
            // Root in CI containers; more ranks than cores on small machines.
            c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .args(["--oversubscribe", "-np", &n.to_string(), BIN]);
            c
        }
    };
    cmd.arg("run").args(args);
    cmd
}

fn run(ranks: Option<usize>, args: &[&str]) -> Output {
    let out = pretext(ranks, args)
        .output()
        .expect("mpirun and the pretext binary start (OpenMPI installed?)");
    assert!(
        out.status.success(),
        "{ranks:?} ranks, {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

fn weights(ckpt: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(ckpt).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("model."))
        .map(|(n, v)| {
            let f: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (n, f)
        })
        .collect()
}

/// Whether two checkpoints hold the same weights within `tol`, relative to each tensor's
/// largest value. The attention key biases are left out: softmax is invariant to them, so
/// their gradient is zero but for rounding, and AdamW scales that rounding up to full-size
/// steps — they wander differently under any change of summation order, and change nothing.
fn assert_same_weights(a: &Path, b: &Path, tol: f32) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let mut compared = 0;
    for (name, x) in &wa {
        if name.ends_with("attn.k.bias") {
            continue;
        }
        let y = &wb[name];
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            diff / scale <= tol,
            "{name}: {} vs {}: relative difference {}",
            a.display(),
            b.display(),
            diff / scale
        );
        compared += 1;
    }
    assert!(compared > 10, "only {compared} tensors compared");
}

fn ckpt(run: &Path, step: usize) -> PathBuf {
    run.join("checkpoints")
        .join(format!("step-{step:07}.safetensors"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn two_ranks_train_the_quickstart_as_one_process_does_and_resume_under_either() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let (one, two) = (dir("one"), dir("two"));
    run(
        None,
        &with(IMAGE, &["--out"])
            .into_iter()
            .chain([one.as_str()])
            .collect::<Vec<_>>(),
    );
    let out = run(
        Some(2),
        &with(IMAGE, &["--out"])
            .into_iter()
            .chain([two.as_str()])
            .collect::<Vec<_>>(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rank 1 of 2 (mpi), 64 of each batch of 128"),
        "{stderr}"
    );
    // One summary on stdout, one metrics log, one run directory.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("\"run_dir\"").count(), 1, "{stdout}");
    let (m1, m2) = (
        lines(&Path::new(&one).join("metrics.jsonl")),
        lines(&Path::new(&two).join("metrics.jsonl")),
    );
    assert_eq!(m2.len(), 6, "{m2:?}");
    assert_eq!(m1.len(), m2.len());
    for (a, b) in m1.iter().zip(&m2) {
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(a).unwrap(),
            serde_json::from_str(b).unwrap(),
        );
        let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((la - lb).abs() <= 1e-5 * la.abs(), "{a} vs {b}");
    }
    assert_same_weights(&ckpt(Path::new(&one), 30), &ckpt(Path::new(&two), 30), 1e-4);
    // One rank under mpirun goes through the all-reduce and stays bitwise equal.
    let alone = dir("alone");
    run(
        Some(1),
        &with(IMAGE, &["--out"])
            .into_iter()
            .chain([alone.as_str()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        weights(&ckpt(Path::new(&one), 30)),
        weights(&ckpt(Path::new(&alone), 30))
    );

    // Started on one process, resumed on two; started on two, resumed on one.
    let (a, b) = (dir("one-then-two"), dir("two-then-one"));
    let stop = ["--stop-after", "10", "--out"];
    run(
        None,
        &with(IMAGE, &stop)
            .into_iter()
            .chain([a.as_str()])
            .collect::<Vec<_>>(),
    );
    run(
        Some(2),
        &with(IMAGE, &stop)
            .into_iter()
            .chain([b.as_str()])
            .collect::<Vec<_>>(),
    );
    assert_same_weights(&ckpt(Path::new(&a), 10), &ckpt(Path::new(&b), 10), 1e-4);
    run(Some(2), &[a.as_str()]);
    run(None, &[b.as_str()]);
    for resumed in [&a, &b] {
        assert_same_weights(
            &ckpt(Path::new(&one), 30),
            &ckpt(Path::new(resumed), 30),
            1e-4,
        );
        assert_eq!(lines(&Path::new(resumed).join("metrics.jsonl")).len(), 6);
    }
}

/// Text: ranks hold different numbers of masked tokens, and hidden dropout is on, so this
/// checks the loss weighting and the per-example dropout streams.
#[test]
fn two_ranks_train_masked_language_modelling_as_one_process_does() {
    let tmp = tempfile::tempdir().unwrap();
    let text = [
        "recipes/mlm-shakespeare-sample.toml",
        "--unset",
        "downstream",
        "--set",
        "train.steps=30",
        "--set",
        "train.checkpoint_every=30",
        "--set",
        "model.dropout=0.1",
        "--out",
    ];
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    run(
        None,
        &text
            .iter()
            .copied()
            .chain([one.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    run(
        Some(2),
        &text
            .iter()
            .copied()
            .chain([two.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_same_weights(&ckpt(&one, 30), &ckpt(&two, 30), 1e-4);
    // Rank 0's tokenizer is the run's; the other rank read it.
    assert!(two.join("tokenizer.json").is_file());
}

/// A rank killed mid-run ends the whole job with a message saying which, and the run
/// resumes under `mpirun` from its last checkpoint to the weights of an uninterrupted run.
#[test]
fn a_killed_rank_stops_the_job_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("killed");
    let straight = tmp.path().join("straight");
    let long = [
        "recipes/quickstart.toml",
        "--unset",
        "downstream",
        "--set",
        "train.steps=60",
        "--set",
        "train.schedule.warmup_steps=50",
        "--set",
        "train.checkpoint_every=10",
        "--out",
    ];
    let child = pretext(
        Some(2),
        &long
            .iter()
            .copied()
            .chain([run_dir.to_str().unwrap()])
            .collect::<Vec<_>>(),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Once the first checkpoint is written, kill rank 1 (a child of mpirun).
    let t0 = Instant::now();
    while !ckpt(&run_dir, 10).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 min"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks = String::from_utf8(
        Command::new("pgrep")
            .args(["-P", &child.id().to_string(), "pretext"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pids: Vec<&str> = ranks.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "ranks of mpirun: {ranks:?}");
    let killed = Command::new("kill").args(["-9", pids[1]]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("exited on signal 9 (Killed)"),
        "mpirun's message: {stderr}"
    );
    assert!(!ckpt(&run_dir, 60).exists());

    run(Some(2), &[run_dir.to_str().unwrap()]);
    run(
        None,
        &long
            .iter()
            .copied()
            .chain([straight.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_same_weights(&ckpt(&straight, 60), &ckpt(&run_dir, 60), 1e-4);
}
