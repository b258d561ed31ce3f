//! Model sources: whatever `--model` / `export SRC` names, loaded as a [`LoadedModel`].
//!
//! - `hf:org/name[@rev]` — a model in the local Hugging Face cache ([`super::hub`])
//! - a saved classifier directory (`model.json` + `model.safetensors`)
//! - a Hugging Face model directory (`config.json` + `model.safetensors`), or an exported
//!   Audio-MAE encoder
//!
//! Run directories and the checkpoints inside them are the pipeline's (`run::source`
//! reads them and falls back to this module).
//!
//! A `model.safetensors` file given directly stands for the directory it is in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::audio::{self, AudioLoaded};
use super::checkpoint::{self, preprocessor_normalize, reject_leftovers};
use super::hub::{self, HubRef};
use super::spec::{Kind, LoadedModel, ModelSpec, Normalize};
use super::spectrogram::{self, SpectrogramLoaded};
use super::text::{self, TextLoaded};
use crate::error::{Error, Result};
use crate::modality::image::classifier::{ClassifierSpec, SPEC_FILE, WEIGHTS_FILE};
use crate::modality::image::encoder::sincos_with_cls;
use crate::modality::image::Positions;

/// An image, a text or an audio model.
#[derive(Debug, Clone)]
pub enum AnyModel {
    Image(LoadedModel),
    Text(TextLoaded),
    Audio(AudioLoaded),
    /// An Audio-MAE encoder (a pretext audio run, or its export).
    Spectrogram(SpectrogramLoaded),
}

impl AnyModel {
    /// What kind of model this is, for messages: `an image model (ViTModel)`.
    pub fn describe(&self) -> String {
        match self {
            AnyModel::Image(m) => format!("an image model ({})", m.spec.hf_class()),
            AnyModel::Text(m) => format!("a text model ({})", m.spec.hf_class()),
            AnyModel::Audio(m) => format!("an audio model ({})", m.spec.hf_class()),
            AnyModel::Spectrogram(_) => "an audio model (pretext Audio-MAE encoder)".into(),
        }
    }
}

/// The Hugging Face directory `src` names and its `model_type`, when it has a config that says.
fn typed_dir(src: &str) -> Result<Option<(PathBuf, String)>> {
    let dir = match HubRef::parse(src) {
        Some(r) => hub::snapshot_dir(&r?)?,
        None => {
            let path = Path::new(src);
            match path.parent() {
                Some(parent) if path.is_file() => parent.to_path_buf(),
                _ => path.to_path_buf(),
            }
        }
    };
    Ok(text::model_type(&dir).map(|t| (dir, t)))
}

/// Loads the model `src` names, image, text or audio, on `device`.
pub fn load_any(src: &str, device: &Device) -> Result<AnyModel> {
    match typed_dir(src)? {
        Some((dir, t)) if text::is_text_type(&t) => {
            Ok(AnyModel::Text(text::read_dir(&dir, device, src)?))
        }
        Some((dir, t)) if audio::is_audio_type(&t) => {
            Ok(AnyModel::Audio(audio::read_dir(&dir, device, src)?))
        }
        Some((dir, t)) if t == spectrogram::MODEL_TYPE => Ok(AnyModel::Spectrogram(
            spectrogram::read_dir(&dir, device, src)?,
        )),
        _ => Ok(AnyModel::Image(load(src, device)?)),
    }
}

/// Loads the image model `src` names, on `device` ([`load_any`] for text models too).
pub fn load(src: &str, device: &Device) -> Result<LoadedModel> {
    if let Some(r) = HubRef::parse(src) {
        let dir = hub::snapshot_dir(&r?)?;
        return checkpoint::read_dir(&dir, device, src);
    }
    let path = Path::new(src);
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    if path.is_file() {
        // A weights file inside a model directory stands for the directory.
        if let Some(parent) = path
            .parent()
            .filter(|p| p.join(SPEC_FILE).is_file() || checkpoint::is_hf_dir(p))
        {
            return load(&parent.display().to_string(), device);
        }
        return Err(Error::data(
            path,
            "a checkpoint file must be inside a run directory (RUN/checkpoints/), whose \
             recipe.toml describes the model; give a run, classifier or Hugging Face \
             directory, or hf:org/name",
        ));
    }
    if path.join(SPEC_FILE).is_file() {
        return load_classifier(path, device);
    }
    if checkpoint::is_hf_dir(path) {
        return checkpoint::read_dir(path, device, src);
    }
    Err(Error::data(
        path,
        format!(
            "not a model: expected a run directory (recipe.toml), a saved classifier \
             ({SPEC_FILE} + {WEIGHTS_FILE}) or a Hugging Face directory (config.json + \
             model.safetensors)"
        ),
    ))
}

/// Checks `tensors` (pretext names) against the table for `spec` and adds the fixed
/// position tables the model computes rather than stores.
pub fn complete(
    spec: &ModelSpec,
    mut tensors: BTreeMap<String, Tensor>,
    path: &Path,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let g = spec.geometry;
    if spec.positions == Positions::Sincos && !tensors.contains_key("vit.pos_embed") {
        tensors.insert(
            "vit.pos_embed".into(),
            sincos_with_cls(spec.encoder.dim, g.grid(), device)?,
        );
    }
    if let Kind::Mae { decoder, .. } = &spec.kind {
        tensors.insert(
            "decoder.pos_embed".into(),
            sincos_with_cls(decoder.dim, g.grid(), device)?,
        );
    }
    // The table's pretext names stand in for the "hf" side here.
    let rows: Vec<_> = super::table(spec)
        .into_iter()
        .map(|mut r| {
            r.hf = r.ours.clone();
            r.aliases.clear();
            r.base = false;
            r
        })
        .collect();
    let what = format!("the {} model", spec.hf_class());
    let out = checkpoint::take(&rows, &mut tensors, path, &what)?;
    reject_leftovers(&tensors, path, &what)?;
    Ok(out)
}

/// A saved classifier directory.
fn load_classifier(path: &Path, device: &Device) -> Result<LoadedModel> {
    let cs = ClassifierSpec::read(path)?;
    let weights: PathBuf = path.join(WEIGHTS_FILE);
    let tensors = crate::tensor_io::read(&weights, device)?.tensors;
    let spec = ModelSpec {
        geometry: cs.geometry,
        encoder: cs.encoder,
        positions: if tensors.contains_key("vit.pos_embed") {
            Positions::Learned
        } else {
            Positions::Sincos
        },
        kind: Kind::Classifier {
            num_labels: cs.num_labels,
            pooling: cs.pooling,
        },
    };
    let tensors = complete(&spec, tensors, &weights, device)?;
    let channels = spec.geometry.channels;
    // Without a preprocessor config, [0.5] (a classifier inside a run takes the run's
    // normalisation instead: `run::source`).
    let normalize =
        preprocessor_normalize(path, channels)?.unwrap_or_else(|| Normalize::half(channels));
    // Class names travel as the config's `id2label`, as in a Hugging Face classifier.
    let hf_config = (!cs.classes.is_empty()).then(|| super::config::id2label(&cs.classes));
    Ok(LoadedModel {
        spec,
        tensors,
        normalize,
        hf_config,
        origin: path.display().to_string(),
    })
}
