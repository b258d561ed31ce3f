//! One classifier for every encoder: an encoder's final hidden states, pooled, optionally
//! through a learned pooler (`pooler.dense.*`, `tanh(dense(x))` as BERT's), and a linear
//! layer (`classifier.*`) on them. A modality makes its encoder a [`PooledEncoder`] (how its
//! hidden states are laid out, so how they pool) and its classifier is `Classifier<ItsEncoder>`;
//! the classifier, its forward pass and its parameter names are written once.

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

use super::{Linear, Mode, Pooler, Pooling};
use crate::error::{Error, Result};

/// File names of a saved classifier directory, in every modality: the weights (the
/// parameter names of [`Classifier`]) and the description a modality rebuilds it from.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const SPEC_FILE: &str = "model.json";

/// Writes a classifier's description `spec` as `dir/model.json`.
pub fn write_spec(spec: &impl Serialize, dir: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(spec).map_err(|e| Error::data(dir, e.to_string()))?;
    crate::tensor_io::write_atomic(&dir.join(SPEC_FILE), json.as_bytes())
}

/// An encoder a classifier can sit on: inputs → pooled features `[B, D]`.
pub trait PooledEncoder {
    /// A batch of inputs: a tensor (images, token ids, waveforms), or spectrograms with
    /// their padding.
    type Input;
    /// Width `D` of the pooled features.
    fn width(&self) -> usize;
    /// The final hidden states of `x`, pooled as `pooling` says.
    fn pooled(
        &self,
        x: &Self::Input,
        pooling: Pooling,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor>;
}

/// An encoder and a linear layer on its pooled output.
#[derive(Debug, Clone)]
pub struct Classifier<E> {
    pub encoder: E,
    /// `tanh(dense(pooled))` before the classifier, when the head has a pooler.
    pub pooler: Option<Linear>,
    pub classifier: Linear,
    pub pooling: Pooling,
}

impl<E: PooledEncoder> Classifier<E> {
    /// `encoder` (already built under its own prefix) and a linear layer `classifier.*`
    /// under `vb` onto `num_labels` logits.
    pub fn on(
        encoder: E,
        num_labels: usize,
        pooling: Pooling,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let classifier = Linear::new(encoder.width(), num_labels, true, vb.pp("classifier"))?;
        Ok(Self {
            encoder,
            pooler: None,
            classifier,
            pooling,
        })
    }

    /// The same classifier with `pooler` between pooling and the linear layer, its weights
    /// `pooler.dense.*` under `vb` (the classifier's root); `None` leaves it without.
    pub fn with_pooler(
        mut self,
        pooler: Option<Pooler>,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        if let Some(Pooler::TanhCls) = pooler {
            let d = self.encoder.width();
            self.pooler = Some(Linear::new(d, d, true, vb.pp("pooler.dense"))?);
        }
        Ok(self)
    }

    /// The features the linear layer reads `[B, D]`: `x` pooled, through the pooler if any.
    pub fn features(&self, x: &E::Input, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let pooled = self.encoder.pooled(x, self.pooling, mode)?;
        match &self.pooler {
            Some(dense) => dense.forward(&pooled)?.tanh(),
            None => Ok(pooled),
        }
    }

    /// Logits `[B, num_labels]` of `x`.
    pub fn forward(&self, x: &E::Input, mode: &mut Mode) -> candle_core::Result<Tensor> {
        self.classifier.forward(&self.features(x, mode)?)
    }
}
