//! Clips as model inputs: each WAV read, mixed down, resampled, cut or padded to a fixed
//! length and turned into a log-mel spectrogram once, up front, into an on-disk cache that is
//! memory-mapped ([`super::cache`]), so memory does not grow with the data set; batches are
//! normalised `[B, n_mels, frames]` tensors. For waveform models (wav2vec 2.0, HuBERT,
//! data2vec-audio) a [`ClipSet`] holds the fitted raw samples in memory instead
//! ([`ClipSet::load_waveforms`]), batched as `[B, samples]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::augment::AudioAugment;
use super::cache::{self, Mapped};
use super::dataset::AudioItem;
use super::encoder::Spectrograms;
use super::mel::{MelConfig, MelSpectrogram};
use super::resample::load_clip;
use crate::error::{Error, Result};
use crate::train::loader::MakeBatch;

pub use super::features::{fit_length, windows, AudioFeatures};

/// What each clip of a [`ClipSet`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipKind {
    /// A log-mel spectrogram (not normalised), row-major `[n_mels, frames]`.
    Spectrogram { n_mels: usize, frames: usize },
    /// Raw samples fitted to the clip length (normalised per clip when the model's feature
    /// extractor does so).
    Waveform { samples: usize },
}

impl ClipKind {
    /// Values per clip.
    pub fn size(&self) -> usize {
        match *self {
            ClipKind::Spectrogram { n_mels, frames } => n_mels * frames,
            ClipKind::Waveform { samples } => samples,
        }
    }
}

/// Where a [`ClipSet`]'s values live.
#[derive(Debug, Clone)]
enum Values {
    /// `[N * kind.size()]` on the heap: waveforms, and sets built in memory.
    Memory(Vec<f32>),
    /// A memory-mapped spectrogram cache file.
    Mapped(Mapped),
}

/// A split of clips as log-mel spectrograms (not normalised) or fitted waveforms, with labels
/// when they have them.
#[derive(Debug, Clone)]
pub struct ClipSet {
    pub kind: ClipKind,
    /// `[N, kind.size()]`, row-major; see [`ClipSet::values`].
    values: Values,
    pub labels: Option<Vec<u32>>,
    pub paths: Vec<PathBuf>,
    /// Each clip's length in samples as it was cut (`u32::MAX`: not known, taken as full):
    /// frames past it are padding.
    lengths: Vec<u32>,
}

impl ClipSet {
    /// A set from values in memory, `[paths.len() * kind.size()]` row-major (an error
    /// otherwise, as are labels that are not one per clip).
    pub fn from_values(
        kind: ClipKind,
        values: Vec<f32>,
        labels: Option<Vec<u32>>,
        paths: Vec<PathBuf>,
    ) -> Result<Self> {
        let want = paths.len() * kind.size();
        if values.len() != want {
            return Err(Error::shape("clip values", want, values.len()));
        }
        if let Some(l) = &labels {
            if l.len() != paths.len() {
                return Err(Error::shape("clip labels", paths.len(), l.len()));
            }
        }
        Ok(Self {
            kind,
            values: Values::Memory(values),
            labels,
            lengths: vec![u32::MAX; paths.len()],
            paths,
        })
    }

    /// The same clips, clip `i` `lengths[i]` samples long (frames past it are padding).
    pub fn with_lengths(mut self, lengths: Vec<u32>) -> Result<Self> {
        if lengths.len() != self.len() {
            return Err(Error::shape("clip lengths", self.len(), lengths.len()));
        }
        self.lengths = lengths;
        Ok(self)
    }

    /// Reads and featurises `items` through the spectrogram cache in
    /// [`cache::default_dir`]: computed (in parallel, [`cache::CHUNK`] clips at a time) and
    /// written there the first time, mapped from there afterwards. Labels are indices into
    /// `classes`; an item whose label is not there is an error naming the file. `labels`
    /// are kept only when every item has one.
    pub fn load(
        items: &[AudioItem],
        mel_config: &MelConfig,
        frames: usize,
        trim_db: Option<f64>,
        classes: &[String],
    ) -> Result<Self> {
        Self::load_cached(
            items,
            mel_config,
            frames,
            trim_db,
            classes,
            &cache::default_dir(),
        )
    }

