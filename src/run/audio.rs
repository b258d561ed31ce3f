//! Running an audio recipe: clips read from a folder or a CSV manifest and turned into
//! normalised log-mel spectrograms, Audio-MAE pretraining with reconstruction pictures at
//! every checkpoint, then the downstream heads on the labelled splits.
//!
//! A run directory holds the resolved recipe, `audio-config.json` (features, normalisation
//! and encoder shape, so a checkpoint can be used on its own), checkpoints, `metrics.jsonl`,
//! `pictures/`, `downstream/` and `summary.json`.
//!
//! With `model.source` naming a waveform model (wav2vec 2.0, HuBERT, data2vec-audio; a local
//! Hugging Face directory or `hf:org/name`) and `train.steps = 0`, there is no Audio-MAE
//! pretraining: the clips are kept as raw 16 kHz waveforms (cut or padded to the length
//! `data.audio.frames` and the mel hop describe, normalised per clip when the source's
//! feature extractor says `do_normalize`) and the downstream heads run on the source's
//! encoder ([`WaveformTask`]); `scratch` is the same architecture freshly initialised with
//! the run's seed. The recipe's `objective` and patch sizes are then unused.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::audio_task::AudioTask;
use super::downstream::{self, DownstreamResult};
use super::waveform_task::WaveformTask;
use super::{report, RunOptions, Summary};
use crate::backbone::{EncoderConfig, Mode};
use crate::error::{Error, Result};
use crate::hf::audio::AudioLoaded;
use crate::hf::source::AnyModel;
use crate::modality::audio::classifier::WaveformClassifierSpec;
use crate::modality::audio::clips::{AudioFeatures, ClipSet};
use crate::modality::audio::dataset::{self, AudioItem};
use crate::modality::audio::encoder::{unpatchify, SpectrogramEncoder, SpectrogramGeometry};
use crate::modality::audio::waveform::WaveformEncoder;
use crate::modality::image::grid::save_grid;
use crate::objective::audio_mae::{AudioMae, AudioMaeConfig, AudioMaskKind};
use crate::params::ParamStore;
use crate::recipe::{AudioSection, DataFormat, DataSource, Loaded, MaskingKind, Recipe};
use crate::train::{self, TrainTask};

/// The run's [`AudioRunConfig`].
pub const CONFIG_FILE: &str = "audio-config.json";
/// Clips shown in the reconstruction pictures.
const PREVIEW_CLIPS: usize = 8;

/// What a checkpoint of an audio run needs besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioRunConfig {
    pub features: AudioFeatures,
    pub geometry: SpectrogramGeometry,
    pub encoder: EncoderConfig,
}

impl AudioRunConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::data(path, e.to_string()))
    }
}

/// Everything an audio recipe needs, built and checked.
pub struct Prepared {
    pub device: Device,
    pub config: AudioRunConfig,
    pub params: ParamStore,
    pub mae: AudioMae,
    pub train: ClipSet,
    pub test: Option<ClipSet>,
    /// `data.labelled`'s splits, when the recipe names them (else the heads use `train` and
    /// `test`, see [`Prepared::heads_data`]).
    pub labelled: Option<(ClipSet, ClipSet)>,
    /// Class names (from the heads' training split), in label order.
    pub classes: Vec<String>,
}

impl Prepared {
    /// The labelled train and test splits the downstream heads use, when there are heads.
    pub fn heads_data(&self, r: &Recipe) -> Option<(&ClipSet, &ClipSet)> {
        if r.downstream.is_empty() {
            return None;
        }
        match &self.labelled {
            Some((train, test)) => Some((train, test)),
            None => self.test.as_ref().map(|test| (&self.train, test)),
        }
    }
}

