//! A text classifier: the text encoder (`text.*`) and a linear layer (`classifier.*`) on the
//! `[CLS]` token's final hidden state or on the mean over real (non-padding) tokens.
//!
//! Inputs are padded id matrices; the padding mask is `ids != pad_token_id`, so one tensor
//! carries the whole batch (what the fine-tuning loop passes around).
//!
//! A trained classifier is saved as a directory holding `model.safetensors` (these names)
//! and `model.json` (a [`TextClassifierSpec`]).

use std::path::Path;

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::encoder::{TextConfig, TextEncoder};
use crate::backbone::{Linear, Mode};
use crate::backbone::{Pooling, Tokens};
use crate::error::{Error, Result};

pub const SPEC_FILE: &str = "model.json";

/// Everything needed to rebuild a text classifier around its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextClassifierSpec {
    /// Always `"text-classifier"`.
    pub kind: String,
    pub text: TextConfig,
    pub pooling: Pooling,
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
            labels,
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let json =
            serde_json::to_string_pretty(self).map_err(|e| Error::data(dir, e.to_string()))?;
        crate::tensor_io::write_atomic(&dir.join(SPEC_FILE), json.as_bytes())
    }
}

pub struct TextClassifier {
    pub text: TextEncoder,
    pub classifier: Linear,
    pub pooling: Pooling,
}

impl TextClassifier {
    pub fn new(spec: &TextClassifierSpec, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            text: TextEncoder::new(&spec.text, vb.pp("text"))?,
            classifier: Linear::new(
                spec.text.encoder.dim,
                spec.labels.len(),
                true,
                vb.pp("classifier"),
            )?,
            pooling: spec.pooling,
        })
    }

    /// `ids: [B, T]` u32 padded with the pad token → logits `[B, classes]`.
    pub fn forward(&self, ids: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let pooled = pool(&self.text, ids, self.pooling, mode)?;
        self.classifier.forward(&pooled)
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
