//! An image classifier: the image encoder (`vit.*`) and a linear layer (`classifier.*`) on a
//! pooled final hidden state. With class-token pooling this is Hugging Face's
//! `ViTForImageClassification` (`classifier(layernorm(h)[:, 0])`); mean pooling averages the
//! patch tokens' final hidden states instead (not representable in `transformers`' ViT).
//!
//! A trained classifier is saved as a directory holding `model.safetensors` (these names)
//! and `model.json` (a [`ClassifierSpec`]), so it can be loaded, run and exported later.

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{ImageEncoder, ImageGeometry};
use crate::backbone::{pool, Pooling, Tokens};
use crate::backbone::{EncoderConfig, Linear, Mode};
use crate::error::{Error, Result};

/// File names of a saved model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const SPEC_FILE: &str = "model.json";

/// Everything needed to rebuild a classifier around its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
    /// Always `"image-classifier"`; lets other model kinds share the file name.
    pub kind: String,
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    pub num_labels: usize,
    pub pooling: Pooling,
}

impl ClassifierSpec {
    pub const KIND: &'static str = "image-classifier";

    pub fn new(
        geometry: ImageGeometry,
        encoder: EncoderConfig,
        num_labels: usize,
        pooling: Pooling,
    ) -> Self {
        Self {
            kind: Self::KIND.into(),
            geometry,
            encoder,
            num_labels,
            pooling,
        }
    }

    /// Reads `dir/model.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SPEC_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let spec: Self =
            serde_json::from_str(&text).map_err(|e| Error::data(&path, e.to_string()))?;
        if spec.kind != Self::KIND {
            return Err(Error::data(
                &path,
                format!("kind is `{}`, expected `{}`", spec.kind, Self::KIND),
            ));
        }
        Ok(spec)
    }

    /// Writes `dir/model.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json =
            serde_json::to_string_pretty(self).map_err(|e| Error::data(dir, e.to_string()))?;
        crate::tensor_io::write_atomic(&dir.join(SPEC_FILE), json.as_bytes())
    }
}

#[derive(Debug, Clone)]
pub struct ImageClassifier {
    pub vit: ImageEncoder,
    pub classifier: Linear,
    pub pooling: Pooling,
}

impl ImageClassifier {
    /// Builds the classifier from `vb` (root: `vit.*` and `classifier.*`).
    pub fn new(spec: &ClassifierSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            vit: ImageEncoder::new(spec.geometry, &spec.encoder, vb.pp("vit"))?,
            classifier: Linear::new(spec.encoder.dim, spec.num_labels, true, vb.pp("classifier"))?,
            pooling: spec.pooling,
        })
    }

    /// Pools final hidden states `[B, 1 + L, D]` into `[B, D]`.
    pub fn pool(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        pool(hidden, self.pooling, Tokens::ClsThenPatches)
    }

    /// `[B, C, H, W]` → logits `[B, num_labels]`.
    pub fn forward(&self, imgs: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let h = self.vit.forward(imgs, mode)?;
        self.classifier.forward(&self.pool(&h)?)
    }
}
