//! The `[objective]` section: the pretext task, tagged by `kind`. Each kind takes only its
//! own keys (`norm_pix_loss` belongs to `mae` and `simmim`, `top_k` to `data2vec`), so a key
//! of another kind is an unknown-key error naming the keys this one takes.

use serde::{Deserialize, Serialize};

use super::types::SpanConfig;
use super::Recipe;
use crate::error::{Error, Result};
use crate::objective::masking::Masking;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveKind {
    Mae,
    Mlm,
    Simmim,
    Data2vec,
}

impl ObjectiveKind {
    /// As `objective.kind` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ObjectiveKind::Mae => "mae",
            ObjectiveKind::Mlm => "mlm",
            ObjectiveKind::Simmim => "simmim",
            ObjectiveKind::Data2vec => "data2vec",
        }
    }
}

/// The pretext task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ObjectiveSection {
    /// MAE (He et al. 2022) on image patches, Audio-MAE on spectrogram patches: the encoder
    /// sees the kept patches, a light decoder predicts the removed ones.
    Mae(MaeSection),
    /// SimMIM (Xie et al. 2022): all patches through the encoder, removed ones as a learned
    /// mask token; a linear head predicts their pixels; L1 loss. Takes no `decoder`.
    Simmim(SimMimSection),
    /// BERT's masked language modelling: a fraction of the tokens is selected, 80 %
    /// replaced by the mask token, 10 % by a random token, 10 % kept; the tied MLM head
    /// predicts the originals.
    Mlm(MlmSection),
    /// data2vec (Baevski et al. 2022, 2023), one objective for every modality: the student
    /// encodes the masked input, an exponential-moving-average teacher the whole input; a
    /// light decoder regresses, at the masked positions, the average of the teacher's top
    /// `top_k` block outputs, each instance-normalised.
    Data2vec(Data2vecSection),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeSection {
    /// Fraction of patches removed, in (0, 1); default 0.75.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_ratio: Option<f64>,
    /// `random` (default) or `block` for images; `random`, `time`, `frequency` or
    /// `time-frequency` for spectrograms.
    #[serde(default)]
    pub masking: Masking,
    /// Predict per-patch normalised pixels.
    #[serde(default = "yes")]
    pub norm_pix_loss: bool,
    /// The light decoder.
    pub decoder: DecoderSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMimSection {
    /// Fraction of patches removed, in (0, 1); default 0.75.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_ratio: Option<f64>,
    /// `random` (default) or `block` (BEiT's block-wise masking).
    #[serde(default)]
    pub masking: Masking,
    /// Predict per-patch normalised pixels (set false to follow the paper, which predicts
    /// the normalised image).
    #[serde(default = "yes")]
    pub norm_pix_loss: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlmSection {
    /// Fraction of tokens selected for prediction, in (0, 1); default 0.15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_ratio: Option<f64>,
    /// Select whole words (every piece of a word together).
    #[serde(default)]
    pub whole_word: bool,
    /// Select spans of consecutive words (SpanBERT) with geometric lengths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<SpanConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data2vecSection {
    /// Fraction of patches (images, spectrograms) or tokens (text) masked, in (0, 1);
    /// default 0.75 over patch grids, 0.15 over text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_ratio: Option<f64>,
    /// Patch grids: as MAE's `masking`.
    #[serde(default)]
    pub masking: Masking,
    /// Text: select whole words, as MLM's `whole_word`.
    #[serde(default)]
    pub whole_word: bool,
    /// Text: spans of words, as MLM's `span`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<SpanConfig>,
    /// The target averages the teacher's last `top_k` blocks; default two thirds of the
    /// model's depth, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// The teacher's decay: it moves to `decay * teacher + (1 - decay) * student` after
    /// each step.
    #[serde(default)]
    pub ema: EmaSection,
    /// The light decoder (as MAE's) that predicts the targets from the student's output.
    pub decoder: DecoderSection,
}

impl Data2vecSection {
    /// `mask_ratio`, or its default for the modality (`text`: tokens, else patches).
    pub fn mask_ratio_for(&self, text: bool) -> f64 {
        self.mask_ratio.unwrap_or(if text { 0.15 } else { 0.75 })
    }

    /// The teacher's decay schedule in a run of `steps` steps.
    pub fn ema_schedule(&self, steps: usize) -> crate::objective::data2vec::EmaSchedule {
        crate::objective::data2vec::EmaSchedule {
            start: self.ema.start,
            end: self.ema.end,
            anneal_steps: self.ema.anneal_steps.unwrap_or(steps),
        }
    }

    /// `top_k`, or its default for a model of `depth` blocks.
    pub fn top_k_for(&self, depth: usize) -> usize {
        self.top_k.unwrap_or((2 * depth).div_ceil(3))
    }
}

/// The teacher's decay schedule: linear from `start` to `end` over `anneal_steps` steps,
/// then `end` (data2vec's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaSection {
    #[serde(default = "ema_start")]
    pub start: f64,
    #[serde(default = "ema_end")]
    pub end: f64,
    /// Default: `train.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anneal_steps: Option<usize>,
}

impl Default for EmaSection {
    fn default() -> Self {
        Self {
            start: ema_start(),
            end: ema_end(),
            anneal_steps: None,
        }
    }
}

fn ema_start() -> f64 {
    0.999
}

fn ema_end() -> f64 {
    0.9999
}

/// MAE's light decoder (pre-norm, exact GELU, the model's norm_eps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderSection {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// Default `4 * dim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_dim: Option<usize>,
}

