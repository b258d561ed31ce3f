//! The recipe schema: typed, documented, with every default in one place.
//!
//! Every struct denies unknown fields; `recipe::load` turns serde's complaint into an error
//! naming the file, the full key and the closest valid key.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use super::head::{DownstreamInput, DownstreamSection, HeadKind};
pub use super::objective::{
    DecoderSection, MaeSection, MlmSection, ObjectiveKind, ObjectiveSection, SimMimSection,
};
pub use super::source::DataSource;
pub use crate::backbone::Pooling;
use crate::backbone::{Activation, EncoderConfig, NormPosition};
use crate::error::Result;
pub use crate::modality::audio::recipe::AudioSection;
pub use crate::modality::image::recipe::ImageSection;
pub use crate::modality::text::mask::SpanConfig;
pub use crate::modality::text::recipe::{TextSection, TokenizerSection};
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
            mlp_dim: self.mlp_dim.unwrap_or(self.dim.saturating_mul(4)),
            norm: self.norm,
            activation: self.activation,
            norm_eps: self.norm_eps,
            qkv_bias: self.qkv_bias,
            dropout: self.dropout,
            attention_dropout: self.attention_dropout,
            drop_path: 0.0,
        }
    }
}

/// The kind of data a recipe reads. A modality is registered here (a variant, its
/// `[data.<m>]` section in [`DataSection`], and its [`ModalityRecipe`] in
/// [`Modality::recipe`]) and in `run::prepare`; everything else about it lives in
/// `src/modality/<m>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Image,
    Text,
    Audio,
}

/// What the recipe layer knows of a modality, from its `src/modality/<m>/recipe.rs`.
pub struct ModalityRecipe {
    /// As `data.modality` spells it.
    pub name: &'static str,
    /// The objectives it pretrains with (`objective.kind`).
    pub objectives: &'static [ObjectiveKind],
    /// The checks of its own section and of what it takes from the rest of the recipe
    /// (source formats, masking, shapes).
    pub validate: fn(&Recipe, &Path) -> Result<()>,
    /// Its sizes per example, for the memory estimate (`None` without its section).
    pub footprint: fn(&Recipe) -> Option<super::memory::Footprint>,
}

impl Modality {
    pub fn recipe(self) -> &'static ModalityRecipe {
        match self {
            Modality::Image => &crate::modality::image::recipe::RECIPE,
            Modality::Text => &crate::modality::text::recipe::RECIPE,
            Modality::Audio => &crate::modality::audio::recipe::RECIPE,
        }
    }

    /// `objective.kind` is one this modality pretrains with; the error says which are.
    pub fn check_objective(self, kind: ObjectiveKind, file: &Path) -> Result<()> {
        let kinds = self.recipe().objectives;
        if kinds.contains(&kind) {
            return Ok(());
        }
        let names: Vec<String> = kinds.iter().map(|k| format!("\"{}\"", k.name())).collect();
        let names = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        Err(crate::error::Error::InvalidValue {
            file: file.to_path_buf(),
            key: "objective.kind".into(),
            message: format!(
                "{} recipes pretrain with kind = {}, not \"{}\"",
                self.recipe().name,
                names,
                kind.name()
            ),
        })
    }
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
    /// Labelled splits for the downstream heads when they are not `train` / `test`: pretrain
    /// on one corpus and classify another (text), or on unlabelled images or clips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labelled: Option<LabelledSection>,
    /// Class names in label order, for IDX label files, which hold numbers only (folders,
    /// JSONL and manifests name their own classes). Saved with fine-tuned classifiers, so
    /// `pretext predict` and exported `id2label` say `"Bag"`, not `LABEL_8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// The labelled train and test splits of the downstream task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledSection {
    pub train: DataSource,
    pub test: DataSource,
}

/// Augmentations (`[data.augment]` of pretraining batches, `downstream[i].augment` of
/// fine-tuning batches), applied in the order listed; each example's randomness is a function
/// of (seed, epoch, example index) only. Images take `random_resized_crop` and `hflip`
/// (torchvision's semantics); audio takes the rest, on the log-mel spectrogram
/// ([`crate::modality::audio::augment`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AugmentSection {
    /// `RandomResizedCrop` (bilinear) to `data.image.size`; absent = resize the whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_resized_crop: Option<CropSection>,
    /// Probability of `RandomHorizontalFlip`; default 0.
    #[serde(default)]
    pub hflip: f64,
    /// Random erasing (timm's `RandomErasing`, per-pixel noise) after normalisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_erasing: Option<ErasingSection>,
    /// Audio: the largest time shift, in seconds, either way (uniform; the frames it uncovers
    /// hold each band's quietest value in the clip); default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub time_shift: f64,
    /// Audio: where the shift may move a clip: anywhere in the window (`"window"`, the
    /// default; frames shifted past either end are lost) or only within its padding
    /// (`"padding"`: the frame mask's zeros at either end, so no frame of the clip leaves
    /// the window; a clip that fills the window does not move).
    #[serde(default, skip_serializing_if = "is_default")]
    pub time_shift_within: ShiftWithin,
    /// Audio: the largest change of level, in dB, either way (uniform); default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gain_db: f64,
    /// Audio: white noise added at a random signal-to-noise ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseSection>,
    /// Audio: SpecAugment's time masks (torchaudio's `TimeMasking`), after normalisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_masks: Option<SpecMaskSection>,
    /// Audio: SpecAugment's frequency masks (torchaudio's `FrequencyMasking`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freq_masks: Option<SpecMaskSection>,
}

