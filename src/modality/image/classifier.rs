//! An image classifier: the image encoder (`vit.*`) and a linear layer (`classifier.*`) on a
//! pooled final hidden state. With class-token pooling this is Hugging Face's
//! `ViTForImageClassification` (`classifier(layernorm(h)[:, 0])`); mean pooling averages the
//! patch tokens' final hidden states instead (not representable in `transformers`' ViT).
//!
//! A trained classifier is saved as a directory holding `model.safetensors` (these names)
//! and `model.json` (a [`ClassifierSpec`]), so it can be loaded, run and exported later.

use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::{ImageEncoder, ImageGeometry};
use crate::backbone::{pool, Classifier, EncoderConfig, Mode, PooledEncoder, Pooling, Tokens};
use crate::error::{Error, Result};

pub use crate::backbone::classifier::{SPEC_FILE, WEIGHTS_FILE};

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
    /// Class names in label order; empty when the data named none (then `LABEL_i`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

impl ClassifierSpec {
    pub const KIND: &'static str = "image-classifier";

    pub fn new(
        geometry: ImageGeometry,
        encoder: EncoderConfig,
        num_labels: usize,
        pooling: Pooling,
        classes: Vec<String>,
    ) -> Self {
        Self {
            kind: Self::KIND.into(),
            geometry,
            encoder,
            num_labels,
            pooling,
            classes,
        }
    }

    /// Reads `dir/model.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SPEC_FILE);
        let text = crate::input::read_to_string(&path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::data(&path, e.to_string()))?;
        // Another modality's classifier: say what takes it, not which fields it lacks.
        if let Some(kind) = value["kind"].as_str().filter(|k| *k != Self::KIND) {
            return Err(Error::data(
                &path,
                format!(
                    "a `{kind}`, not an image classifier: `pretext predict`, `eval`, \
                     `forward` and `export` take it; `embed` reads encoders: give it the run \
                     the classifier was fine-tuned in"
                ),
            ));
        }
        let spec: Self =
            serde_json::from_value(value).map_err(|e| Error::data(&path, e.to_string()))?;
        if spec.kind != Self::KIND {
            return Err(Error::data(
                &path,
                format!("kind is `{}`, expected `{}`", spec.kind, Self::KIND),
            ));
        }
        let field = |key: &str, m: String| Error::InvalidValue {
            file: path.clone(),
            key: key.into(),
            message: m,
        };
        spec.encoder.validate().map_err(|m| field("encoder", m))?;
        spec.geometry
            .validate(spec.encoder.dim)
            .map_err(|(k, m)| field(&format!("geometry.{k}"), m))?;
        if spec.num_labels == 0 {
            return Err(field("num_labels", "must be positive".into()));
        }
        if !spec.classes.is_empty() && spec.classes.len() != spec.num_labels {
            return Err(field(
                "classes",
                format!(
                    "names {} classes, but num_labels is {}",
                    spec.classes.len(),
                    spec.num_labels
                ),
            ));
        }
        Ok(spec)
    }

    /// Writes `dir/model.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::backbone::classifier::write_spec(self, dir)
    }
}

/// The image encoder (`vit.*`) under a linear layer.
pub type ImageClassifier = Classifier<ImageEncoder>;

impl PooledEncoder for ImageEncoder {
    type Input = Tensor;

    fn width(&self) -> usize {
        self.encoder.dim()
    }

    /// `[B, C, H, W]` → the class token, or the mean of the patch tokens.
    fn pooled(
        &self,
        imgs: &Tensor,
        pooling: Pooling,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        pool(&self.forward(imgs, mode)?, pooling, Tokens::ClsThenPatches)
    }
}

impl Classifier<ImageEncoder> {
    /// Builds the classifier from `vb` (root: `vit.*` and `classifier.*`).
    pub fn new(spec: &ClassifierSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        let vit = ImageEncoder::new(spec.geometry, &spec.encoder, vb.pp("vit"))?;
        Classifier::on(vit, spec.num_labels, spec.pooling, vb)
    }
}
