//! A text classifier: the text encoder (`text.*`) and a linear layer (`classifier.*`) on the
//! `[CLS]` token's final hidden state or on the mean over real (non-padding) tokens.
//!
//! Inputs are padded id matrices; the padding mask is `ids != pad_token_id`, so one tensor
//! carries the whole batch (what the fine-tuning loop passes around).
//!
//! A trained classifier is saved as a directory holding `model.safetensors` (these names)
//! and `model.json` (a [`TextClassifierSpec`]).

use std::path::Path;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::encoder::{TextConfig, TextEncoder};
use crate::backbone::{Classifier, Mode, PooledEncoder, Pooler, Pooling, Tokens};
use crate::error::Result;

pub use crate::backbone::classifier::SPEC_FILE;

/// Everything needed to rebuild a text classifier around its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextClassifierSpec {
    /// Always `"text-classifier"`.
    pub kind: String,
    pub text: TextConfig,
    pub pooling: Pooling,
    /// The learned pooler between pooling and the linear layer (`pooler.dense.*`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<Pooler>,
    /// Class names, in label order.
    pub labels: Vec<String>,
}

impl TextClassifierSpec {
    pub const KIND: &'static str = "text-classifier";

    pub fn new(text: TextConfig, pooling: Pooling, labels: Vec<String>) -> Self {
        Self {
            kind: Self::KIND.into(),
            text,
            pooling,
            pooler: None,
            labels,
        }
    }

    /// The same spec with `pooler` (`None`: without one).
    pub fn with_pooler(mut self, pooler: Option<Pooler>) -> Self {
        self.pooler = pooler;
        self
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::backbone::classifier::write_spec(self, dir)
    }
}

/// The text encoder (`text.*`) under a linear layer.
pub type TextClassifier = Classifier<TextEncoder>;

impl PooledEncoder for TextEncoder {
    type Input = Tensor;

    fn width(&self) -> usize {
        self.config().encoder.dim
    }

    /// `ids: [B, T]` u32 padded with the pad token → the `[CLS]` token, or the mean over
    /// real tokens.
    fn pooled(
        &self,
        ids: &Tensor,
        pooling: Pooling,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        pool(self, ids, pooling, mode)
    }
}

impl Classifier<TextEncoder> {
    pub fn new(spec: &TextClassifierSpec, vb: VarBuilder) -> Result<Self> {
        let text = TextEncoder::new(&spec.text, vb.pp("text"))?;
        if spec.pooler.is_some() && spec.pooling != Pooling::Cls {
            return Err(crate::error::Error::Usage(
                "a `tanh-cls` pooler reads the [CLS] token: its pooling must be `cls`".into(),
            ));
        }
        let c = Classifier::on(text, spec.labels.len(), spec.pooling, vb.clone())?;
        Ok(c.with_pooler(spec.pooler, vb)?)
    }
}

/// The padding mask of padded ids: 1 where `ids != pad`, as f32.
pub fn padding_mask(ids: &Tensor, pad: u32) -> candle_core::Result<Tensor> {
    ids.ne(pad)?.to_dtype(DType::F32)
}

/// Pooled final hidden states `[B, D]` of padded ids `[B, T]`.
pub fn pool(
    text: &TextEncoder,
    ids: &Tensor,
    pooling: Pooling,
    mode: &mut Mode,
) -> candle_core::Result<Tensor> {
    let mask = padding_mask(ids, text.config().pad_token_id)?;
    let h = text.forward(ids, None, Some(&mask), mode)?;
    crate::backbone::pool(&h, pooling, Tokens::Masked(&mask))
}