/// The labelled splits the heads train and test on, with their keys: `data.labelled`, or
/// else `data.train` and `data.test`.
fn heads_sources<'r>(r: &'r Recipe, file: &Path) -> Result<[(&'r DataSource, &'static str); 2]> {
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
fn require_labels(set: &ClipSet, key: &str, file: &Path) -> Result<()> {
    match set.labels {
        Some(_) => Ok(()),
        None => Err(invalid(
            file,
            key,
            "downstream heads need every clip labelled (folder class directories, or a manifest `label` column)",
        )),
    }
}

fn invalid(file: &Path, key: &str, message: impl Into<String>) -> Error {
    Error::InvalidValue {
        file: file.to_path_buf(),
        key: key.into(),
        message: message.into(),
    }
}

/// The items a source names (a folder's `label/*.wav`, or a manifest's rows of its split).
fn items(src: &DataSource, key: &str, file: &Path) -> Result<Vec<AudioItem>> {
    let mut items = match src.format {
        DataFormat::Folder => {
            let root = src
                .root
                .as_deref()
                .ok_or_else(|| invalid(file, &format!("{key}.root"), "missing"))?;
            dataset::scan_folder(root)?
        }
        DataFormat::Manifest => {
            let path = src
                .path
                .as_deref()
                .ok_or_else(|| invalid(file, &format!("{key}.path"), "missing"))?;
            let mut items = dataset::read_manifest(path)?;
            if let Some(split) = &src.split {
                items.retain(|i| i.split.as_deref() == Some(split.as_str()));
                if items.is_empty() {
                    return Err(Error::data(
                        path,
                        format!("no rows have split = `{split}` ({key}.split)"),
                    ));
                }
            }
            items
        }
        _ => {
            return Err(invalid(
                file,
                &format!("{key}.format"),
                "audio recipes read format = \"folder\" or \"manifest\"",
            ))
        }
    };
    if let Some(limit) = src.limit {
        items.truncate(limit);
    }
    if items.is_empty() {
        return Err(invalid(file, key, "has no clips"));
    }
    Ok(items)
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
        decoder: super::pretrain::decoder_config(r)?,
        encoder: r.model.encoder_config(),
        mask_ratio: r.objective.mask_ratio(),
        masking: match r.objective.masking {
            MaskingKind::Time => AudioMaskKind::Time,
            MaskingKind::Frequency => AudioMaskKind::Frequency,
            MaskingKind::TimeFrequency => AudioMaskKind::TimeFrequency,
            _ => AudioMaskKind::Random,
        },
        norm_pix_loss: r.objective.norm_pix_loss,
    })
}

