//! Model sources the pipeline knows beyond Hugging Face files: a run directory (its latest
//! checkpoint) or a checkpoint file inside one, read through the run's `recipe.toml`
//! (images), `text-config.json` (text) or `audio-config.json` (Audio-MAE); and a classifier
//! saved inside a run, which takes the run's normalisation. Everything else is
//! [`crate::hf::source`]'s: `hf:org/name`, Hugging Face and exported directories, saved
//! classifiers anywhere.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::dir;
use crate::error::{Error, Result};
use crate::hf::bert::{TextKind, TextSpec};
use crate::hf::checkpoint::{is_hf_dir, preprocessor_normalize};
use crate::hf::spec::{Kind, LoadedModel, ModelSpec, Normalize};
use crate::hf::spectrogram::SpectrogramLoaded;
use crate::hf::text::TextLoaded;
use crate::hf::{hub::HubRef, source as hf_source};
use crate::modality::audio::config::AudioRunConfig;
use crate::modality::image::classifier::SPEC_FILE;
use crate::modality::image::Positions;
use crate::recipe::ObjectiveKind;
use crate::train::checkpoint as ckpt;

pub use crate::hf::source::AnyModel;

/// Loads the model `src` names, image, text or audio, on `device`.
pub fn load_any(src: &str, device: &Device) -> Result<AnyModel> {
    // A waveform classifier, in a run or not, is whole in its own directory.
    if let Some(m) = crate::hf::audio::read_saved(src, device)? {
        return Ok(AnyModel::Audio(m));
    }
    if let Some((run, checkpoint)) = run_with(src, crate::modality::text::run::CONFIG_FILE)? {
        return Ok(AnyModel::Text(load_text_run(&run, &checkpoint, device)?));
    }
    if let Some((run, checkpoint)) = run_with(src, crate::modality::audio::run::CONFIG_FILE)? {
        return Ok(AnyModel::Spectrogram(load_audio_run(
            &run,
            &checkpoint,
            device,
        )?));
    }
    if involves_run(src) {
        return Ok(AnyModel::Image(load(src, device)?));
    }
    hf_source::load_any(src, device)
}

/// Loads the image model `src` names, on `device` ([`load_any`] for text and audio too).
pub fn load(src: &str, device: &Device) -> Result<LoadedModel> {
    if HubRef::parse(src).is_some() {
        return hf_source::load(src, device);
    }
    let path = Path::new(src);
    if let Some(run) = run_of_checkpoint(path) {
        return load_run(run, path, device);
    }
    if dir::is_run_dir(path) {
        let latest = ckpt::latest(&path.join("checkpoints"))?
            .ok_or_else(|| Error::data(path, "this run has no checkpoint yet"))?;
        return load_run(path, &latest, device);
    }
    let mut model = hf_source::load(src, device)?;
    // RUN/downstream/<name>/ takes the run's normalisation unless it has its own.
    if let Some((classifier, run)) = classifier_in_run(path) {
        if preprocessor_normalize(classifier, model.spec.geometry.channels)?.is_none() {
            if let Some(n) = recipe_normalize(run)? {
                model.normalize = n;
            }
        }
    }
    Ok(model)
}

/// A checkpoint file inside a run (`RUN/checkpoints/step-N.safetensors`): its run.
fn run_of_checkpoint(path: &Path) -> Option<&Path> {
    let parent = path.parent()?;
    if !path.is_file() || parent.join(SPEC_FILE).is_file() || is_hf_dir(parent) {
        return None;
    }
    parent.parent().filter(|r| dir::is_run_dir(r))
}

/// A saved classifier directory inside a run (`RUN/downstream/<name>/`, or its weights
/// file): the classifier directory and the run.
fn classifier_in_run(path: &Path) -> Option<(&Path, &Path)> {
    let classifier = if path.is_file() { path.parent()? } else { path };
    if !classifier.join(SPEC_FILE).is_file() {
        return None;
    }
    let run = classifier.parent()?.parent()?;
    dir::is_run_dir(run).then_some((classifier, run))
}

/// Whether `src` names a run, a checkpoint inside one, or a classifier saved inside one.
fn involves_run(src: &str) -> bool {
    let path = Path::new(src);
    dir::is_run_dir(path) || run_of_checkpoint(path).is_some() || classifier_in_run(path).is_some()
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
    let cfg_path = run.join(crate::modality::text::run::CONFIG_FILE);
    let json = crate::input::read_to_string(&cfg_path)?;
    let config: crate::modality::text::TextConfig =
        serde_json::from_str(&json).map_err(|e| Error::data(&cfg_path, e.to_string()))?;
    let mut tensors = ckpt::load(checkpoint, device)?.model;
    tensors.retain(|name, _| name.starts_with("text.") || name.starts_with("mlm."));
    let tokenizer = run.join(crate::modality::text::run::TOKENIZER_FILE);
    Ok(TextLoaded {
        spec: TextSpec {
            config,
            kind: TextKind::MaskedLm,
        },
        tensors,
        tokenizer: tokenizer.is_file().then_some(tokenizer),
        hf_config: None,
        origin: checkpoint.display().to_string(),
    })
}

fn recipe_normalize(run: &Path) -> Result<Option<Normalize>> {
    let loaded = crate::recipe::load(&run.join(dir::RECIPE_FILE), &[])?;
    Ok(loaded.recipe.data.image.map(|i| Normalize {
        mean: i.mean,
        std: i.std,
    }))
}

/// A pretext run at one of its checkpoints: an MAE whole; for SimMIM and data2vec, whose
/// heads have no `transformers` counterpart here, the encoder alone (a `ViTModel` without
/// pooler).
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
    let spec = match r.objective()?.kind() {
        ObjectiveKind::Mae => {
            let cfg = crate::modality::image::run::pretrain::mae_config(r, &image)?;
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
        ObjectiveKind::Data2vec => {
            // The student's encoder: neither the teacher nor the decoder has a
            // `transformers` counterpart.
            model.retain(|name, _| name.starts_with("vit."));
            ModelSpec {
                geometry: crate::modality::image::run::pretrain::geometry(&image),
                encoder: r.model.encoder_config(),
                positions: Positions::Sincos,
                kind: Kind::Encoder { pooler: None },
            }
        }
        ObjectiveKind::Simmim => {
            let cfg = crate::modality::image::run::pretrain::simmim_config(r, &image)?;
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
    let tensors = hf_source::complete(&spec, model, checkpoint, device)?;
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

/// The encoder of an audio run's checkpoint (`audio-config.json` beside it).
fn load_audio_run(run: &Path, checkpoint: &Path, device: &Device) -> Result<SpectrogramLoaded> {
    let config = AudioRunConfig::read(&run.join(crate::modality::audio::run::CONFIG_FILE))?;
    let mut tensors = ckpt::load(checkpoint, device)?.model;
    tensors.retain(|name, _| name.starts_with("audio."));
    let loaded = SpectrogramLoaded {
        config,
        tensors,
        origin: checkpoint.display().to_string(),
    };
    loaded.check(checkpoint, "")?;
    Ok(loaded)
}