fn yes() -> bool {
    true
}

impl ObjectiveSection {
    pub fn kind(&self) -> ObjectiveKind {
        match self {
            ObjectiveSection::Mae(_) => ObjectiveKind::Mae,
            ObjectiveSection::Simmim(_) => ObjectiveKind::Simmim,
            ObjectiveSection::Mlm(_) => ObjectiveKind::Mlm,
            ObjectiveSection::Data2vec(_) => ObjectiveKind::Data2vec,
        }
    }

    /// The recipe's `mask_ratio`, or the objective's default.
    pub fn mask_ratio(&self) -> f64 {
        match self {
            ObjectiveSection::Mae(m) => m.mask_ratio.unwrap_or(0.75),
            ObjectiveSection::Simmim(s) => s.mask_ratio.unwrap_or(0.75),
            ObjectiveSection::Mlm(m) => m.mask_ratio.unwrap_or(0.15),
            ObjectiveSection::Data2vec(d) => d.mask_ratio_for(false),
        }
    }

    /// Which patches are removed (`random` for text, which masks tokens).
    pub fn masking(&self) -> Masking {
        match self {
            ObjectiveSection::Mae(m) => m.masking,
            ObjectiveSection::Simmim(s) => s.masking,
            ObjectiveSection::Mlm(_) => Masking::Random,
            ObjectiveSection::Data2vec(d) => d.masking,
        }
    }

    pub fn norm_pix_loss(&self) -> bool {
        match self {
            ObjectiveSection::Mae(m) => m.norm_pix_loss,
            ObjectiveSection::Simmim(s) => s.norm_pix_loss,
            ObjectiveSection::Mlm(_) | ObjectiveSection::Data2vec(_) => false,
        }
    }

    /// The light decoder of MAE and data2vec (`None` for the other kinds).
    pub fn decoder(&self) -> Option<&DecoderSection> {
        match self {
            ObjectiveSection::Mae(m) => Some(&m.decoder),
            ObjectiveSection::Data2vec(d) => Some(&d.decoder),
            _ => None,
        }
    }
}

impl Recipe {
    /// The `[objective]` section, an error where the recipe has none.
    pub fn objective(&self) -> Result<&ObjectiveSection> {
        self.objective.as_ref().ok_or_else(|| {
            Error::Usage(
                "objective: this recipe has no [objective] section, and it needs one to pretrain"
                    .into(),
            )
        })
    }
}
