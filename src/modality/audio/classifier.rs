//! A spoken-audio classifier: the spectrogram encoder (`audio.*`) and a linear layer
//! (`classifier.*`) on the pooled final hidden states (class token, or the mean of the patch
//! tokens as Audio-MAE fine-tunes). Saved as `model.safetensors` + `model.json`
//! ([`AudioClassifierSpec`], kind `audio-classifier`), with the feature settings and class
//! names, so a saved directory is self-contained.

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::clips::AudioFeatures;
use super::encoder::{SpectrogramEncoder, SpectrogramGeometry};
use super::waveform::{WaveformConfig, WaveformEncoder};
use crate::backbone::{pool, Pooling, Tokens};
use crate::backbone::{EncoderConfig, Linear, Mode};
use crate::error::{Error, Result};

pub use crate::modality::image::classifier::{SPEC_FILE, WEIGHTS_FILE};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioClassifierSpec {
    /// Always `"audio-classifier"`.
    pub kind: String,
    pub features: AudioFeatures,
    pub geometry: SpectrogramGeometry,
    pub encoder: EncoderConfig,
    pub pooling: Pooling,
    /// Class names, in label order.
    pub classes: Vec<String>,
}

impl AudioClassifierSpec {
    pub const KIND: &'static str = "audio-classifier";

    /// Writes `dir/model.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json =
            serde_json::to_string_pretty(self).map_err(|e| Error::data(dir, e.to_string()))?;
        crate::tensor_io::write_atomic(&dir.join(SPEC_FILE), json.as_bytes())
    }
}

#[derive(Debug, Clone)]
pub struct AudioClassifier {
    pub audio: SpectrogramEncoder,
    pub classifier: Linear,
    pub pooling: Pooling,
}

impl AudioClassifier {
    /// Builds the classifier from `vb` (root: `audio.*` and `classifier.*`).
    pub fn new(spec: &AudioClassifierSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            audio: SpectrogramEncoder::new(spec.geometry, &spec.encoder, vb.pp("audio"))?,
            classifier: Linear::new(
                spec.encoder.dim,
                spec.classes.len(),
                true,
                vb.pp("classifier"),
            )?,
            pooling: spec.pooling,
        })
    }

    /// `[B, n_mels, frames]` → logits `[B, classes]`.
    pub fn forward(&self, spec: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let h = self.audio.forward(spec, mode)?;
        self.classifier
            .forward(&pool(&h, self.pooling, Tokens::ClsThenPatches)?)
    }
}

/// A classifier on a waveform model (wav2vec 2.0, HuBERT, data2vec-audio): the
/// [`WaveformEncoder`] (`audio.*`) and a linear layer (`classifier.*`) on the mean of the
/// final hidden states. Saved as `model.safetensors` + `model.json` (kind
/// `waveform-classifier`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveformClassifierSpec {
    /// Always `"waveform-classifier"`.
    pub kind: String,
    /// The source's `transformers` family (`wav2vec2`, `hubert`, `data2vec-audio`).
    pub model_type: String,
    pub config: WaveformConfig,
    /// Sample rate of the input (16 kHz).
    pub sample_rate: u32,
    /// Samples per clip (inputs are centre-cropped or padded with silence to this length).
    pub samples: usize,
    /// Each clip is brought to zero mean and unit variance (the feature extractor's
    /// `do_normalize`).
    pub normalize: bool,
    /// Class names, in label order.
    pub classes: Vec<String>,
}

impl WaveformClassifierSpec {
    pub const KIND: &'static str = "waveform-classifier";

    /// Writes `dir/model.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json =
            serde_json::to_string_pretty(self).map_err(|e| Error::data(dir, e.to_string()))?;
        crate::tensor_io::write_atomic(&dir.join(SPEC_FILE), json.as_bytes())
    }
}

#[derive(Debug, Clone)]
pub struct WaveformClassifier {
    pub audio: WaveformEncoder,
    pub classifier: Linear,
}

impl WaveformClassifier {
    /// Builds the classifier from `vb` (root: `audio.*` and `classifier.*`).
    pub fn new(spec: &WaveformClassifierSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            audio: WaveformEncoder::new(&spec.config, vb.pp("audio"))?,
            classifier: Linear::new(
                spec.config.encoder.dim,
                spec.classes.len(),
                true,
                vb.pp("classifier"),
            )?,
        })
    }

    /// Waveforms `[B, S]` → logits `[B, classes]`.
    pub fn forward(&self, x: &Tensor, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let h = self.audio.forward(x, None, mode)?.last_hidden_state;
        self.classifier
            .forward(&pool(&h, Pooling::Mean, Tokens::Frames)?)
    }
}