    /// [`ClipSet::load`] with the cache in `cache_dir`.
    pub fn load_cached(
        items: &[AudioItem],
        mel_config: &MelConfig,
        frames: usize,
        trim_db: Option<f64>,
        classes: &[String],
        cache_dir: &Path,
    ) -> Result<Self> {
        let (mel, f) = spectrogram_features(mel_config, frames, trim_db)?;
        let labels = labels(items, classes)?;
        let mapped = cache::load_or_build(cache_dir, items, mel_config, frames, trim_db, |item| {
            let samples = load_clip(&item.path, mel_config.sample_rate)?;
            Ok(f.spectrogram_and_length(&mel, f.trim(&samples)))
        })?;
        Ok(Self {
            kind: ClipKind::Spectrogram {
                n_mels: mel_config.n_mels,
                frames,
            },
            lengths: mapped.lengths(),
            values: Values::Mapped(mapped),
            labels,
            paths: items.iter().map(|i| i.path.clone()).collect(),
        })
    }

    /// [`ClipSet::load`] without the cache: every spectrogram computed (in parallel) and held
    /// in memory.
    pub fn load_in_memory(
        items: &[AudioItem],
        mel_config: &MelConfig,
        frames: usize,
        trim_db: Option<f64>,
        classes: &[String],
    ) -> Result<Self> {
        let (mel, f) = spectrogram_features(mel_config, frames, trim_db)?;
        let specs: Vec<(Vec<f32>, u32)> = items
            .par_iter()
            .map(|item| {
                let samples = load_clip(&item.path, mel_config.sample_rate)?;
                Ok(f.spectrogram_and_length(&mel, f.trim(&samples)))
            })
            .collect::<Result<_>>()?;
        let (specs, lengths) = specs.into_iter().unzip();
        Self::assemble(
            items,
            ClipKind::Spectrogram {
                n_mels: mel_config.n_mels,
                frames,
            },
            specs,
            classes,
        )?
        .with_lengths(lengths)
    }

    /// Reads `items` (in parallel) as waveforms at `sample_rate`, each cut or padded to
    /// `samples` ([`fit_length`]) and, with `normalize`, brought to zero mean and unit
    /// variance (`Wav2Vec2FeatureExtractor`'s `do_normalize`); held in memory. Labels as in
    /// [`ClipSet::load`].
    pub fn load_waveforms(
        items: &[AudioItem],
        sample_rate: u32,
        samples: usize,
        normalize: bool,
        classes: &[String],
    ) -> Result<Self> {
        let clips: Vec<Vec<f32>> = items
            .par_iter()
            .map(|item| {
                let mut x = fit_length(&load_clip(&item.path, sample_rate)?, samples);
                if normalize {
                    super::waveform::zero_mean_unit_var(&mut x);
                }
                Ok(x)
            })
            .collect::<Result<_>>()?;
        Self::assemble(items, ClipKind::Waveform { samples }, clips, classes)
    }

    fn assemble(
        items: &[AudioItem],
        kind: ClipKind,
        clips: Vec<Vec<f32>>,
        classes: &[String],
    ) -> Result<Self> {
        Ok(Self {
            kind,
            values: Values::Memory(clips.concat()),
            labels: labels(items, classes)?,
            lengths: vec![u32::MAX; items.len()],
            paths: items.iter().map(|i| i.path.clone()).collect(),
        })
    }

    /// The cache file the values are mapped from, and whether it was reused (`None`: the
    /// values are in memory).
    pub fn cache_file(&self) -> Option<(&Path, bool)> {
        match &self.values {
            Values::Memory(_) => None,
            Values::Mapped(m) => Some((&m.path, m.reused)),
        }
    }

