//! What a model is, independent of where it came from: its shape ([`ModelSpec`]) and its
//! weights under pretext's names ([`LoadedModel`]).

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::backbone::EncoderConfig;
use crate::backbone::Pooling;
use crate::modality::image::{ImageGeometry, Positions};

/// The task wrapper around the image encoder.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// The encoder alone (`ViTModel`), with its pooler (`tanh(dense(h[:, 0]))`, output size
    /// given) when the checkpoint has one.
    Encoder { pooler: Option<usize> },
    /// A linear classifier on the pooled final hidden state (`ViTForImageClassification`
    /// when pooling is `cls`).
    Classifier { num_labels: usize, pooling: Pooling },
    /// Masked autoencoder (`ViTMAEForPreTraining`).
    Mae {
        /// Pre-norm decoder stack.
        decoder: EncoderConfig,
        mask_ratio: f64,
        norm_pix_loss: bool,
    },
}

/// Shape and behaviour of a model, enough to build it around its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    /// Learned (ViT) or fixed sin-cos (MAE, our own encoders) position embeddings. Either
    /// way the table is in [`LoadedModel::tensors`] as `vit.pos_embed`.
    pub positions: Positions,
    pub kind: Kind,
}

impl ModelSpec {
    /// The `transformers` class this model corresponds to.
    pub fn hf_class(&self) -> &'static str {
        match self.kind {
            Kind::Encoder { .. } => "ViTModel",
            Kind::Classifier { .. } => "ViTForImageClassification",
            Kind::Mae { .. } => "ViTMAEForPreTraining",
        }
    }
}

/// Pixel normalisation applied after scaling to [0, 1]: `(x - mean) / std` per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// `transformers`' ViT image processor default (and pretext's recipe default).
    pub fn half(channels: usize) -> Self {
        Self {
            mean: vec![0.5; channels],
            std: vec![0.5; channels],
        }
    }
}

/// A model's spec and weights under pretext's parameter names. Fixed position tables are
/// included as tensors too (`vit.pos_embed`, and `decoder.pos_embed` for MAE), exactly as
/// the model uses them, so export writes them faithfully.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub spec: ModelSpec,
    pub tensors: BTreeMap<String, Tensor>,
    pub normalize: Normalize,
    /// The `config.json` it came from, if any: keys pretext does not interpret (labels,
    /// `initializer_range`, …) are kept on export.
    pub hf_config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Where it came from, for messages.
    pub origin: String,
}
