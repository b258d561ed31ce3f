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
use serde::{Deserialize, Serialize};

use super::augment::AudioAugment;
use super::cache::{self, Mapped};
use super::dataset::AudioItem;
use super::mel::{MelConfig, MelSpectrogram};
use super::resample::load_clip;
use crate::error::{Error, Result};
use crate::train::loader::MakeBatch;

/// Everything that turns a waveform into an encoder input; saved with a run
/// (`audio-config.json`, with the encoder's shape) so that its checkpoints can be used on
/// their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioFeatures {
    pub mel: MelConfig,
    /// Spectrogram frames per clip.
    pub frames: usize,
    /// Normalisation of the log-mel values: `(x - mean) / std`.
    pub mean: f32,
    pub std: f32,
}

impl AudioFeatures {
    /// Samples per clip: the length whose spectrogram has exactly `frames` frames.
    pub fn clip_len(&self) -> usize {
        let hop = self.mel.hop_length;
        if self.mel.center {
            (self.frames - 1) * hop
        } else {
            (self.frames - 1) * hop + self.mel.n_fft
        }
    }

    /// Seconds per clip.
    pub fn clip_seconds(&self) -> f64 {
        self.clip_len() as f64 / self.mel.sample_rate as f64
    }

    /// The log-mel spectrogram (not normalised) of one clip's samples at
    /// `mel.sample_rate`, cut or padded first: row-major `[n_mels, frames]`.
    pub fn spectrogram(&self, mel: &MelSpectrogram, samples: &[f32]) -> Vec<f32> {
        let fitted = fit_length(samples, self.clip_len());
        let spec = mel.log_mel(&fitted);
        debug_assert_eq!(spec.len(), self.mel.n_mels * self.frames);
        spec
    }

    /// Normalised spectrograms `[B, n_mels, frames]` from row-major `[n_mels, frames]` each.
    pub fn to_tensor(&self, specs: &[&[f32]], device: &Device) -> Result<Tensor> {
        self.values_to_tensor(self.normalised(specs), specs.len(), device)
    }

    /// The normalised values of row-major `[n_mels, frames]` spectrograms, concatenated.
    pub fn normalised(&self, specs: &[&[f32]]) -> Vec<f32> {
        let mut values = Vec::with_capacity(specs.len() * self.mel.n_mels * self.frames);
        for s in specs {
            values.extend(s.iter().map(|v| (v - self.mean) / self.std));
        }
        values
    }

    /// Values from [`Self::normalised`] as `[B, n_mels, frames]`.
    pub fn values_to_tensor(
        &self,
        values: Vec<f32>,
        batch: usize,
        device: &Device,
    ) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            values,
            (batch, self.mel.n_mels, self.frames),
            device,
        )?)
    }
}

/// `samples` centre-cropped to `n`, or padded with silence at the end.
pub fn fit_length(samples: &[f32], n: usize) -> Vec<f32> {
    if samples.len() >= n {
        let start = (samples.len() - n) / 2;
        samples[start..start + n].to_vec()
    } else {
        let mut v = samples.to_vec();
        v.resize(n, 0.0);
        v
    }
}

