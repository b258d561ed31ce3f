//! An Audio-MAE classifier a run fine-tuned (`model.json` kind `audio-classifier`) → the
//! Audio-MAE encoder in pretext's documented layout ([`super::spectrogram::write`],
//! docs/audio-mae-export.md) plus its linear layer in `classifier.safetensors`
//! (`weight [C, D]`, `bias [C]`); `config.json` gains `id2label` / `label2id` and
//! `pretext_classifier`, which says how the encoder's tokens are pooled (`cls`: the class
//! token; `mean`: the patch tokens, class token excluded). `transformers` has no class for
//! it, as it has none for the encoder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Map, Value};

use super::checkpoint::CONFIG_FILE;
use super::config::id2label;
use super::linear_head::{self, HEAD_FILE};
use super::spectrogram::{write, SpectrogramLoaded};
use crate::backbone::classifier::WEIGHTS_FILE;
use crate::backbone::Pooling;
use crate::error::{Error, Result};
use crate::modality::audio::classifier::AudioClassifierSpec;
use crate::modality::audio::config::AudioRunConfig;
use crate::tensor_io;

/// Exports the Audio-MAE classifier saved in `dir` (described by `spec`) into `out`;
/// returns the files written.
pub fn export(dir: &Path, spec: &AudioClassifierSpec, out: &Path) -> Result<Vec<PathBuf>> {
    let weights = dir.join(WEIGHTS_FILE);
    let all = tensor_io::read(&weights, &Device::Cpu)?.tensors;
    let encoder: BTreeMap<String, Tensor> = all
        .iter()
        .filter(|(k, _)| k.starts_with("audio."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let loaded = SpectrogramLoaded {
        config: AudioRunConfig {
            features: spec.features.clone(),
            geometry: spec.geometry,
            encoder: spec.encoder.clone(),
        },
        tensors: encoder,
        origin: dir.display().to_string(),
    };
    let mut files = write(&loaded, out)?;
    // The encoder's config.json, with the classes and the head.
    let config_path = out.join(CONFIG_FILE);
    let mut config: Map<String, Value> =
        serde_json::from_str(&crate::input::read_to_string(&config_path)?)
            .map_err(|e| Error::data(&config_path, e.to_string()))?;
    config.extend(id2label(&spec.classes));
    let (pooling, logits) = match spec.pooling {
        Pooling::Cls => ("cls", "last_hidden_state[:, 0] @ weight.T + bias"),
        Pooling::Mean => (
            "mean",
            "last_hidden_state[:, 1:].mean(1) @ weight.T + bias (patch tokens, class token excluded)",
        ),
    };
    config.insert(
        "pretext_classifier".into(),
        json!({"pooling": pooling, "weights": HEAD_FILE, "logits": logits}),
    );
    let text = serde_json::to_string_pretty(&Value::Object(config))
        .map_err(|e| Error::data(&config_path, e.to_string()))?;
    tensor_io::write_atomic(&config_path, text.as_bytes())?;
    let (d, n) = (spec.encoder.dim, spec.classes.len());
    files.push(linear_head::write(&all, &weights, n, d, out)?);
    Ok(files)
}
