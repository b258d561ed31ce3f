//! Training-loop behaviour on real data: gradient accumulation, non-finite losses.

mod common;

use candle_core::Device;
use pretext::recipe::{self, Override};
use pretext::run::{self, RunOptions};
use pretext::train::checkpoint;

fn set(k: &str, v: &str) -> Override {
    Override::Set(k.into(), v.into())
}

#[test]
fn two_accumulated_micro_batches_equal_one_double_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::write_recipe(tmp.path(), &common::tiny_recipe(3, 3));
    let mut weights = Vec::new();
    let mut norms = Vec::new();
    for (batch, accum) in [("32", "1"), ("16", "2")] {
        let loaded = recipe::load(
            &file,
            &[
                set("model.dropout", "0.0"),
                set("train.batch_size", batch),
                set("train.grad_accum", accum),
                Override::Unset("downstream".into()),
            ],
        )
        .unwrap();
        let out = tmp.path().join(format!("b{batch}"));
        run::start(
            &loaded,
            &RunOptions {
                out: Some(out.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        let ckpt = checkpoint::load(
            &checkpoint::latest(&out.join("checkpoints"))
                .unwrap()
                .unwrap(),
            &Device::Cpu,
        )
        .unwrap();
        weights.push(ckpt.model);
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
