//! Running an audio recipe: clips read from a folder or a CSV manifest and turned into
//! normalised log-mel spectrograms, Audio-MAE pretraining with reconstruction pictures at
//! every checkpoint ([`pretrain`]), then the downstream heads on the labelled splits
//! ([`task`]). A recipe whose `model.source` is a waveform model runs in [`waveform`].
//!
//! A run directory holds the resolved recipe, `audio-config.json` (features, normalisation
//! and encoder shape, so a checkpoint can be used on its own), checkpoints, `metrics.jsonl`,
//! `pictures/`, `downstream/` and `summary.json`.

pub mod pretrain;
pub mod task;
pub mod waveform;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::modality::audio::augment::{AudioAugment, AugmentSettings, Masks};
use crate::modality::audio::clips::{AudioFeatures, ClipSet};
pub use crate::modality::audio::config::AudioRunConfig;
use crate::modality::audio::dataset::{self, AudioItem};
use crate::modality::audio::encoder::{SpectrogramGeometry, Spectrograms};
use crate::modality::audio::MelConfig;
use crate::objective::data2vec::patch::{AudioData2vec, AudioData2vecConfig};
use crate::objective::mae::{AudioMae, AudioMaeConfig};
use crate::objective::masking::GridMasker;
use crate::objective::Objective;
use crate::params::ParamStore;
use crate::recipe::{
    AudioSection, AugmentSection, DataSource, ObjectiveSection, Recipe, ShiftWithin,
    SpecMaskSection,
};
use crate::run::classify::Task;
use crate::run::downstream::DownstreamTask;
use crate::run::{invalid, Model, Pipeline, PretrainStage};
use pretrain::AudioMaeTask;
use task::AudioSplits;

/// The run's [`AudioRunConfig`].
pub const CONFIG_FILE: &str = "audio-config.json";

/// Everything an audio recipe needs, built and checked.
pub struct Prepared {
    pub model: Model,
    pub config: AudioRunConfig,
    /// Audio-MAE or data2vec over the spectrogram encoder (`audio.`).
    pub objective: Box<dyn Objective<Batch = Spectrograms>>,
    /// The masker the objective draws with.
    pub masker: GridMasker,
    /// Shared with the training loader's thread.
    pub train: Arc<ClipSet>,
    pub test: Option<ClipSet>,
    /// `data.labelled`'s splits, when the recipe names them (else the heads use `train` and
    /// `test`, see [`Prepared::heads_data`]).
    pub labelled: Option<(ClipSet, ClipSet)>,
    /// Class names (from the heads' training split), in label order.
    pub classes: Vec<String>,
    /// `[data.augment]`, for the pretraining batches.
    pub augment: Option<AudioAugment>,
}

impl Prepared {
    /// The labelled train and test splits the downstream heads use, when there are heads.
    pub fn heads_data(&self, r: &Recipe) -> Option<(&ClipSet, &ClipSet)> {
        if r.downstream.is_empty() {
            return None;
        }
        match &self.labelled {
            Some((train, test)) => Some((train, test)),
            None => self.test.as_ref().map(|test| (&*self.train, test)),
        }
    }
}

/// The labelled splits the heads train and test on, with their keys: `data.labelled`, or
/// else `data.train` and `data.test`.
pub(crate) fn heads_sources<'r>(
    r: &'r Recipe,
    file: &Path,
) -> Result<[(&'r DataSource, &'static str); 2]> {
    match &r.data.labelled {
        Some(l) => Ok([
            (&l.train, "data.labelled.train"),
            (&l.test, "data.labelled.test"),
        ]),
        None => Ok([
            (&r.data.train, "data.train"),
            (
                r.data.test.as_ref().ok_or_else(|| {
                    invalid(file, "data.test", "downstream heads need a test split")
                })?,
                "data.test",
            ),
        ]),
    }
}

