//! A spoken-audio classifier: the spectrogram encoder (`audio.*`) and a linear layer
//! (`classifier.*`) on the pooled final hidden states (class token, or the mean of the patch
//! tokens as Audio-MAE fine-tunes). Saved as `model.safetensors` + `model.json`
//! ([`AudioClassifierSpec`], kind `audio-classifier`), with the feature settings and class
//! names, so a saved directory is self-contained.

use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::clips::AudioFeatures;
use super::encoder::{SpectrogramEncoder, SpectrogramGeometry};
use super::waveform::{WaveformConfig, WaveformEncoder};
use crate::backbone::{pool, Classifier, EncoderConfig, Mode, PooledEncoder, Pooling, Tokens};
use crate::error::Result;

pub use crate::backbone::classifier::{SPEC_FILE, WEIGHTS_FILE};

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
        crate::backbone::classifier::write_spec(self, dir)
    }
}

/// The spectrogram encoder (`audio.*`) under a linear layer.
pub type AudioClassifier = Classifier<SpectrogramEncoder>;

impl PooledEncoder for SpectrogramEncoder {
    fn width(&self) -> usize {
        self.dim()
    }

    /// `[B, n_mels, frames]` → the class token, or the mean of the patch tokens.
    fn pooled(
        &self,
        spec: &Tensor,
        pooling: Pooling,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        pool(&self.forward(spec, mode)?, pooling, Tokens::ClsThenPatches)
    }
}

impl Classifier<SpectrogramEncoder> {
    /// Builds the classifier from `vb` (root: `audio.*` and `classifier.*`).
    pub fn new(spec: &AudioClassifierSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        let audio = SpectrogramEncoder::new(spec.geometry, &spec.encoder, vb.pp("audio"))?;
        Classifier::on(audio, spec.classes.len(), spec.pooling, vb)
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
        crate::backbone::classifier::write_spec(self, dir)
    }
}

/// A waveform model (`audio.*`) under a linear layer on the mean of its frames.
pub type WaveformClassifier = Classifier<WaveformEncoder>;

impl PooledEncoder for WaveformEncoder {
    fn width(&self) -> usize {
        self.config().encoder.dim
    }

    /// Waveforms `[B, S]` → the mean of the final hidden states (`cls` pooling is an error:
    /// waveform models have no class token).
    fn pooled(&self, x: &Tensor, pooling: Pooling, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let h = self.forward(x, None, mode)?.last_hidden_state;
        pool(&h, pooling, Tokens::Frames)
    }
}

impl Classifier<WaveformEncoder> {
    /// Builds the classifier from `vb` (root: `audio.*` and `classifier.*`).
    pub fn new(spec: &WaveformClassifierSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        let audio = WaveformEncoder::new(&spec.config, vb.pp("audio"))?;
        Classifier::on(audio, spec.classes.len(), Pooling::Mean, vb)
    }
}
