//! The `[train]` section of a recipe: steps, batches, optimizer, schedule, clipping and
//! checkpointing. The training loop, fine-tuning and the linear probe read these types;
//! the recipe re-exports them.

use serde::{Deserialize, Serialize};

pub use crate::backbone::Precision;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed per optimizer step (effective batch =
    /// `batch_size * grad_accum`).
    #[serde(default = "default_one")]
    pub grad_accum: usize,
    pub optimizer: OptimizerSection,
    #[serde(default)]
    pub schedule: ScheduleSection,
    /// Clip gradients to this global L2 norm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// Write a checkpoint (and pictures) every N steps, and at the end.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk (oldest removed first).
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Log a metrics line every N steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// `"fp32"` (default) or `"bf16"`: fp32 master weights and optimizer, the encoder's
    /// blocks computed in bf16 (for GPUs; slower than fp32 on a CPU).
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
}

/// AdamW (decoupled weight decay). Biases, norms, and tokens get no weight decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSection {
    pub kind: OptimizerKind,
    pub lr: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    #[default]
    Constant,
    Linear,
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    #[serde(default)]
    pub kind: ScheduleKind,
    /// Steps of linear warm-up from 0 to `lr`.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Final learning rate for linear and cosine decay.
    #[serde(default)]
    pub min_lr: f64,
}

fn default_one() -> usize {
    1
}
fn default_checkpoint_every() -> usize {
    500
}
fn default_keep_checkpoints() -> usize {
    3
}
fn default_log_every() -> usize {
    10
}
fn default_weight_decay() -> f64 {
    0.05
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn default_eps() -> f64 {
    1e-8
}
