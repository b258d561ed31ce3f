//! Full fine-tuning: every parameter of an encoder plus a linear classifier trained end to
//! end with AdamW, linear warm-up then cosine decay, optional layer-wise learning-rate decay
//! and label smoothing (the recipe of MAE's `main_finetune.py`, without mixup / drop path).
//!
//! The head knows nothing of images: the caller passes the model's parameters, its forward
//! pass and a way to make batches.

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backbone::ops::cross_entropy_smoothed;
use crate::backbone::Mode;
use crate::error::{Error, Result};
use crate::params::ParamStore;
use crate::train::config::{OptimizerKind, OptimizerSection, ScheduleKind, ScheduleSection};
use crate::train::optim::{self, AdamW};
use crate::train::schedule::Schedule;

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
}

impl FineTuneConfig {
    /// Optimizer steps for `n` training examples.
    pub fn total_steps(&self, n: usize) -> usize {
        (self.epochs * n.div_ceil(self.batch_size)).max(self.min_steps)
    }
}

/// Makes a training batch `(inputs, labels u32)` from example indices.
pub type BatchFn<'a> = dyn Fn(&[usize]) -> Result<(Tensor, Tensor)> + 'a;

/// One logged point of a fine-tuning run.
#[derive(Debug, Clone, Serialize)]
pub struct FineTuneLog {
    pub step: usize,
    pub loss: f32,
    pub lr: f64,
}

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

/// Trains `params` (all of them) on the examples `chosen`, through `forward(inputs, mode)`
/// → logits. `batch(indices)` gives `(inputs, labels u32)`. `log` sees the loss every few
/// steps. Returns the number of optimizer steps taken.
pub fn fine_tune(
    params: &ParamStore,
    depth: usize,
    forward: &dyn Fn(&Tensor, &mut Mode) -> candle_core::Result<Tensor>,
    batch: &BatchFn,
    chosen: &[usize],
    cfg: &FineTuneConfig,
    log: &mut dyn FnMut(&FineTuneLog) -> Result<()>,
) -> Result<usize> {
    if chosen.is_empty() {
        return Err(Error::Usage(
            "fine-tuning needs at least one example".into(),
        ));
    }
    let total = cfg.total_steps(chosen.len());
    let mut opt = AdamW::new(
        params.vars(),
        &OptimizerSection {
            kind: OptimizerKind::Adamw,
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            betas: [0.9, 0.999],
            eps: 1e-8,
        },
    )?;
    if cfg.layer_decay < 1.0 {
        opt.set_lr_scales(|name| layer_scale(name, depth, cfg.layer_decay));
    }
    let schedule = Schedule::new(
        &ScheduleSection {
            kind: ScheduleKind::Cosine,
            warmup_steps: (cfg.warmup_fraction * total as f64).round() as usize,
            min_lr: 0.0,
        },
        cfg.lr,
        total,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order = Vec::new();
    let mut cursor = 0;
    let log_every = (total / 50).max(1);
    for step in 0..total {
        if cursor >= order.len() {
            order = epoch_order(chosen, cfg.lengths.as_deref(), cfg.batch_size, &mut rng);
            cursor = 0;
        }
        let end = (cursor + cfg.batch_size).min(order.len());
        let (x, y) = batch(&order[cursor..end])?;
        cursor = end;
        let logits = forward(&x, &mut Mode::Train(&mut rng))?;
        let loss = cross_entropy_smoothed(&logits, &y, cfg.label_smoothing)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(Error::NonFinite { step, loss: value });
        }
        let grads = loss.backward()?;
        let g = optim::collect_grads(&grads, opt.vars().map(|(_, v)| v));
        let lr = schedule.lr(step);
        opt.step(&g, lr)?;
        if (step + 1) % log_every == 0 || step + 1 == total {
            log(&FineTuneLog {
                step: step + 1,
                loss: value,
                lr,
            })?;
        }
    }
    Ok(total)
}

/// Megabatches (of this many batches) are sorted by length before batching.
const MEGABATCH: usize = 50;

/// One epoch's order of the examples `chosen`: shuffled; with `lengths`, the shuffled order is
/// cut into megabatches of [`MEGABATCH`] batches, each sorted by length (longest first), and
/// the resulting batches are shuffled (`transformers`' `LengthGroupedSampler`).
fn epoch_order(
    chosen: &[usize],
    lengths: Option<&[usize]>,
    batch_size: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let mut order = chosen.to_vec();
    order.shuffle(rng);
    let Some(lengths) = lengths else {
        return order;
    };
    for mega in order.chunks_mut(batch_size * MEGABATCH) {
        mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    }
    let mut batches: Vec<&[usize]> = order.chunks(batch_size).collect();
    batches.shuffle(rng);
    batches.concat()
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
        };
        assert_eq!(cfg.total_steps(55), 50);
        assert_eq!(cfg.total_steps(1000), 200);
    }

    #[test]
    fn length_grouped_epochs_cover_every_example_in_tight_batches() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 128 + 1).collect();
        let chosen: Vec<usize> = (0..1000).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let order = epoch_order(&chosen, Some(&lengths), 8, &mut rng);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, chosen);
        // Padding to each batch's longest: grouped batches waste far less than random ones.
        let waste = |o: &[usize]| -> usize {
            o.chunks(8)
                .map(|b| {
                    let max = b.iter().map(|&i| lengths[i]).max().unwrap();
                    b.iter().map(|&i| max - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let random = epoch_order(&chosen, None, 8, &mut rng);
        assert!(
            waste(&order) * 5 < waste(&random),
            "{} vs {}",
            waste(&order),
            waste(&random)
        );
    }
}