/// `samples` as consecutive windows of `len`, one window when it fits. Every window is
/// full length: the last one ends at the end of `samples`, overlapping the one before when
/// the length is not a multiple of `len` (a short remainder, a few samples, say, would be
/// too short for a model to encode).
pub fn windows(samples: &[f32], len: usize) -> Vec<&[f32]> {
    if samples.len() <= len || len == 0 {
        return vec![samples];
    }
    let mut parts: Vec<&[f32]> = samples.chunks_exact(len).collect();
    if !samples.len().is_multiple_of(len) {
        parts.push(&samples[samples.len() - len..]);
    }
    parts
}

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
            paths,
        })
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
        classes: &[String],
    ) -> Result<Self> {
        Self::load_cached(items, mel_config, frames, classes, &cache::default_dir())
    }

    /// [`ClipSet::load`] with the cache in `cache_dir`.
    pub fn load_cached(
        items: &[AudioItem],
        mel_config: &MelConfig,
        frames: usize,
        classes: &[String],
        cache_dir: &Path,
    ) -> Result<Self> {
        let (mel, f) = spectrogram_features(mel_config, frames)?;
        let labels = labels(items, classes)?;
        let mapped = cache::load_or_build(cache_dir, items, mel_config, frames, |item| {
            Ok(f.spectrogram(&mel, &load_clip(&item.path, mel_config.sample_rate)?))
        })?;
        Ok(Self {
            kind: ClipKind::Spectrogram {
                n_mels: mel_config.n_mels,
                frames,
            },
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
        classes: &[String],
    ) -> Result<Self> {
        let (mel, f) = spectrogram_features(mel_config, frames)?;
        let specs: Vec<Vec<f32>> = items
            .par_iter()
            .map(|item| {
                let samples = load_clip(&item.path, mel_config.sample_rate)?;
                Ok(f.spectrogram(&mel, &samples))
            })
            .collect::<Result<_>>()?;
        Self::assemble(
            items,
            ClipKind::Spectrogram {
                n_mels: mel_config.n_mels,
                frames,
            },
            specs,
            classes,
        )
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

    /// Normalised spectrograms `[B, n_mels, frames]` of the clips `idx`.
    pub fn batch(&self, idx: &[usize], f: &AudioFeatures, device: &Device) -> Result<Tensor> {
        f.values_to_tensor(self.normalised(idx, f)?, idx.len(), device)
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
    /// which thread ran which).
    pub fn augmented(
        &self,
        idx: &[usize],
        f: &AudioFeatures,
        augment: &AudioAugment,
        epochs: &[usize],
    ) -> Result<Vec<f32>> {
        if let ClipKind::Waveform { .. } = self.kind {
            return Err(Error::Usage(
                "these clips are waveforms, not spectrograms".into(),
            ));
        }
        if epochs.len() != idx.len() {
            return Err(Error::shape("augmentation epochs", idx.len(), epochs.len()));
        }
        let clips: Vec<Vec<f32>> = idx
            .par_iter()
            .zip(epochs)
            .map(|(&i, &e)| augment.apply(self.get(i), f, &mut augment.rng(e, i)))
            .collect();
        Ok(clips.concat())
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
) -> Result<(MelSpectrogram, AudioFeatures)> {
    let mel = MelSpectrogram::new(mel_config)
        .map_err(|m| Error::Usage(format!("data.audio.mel: {m}")))?;
    let f = AudioFeatures {
        mel: mel_config.clone(),
        frames,
        mean: 0.0,
        std: 1.0,
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
    /// `[B, n_mels, frames]` (see [`AudioFeatures::values_to_tensor`]).
    type Batch = Vec<f32>;

    fn make(&self, indices: &[usize], epochs: &[usize]) -> Result<Vec<f32>> {
        match &self.augment {
            Some(a) => self.clips.augmented(indices, &self.features, a, epochs),
            None => self.clips.normalised(indices, &self.features),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn windows_are_all_full_length_the_last_ending_at_the_end() {
        let x: Vec<f32> = (0..25).map(|i| i as f32).collect();
        let w = windows(&x, 10);
        assert_eq!(w.len(), 3);
        assert!(w.iter().all(|p| p.len() == 10));
        assert_eq!(w[2][9], 24.0);
        assert_eq!(w[2][0], 15.0);
        assert_eq!(windows(&x[..20], 10).len(), 2);
        assert_eq!(windows(&x[..7], 10), vec![&x[..7]]);
    }

    use super::*;

    #[test]
    fn fit_length_crops_centre_and_pads_end() {
        assert_eq!(
            fit_length(&[1.0, 2.0, 3.0, 4.0, 5.0], 3),
            vec![2.0, 3.0, 4.0]
        );
        assert_eq!(fit_length(&[1.0, 2.0], 4), vec![1.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn clip_len_gives_exactly_frames() {
        let f = AudioFeatures {
            mel: MelConfig::default(),
            frames: 96,
            mean: 0.0,
            std: 1.0,
        };
        let mel = MelSpectrogram::new(&f.mel).unwrap();
        assert_eq!(mel.frames(f.clip_len()), 96);
    }
}

/// The mapped spectrogram cache against in-memory featurisation, on the committed sample.
#[cfg(test)]
#[path = "clips_cache_tests.rs"]
mod cache_tests;