    /// Every clip's values, `[N * kind.size()]` row-major.
    pub fn values(&self) -> &[f32] {
        match &self.values {
            Values::Memory(v) => v,
            Values::Mapped(m) => m.values(),
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Clip `i`'s length in samples as it was cut (`u32::MAX` when not known: full).
    pub fn length(&self, i: usize) -> u32 {
        self.lengths[i]
    }

    /// One clip's values: a spectrogram `[n_mels * frames]` or samples `[samples]`.
    pub fn get(&self, i: usize) -> &[f32] {
        let n = self.kind.size();
        &self.values()[i * n..(i + 1) * n]
    }

    /// Mean and standard deviation of every log-mel value (the normalisation Audio-MAE and
    /// AST compute over their training sets), in one streaming pass in f64 (a mapped set is
    /// read from its file, an error naming it), each value shifted by the first so that the
    /// sum of squares does not cancel.
    pub fn stats(&self) -> Result<(f32, f32)> {
        let (mut shift, mut n, mut sum, mut squares) = (None, 0usize, 0f64, 0f64);
        let mut add = |block: &[f32]| {
            let k = *shift.get_or_insert(block.first().copied().unwrap_or_default() as f64);
            for &v in block {
                let d = v as f64 - k;
                sum += d;
                squares += d * d;
            }
            n += block.len();
        };
        match &self.values {
            Values::Memory(v) => add(v),
            Values::Mapped(m) => m.for_each_block(&mut add)?,
        }
        let n = n.max(1) as f64;
        let mean = sum / n;
        let var = (squares / n - mean * mean).max(0.0);
        let mean = shift.unwrap_or_default() + mean;
        Ok((mean as f32, var.sqrt().max(1e-6) as f32))
    }

    /// Normalised spectrograms `[B, n_mels, frames]` of the clips `idx`, with their frame
    /// masks when any is padded.
    pub fn batch(&self, idx: &[usize], f: &AudioFeatures, device: &Device) -> Result<Spectrograms> {
        let frames = self.frame_masks(idx, f);
        f.to_input(self.normalised(idx, f)?, frames, idx.len(), device)
    }

    /// The frame masks `[B, frames]` of the clips `idx`, `None` when none is padded.
    pub fn frame_masks(&self, idx: &[usize], f: &AudioFeatures) -> Option<Vec<f32>> {
        let lengths: Vec<u32> = idx.iter().map(|&i| self.lengths[i]).collect();
        f.frame_masks(&lengths)
    }

    /// The normalised spectrogram values of the clips `idx`, `[B, n_mels, frames]`
    /// row-major (a waveform set is an error).
    pub fn normalised(&self, idx: &[usize], f: &AudioFeatures) -> Result<Vec<f32>> {
        if let ClipKind::Waveform { .. } = self.kind {
            return Err(Error::Usage(
                "these clips are waveforms, not spectrograms".into(),
            ));
        }
        let specs: Vec<&[f32]> = idx.iter().map(|&i| self.get(i)).collect();
        Ok(f.normalised(&specs))
    }

    /// [`Self::normalised`] with clip `idx[k]` augmented by `augment`, drawing from its
    /// stream for `(epochs[k], idx[k])` (clips in parallel; the result does not depend on
    /// which thread ran which), and the frame masks (a shift moves them; `None` when no
    /// frame is padding).
    pub fn augmented(
        &self,
        idx: &[usize],
        f: &AudioFeatures,
        augment: &AudioAugment,
        epochs: &[usize],
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        if let ClipKind::Waveform { .. } = self.kind {
            return Err(Error::Usage(
                "these clips are waveforms, not spectrograms".into(),
            ));
        }
        if epochs.len() != idx.len() {
            return Err(Error::shape("augmentation epochs", idx.len(), epochs.len()));
        }
        let clips: Vec<(Vec<f32>, Vec<f32>)> = idx
            .par_iter()
            .zip(epochs)
            .map(|(&i, &e)| {
                let mut frames = f.frame_mask(self.lengths[i] as usize);
                let x = augment.apply(self.get(i), f, &mut frames, &mut augment.rng(e, i));
                (x, frames)
            })
            .collect();
        let (values, frames): (Vec<_>, Vec<_>) = clips.into_iter().unzip();
        let frames = frames.concat();
        let padded = frames.contains(&0.0);
        Ok((values.concat(), padded.then_some(frames)))
    }

    /// Waveforms `[B, samples]` of the clips `idx` (a spectrogram set is an error).
    pub fn waveform_batch(&self, idx: &[usize], device: &Device) -> Result<Tensor> {
        let ClipKind::Waveform { samples } = self.kind else {
            return Err(Error::Usage(
                "these clips are spectrograms, not waveforms".into(),
            ));
        };
        let mut values = Vec::with_capacity(idx.len() * samples);
        for &i in idx {
            values.extend_from_slice(self.get(i));
        }
        Ok(Tensor::from_vec(values, (idx.len(), samples), device)?)
    }

    /// Every clip's label, or an error saying the `split` split has none.
    pub fn require_labels(&self, split: &str) -> Result<&[u32]> {
        self.labels.as_deref().ok_or_else(|| {
            Error::Usage(format!(
                "downstream heads need labels for the {split} split"
            ))
        })
    }

    /// Labels (u32) of the clips `idx`.
    pub fn label_batch(&self, idx: &[usize], device: &Device) -> Result<Tensor> {
        let labels = self.require_labels("this")?;
        let v: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
        Ok(Tensor::from_vec(v, idx.len(), device)?)
    }

    /// The first `n` clips.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            match &mut self.values {
                Values::Memory(v) => v.truncate(n * self.kind.size()),
                Values::Mapped(m) => m.truncate(n),
            }
            self.paths.truncate(n);
            self.lengths.truncate(n);
            if let Some(l) = &mut self.labels {
                l.truncate(n);
            }
        }
    }
}

