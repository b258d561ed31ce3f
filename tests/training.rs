//! Training-loop behaviour on real data: gradient accumulation, non-finite losses.

mod common;

use candle_core::Device;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;

fn set(k: &str, v: &str) -> Override {
    Override::Set(k.into(), v.into())
}

/// Runs the recipe `file` with `overrides` into `out` (downstream heads removed) and returns
/// its last checkpoint's weights.
fn train(
    file: &std::path::Path,
    out: &std::path::Path,
    overrides: &[Override],
) -> std::collections::BTreeMap<String, candle_core::Tensor> {
    let mut all = overrides.to_vec();
    all.push(Override::Unset("downstream".into()));
    let loaded = recipe::load(file, &all).unwrap();
    run::start(
        &loaded,
        &RunOptions {
            out: Some(out.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    checkpoint::load(
        &checkpoint::latest(&out.join("checkpoints"))
            .unwrap()
            .unwrap(),
        &Device::Cpu,
    )
    .unwrap()
    .model
}

#[test]
fn two_accumulated_micro_batches_equal_one_double_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(3, 3));
    let mut weights = Vec::new();
    let mut norms = Vec::new();
    for (batch, accum) in [("32", "1"), ("16", "2")] {
        let out = tmp.path().join(format!("b{batch}"));
        let model = train(
            &file,
            &out,
            &[
                set("model.dropout", "0.0"),
                set("train.batch_size", batch),
                set("train.grad_accum", accum),
            ],
        );
        weights.push(model);
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        norms.push(first["grad_norm"].as_f64().unwrap());
    }
    let mut max_diff = 0f32;
    let mut moved = 0f32;
    for (name, a) in &weights[0] {
        let b = &weights[1][name];
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        max_diff = max_diff.max(d);
        moved = moved.max(
            a.abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        );
    }
    assert!(moved > 0.0);
    // Adam hides a gradient's scale, so check it directly: the mean of two half-batch
    // gradients has the norm of the full-batch gradient.
    assert!(
        (norms[0] - norms[1]).abs() < 1e-4 * norms[0],
        "grad norms {norms:?}"
    );
    assert!(
        max_diff < 1e-4,
        "accumulated and full-batch weights differ by {max_diff}"
    );
}

#[test]
fn non_finite_loss_stops_the_run_naming_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(50, 50));
    // An absurd learning rate without clipping makes the loss overflow within a few steps.
    let loaded = recipe::load(
        &file,
        &[
            set("train.optimizer.lr", "1e30"),
            Override::Unset("train.clip_grad_norm".into()),
            set("train.schedule.warmup_steps", "0"),
        ],
    )
    .unwrap();
    let err = run::start(
        &loaded,
        &RunOptions {
            out: Some(tmp.path().join("r")),
            ..Default::default()
        },
    )
    .expect_err("the run must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("training stopped at step") && msg.contains("non-finite"),
        "{msg}"
    );
}

/// `train.precision = "bf16"` trains on the real sample with fp32 master weights: the
/// resolved recipe records it, every logged loss is finite and tracks the fp32 run's (bf16
/// rounds the encoder's activations, so not bit for bit), the loss falls, and the
/// checkpoint holds fp32 weights.
#[test]
fn bf16_mixed_precision_trains_like_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(12, 12));
    let mut losses = Vec::new();
    for precision in ["fp32", "bf16"] {
        let out = tmp.path().join(precision);
        let model = train(
            &file,
            &out,
            &[
                set("model.dropout", "0.0"),
                set("train.precision", precision),
                set("train.optimizer.lr", "3e-3"),
            ],
        );
        let resolved = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
        assert_eq!(
            resolved.contains("precision = \"bf16\""),
            precision == "bf16",
            "{resolved}"
        );
        assert!(model.values().all(|t| t.dtype() == candle_core::DType::F32));
        let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let curve: Vec<f64> = log
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert_eq!(curve.len(), 12);
        assert!(curve.iter().all(|l| l.is_finite()), "{curve:?}");
        losses.push(curve);
    }
    let (fp32, bf16) = (&losses[0], &losses[1]);
    assert!(bf16[11] < 0.9 * bf16[0], "bf16 did not learn: {bf16:?}");
    for (a, b) in fp32.iter().zip(bf16) {
        assert!((a - b).abs() < 0.03 * a, "fp32 {fp32:?}\nbf16 {bf16:?}");
    }
    assert_ne!(fp32, bf16, "bf16 changed nothing");
}

#[test]
fn an_unknown_precision_is_a_recipe_error_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(2, 2));
    let err =
        recipe::load(&file, &[set("train.precision", "fp16")]).expect_err("fp16 is not offered");
    let msg = err.to_string();
    assert!(msg.contains("precision") && msg.contains("bf16"), "{msg}");
}

/// Two runs of one recipe end with the same weights to the bit: every parallel sum is
/// associated the same way whatever way the pool splits the work.
#[test]
fn two_runs_of_one_recipe_give_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(4, 4));
    let sets = [set("train.batch_size", "64"), set("train.grad_accum", "1")];
    let a = train(&file, &tmp.path().join("a"), &sets);
    let b = train(&file, &tmp.path().join("b"), &sets);
    assert_eq!(a.len(), b.len());
    for (name, x) in &a {
        let (x, y) = (
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(x == y, "{name} differs between two runs");
    }
}