/// Builds everything: clips, features, normalisation, model.
pub fn prepare(r: &Recipe, file: &Path) -> Result<Prepared> {
    crate::recipe::check_paths(r, file)?;
    let a = r
        .data
        .audio
        .as_ref()
        .ok_or_else(|| invalid(file, "data.audio", "missing"))?;
    let device = crate::device::open(crate::device::parse(&r.device).map_err(Error::Usage)?)?;
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
    let load = |items: &[AudioItem]| ClipSet::load(items, &a.mel, a.frames, &classes);
    let train = load(&train_items)?;
    let test = match &r.data.test {
        Some(t) => Some(load(&items(t, "data.test", file)?)?),
        None => None,
    };
    let (mean, std) = match (a.mean, a.std) {
        (Some(m), Some(s)) => (m, s),
        _ => train.stats(),
    };
    let config = AudioRunConfig {
        features: AudioFeatures {
            mel: a.mel.clone(),
            frames: a.frames,
            mean,
            std,
        },
        geometry: geometry(a),
        encoder: r.model.encoder_config(),
    };
    let params = ParamStore::new(r.seed);
    let mae = AudioMae::new(&mae_config(r, a)?, params.var_builder(&device))?;
    let labelled = match labelled_items {
        Some((tr, te)) => Some((load(&tr)?, load(&te)?)),
        None => None,
    };
    let p = Prepared {
        device,
        config,
        params,
        mae,
        train,
        test,
        labelled,
        classes,
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

/// Audio-MAE on the training clips.
pub struct AudioMaeTask<'a> {
    pub mae: &'a AudioMae,
    pub train: &'a ClipSet,
    /// Clips shown in the reconstruction pictures.
    pub preview: &'a ClipSet,
    pub features: &'a AudioFeatures,
    pub device: Device,
    pub seed: u64,
}

/// Rows of spectrograms `[N, F, T]` as grey pictures `[N, 1, F, T]` in [0, 1], low
/// frequencies at the bottom; `range` maps to black..white.
fn picture(x: &Tensor, range: (f32, f32)) -> Result<Tensor> {
    let f = x.dim(1)?;
    let flip: Vec<u32> = (0..f as u32).rev().collect();
    let flip = Tensor::from_vec(flip, f, x.device())?;
    let x = x.index_select(&flip, 1)?;
    Ok(((x - range.0 as f64)? / (range.1 - range.0).max(1e-6) as f64)?.unsqueeze(1)?)
}

impl AudioMaeTask<'_> {
    /// One forward pass on the clips `idx` with masks drawn from `rng`.
    fn forward(
        &self,
        set: &ClipSet,
        idx: &[usize],
        rng: &mut ChaCha8Rng,
        train: bool,
    ) -> Result<(Tensor, crate::objective::audio_mae::AudioMaeOutput)> {
        let spec = set.batch(idx, self.features, &self.device)?;
        let noise = self.mae.masker.noise(idx.len(), rng, &self.device)?;
        let mut mode = if train { Mode::Train(rng) } else { Mode::Eval };
        let out = self.mae.forward(&spec, &noise, &mut mode)?;
        Ok((spec, out))
    }

    /// Original, masked (removed patches blank) and reconstructed spectrograms (kept patches
    /// as they were, removed ones predicted), one row each.
    pub fn reconstruction_rows(&self) -> Result<Vec<Tensor>> {
        let n = PREVIEW_CLIPS.min(self.preview.len());
        let idx: Vec<usize> = (0..n).collect();
        // The same masks at every checkpoint, so pictures are comparable over training.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6175_6469);
        let (spec, out) = self.forward(self.preview, &idx, &mut rng, false)?;
        let g = &self.mae.config().geometry;
        let pred = unpatchify(&self.mae.pred_to_spec(&spec, &out.pred)?, g)?;
        let mask = unpatchify(&out.mask.unsqueeze(2)?.repeat((1, 1, g.patch_dim()))?, g)?;
        let keep = (1.0 - &mask)?;
        let lo = spec.min_all()?.to_scalar::<f32>()?;
        let hi = spec.max_all()?.to_scalar::<f32>()?;
        // Removed patches mid-grey, so they stand apart from silence (black).
        let masked = ((&spec * &keep)? + (&mask * ((lo + hi) / 2.0) as f64)?)?;
        let recon = ((&spec * &keep)? + (pred * &mask)?)?;
        [spec, masked, recon]
            .iter()
            .map(|x| picture(x, (lo, hi)))
            .collect()
    }
}

impl TrainTask for AudioMaeTask<'_> {
    fn num_examples(&self) -> usize {
        self.train.len()
    }

    fn loss(&self, indices: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor> {
        Ok(self.forward(self.train, indices, rng, true)?.1.loss)
    }

    fn infer(&self, params: &ParamStore, indices: &[usize]) -> Result<Option<Tensor>> {
        let spec = self.train.batch(indices, self.features, &self.device)?;
        let cfg = self.mae.config();
        let enc = SpectrogramEncoder::new(
            cfg.geometry,
            &cfg.encoder,
            params.frozen_var_builder(&self.device).pp("audio"),
        )?;
        Ok(Some(enc.forward(&spec, &mut Mode::Eval)?))
    }

    fn on_checkpoint(&self, step: usize, run_dir: &Path) -> Result<()> {
        save_grid(
            &self.reconstruction_rows()?,
            3,
            &run_dir
                .join("pictures")
                .join(format!("reconstruction-step-{step:07}.png")),
        )
    }
}