/// The mel front end and unnormalised features of `mel_config` and `frames`.
fn spectrogram_features(
    mel_config: &MelConfig,
    frames: usize,
    trim_db: Option<f64>,
) -> Result<(MelSpectrogram, AudioFeatures)> {
    let mel = MelSpectrogram::new(mel_config)
        .map_err(|m| Error::Usage(format!("data.audio.mel: {m}")))?;
    let f = AudioFeatures {
        mel: mel_config.clone(),
        frames,
        mean: 0.0,
        std: 1.0,
        trim_db,
    };
    Ok((mel, f))
}

/// The items' labels as indices into `classes` when every item has one (an unknown label is
/// an error naming the file), else `None`.
fn labels(items: &[AudioItem], classes: &[String]) -> Result<Option<Vec<u32>>> {
    if classes.is_empty() || !items.iter().all(|i| i.label.is_some()) {
        return Ok(None);
    }
    let labels = items
        .iter()
        .map(|i| {
            let l = i.label.as_deref().unwrap_or_default();
            classes
                .iter()
                .position(|c| c == l)
                .map(|p| p as u32)
                .ok_or_else(|| {
                    Error::data(
                        &i.path,
                        format!(
                            "label `{l}` is not among the training split's classes ({})",
                            classes.join(", ")
                        ),
                    )
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok(Some(labels))
}

/// Pretraining batches of spectrograms: the normalised values of the sampled clips, made on
/// the training loader's thread ([`crate::train::loader`]).
#[derive(Debug, Clone)]
pub struct SpectrogramBatches {
    pub clips: Arc<ClipSet>,
    pub features: AudioFeatures,
    /// `[data.augment]`: each clip augmented with its stream for (epoch, index).
    pub augment: Option<AudioAugment>,
}

impl MakeBatch for SpectrogramBatches {
    /// `[B, n_mels, frames]` values and `[B, frames]` frame masks (see
    /// [`AudioFeatures::to_input`]).
    type Batch = (Vec<f32>, Option<Vec<f32>>);

    fn make(&self, indices: &[usize], epochs: &[usize]) -> Result<Self::Batch> {
        match &self.augment {
            Some(a) => self.clips.augmented(indices, &self.features, a, epochs),
            None => Ok((
                self.clips.normalised(indices, &self.features)?,
                self.clips.frame_masks(indices, &self.features),
            )),
        }
    }
}

/// The mapped spectrogram cache against in-memory featurisation, on the committed sample.
#[cfg(test)]
#[path = "clips_cache_tests.rs"]
mod cache_tests;
