//! Full fine-tuning: every parameter of an encoder plus a linear classifier trained end to
//! end with AdamW, linear warm-up then cosine decay, optional layer-wise learning-rate decay
//! label smoothing, and the targets of mixed batches (the recipe of MAE's `main_finetune.py`;
//! the mixing itself is [`super::mix`]'s, stochastic depth the encoder's).
//! It runs in the training loop pretraining uses, so it logs metrics, writes full-state
//! checkpoints and resumes part-way the same way.
//!
//! The head knows nothing of images: the caller passes the model's parameters, its forward
//! pass and a way to make batches.

use std::path::Path;

use candle_core::Tensor;

use crate::backbone::ops::cross_entropy_smoothed;
use crate::backbone::Mode;
use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::params::ParamStore;
use crate::train::checkpoint;
use crate::train::config::{
    OptimizerKind, OptimizerSection, ScheduleKind, ScheduleSection, TrainSection,
};
use crate::train::epochs::EpochOrder;
use crate::train::Loss;
use crate::train::{self, Setup, TrainTask};

#[derive(Debug, Clone)]
pub struct FineTuneConfig {
    pub epochs: usize,
    /// At least this many optimizer steps (small label fractions).
    pub min_steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub warmup_fraction: f64,
    pub layer_decay: f64,
    pub label_smoothing: f64,
    pub seed: u64,
    /// Example lengths (indexed like the training set): batches are then drawn grouped by
    /// length, as `transformers`' `group_by_length`, so that variable-length inputs (text)
    /// pad little. `None`: plain shuffling.
    pub lengths: Option<Vec<usize>>,
    /// Write a full-state checkpoint every N steps (and at the end).
    pub checkpoint_every: usize,
    /// Starts each progress line.
    pub label: String,
    /// End after this step, as an interruption would (tests of resumption).
    pub stop_after: Option<usize>,
}

impl FineTuneConfig {
    /// Optimizer steps for `n` training examples.
    pub fn total_steps(&self, n: usize) -> usize {
        (self.epochs * n.div_ceil(self.batch_size)).max(self.min_steps)
    }

    /// The loop's `[train]` section for `n` training examples: AdamW (β 0.9 / 0.999),
    /// warm-up then cosine to 0, no clipping, about 50 metric lines.
    pub fn train_section(&self, n: usize) -> TrainSection {
        let total = self.total_steps(n);
        TrainSection {
            steps: total,
            batch_size: self.batch_size,
            grad_accum: 1,
            optimizer: OptimizerSection {
                kind: OptimizerKind::Adamw,
                lr: self.lr,
                weight_decay: self.weight_decay,
                betas: [0.9, 0.999],
                eps: 1e-8,
            },
            schedule: ScheduleSection {
                kind: ScheduleKind::Cosine,
                warmup_steps: (self.warmup_fraction * total as f64).round() as usize,
                min_lr: 0.0,
            },
            clip_grad_norm: None,
            checkpoint_every: self.checkpoint_every.max(1),
            keep_checkpoints: 1,
            log_every: (total / 50).max(1),
            precision: Default::default(),
        }
    }
}

/// A training batch's logits and what they should predict.
pub struct Scored {
    pub logits: Tensor,
    /// The examples' labels (u32).
    pub labels: Tensor,
    /// A mixed batch (mixup, CutMix): the labels of the rows each example was mixed with,
    /// and the weight `λ` of its own; the targets are `λ·labels + (1 - λ)·partners`.
    pub mixed: Option<(Tensor, f64)>,
}

impl Scored {
    /// Logits against the examples' own labels.
    pub fn plain(logits: Tensor, labels: Tensor) -> Self {
        Self {
            logits,
            labels,
            mixed: None,
        }
    }
}

/// The classifier on a training batch: `logits(indices, draws, mode)` gives the logits of
/// the training examples `indices` and their targets; `draws` are the examples' own random
/// streams, for whatever the batch draws, such as augmentation.
pub type LogitsFn<'a> = dyn Fn(&[usize], &Draws, &mut Mode) -> Result<Scored> + 'a;

