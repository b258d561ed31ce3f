//! Masked language modelling (BERT): the text encoder reads a sequence in which some tokens
//! were selected and (mostly) replaced by the mask token; the MLM head, whose output
//! projection is tied to the input embeddings, predicts the original token at each selected
//! position. The loss is the mean cross-entropy over selected positions only.
//!
//! Which tokens are selected and what replaces them follows BERT's recipe in
//! [`crate::modality::text::mask`]; the objective owns the masker and draws from the
//! training loop's RNG, as image objectives draw their masks.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use super::{Objective, Pass};
use crate::backbone::Mode;
use crate::draws::{Draws, Purpose};
use crate::error::{Error, Result};
use crate::modality::text::encoder::{MlmHead, TextConfig, TextEncoder};
use crate::modality::text::mask::MlmMasker;
use crate::modality::text::pack::TokenBlocks;

pub use crate::modality::text::mask::IGNORE;

/// The text encoder under `text.` and the tied MLM head under `mlm.`, with the masker that
/// corrupts their input.
pub struct Mlm {
    pub text: TextEncoder,
    pub head: MlmHead,
    pub masker: MlmMasker,
}

/// A masked batch, ready for the model.
pub struct MlmBatch {
    /// `[B, T]` u32, after replacement.
    pub input_ids: Tensor,
    /// `[B, T]` f32, 1 = real token, 0 = padding.
    pub attention_mask: Tensor,
    /// Flat indices (`b * T + t`) of the selected positions, `[N]` u32.
    pub positions: Tensor,
    /// The original tokens at those positions, `[N]` u32.
    pub targets: Tensor,
}

impl MlmBatch {
    /// From row-major ids, mask and labels (`IGNORE` where not selected) of `b` sequences of
    /// `t` tokens.
    pub fn new(
        ids: Vec<u32>,
        mask: Vec<f32>,
        labels: &[i64],
        (b, t): (usize, usize),
        device: &Device,
    ) -> Result<Self> {
        if ids.len() != b * t || mask.len() != b * t || labels.len() != b * t {
            return Err(Error::Usage(format!(
                "an MLM batch of {b}x{t} needs {} ids, mask values and labels, found {}, {} and {}",
                b * t,
                ids.len(),
                mask.len(),
                labels.len()
            )));
        }
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        for (i, &l) in labels.iter().enumerate() {
            if l != IGNORE {
                positions.push(i as u32);
                targets.push(u32::try_from(l).map_err(|_| {
                    Error::Usage(format!(
                        "MLM label {l} at flat position {i} is not a token id"
                    ))
                })?);
            }
        }
        let n = positions.len();
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            attention_mask: Tensor::from_vec(mask, (b, t), device)?,
            positions: Tensor::from_vec(positions, n, device)?,
            targets: Tensor::from_vec(targets, n, device)?,
        })
    }

    pub fn num_predicted(&self) -> usize {
        self.targets.dims()[0]
    }
}

pub struct MlmOutput {
    /// Mean cross-entropy over the predicted positions (0 when there are none).
    pub loss: Tensor,
    /// `[N, V]` logits at the predicted positions.
    pub logits: Tensor,
}

/// Sums over a set of batches: what held-out evaluation reports.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MlmEval {
    /// Predicted (masked) tokens evaluated.
    pub tokens: usize,
    /// Mean cross-entropy per predicted token (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Fraction of predicted tokens whose arg-max is the original.
    pub accuracy: f64,
}

impl Mlm {
    pub fn new(cfg: &TextConfig, masker: MlmMasker, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            text: TextEncoder::new(cfg, vb.pp("text"))?,
            head: MlmHead::new(cfg, vb.pp("mlm"))?,
            masker,
        })
    }

    /// Masks every block of `blocks`, block `i` drawing from row `i`'s mask stream of
    /// `draws`: the model's input.
    pub fn mask(&self, blocks: &TokenBlocks, draws: &Draws) -> Result<MlmBatch> {
        mask_blocks(
            &self.masker,
            blocks,
            draws,
            self.text.word_embeddings().device(),
        )
    }

    pub fn forward(&self, batch: &MlmBatch, mode: &mut Mode) -> Result<MlmOutput> {
        let h = self
            .text
            .forward(&batch.input_ids, None, Some(&batch.attention_mask), mode)?;
        let (b, t, d) = h.dims3()?;
        let chosen = h.reshape((b * t, d))?.index_select(&batch.positions, 0)?;
        let logits = self.head.forward(&chosen, self.text.word_embeddings())?;
        let loss = if batch.num_predicted() == 0 {
            Tensor::zeros((), DType::F32, h.device())?
        } else {
            crate::backbone::ops::cross_entropy(&logits, &batch.targets)?
        };
        Ok(MlmOutput { loss, logits })
    }

    /// Summed loss and hits of one batch, in eval mode: `(sum of CE, correct, count)`.
    pub fn score(&self, batch: &MlmBatch) -> Result<(f64, usize, usize)> {
        let n = batch.num_predicted();
        if n == 0 {
            return Ok((0.0, 0, 0));
        }
        let out = self.forward(batch, &mut Mode::Eval)?;
        let loss = out.loss.to_scalar::<f32>()? as f64 * n as f64;
        let pred = out.logits.argmax(D::Minus1)?;
        let hits = pred
            .eq(&batch.targets)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        Ok((loss, hits, n))
    }
}

/// Masks every block of `blocks` with `masker`, block `i` drawing from row `i`'s mask
/// stream of `draws` (MLM's input, and data2vec's student's over text).
pub fn mask_blocks(
    masker: &MlmMasker,
    blocks: &TokenBlocks,
    draws: &Draws,
    device: &Device,
) -> Result<MlmBatch> {
    let (n, t) = (blocks.len(), blocks.seq_len);
    let mut ids = Vec::with_capacity(n * t);
    let mut mask = Vec::with_capacity(n * t);
    let mut labels = Vec::with_capacity(n * t);
    for i in 0..n {
        let block = blocks.get(i);
        let rng = &mut draws.rng(i, Purpose::Mask);
        let (masked, l) = masker.apply(block.ids, block.word_ids, rng);
        ids.extend(masked);
        labels.extend(l);
        mask.extend(block.attention_mask.iter().map(|&a| a as f32));
    }
    MlmBatch::new(ids, mask, &labels, (n, t), device)
}

impl MlmEval {
    /// From summed `(loss, hits, count)` over batches.
    pub fn from_sums(loss: f64, hits: usize, tokens: usize) -> Self {
        let mean = loss / tokens.max(1) as f64;
        Self {
            tokens,
            loss: mean,
            perplexity: mean.exp(),
            accuracy: hits as f64 / tokens.max(1) as f64,
        }
    }
}

/// MLM over blocks of tokens (the batch's rows, as gathered from the training blocks).
impl Objective for Mlm {
    type Batch = TokenBlocks;

    fn encoder_prefix(&self) -> &'static str {
        "text."
    }

    fn loss(&self, blocks: &TokenBlocks, draws: &Draws) -> Result<Tensor> {
        let batch = self.mask(blocks, draws)?;
        Ok(self.forward(&batch, &mut Mode::train(*draws))?.loss)
    }

    fn evaluate(&self, blocks: &TokenBlocks, draws: &Draws) -> Result<Pass> {
        let batch = self.mask(blocks, draws)?;
        Ok(Pass {
            loss: self.forward(&batch, &mut Mode::Eval)?.loss,
            reconstruction: None,
        })
    }
}