fn task<'a>(p: &'a Prepared, seed: u64) -> AudioMaeTask<'a> {
    AudioMaeTask {
        mae: &p.mae,
        train: &p.train,
        preview: p.test.as_ref().unwrap_or(&p.train),
        features: &p.config.features,
        device: p.device.clone(),
        seed,
    }
}

/// Validates a recipe through one forward pass of one batch; returns a report.
pub fn dry_run(loaded: &Loaded) -> Result<String> {
    let r = &loaded.recipe;
    if r.model.source.is_some() {
        return waveform_dry_run(loaded);
    }
    let p = prepare(r, &loaded.file)?;
    let t = task(&p, r.seed);
    let b = r.train.batch_size.min(p.train.len());
    let idx: Vec<usize> = (0..b).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(r.seed);
    let (spec, out) = t.forward(&p.train, &idx, &mut rng, false)?;
    let loss = out.loss.to_scalar::<f32>()?;
    if !loss.is_finite() {
        return Err(Error::NonFinite { step: 0, loss });
    }
    let g = &p.config.geometry;
    let f = &p.config.features;
    let mut report = format!(
        "recipe `{}` is valid\n  train: {} clips{}\n  features: {} log-mel bands x {} frames ({:.2} s at {} Hz), normalised with mean {:.3}, std {:.3}\n  model: audio-mae, {} parameters ({} in the encoder)\n  batch: spectrograms {:?} -> {} of {} patches ({} time x {} frequency) removed ({:?}) -> prediction {:?}\n  initial loss: {loss:.4}\n",
        r.name,
        p.train.len(),
        p.test
            .as_ref()
            .map_or(String::new(), |t| format!(", test: {} clips", t.len())),
        g.n_mels,
        g.frames,
        f.clip_seconds(),
        f.mel.sample_rate,
        f.mean,
        f.std,
        p.params.num_params(),
        p.params.num_params_with_prefix("audio."),
        spec.dims(),
        g.num_patches() - p.mae.masker.len_keep(),
        g.num_patches(),
        g.time_patches(),
        g.freq_patches(),
        p.mae.config().masking,
        out.pred.dims(),
    );
    if let Some((train, test)) = p.heads_data(r) {
        let names = &p.classes;
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

/// Starts a new audio run.
pub fn start(loaded: &Loaded, opts: &RunOptions) -> Result<Summary> {
    if loaded.recipe.model.source.is_some() {
        let prepared = prepare_waveform(&loaded.recipe, &loaded.file)?;
        let run_dir = super::new_run_dir(loaded, opts)?;
        return execute_waveform(prepared, &loaded.recipe, &run_dir, opts);
    }
    let prepared = prepare(&loaded.recipe, &loaded.file)?;
    let run_dir = super::new_run_dir(loaded, opts)?;
    execute(prepared, &loaded.recipe, &run_dir, opts)
}

/// Resumes an audio run from its directory.
pub fn resume(loaded: &Loaded, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    if loaded.recipe.model.source.is_some() {
        let prepared = prepare_waveform(&loaded.recipe, &loaded.file)?;
        return execute_waveform(prepared, &loaded.recipe, run_dir, opts);
    }
    let mut prepared = prepare(&loaded.recipe, &loaded.file)?;
    // The normalisation the run started with (the training split may have changed since).
    let saved = run_dir.join(CONFIG_FILE);
    if saved.is_file() {
        prepared.config.features = AudioRunConfig::read(&saved)?.features;
    }
    execute(prepared, &loaded.recipe, run_dir, opts)
}

fn execute(p: Prepared, r: &Recipe, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    let json =
        serde_json::to_string_pretty(&p.config).map_err(|e| Error::data(run_dir, e.to_string()))?;
    crate::tensor_io::write_atomic(&run_dir.join(CONFIG_FILE), json.as_bytes())?;
    let ckpt = super::latest_checkpoint(run_dir, &p.device)?;
    let t = task(&p, r.seed);
    let started = Instant::now();
    let (step, last_loss, samples_per_s) = if r.train.steps == 0 {
        (0, f32::NAN, 0.0)
    } else {
        let outcome = train::train(
            &t,
            &p.params,
            &r.train,
            r.seed,
            run_dir,
            ckpt,
            opts.stop_after,
            opts.driver.as_ref(),
        )?;
        (outcome.step, outcome.last_loss, outcome.samples_per_s)
    };
    let pretrain_seconds = started.elapsed().as_secs_f64();

    let mut results: Vec<DownstreamResult> = Vec::new();
    if step == r.train.steps && !opts.skip_downstream {
        if let Some((train, test)) = p.heads_data(r) {
            let dt = AudioTask::new(
                train, test, &p.classes, &p.config, &p.params, r.seed, &p.device,
            )?;
            results = downstream::Downstream {
                run_dir,
                task: &dt,
                pretrain_steps: step,
                seed: r.seed,
                device: &p.device,
            }
            .run(&r.downstream)?;
        }
    }
    let label_efficiency = report::write(run_dir, &results)?;
    let summary = Summary {
        name: r.name.clone(),
        run_dir: run_dir.to_path_buf(),
        steps: step,
        final_loss: last_loss,
        samples_per_s,
        pretrain_seconds,
        data_wait_seconds: 0.0,
        encoder_parameters: p.params.num_params_with_prefix("audio."),
        total_parameters: p.params.num_params(),
        held_out_mlm: None,
        downstream: results,
        label_efficiency,
    };
    super::write_summary(run_dir, &summary)?;
    Ok(summary)
}

/// Everything an audio recipe with a waveform `model.source` needs, built and checked.
pub struct WaveformPrepared {
    pub device: Device,
    /// The source as loaded (spec, weights under `audio.*`, origin).
    pub source: AudioLoaded,
    /// The source's encoder as `audio.*`.
    pub params: ParamStore,
    /// The model's shape and input settings, with the training split's class names.
    pub spec: WaveformClassifierSpec,
    /// Labelled downstream splits (waveforms).
    pub train: ClipSet,
    pub test: ClipSet,
}

/// Loads the waveform model `model.source` names and the labelled splits as waveforms.
pub fn prepare_waveform(r: &Recipe, file: &Path) -> Result<WaveformPrepared> {
    crate::recipe::check_paths(r, file)?;
    let a = r
        .data
        .audio
        .as_ref()
        .ok_or_else(|| invalid(file, "data.audio", "missing"))?;
    let src = r
        .model
        .source
        .as_deref()
        .ok_or_else(|| invalid(file, "model.source", "missing"))?;
    if r.train.steps > 0 {
        return Err(invalid(
            file,
            "train.steps",
            "must be 0 with a waveform model.source (no Audio-MAE pretraining: the downstream heads run on the source)",
        ));
    }
    let device = crate::device::open(crate::device::parse(&r.device).map_err(Error::Usage)?)?;
    let source = match crate::hf::source::load_any(src, &device)? {
        AnyModel::Audio(m) => m,
        other => {
            return Err(invalid(
                file,
                "model.source",
                format!(
                    "`{src}` is {}; audio recipes start from a wav2vec2, HuBERT or data2vec-audio model",
                    other.describe()
                ),
            ))
        }
    };
    let normalize = crate::hf::audio::do_normalize(&source_dir(src)?);
    let features = AudioFeatures {
        mel: a.mel.clone(),
        frames: a.frames,
        mean: 0.0,
        std: 1.0,
    };
    let samples = features.clip_len();
    if source.spec.config.frames(samples) == 0 {
        return Err(invalid(
            file,
            "data.audio.frames",
            format!("clips of {samples} samples are too short for the model's conv stack"),
        ));
    }
    let params = ParamStore::new(r.seed);
    WaveformEncoder::new(&source.spec.config, params.var_builder(&device).pp("audio"))?;
    params.load_tensors(&source.tensors, Path::new(&source.origin))?;

    let [(train_src, train_key), (test_src, test_key)] = heads_sources(r, file)?;
    let train_items = items(train_src, train_key, file)?;
    let classes = dataset::class_names(&train_items);
    let load = |items: &[AudioItem]| {
        ClipSet::load_waveforms(items, a.mel.sample_rate, samples, normalize, &classes)
    };
    let train = load(&train_items)?;
    let test = load(&items(test_src, test_key, file)?)?;
    require_labels(&train, train_key, file)?;
    require_labels(&test, test_key, file)?;
    let spec = WaveformClassifierSpec {
        kind: WaveformClassifierSpec::KIND.into(),
        model_type: source.spec.family.model_type().into(),
        config: source.spec.config.clone(),
        sample_rate: a.mel.sample_rate,
        samples,
        normalize,
        classes,
    };
    Ok(WaveformPrepared {
        device,
        source,
        params,
        spec,
        train,
        test,
    })
}

/// The local directory of a model source (a hub reference's snapshot), for its
/// `preprocessor_config.json`.
fn source_dir(src: &str) -> Result<String> {
    match crate::hf::hub::HubRef::parse(src) {
        Some(r) => Ok(crate::hf::hub::snapshot_dir(&r?)?
            .to_string_lossy()
            .into_owned()),
        None => Ok(src.to_string()),
    }
}

fn waveform_dry_run(loaded: &Loaded) -> Result<String> {
    let r = &loaded.recipe;
    let p = prepare_waveform(r, &loaded.file)?;
    let b = r.train.batch_size.clamp(1, p.train.len());
    let idx: Vec<usize> = (0..b).collect();
    let enc = WaveformEncoder::new(
        &p.spec.config,
        p.params.frozen_var_builder(&p.device).pp("audio"),
    )?;
    let x = p.train.waveform_batch(&idx, &p.device)?;
    let h = enc.forward(&x, None, &mut Mode::Eval)?.last_hidden_state;
    Ok(format!(
        "recipe `{}` is valid\n  source: `{}` ({}), {} parameters\n  clips: {} train / {} test, {} classes, {} samples ({:.2} s at {} Hz){}\n  batch: waveforms {:?} -> hidden states {:?}\n  downstream: {} heads (no pretraining: train.steps = 0)\n",
        r.name,
        p.source.origin,
        p.source.spec.hf_class(),
        p.params.num_params(),
        p.train.len(),
        p.test.len(),
        p.spec.classes.len(),
        p.spec.samples,
        p.spec.samples as f64 / p.spec.sample_rate as f64,
        p.spec.sample_rate,
        if p.spec.normalize {
            ", normalised per clip"
        } else {
            ""
        },
        x.dims(),
        h.dims(),
        r.downstream.len(),
    ))
}

fn execute_waveform(
    p: WaveformPrepared,
    r: &Recipe,
    run_dir: &Path,
    opts: &RunOptions,
) -> Result<Summary> {
    let mut results: Vec<DownstreamResult> = Vec::new();
    if !opts.skip_downstream {
        let dt = WaveformTask::new(&p.train, &p.test, &p.spec, &p.params, r.seed, &p.device)?;
        results = downstream::Downstream {
            run_dir,
            task: &dt,
            pretrain_steps: 0,
            seed: r.seed,
            device: &p.device,
        }
        .run(&r.downstream)?;
    }
    let label_efficiency = report::write(run_dir, &results)?;
    let summary = Summary {
        name: r.name.clone(),
        run_dir: run_dir.to_path_buf(),
        steps: 0,
        final_loss: f32::NAN,
        samples_per_s: 0.0,
        pretrain_seconds: 0.0,
        data_wait_seconds: 0.0,
        encoder_parameters: p.params.num_params_with_prefix("audio."),
        total_parameters: p.params.num_params(),
        held_out_mlm: None,
        downstream: results,
        label_efficiency,
    };
    super::write_summary(run_dir, &summary)?;
    Ok(summary)
}