/// Where an audio time shift may move a clip (`time_shift_within`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShiftWithin {
    /// Anywhere in the window.
    #[default]
    Window,
    /// Only within the clip's padding.
    Padding,
}

impl AugmentSection {
    /// The keys of this table that augment audio and are set, by name.
    pub fn audio_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        for (set, key) in [
            (self.time_shift != 0.0, "time_shift"),
            (
                self.time_shift_within != ShiftWithin::Window,
                "time_shift_within",
            ),
            (self.gain_db != 0.0, "gain_db"),
            (self.noise.is_some(), "noise"),
            (self.time_masks.is_some(), "time_masks"),
            (self.freq_masks.is_some(), "freq_masks"),
        ] {
            if set {
                keys.push(key);
            }
        }
        keys
    }

    /// The keys of this table that augment images and are set, by name.
    pub fn image_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.random_resized_crop.is_some() {
            keys.push("random_resized_crop");
        }
        if self.hflip != 0.0 {
            keys.push("hflip");
        }
        if self.random_erasing.is_some() {
            keys.push("random_erasing");
        }
        keys
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_default<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}

/// Mixup and CutMix of fine-tuning batches (`downstream[i].mixup`, images and audio), as
/// timm's `Mixup` in MAE's and Audio-MAE's fine-tuning recipes, batch mode: each batch draws
/// one weight `λ` and mixes every input with the batch's input in the mirrored row (row `i`
/// with row `B - 1 - i`), the targets in the same proportion. Spectrograms mix as images
/// (a CutMix box spans mel bands and frames); waveform models take mixup only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixupSection {
    /// Mixup's `λ ~ Beta(α, α)`: `λ·x + (1 - λ)·x'`; 0 = no mixup. Default 0.8 (MAE's).
    #[serde(default = "defaults::mixup_alpha")]
    pub alpha: f64,
    /// CutMix's `λ ~ Beta(α, α)`: a box of `1 - λ` of the image (clipped at the edges, `λ`
    /// then recomputed from its area) pasted from the partner; 0 = no CutMix. Default 1.0.
    #[serde(default = "defaults::one")]
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all; default 1.
    #[serde(default = "defaults::one")]
    pub prob: f64,
    /// With both on, the probability that a batch takes CutMix rather than mixup; default 0.5.
    #[serde(default = "defaults::half")]
    pub switch_prob: f64,
}

/// Additive white noise (audio augmentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseSection {
    /// Range of the signal-to-noise ratio in dB (uniform), over the whole clip's power.
    pub snr_db: [f64; 2],
    /// Probability that a clip gets noise at all; default 1.
    #[serde(default = "defaults::one")]
    pub probability: f64,
}

/// SpecAugment masks along one axis (audio augmentation): `count` masks, each of a width
/// drawn uniformly from `[0, width)` frames or mel bands, at a uniform position, set to the
/// normalised mean (0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecMaskSection {
    pub count: usize,
    pub width: usize,
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

/// `random_erasing = { prob = 0.25 }`: timm's `RandomErasing` in `"pixel"` mode, one box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasingSection {
    /// Probability that an image gets a box of noise (MAE's fine-tuning: 0.25).
    pub prob: f64,
    /// Range of the box's area as a fraction of the image's; default [0.02, 1/3].
    #[serde(default = "defaults::erase_scale")]
    pub scale: [f64; 2],
    /// Range of the box's aspect ratio (height / width), sampled log-uniformly;
    /// default [0.3, 1/0.3].
    #[serde(default = "defaults::erase_ratio")]
    pub ratio: [f64; 2],
}

mod defaults {
    use super::*;
    pub fn erase_scale() -> [f64; 2] {
        [0.02, 1.0 / 3.0]
    }
    pub fn erase_ratio() -> [f64; 2] {
        [0.3, 1.0 / 0.3]
    }
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
    pub fn one() -> f64 {
        1.0
    }
    pub fn half() -> f64 {
        0.5
    }
    pub fn mixup_alpha() -> f64 {
        0.8
    }
    pub fn crop_scale() -> [f64; 2] {
        [0.08, 1.0]
    }
    pub fn crop_ratio() -> [f64; 2] {
        [3.0 / 4.0, 4.0 / 3.0]
    }
}
