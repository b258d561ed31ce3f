//! The `[objective]` section: the pretext task, tagged by `kind`. Each kind takes only its
//! own keys (`decoder` belongs to `mae`, `whole_word` to `mlm`), so a key of another kind is
//! an unknown-key error naming the keys this one takes.

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
}

impl ObjectiveKind {
    /// As `objective.kind` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ObjectiveKind::Mae => "mae",
            ObjectiveKind::Mlm => "mlm",
            ObjectiveKind::Simmim => "simmim",
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
        }
    }

    /// The recipe's `mask_ratio`, or the objective's default.
    pub fn mask_ratio(&self) -> f64 {
        match self {
            ObjectiveSection::Mae(m) => m.mask_ratio.unwrap_or(0.75),
            ObjectiveSection::Simmim(s) => s.mask_ratio.unwrap_or(0.75),
            ObjectiveSection::Mlm(m) => m.mask_ratio.unwrap_or(0.15),
        }
    }

    /// Which patches are removed (`random` for text, which masks tokens).
    pub fn masking(&self) -> Masking {
        match self {
            ObjectiveSection::Mae(m) => m.masking,
            ObjectiveSection::Simmim(s) => s.masking,
            ObjectiveSection::Mlm(_) => Masking::Random,
        }
    }

    pub fn norm_pix_loss(&self) -> bool {
        match self {
            ObjectiveSection::Mae(m) => m.norm_pix_loss,
            ObjectiveSection::Simmim(s) => s.norm_pix_loss,
            ObjectiveSection::Mlm(_) => false,
        }
    }

    /// MAE's decoder (`None` for the other kinds).
    pub fn decoder(&self) -> Option<&DecoderSection> {
        match self {
            ObjectiveSection::Mae(m) => Some(&m.decoder),
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