/// Errors (naming the recipe key) unless every clip of `set` has a label.
pub(crate) fn require_labels(set: &ClipSet, key: &str, file: &Path) -> Result<()> {
    match set.labels {
        Some(_) => Ok(()),
        None => Err(invalid(
            file,
            key,
            "downstream heads need every clip labelled (folder class directories, or a manifest `label` column)",
        )),
    }
}

/// The items a source names (a folder's `label/*.wav`, or a manifest's rows of its split).
pub(crate) fn items(src: &DataSource, key: &str, file: &Path) -> Result<Vec<AudioItem>> {
    let mut items = match src {
        DataSource::Folder { root, .. } => dataset::scan_folder(root)?,
        DataSource::Manifest { path, split, .. } => {
            let mut items = dataset::read_manifest(path)?;
            if let Some(split) = split {
                items.retain(|i| i.split.as_deref() == Some(split.as_str()));
                if items.is_empty() {
                    return Err(Error::data(
                        path,
                        format!("no rows have split = `{split}` ({key}.split)"),
                    ));
                }
            }
            // Found now, naming the manifest, rather than when a batch first needs it.
            if let Some(missing) = items.iter().find(|i| !i.path.is_file()) {
                return Err(Error::data(
                    path,
                    format!(
                        "lists {}, which is not a file (relative paths resolve against the \
                         manifest's folder; {key})",
                        missing.path.display()
                    ),
                ));
            }
            items
        }
        _ => {
            return Err(crate::recipe::source::wrong_format(
                file,
                key,
                src,
                "audio recipes read format = \"folder\" or \"manifest\"",
            ))
        }
    };
    if let Some(limit) = src.limit() {
        items.truncate(limit);
    }
    if items.is_empty() {
        return Err(invalid(file, key, "has no clips"));
    }
    Ok(items)
}

/// The audio augmentation an augmentation table asks for (`None`: none), its streams keyed
/// by `seed`.
pub fn augment(
    a: Option<&AugmentSection>,
    mel: &MelConfig,
    seed: u64,
) -> Result<Option<AudioAugment>> {
    let Some(a) = a else {
        return Ok(None);
    };
    let masks = |m: &Option<SpecMaskSection>| {
        m.as_ref().map(|m| Masks {
            count: m.count,
            width: m.width,
        })
    };
    let settings = AugmentSettings {
        time_shift: a.time_shift,
        shift_in_padding: a.time_shift_within == ShiftWithin::Padding,
        gain_db: a.gain_db,
        noise: a.noise.as_ref().map(|n| (n.snr_db, n.probability)),
        time_masks: masks(&a.time_masks),
        freq_masks: masks(&a.freq_masks),
    };
    AudioAugment::new(&settings, mel, seed)
}

fn geometry(a: &AudioSection) -> SpectrogramGeometry {
    SpectrogramGeometry {
        n_mels: a.mel.n_mels,
        frames: a.frames,
        patch_freq: a.patch_freq,
        patch_time: a.patch_time,
    }
}

/// The Audio-MAE configuration a recipe describes.
pub fn mae_config(r: &Recipe, a: &AudioSection) -> Result<AudioMaeConfig> {
    Ok(AudioMaeConfig {
        geometry: geometry(a),
        decoder: crate::modality::image::run::pretrain::decoder_config(r)?,
        encoder: r.model.encoder_config(),
        mask_ratio: r.objective()?.mask_ratio(),
        masking: r.objective()?.masking(),
        norm_pix_loss: r.objective()?.norm_pix_loss(),
    })
}

/// The data2vec configuration a recipe describes.
pub fn data2vec_config(r: &Recipe, a: &AudioSection) -> Result<AudioData2vecConfig> {
    let ObjectiveSection::Data2vec(d) = r.objective()? else {
        return Err(Error::Usage("objective.kind: not \"data2vec\"".into()));
    };
    Ok(AudioData2vecConfig {
        geometry: geometry(a),
        decoder: crate::modality::image::run::pretrain::decoder_config(r)?,
        encoder: r.model.encoder_config(),
        mask_ratio: d.mask_ratio_for(false),
        masking: d.masking,
        top_k: d.top_k_for(r.model.depth),
        ema: d.ema_schedule(r.train.steps),
    })
}

