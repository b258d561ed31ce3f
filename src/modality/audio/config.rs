//! What a spectrogram encoder needs besides its tensors: the features it reads (mel
//! settings, clip length, normalisation), its patch geometry and its encoder shape. An
//! audio run writes it beside its checkpoints (`audio-config.json`); an exported Audio-MAE
//! encoder carries the same three fields in its `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::clips::AudioFeatures;
use super::encoder::SpectrogramGeometry;
use crate::backbone::EncoderConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioRunConfig {
    pub features: AudioFeatures,
    pub geometry: SpectrogramGeometry,
    pub encoder: EncoderConfig,
}

impl AudioRunConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let text = crate::input::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| Error::data(path, e.to_string()))
    }
}
