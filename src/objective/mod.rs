//! Pretext tasks, one file each. An objective owns its masking, its decoder and its loss;
//! it depends on a modality's encoder and the backbone, never on another objective.
//! `masking` holds the mask generators objectives share; `patch` the patch-grid encoders
//! MAE runs over (images, spectrograms); `unshuffle_op` MAE's decoder input as one CPU op.
//!
//! Every objective is an [`Objective`]: the training loop asks it for the loss of a batch
//! and the pipeline for an evaluation pass (dry runs, reconstruction pictures).

pub mod data2vec;
pub mod mae;
pub mod masking;
pub mod mlm;
pub mod patch;
pub mod simmim;
mod unshuffle_op;

use crate::draws::Draws;
use crate::error::Result;
use candle_core::Tensor;

/// A pretext task over batches of one kind.
pub trait Objective {
    /// One batch as the objective takes it: an input tensor (`[B, C, H, W]` images,
    /// `[B, F, T]` spectrograms) or token blocks, not yet masked.
    type Batch;
    /// Prefix of the encoder's parameters (`vit.`, `audio.`, `text.`): what downstream
    /// heads and exports take from a checkpoint.
    fn encoder_prefix(&self) -> &'static str;
    /// The scalar training loss of `batch`, whose rows draw their masks and dropout from
    /// the streams of `draws`.
    fn loss(&self, batch: &Self::Batch, draws: &Draws) -> Result<Tensor>;
    /// One pass in evaluation mode (masks drawn from `draws`, no dropout).
    fn evaluate(&self, batch: &Self::Batch, draws: &Draws) -> Result<Pass>;
    /// Before the first training step, once the parameters hold their starting values
    /// (`resumed`: a checkpoint's). See [`crate::train::TrainTask::start`].
    fn start(&self, _resumed: bool) -> Result<()> {
        Ok(())
    }
    /// After each optimizer step, `step` the steps now completed.
    fn after_step(&self, _step: usize) -> Result<()> {
        Ok(())
    }
}

/// What an evaluation pass gives.
pub struct Pass {
    /// The scalar loss.
    pub loss: Tensor,
    /// For objectives that reconstruct patches (MAE, SimMIM): what reconstruction
    /// pictures show. `None` for MLM.
    pub reconstruction: Option<Reconstruction>,
}

impl Pass {
    /// The pass of an objective that reconstructs `patches` (`[B, L, P]`, the input's
    /// space) with `mask` (`[B, L]`, 1 = removed).
    pub fn reconstructed(loss: Tensor, patches: Tensor, mask: Tensor) -> Self {
        Self {
            loss,
            reconstruction: Some(Reconstruction { patches, mask }),
        }
    }
}

/// Predicted patches of a patch grid and which were removed.
pub struct Reconstruction {
    /// `[B, L, P]`, in the input's space (pixels of the normalised image, normalised
    /// log-mel values).
    pub patches: Tensor,
    /// `[B, L]`, 1 = removed.
    pub mask: Tensor,
}