/// The recipe's objective over spectrograms, its parameters in `params`, and its masker.
fn objective(
    r: &Recipe,
    a: &AudioSection,
    params: &ParamStore,
    device: &Device,
) -> Result<(Box<dyn Objective<Batch = Spectrograms>>, GridMasker)> {
    Ok(match r.objective()? {
        ObjectiveSection::Data2vec(_) => {
            let d = AudioData2vec::new(&data2vec_config(r, a)?, params, device)?;
            let masker = *d.masker();
            (Box::new(d), masker)
        }
        _ => {
            let mae = AudioMae::new(&mae_config(r, a)?, params.var_builder(device))?;
            let masker = *mae.masker();
            (Box::new(mae), masker)
        }
    })
}

/// An audio recipe's pipeline: the downstream heads on a waveform model when
/// `model.source` is one, Audio-MAE on spectrograms otherwise.
pub fn prepare(
    r: &Recipe,
    file: &Path,
    run_dir: Option<&Path>,
    device: Device,
) -> Result<Box<dyn Pipeline>> {
    Ok(match r.model.source {
        Some(_) => Box::new(waveform::prepare(r, file, device)?),
        None => Box::new(prepare_spectrogram(r, file, run_dir, device)?),
    })
}

/// Builds everything: clips, features, normalisation, model.
pub fn prepare_spectrogram(
    r: &Recipe,
    file: &Path,
    run_dir: Option<&Path>,
    device: Device,
) -> Result<Prepared> {
    let a = r
        .data
        .audio
        .as_ref()
        .ok_or_else(|| invalid(file, "data.audio", "missing"))?;
    // Labels are numbered by the heads' training split (`data.labelled.train` when given).
    let train_items = items(&r.data.train, "data.train", file)?;
    let labelled_items = match (&r.data.labelled, r.downstream.is_empty()) {
        (Some(l), false) => Some((
            items(&l.train, "data.labelled.train", file)?,
            items(&l.test, "data.labelled.test", file)?,
        )),
        _ => None,
    };
    let classes = dataset::class_names(labelled_items.as_ref().map_or(&train_items, |l| &l.0));
    let load = |items: &[AudioItem]| ClipSet::load(items, &a.mel, a.frames, a.trim_db, &classes);
    let train = Arc::new(load(&train_items)?);
    let test = match &r.data.test {
        Some(t) => Some(load(&items(t, "data.test", file)?)?),
        None => None,
    };
    let (mean, std) = match (a.mean, a.std) {
        (Some(m), Some(s)) => (m, s),
        _ => train.stats()?,
    };
    let mut features = AudioFeatures {
        mel: a.mel.clone(),
        frames: a.frames,
        mean,
        std,
        trim_db: a.trim_db,
    };
    // Resuming: the normalisation the run started with (the training split may have
    // changed since).
    if let Some(saved) = run_dir.map(|d| d.join(CONFIG_FILE)).filter(|p| p.is_file()) {
        features = AudioRunConfig::read(&saved)?.features;
    }
    let config = AudioRunConfig {
        features,
        geometry: geometry(a),
        encoder: r.model.encoder_config(),
    };
    let params = ParamStore::new(r.seed);
    let (objective, masker) = objective(r, a, &params, &device)?;
    let labelled = match labelled_items {
        Some((tr, te)) => Some((load(&tr)?, load(&te)?)),
        None => None,
    };
    let augment = augment(r.data.augment.as_ref(), &a.mel, r.seed)?;
    let p = Prepared {
        model: Model {
            device,
            params,
            encoder_prefix: objective.encoder_prefix(),
        },
        config,
        objective,
        masker,
        train,
        test,
        labelled,
        classes,
        augment,
    };
    if !r.downstream.is_empty() {
        let [(_, train_key), (_, test_key)] = heads_sources(r, file)?;
        let (tr, te) = p
            .heads_data(r)
            .ok_or_else(|| invalid(file, "data.test", "downstream heads need a test split"))?;
        require_labels(tr, train_key, file)?;
        require_labels(te, test_key, file)?;
    }
    Ok(p)
}

