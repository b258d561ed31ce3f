//! Model sources: whatever `--model` / `export SRC` names, loaded as a [`LoadedModel`].
//!
//! - `hf:org/name[@rev]` — a model in the local Hugging Face cache ([`super::hub`])
//! - a run directory — its latest checkpoint and its `recipe.toml` (an MAE; a SimMIM
//!   run's encoder)
//! - a checkpoint file inside a run (`RUN/checkpoints/step-NNNNNNN.safetensors`)
//! - a saved classifier directory (`model.json` + `model.safetensors`)
//! - a Hugging Face model directory (`config.json` + `model.safetensors`)
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
use crate::recipe::ObjectiveKind;
use crate::run::dir;
use crate::train::checkpoint as ckpt;

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

/// The run (and checkpoint) `src` names when it is a run holding `config_file` (text:
/// `text-config.json`, audio: `audio-config.json`): a run directory (its latest checkpoint)
/// or a checkpoint file inside one.
fn run_with(src: &str, config_file: &str) -> Result<Option<(PathBuf, PathBuf)>> {
    let path = Path::new(src);
    let (run, checkpoint) = if dir::is_run_dir(path) {
        (path.to_path_buf(), None)
    } else if path.is_file() {
        match path
            .parent()
            .and_then(Path::parent)
            .filter(|r| dir::is_run_dir(r))
        {
            Some(run) => (run.to_path_buf(), Some(path.to_path_buf())),
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    if !run.join(config_file).is_file() {
        return Ok(None);
    }
    let checkpoint = match checkpoint {
        Some(c) => c,
        None => ckpt::latest(&run.join("checkpoints"))?
            .ok_or_else(|| Error::data(&run, "this run has no checkpoint yet"))?,
    };
    Ok(Some((run, checkpoint)))
}

/// A text run's checkpoint as a masked language model (`text.*` + `mlm.*`), with the run's
/// tokenizer.
fn load_text_run(run: &Path, checkpoint: &Path, device: &Device) -> Result<TextLoaded> {
    let cfg_path = run.join(crate::run::text::CONFIG_FILE);
    let json = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let config: crate::modality::text::TextConfig =
        serde_json::from_str(&json).map_err(|e| Error::data(&cfg_path, e.to_string()))?;
    let mut tensors = ckpt::load(checkpoint, device)?.model;
    tensors.retain(|name, _| name.starts_with("text.") || name.starts_with("mlm."));
    let tokenizer = run.join(crate::run::text::TOKENIZER_FILE);
    Ok(TextLoaded {
        spec: super::bert::TextSpec {
            config,
            kind: super::bert::TextKind::MaskedLm,
        },
        tensors,
        tokenizer: tokenizer.is_file().then_some(tokenizer),
        hf_config: None,
        origin: checkpoint.display().to_string(),
    })
}

/// Loads the model `src` names, image, text or audio, on `device`.
pub fn load_any(src: &str, device: &Device) -> Result<AnyModel> {
    if let Some((run, checkpoint)) = run_with(src, crate::run::text::CONFIG_FILE)? {
        return Ok(AnyModel::Text(load_text_run(&run, &checkpoint, device)?));
    }
    if let Some((run, checkpoint)) = run_with(src, crate::run::audio::CONFIG_FILE)? {
        return Ok(AnyModel::Spectrogram(spectrogram::read_run(
            &run,
            &checkpoint,
            device,
        )?));
    }
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
        let run = path
            .parent()
            .and_then(Path::parent)
            .filter(|r| dir::is_run_dir(r))
            .ok_or_else(|| {
                Error::data(
                    path,
                    "a checkpoint file must be inside a run directory (RUN/checkpoints/), whose \
                     recipe.toml describes the model; give a run, classifier or Hugging Face \
                     directory, or hf:org/name",
                )
            })?;
        return load_run(run, path, device);
    }
    if dir::is_run_dir(path) {
        let latest = ckpt::latest(&path.join("checkpoints"))?
            .ok_or_else(|| Error::data(path, "this run has no checkpoint yet"))?;
        return load_run(path, &latest, device);
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
fn complete(
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

fn recipe_normalize(run: &Path) -> Result<Option<Normalize>> {
    let loaded = crate::recipe::load(&run.join(dir::RECIPE_FILE), &[])?;
    Ok(loaded.recipe.data.image.map(|i| Normalize {
        mean: i.mean,
        std: i.std,
    }))
}

/// A pretext run at one of its checkpoints: an MAE whole; for SimMIM, whose prediction head
/// has no `transformers` counterpart here, the encoder alone (a `ViTModel` without pooler).
fn load_run(run: &Path, checkpoint: &Path, device: &Device) -> Result<LoadedModel> {
    let recipe_path = run.join(dir::RECIPE_FILE);
    let loaded = crate::recipe::load(&recipe_path, &[])?;
    let r = &loaded.recipe;
    let image = r.data.image.clone().ok_or_else(|| Error::InvalidValue {
        file: recipe_path.clone(),
        key: "data.image".into(),
        message: "missing".into(),
    })?;
    let mut model = ckpt::load(checkpoint, device)?.model;
    let spec = match r.objective.kind {
        ObjectiveKind::Mae => {
            let cfg = crate::run::pretrain::mae_config(r, &image)?;
            ModelSpec {
                geometry: cfg.geometry,
                encoder: cfg.encoder,
                positions: Positions::Sincos,
                kind: Kind::Mae {
                    decoder: cfg.decoder,
                    mask_ratio: cfg.mask_ratio,
                    norm_pix_loss: cfg.norm_pix_loss,
                },
            }
        }
        ObjectiveKind::Simmim => {
            let cfg = crate::run::pretrain::simmim_config(r, &image);
            model.retain(|name, _| name.starts_with("vit."));
            ModelSpec {
                geometry: cfg.geometry,
                encoder: cfg.encoder,
                positions: Positions::Sincos,
                kind: Kind::Encoder { pooler: None },
            }
        }
        ObjectiveKind::Mlm => {
            return Err(Error::data(run, "a text (mlm) run is not an image model"));
        }
    };
    let tensors = complete(&spec, model, checkpoint, device)?;
    Ok(LoadedModel {
        spec,
        tensors,
        normalize: Normalize {
            mean: image.mean,
            std: image.std,
        },
        hf_config: None,
        origin: checkpoint.display().to_string(),
    })
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
    // RUN/downstream/<name>/ takes the run's normalisation.
    let run = path
        .parent()
        .and_then(Path::parent)
        .filter(|r| dir::is_run_dir(r));
    let normalize = match preprocessor_normalize(path, channels)? {
        Some(n) => n,
        None => match run {
            Some(run) => recipe_normalize(run)?.unwrap_or_else(|| Normalize::half(channels)),
            None => Normalize::half(channels),
        },
    };
    Ok(LoadedModel {
        spec,
        tensors,
        normalize,
        hf_config: None,
        origin: path.display().to_string(),
    })
}