/// Which "layer" a parameter belongs to for layer-wise decay, `0..=depth + 1`: embeddings
/// (anything before the first block, e.g. `vit.patch_embed.*`, `vit.cls_token`, a waveform
/// model's `audio.convs.*`, `audio.proj*`, `audio.pos_conv.*`) are 0,
/// `*.layers.{i}.*` is `i + 1`, the rest (final norm, classifier) is `depth + 1`.
pub fn layer_id(name: &str, depth: usize) -> usize {
    if let Some(rest) = name.split(".layers.").nth(1) {
        if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok()) {
            return i + 1;
        }
    }
    // The waveform front end (conv feature extractor, feature projection, positional conv)
    // sits before the first block, like a patch embedding.
    let waveform_front = ["audio.convs.", "audio.proj", "audio.pos_conv."]
        .iter()
        .any(|p| name.starts_with(p));
    if name.contains("embed") || name.ends_with("_token") || waveform_front {
        0
    } else {
        depth + 1
    }
}

/// The learning-rate multiplier of a parameter: `decay^(depth + 1 - layer_id)`.
pub fn layer_scale(name: &str, depth: usize, decay: f64) -> f64 {
    decay.powi((depth + 1 - layer_id(name, depth)) as i32)
}

/// A classifier's cross-entropy on training batches, for the loop.
struct FineTuneTask<'a> {
    logits: &'a LogitsFn<'a>,
    label_smoothing: f64,
    examples: usize,
}

impl TrainTask for FineTuneTask<'_> {
    fn num_examples(&self) -> usize {
        self.examples
    }

    fn loss(&self, indices: &[usize], draws: &Draws) -> Result<Loss> {
        let s = (self.logits)(indices, draws, &mut Mode::train(*draws))?;
        let mut value = cross_entropy_smoothed(&s.logits, &s.labels, self.label_smoothing)?;
        // Cross-entropy is linear in the target, so the mixed target's loss is the mix of
        // the two labels' losses (timm's `mixup_target` with `SoftTargetCrossEntropy`).
        if let Some((partners, lam)) = &s.mixed {
            let theirs = cross_entropy_smoothed(&s.logits, partners, self.label_smoothing)?;
            value = ((value * *lam)? + (theirs * (1.0 - lam))?)?;
        }
        Ok(Loss::per_example(value, indices.len()))
    }
}

/// How a fine-tuning ended.
pub struct FineTuneOutcome {
    /// Optimizer steps completed.
    pub steps: usize,
    /// All of them (not stopped by `stop_after`).
    pub complete: bool,
    /// The step it resumed from, if it did.
    pub resumed_from: Option<usize>,
}

