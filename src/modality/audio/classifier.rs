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
use super::encoder::{SpectrogramEncoder, SpectrogramGeometry, Spectrograms};
use super::waveform::{WaveformConfig, WaveformEncoder};
use crate::backbone::{
    pool, Classifier, EncoderConfig, Linear, Mode, PooledEncoder, Pooling, Tokens,
};
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
    type Input = Spectrograms;

    fn width(&self) -> usize {
        self.dim()
    }

    /// `[B, n_mels, frames]` → the class token, or the mean of the patch tokens that hold
    /// the clip (padding left out).
    fn pooled(
        &self,
        spec: &Spectrograms,
        pooling: Pooling,
        mode: &mut Mode,
    ) -> candle_core::Result<Tensor> {
        let (h, mask) = self.forward_masked(spec, mode)?;
        match &mask {
            Some(m) => pool(&h, pooling, Tokens::ClsThenMaskedPatches(m)),
            None => pool(&h, pooling, Tokens::ClsThenPatches),
        }
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
/// [`WaveformEncoder`] (`audio.*`), an optional projector (`projector.*`, Linear D → P), the
/// mean over the frames and a linear layer (`classifier.*`): with a projector it is exactly
/// `Wav2Vec2ForSequenceClassification` (and its HuBERT / data2vec-audio twins). Saved as
/// `model.safetensors` + `model.json` (kind `waveform-classifier`).
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
    /// Width P of the projector between the frames and the classifier
    /// (`classifier_proj_size`); absent = no projector, the classifier reads the mean of the
    /// hidden states (files written before projectors existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<usize>,
}

impl WaveformClassifierSpec {
    pub const KIND: &'static str = "waveform-classifier";

    /// Writes `dir/model.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::backbone::classifier::write_spec(self, dir)
    }
}

/// The waveform encoder and, in a classifier that has one, the projector on its frames:
/// everything `Wav2Vec2ForSequenceClassification` computes before its classifier. The
/// frozen encoders of probes and k-NN have no projector.
#[derive(Debug, Clone)]
pub struct ProjectedEncoder {
    pub audio: WaveformEncoder,
    /// Linear D → P (`projector.*`).
    pub projector: Option<Linear>,
}

impl ProjectedEncoder {
    /// The bare encoder (no projector).
    pub fn bare(audio: WaveformEncoder) -> Self {
        Self {
            audio,
            projector: None,
        }
    }

    pub fn config(&self) -> &WaveformConfig {
        self.audio.config()
    }
}

/// A waveform model (`audio.*`), an optional projector and a linear layer on the mean of
/// its frames.
pub type WaveformClassifier = Classifier<ProjectedEncoder>;

impl PooledEncoder for ProjectedEncoder {
    type Input = Tensor;

    fn width(&self) -> usize {
        match &self.projector {
            Some(p) => p.weight().dim(0).unwrap_or(0),
            None => self.config().encoder.dim,
        }
    }

    /// Waveforms `[B, S]` → the mean of the final hidden states `[B, D]`, projected to
    /// `[B, P]` when there is a projector (a linear map commutes with the mean, so this is
    /// transformers' projector-then-mean). `cls` pooling is an error: waveform models have
    /// no class token.
    fn pooled(&self, x: &Tensor, pooling: Pooling, mode: &mut Mode) -> candle_core::Result<Tensor> {
        let h = self.audio.forward(x, None, mode)?.last_hidden_state;
        let pooled = pool(&h, pooling, Tokens::Frames)?;
        match &self.projector {
            Some(p) => p.forward(&pooled),
            None => Ok(pooled),
        }
    }
}

impl Classifier<ProjectedEncoder> {
    /// Builds the classifier from `vb` (root: `audio.*`, `projector.*` when the spec has
    /// one, and `classifier.*`).
    pub fn new(spec: &WaveformClassifierSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        let audio = WaveformEncoder::new(&spec.config, vb.pp("audio"))?;
        let projector = match spec.projector {
            Some(p) => Some(Linear::new(
                spec.config.encoder.dim,
                p,
                true,
                vb.pp("projector"),
            )?),
            None => None,
        };
        let encoder = ProjectedEncoder { audio, projector };
        Classifier::on(encoder, spec.classes.len(), Pooling::Mean, vb)
    }
}