impl Prepared {
    fn task(&self, seed: u64) -> AudioMaeTask<'_> {
        AudioMaeTask {
            objective: &*self.objective,
            geometry: self.config.geometry,
            encoder: self.config.encoder.clone(),
            train: self.train.clone(),
            preview: self.test.as_ref().unwrap_or(&*self.train),
            features: &self.config.features,
            device: self.model.device.clone(),
            seed,
            augment: self.augment.clone(),
            loader: Default::default(),
        }
    }
}

impl Pipeline for Prepared {
    fn model(&self) -> &Model {
        &self.model
    }

    fn write_run_files(&self, run_dir: &Path, _fresh: bool) -> Result<()> {
        crate::run::dir::write_json(&run_dir.join(CONFIG_FILE), &self.config)
    }

    fn pretrain<'a>(
        &'a self,
        r: &'a Recipe,
        _log_dir: Option<&Path>,
        _resume_step: Option<usize>,
    ) -> Result<Option<Box<dyn PretrainStage + 'a>>> {
        Ok(Some(Box::new(self.task(r.seed))))
    }

    fn downstream<'a>(
        &'a self,
        r: &'a Recipe,
        file: &Path,
    ) -> Result<Box<dyn DownstreamTask + 'a>> {
        let (train, test) = self
            .heads_data(r)
            .ok_or_else(|| invalid(file, "data.test", "downstream heads need a test split"))?;
        let splits = AudioSplits {
            train,
            test,
            classes: &self.classes,
            config: &self.config,
        };
        Ok(Box::new(Task::new(splits, &self.model, r.seed)?))
    }

    fn dry_run(&self, r: &Recipe) -> Result<String> {
        let t = self.task(r.seed);
        let b = r.train.batch_size.min(self.train.len());
        let idx: Vec<usize> = (0..b).collect();
        let (spec, loss, rec) = t.evaluate(&self.train, &idx, &Draws::fixed(r.seed, b))?;
        let loss = loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Err(Error::NonFinite { step: 0, loss });
        }
        let g = &self.config.geometry;
        let f = &self.config.features;
        let mut report = format!(
            "recipe `{}` is valid\n  train: {} clips{}\n  features: {} log-mel bands x {} frames ({:.2} s at {} Hz), normalised with mean {:.3}, std {:.3}\n  model: {}, {} parameters ({} in the encoder)\n  batch: spectrograms {:?} -> {} of {} patches ({} time x {} frequency) removed ({:?}) -> {}\n  initial loss: {loss:.4}\n",
            r.name,
            self.train.len(),
            self.test
                .as_ref()
                .map_or(String::new(), |t| format!(", test: {} clips", t.len())),
            g.n_mels,
            g.frames,
            f.clip_seconds(),
            f.mel.sample_rate,
            f.mean,
            f.std,
            match r.objective()? {
                ObjectiveSection::Data2vec(_) => "data2vec",
                _ => "audio-mae",
            },
            self.model.params.num_params(),
            self.model.params.num_params_with_prefix(self.model.encoder_prefix),
            spec.dims(),
            self.masker.num_masked(),
            g.num_patches(),
            g.time_patches(),
            g.freq_patches(),
            r.objective()?.masking(),
            match &rec {
                Some(rec) => format!("prediction {:?}", rec.patches.dims()),
                None => "the teacher's targets at the removed patches".to_string(),
            },
        );
        if let Some((train, test)) = self.heads_data(r) {
            let names = &self.classes;
            report.push_str(&format!(
                "  downstream: {} heads on {} train / {} test clips, {} classes\n",
                r.downstream.len(),
                train.len(),
                test.len(),
                names.len()
            ));
        }
        Ok(report)
    }
}