/// Trains `params` (all of them) on the examples `chosen`, through `logits` (see
/// [`LogitsFn`]). Writes `metrics.jsonl` and
/// full-state checkpoints into `dir`, and continues from the newest checkpoint there when
/// there is one (the caller removes checkpoints of other settings).
pub fn fine_tune(
    params: &ParamStore,
    depth: usize,
    logits: &LogitsFn,
    chosen: &[usize],
    cfg: &FineTuneConfig,
    dir: &Path,
) -> Result<FineTuneOutcome> {
    if chosen.is_empty() {
        return Err(Error::Usage(
            "fine-tuning needs at least one example".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let section = cfg.train_section(chosen.len());
    let resume = checkpoint::resume_from(&dir.join("checkpoints"), &params.device())?;
    let resumed_from = resume.as_ref().map(|c| c.state.step);
    let scale = |name: &str| layer_scale(name, depth, cfg.layer_decay);
    let setup = Setup {
        seed: cfg.seed,
        rng_seed: Some(cfg.seed),
        epochs: Some(EpochOrder::fresh(
            chosen,
            cfg.lengths.clone(),
            cfg.batch_size,
        )),
        lr_scale: (cfg.layer_decay < 1.0).then_some(&scale as &dyn Fn(&str) -> f64),
        label: cfg.label.clone(),
        // Downstream heads train in one process.
        world: None,
    };
    let task = FineTuneTask {
        logits,
        label_smoothing: cfg.label_smoothing,
        examples: chosen.len(),
    };
    let done = train::train(
        &task,
        params,
        &section,
        setup,
        Some(dir),
        resume,
        cfg.stop_after,
        None,
    )?;
    Ok(FineTuneOutcome {
        steps: done.step,
        complete: done.step == section.steps,
        resumed_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_follow_depth() {
        let d = 4;
        assert_eq!(layer_id("vit.patch_embed.weight", d), 0);
        assert_eq!(layer_id("vit.cls_token", d), 0);
        assert_eq!(layer_id("vit.encoder.layers.0.attn.q.weight", d), 1);
        assert_eq!(layer_id("vit.encoder.layers.3.mlp.fc2.bias", d), 4);
        assert_eq!(layer_id("vit.encoder.norm.weight", d), 5);
        assert_eq!(layer_id("classifier.weight", d), 5);
        assert_eq!(layer_id("audio.convs.0.conv.weight", d), 0);
        assert_eq!(layer_id("audio.proj_norm.bias", d), 0);
        assert_eq!(layer_id("audio.proj.weight", d), 0);
        assert_eq!(layer_id("audio.pos_conv.weight_g", d), 0);
        assert_eq!(layer_id("audio.encoder.layers.2.attn.q.weight", d), 3);
        assert_eq!(layer_id("audio.encoder.norm.weight", d), 5);
        assert!((layer_scale("classifier.weight", d, 0.75) - 1.0).abs() < 1e-12);
        assert!((layer_scale("vit.patch_embed.bias", d, 0.5) - 0.5f64.powi(5)).abs() < 1e-12);
        assert!((layer_scale("vit.encoder.layers.3.attn.o.weight", d, 0.5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_mixed_batch_is_scored_against_the_mixed_soft_targets() {
        // timm's `mixup_target` + `SoftTargetCrossEntropy`: t = λ·smooth(y) + (1-λ)·smooth(y'),
        // smooth(y) = (1 - ε + ε/C) on y and ε/C elsewhere; loss = mean_i -Σ_c t_ic log p_ic.
        let dev = candle_core::Device::Cpu;
        let rows = [[2.0f32, -1.0, 0.5], [0.1, 0.3, -0.7]];
        let logits = Tensor::new(&rows, &dev).unwrap();
        let (y, partners, lam, eps) = ([0u32, 2], [2u32, 0], 0.7, 0.1);
        let f = |_: &[usize], _: &Draws, _: &mut Mode| -> Result<Scored> {
            Ok(Scored {
                logits: logits.clone(),
                labels: Tensor::new(&y, &dev)?,
                mixed: Some((Tensor::new(&partners, &dev)?, lam)),
            })
        };
        let task = FineTuneTask {
            logits: &f,
            label_smoothing: eps,
            examples: 2,
        };
        let got = task.loss(&[0, 1], &Draws::fixed(0, 2)).unwrap();
        let got = got.value.to_scalar::<f32>().unwrap() as f64;
        let mut want = 0.0;
        for (i, row) in rows.iter().enumerate() {
            let lse = row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
            for (c, v) in row.iter().enumerate() {
                let smooth =
                    |label: u32| (1.0 - eps) * (label as usize == c) as u8 as f64 + eps / 3.0;
                let t = lam * smooth(y[i]) + (1.0 - lam) * smooth(partners[i]);
                want -= t * (*v as f64 - lse) / 2.0;
            }
        }
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn budget_has_a_floor() {
        let cfg = FineTuneConfig {
            epochs: 2,
            min_steps: 50,
            lr: 1e-3,
            weight_decay: 0.0,
            batch_size: 10,
            warmup_fraction: 0.1,
            layer_decay: 1.0,
            label_smoothing: 0.0,
            seed: 0,
            lengths: None,
            checkpoint_every: 500,
            label: String::new(),
            stop_after: None,
        };
        assert_eq!(cfg.total_steps(55), 50);
        assert_eq!(cfg.total_steps(1000), 200);
    }
}
