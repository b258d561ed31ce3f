//! The recipe schema: typed, documented, with every default in one place.
//!
//! Every struct denies unknown fields; `recipe::load` turns serde's complaint into an error
//! naming the file, the full key and the closest valid key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::head::{DownstreamInput, DownstreamSection, HeadKind};
pub use super::objective::{
    DecoderSection, MaeSection, MlmSection, ObjectiveKind, ObjectiveSection, SimMimSection,
};
pub use super::source::DataSource;
pub use crate::backbone::Pooling;
use crate::backbone::{Activation, EncoderConfig, NormPosition};
pub use crate::modality::text::mask::SpanConfig;
pub use crate::modality::text::tokenizer::TokenizerKind;
pub use crate::objective::masking::Masking;
pub use crate::train::config::{
    OptimizerKind, OptimizerSection, ScheduleKind, ScheduleSection, TrainSection,
};

/// A complete recipe: what to pretrain, on what, how, and what to evaluate afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Names the run directory (`runs/<name>`).
    pub name: String,
    /// The one seed for weights, data order, masking and dropout.
    #[serde(default)]
    pub seed: u64,
    /// `auto` | `cpu` | `cuda:N` | `metal`.
    #[serde(default = "defaults::device")]
    pub device: String,
    pub model: ModelSection,
    pub data: DataSection,
    /// The pretext task; absent only where nothing is pretrained (an audio recipe starting
    /// from a waveform model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<ObjectiveSection>,
    pub train: TrainSection,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downstream: Vec<DownstreamSection>,
}

/// The encoder. `preset = "NAME"` fills unset keys from `models/NAME.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Start from these weights instead of a fresh initialisation (text): a Hugging Face
    /// directory or `hf:org/name[@rev]`. The shape keys below then come from its
    /// `config.json` and must be left unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub dim: usize,
    #[serde(default)]
    pub depth: usize,
    #[serde(default)]
    pub heads: usize,
    /// MLP hidden size; default `4 * dim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_dim: Option<usize>,
    #[serde(default = "defaults::norm")]
    pub norm: NormPosition,
    #[serde(default = "defaults::activation")]
    pub activation: Activation,
    #[serde(default = "defaults::norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "defaults::yes")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub attention_dropout: f64,
}

impl ModelSection {
    pub fn encoder_config(&self) -> EncoderConfig {
        EncoderConfig {
            dim: self.dim,
            depth: self.depth,
            heads: self.heads,
            mlp_dim: self.mlp_dim.unwrap_or(4 * self.dim),
            norm: self.norm,
            activation: self.activation,
            norm_eps: self.norm_eps,
            qkv_bias: self.qkv_bias,
            dropout: self.dropout,
            attention_dropout: self.attention_dropout,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Image,
    Text,
    Audio,
}

/// Where the data is and how it becomes tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    pub modality: Modality,
    /// Pretraining split (labels, if present, are ignored by pretraining).
    pub train: DataSource,
    /// Held-out split: reconstruction pictures and downstream evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<DataSource>,
    /// Required when `modality = "image"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSection>,
    /// Augmentations of pretraining batches (not of pictures or downstream features);
    /// absent = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentSection>,
    /// Required when `modality = "text"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextSection>,
    /// Required when `modality = "audio"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioSection>,
    /// Labelled splits for the downstream heads when they are not `train` / `test` (text:
    /// pretrain on one corpus, classify another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled: Option<LabelledSection>,
}

/// The labelled train and test splits of the downstream task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledSection {
    pub train: DataSource,
    pub test: DataSource,
}

/// How text becomes token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSection {
    /// Tokens per sequence, special tokens included (pretraining blocks; longer downstream
    /// examples are truncated).
    #[serde(default = "defaults::max_len")]
    pub max_len: usize,
    /// Absent with `model.source`: the source's own `tokenizer.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerSection>,
}

/// `{ file = "tokenizer.json" }`, or `{ train = "wordpiece" | "bpe", vocab_size = N }` to
/// train one on `data.train` (saved as `tokenizer.json` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TokenizerKind>,
    /// Vocabulary size of a trained tokenizer, special tokens included.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Lower-case before tokenizing (trained WordPiece tokenizers).
    #[serde(default = "defaults::yes")]
    pub lowercase: bool,
}

/// How audio clips become spectrograms: every clip is read (WAV; any channel count is
/// mixed down), resampled to `mel.sample_rate`, cut or padded to `frames` frames, turned
/// into a log-mel spectrogram and normalised with one mean and standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSection {
    /// Log-mel settings (FFT size, hop, mel bands, scale, ...), and the sample rate clips are
    /// resampled to.
    #[serde(default)]
    pub mel: crate::modality::audio::mel::MelConfig,
    /// Spectrogram frames per clip: a clip is `(frames - 1) * hop_length` samples, longer
    /// ones centre-cropped, shorter ones padded with silence at the end.
    pub frames: usize,
    /// Mel bands per patch; must divide `mel.n_mels` (Audio-MAE; absent with a waveform
    /// `model.source`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub patch_freq: usize,
    /// Frames per patch; must divide `frames` (Audio-MAE).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub patch_time: usize,
    /// Normalisation of the log-mel values; absent = the mean and standard deviation of
    /// the training split (saved with the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f32>,
}

/// Pretraining augmentations, applied in this order with torchvision's semantics; each
/// example's randomness is a function of (seed, epoch, example index) only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AugmentSection {
    /// `RandomResizedCrop` (bilinear) to `data.image.size`; absent = resize the whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_resized_crop: Option<CropSection>,
    /// Probability of `RandomHorizontalFlip`; default 0.
    #[serde(default)]
    pub hflip: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropSection {
    /// Range of the crop's area as a fraction of the image's; default [0.08, 1.0].
    #[serde(default = "defaults::crop_scale")]
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio (width / height), sampled log-uniformly;
    /// default [3/4, 4/3].
    #[serde(default = "defaults::crop_ratio")]
    pub ratio: [f64; 2],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Side of the square input, in pixels (must equal the data's for IDX).
    pub size: usize,
    pub channels: usize,
    /// Patch side; must divide `size`.
    pub patch: usize,
    /// Per-channel normalisation applied after scaling pixels to [0, 1].
    #[serde(default = "defaults::half")]
    pub mean: Vec<f32>,
    #[serde(default = "defaults::half")]
    pub std: Vec<f32>,
}

mod defaults {
    use super::*;
    pub fn device() -> String {
        "auto".into()
    }
    pub fn norm() -> NormPosition {
        NormPosition::Pre
    }
    pub fn activation() -> Activation {
        Activation::Gelu
    }
    pub fn norm_eps() -> f64 {
        1e-6
    }
    pub fn yes() -> bool {
        true
    }
    pub fn half() -> Vec<f32> {
        vec![0.5]
    }
    pub fn crop_scale() -> [f64; 2] {
        [0.08, 1.0]
    }
    pub fn crop_ratio() -> [f64; 2] {
        [3.0 / 4.0, 4.0 / 3.0]
    }
    pub fn max_len() -> usize {
        128
    }
    pub fn vocab_size() -> usize {
        8000
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
