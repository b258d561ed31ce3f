//! Seeded audio augmentation on cached log-mel spectrograms (`ln(mel + log_offset)`, row-major
//! `[n_mels, frames]`), in this order: a time shift, a change of level, additive white noise,
//! normalisation, then SpecAugment's time and frequency masks (Park et al. 2019; torchaudio's
//! `TimeMasking` / `FrequencyMasking`).
//!
//! Clips are turned into spectrograms once ([`super::cache`]), so the waveform-level
//! augmentations are done where they are exact or close to it, in the mel power domain:
//! - a shift by whole frames is the spectrogram of the shifted clip (hop-sized steps), the
//!   frames it uncovers holding each band's quietest value in the clip (its noise floor);
//! - a gain of `g` dB multiplies every mel power by `10^(g power / 20)`, exactly;
//! - white noise adds, in expectation, a power proportional to each filter's total weight to
//!   its band (powers of uncorrelated signals add); each cell's noise power is drawn from a
//!   Gamma distribution whose shape is the band's effective number of FFT bins
//!   (`(Σw)² / Σw²`), as a sum of that many exponentially distributed bin powers would be
//!   (exact in expectation for `power = 2`; adjacent frames' correlation is not modelled).
//!
//! Each example's draws come from its own stream keyed by `(seed, epoch, index)`
//! ([`crate::draws::example_rng`]), as the image augmentations' do.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use super::clips::AudioFeatures;
use super::mel::{MelConfig, MelSpectrogram};
use crate::error::{Error, Result};

/// A clip's spectrogram shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub n_mels: usize,
    pub frames: usize,
}

/// SpecAugment masks along one axis: `count` masks of width uniform in `[0, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masks {
    pub count: usize,
    pub width: usize,
}

/// What the noise of one band looks like, from the mel filterbank.
#[derive(Debug, Clone, PartialEq)]
struct Band {
    /// The filter's total weight: white noise's expected mel power is proportional to it.
    weight: f64,
    /// The effective number of FFT bins, `(Σw)² / Σw²`: the Gamma shape of a cell's noise.
    bins: f64,
}

/// What to augment, as a recipe's `[data.augment]` or `downstream[i].augment` says it
/// (converted from the recipe by `augment` in src/modality/audio/run/mod.rs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AugmentSettings {
    /// Largest shift, in seconds, either way.
    pub time_shift: f64,
    /// Draw the shift only within the clip's padding (its frame mask's zeros at either
    /// end), so that no frame of the clip leaves the window.
    pub shift_in_padding: bool,
    /// Largest change of level, in dB, either way.
    pub gain_db: f64,
    /// SNR range in dB and the probability of any noise.
    pub noise: Option<([f64; 2], f64)>,
    pub time_masks: Option<Masks>,
    pub freq_masks: Option<Masks>,
}

impl AugmentSettings {
    /// Whether these settings change nothing.
    pub fn is_identity(&self) -> bool {
        self.time_shift <= 0.0
            && self.gain_db <= 0.0
            && self.noise.is_none()
            && self.time_masks.is_none_or(|m| m.count == 0)
            && self.freq_masks.is_none_or(|m| m.count == 0)
    }
}

/// The audio augmentations of a recipe's `[data.augment]` or `downstream[i].augment`.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioAugment {
    pub settings: AugmentSettings,
    /// `settings.time_shift` in frames.
    pub shift_frames: usize,
    /// Keys every example's stream.
    pub seed: u64,
    log_offset: f64,
    power: f64,
    bands: Vec<Band>,
}

impl AudioAugment {
    /// The augmentations `a` asks for on spectrograms made with `mel`, or `None` when it
    /// asks for none.
    pub fn new(a: &AugmentSettings, mel: &MelConfig, seed: u64) -> Result<Option<Self>> {
        if a.is_identity() {
            return Ok(None);
        }
        let front =
            MelSpectrogram::new(mel).map_err(|m| Error::Usage(format!("data.audio.mel: {m}")))?;
        let bins = mel.n_fft / 2 + 1;
        let bands = front
            .filterbank()
            .chunks_exact(bins)
            .map(|row| {
                let sum: f64 = row.iter().map(|&w| w as f64).sum();
                let squares: f64 = row.iter().map(|&w| (w as f64).powi(2)).sum();
                Band {
                    weight: sum,
                    bins: if squares > 0.0 {
                        (sum * sum / squares).max(0.5)
                    } else {
                        1.0
                    },
                }
            })
            .collect();
        Ok(Some(Self {
            shift_frames: (a.time_shift * mel.sample_rate as f64 / mel.hop_length as f64).round()
                as usize,
            settings: a.clone(),
            seed,
            log_offset: mel.log_offset as f64,
            power: mel.power as f64,
            bands,
        }))
    }

    /// Example `index`'s stream in `epoch`.
    pub fn rng(&self, epoch: usize, index: usize) -> ChaCha8Rng {
        crate::draws::example_rng(self.seed, epoch, index, b"audioaug")
    }

    /// `spec` (un-normalised log-mel, `[n_mels, frames]`) augmented and normalised with `f`,
    /// drawing from `rng`: shift, gain, noise, normalisation, time masks, frequency masks.
    /// `frames` (the clip's frame mask, [`AudioFeatures::frame_mask`]) moves with the
    /// shift; the frames it uncovers are padding.
    pub fn apply(
        &self,
        spec: &[f32],
        f: &AudioFeatures,
        frames: &mut [f32],
        rng: &mut impl Rng,
    ) -> Vec<f32> {
        let shape = Shape {
            n_mels: f.mel.n_mels,
            frames: f.frames,
        };
        let mut x = spec.to_vec();
        if self.shift_frames > 0 {
            let s = self.shift_frames as i64;
            let (lo, hi) = if self.settings.shift_in_padding {
                padding_room(frames, s)
            } else {
                (-s, s)
            };
            let by = rng.gen_range(lo..=hi);
            shift(&mut x, shape, by);
            shift_mask(frames, by);
        }
        let a = &self.settings;
        if a.gain_db > 0.0 {
            self.gain(&mut x, rng.gen_range(-a.gain_db..=a.gain_db));
        }
        if let Some((snr, p)) = a.noise {
            if rng.gen::<f64>() < p {
                let db = snr[0] + (snr[1] - snr[0]) * rng.gen::<f64>();
                self.add_noise(&mut x, shape, db, rng);
            }
        }
        for v in &mut x {
            *v = (*v - f.mean) / f.std;
        }
        if let Some(m) = a.time_masks {
            mask(&mut x, shape, m, Axis::Time, rng);
        }
        if let Some(m) = a.freq_masks {
            mask(&mut x, shape, m, Axis::Frequency, rng);
        }
        x
    }

    /// Multiplies every mel power of the log-mel `x` by `10^(db * power / 20)`.
    pub fn gain(&self, x: &mut [f32], db: f64) {
        let factor = 10f64.powf(db * self.power / 20.0);
        let off = self.log_offset;
        for v in x {
            let p = ((*v as f64).exp() - off).max(0.0);
            *v = (factor * p + off).ln() as f32;
        }
    }

    /// Adds white noise `snr_db` below the clip's mean mel power to the log-mel `x`, each
    /// cell's noise drawn from `rng`. A silent clip stays as it is (no level to refer to).
    pub fn add_noise(&self, x: &mut [f32], shape: Shape, snr_db: f64, rng: &mut impl Rng) {
        let off = self.log_offset;
        let signal: f64 = x.iter().map(|&v| ((v as f64).exp() - off).max(0.0)).sum();
        let weights: f64 = self.bands.iter().map(|b| b.weight).sum::<f64>() * shape.frames as f64;
        if signal <= 0.0 || weights <= 0.0 {
            return;
        }
        let level = signal * 10f64.powf(-snr_db / 10.0) / weights;
        for (band, row) in self.bands.iter().zip(x.chunks_exact_mut(shape.frames)) {
            let mean = level * band.weight;
            // Shape k, scale mean / k: mean `mean`, as a sum of k exponential bin powers.
            let Ok(gamma) = Gamma::new(band.bins, mean / band.bins) else {
                continue;
            };
            for v in row {
                let n: f64 = gamma.sample(rng);
                *v = ((*v as f64).exp() + n).ln() as f32;
            }
        }
    }
}

/// Shifts every band of `x` by `by` frames (later when positive), the uncovered frames
/// holding the band's smallest value.
pub fn shift(x: &mut [f32], shape: Shape, by: i64) {
    let t = shape.frames as i64;
    if by == 0 || t == 0 {
        return;
    }
    for row in x.chunks_exact_mut(shape.frames) {
        let floor = row.iter().copied().fold(f32::INFINITY, f32::min);
        let old = row.to_vec();
        for (j, v) in row.iter_mut().enumerate() {
            let src = j as i64 - by;
            *v = if (0..t).contains(&src) {
                old[src as usize]
            } else {
                floor
            };
        }
    }
}

/// How far a clip with frame mask `frames` moves, at most `s` frames either way, without
/// any of its frames leaving the window: `(-leading padding, trailing padding)`, each
/// capped at `s` (a clip with no frame at all does not move).
pub fn padding_room(frames: &[f32], s: i64) -> (i64, i64) {
    let lead = frames.iter().take_while(|&&v| v == 0.0).count();
    if lead == frames.len() {
        return (0, 0);
    }
    let trail = frames.iter().rev().take_while(|&&v| v == 0.0).count();
    (-(lead as i64).min(s), (trail as i64).min(s))
}

/// Shifts a frame mask by `by` frames (later when positive); uncovered frames are 0.
pub fn shift_mask(frames: &mut [f32], by: i64) {
    if by == 0 {
        return;
    }
    let old = frames.to_vec();
    let t = old.len() as i64;
    for (j, v) in frames.iter_mut().enumerate() {
        let src = j as i64 - by;
        *v = if (0..t).contains(&src) {
            old[src as usize]
        } else {
            0.0
        };
    }
}

/// The axis a SpecAugment mask spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Time,
    Frequency,
}

/// `m.count` masks along `axis` set to 0, each as torchaudio draws one: width
/// `floor(u * m.width)`, start `floor(u' * (size - width))`.
pub fn mask(x: &mut [f32], shape: Shape, m: Masks, axis: Axis, rng: &mut impl Rng) {
    let size = match axis {
        Axis::Time => shape.frames,
        Axis::Frequency => shape.n_mels,
    };
    for _ in 0..m.count {
        let width = ((rng.gen::<f64>() * m.width as f64) as usize).min(size);
        let start = (rng.gen::<f64>() * (size - width) as f64) as usize;
        for i in start..start + width {
            match axis {
                Axis::Time => (0..shape.n_mels).for_each(|b| x[b * shape.frames + i] = 0.0),
                Axis::Frequency => x[i * shape.frames..(i + 1) * shape.frames].fill(0.0),
            }
        }
    }
}

#[cfg(test)]
#[path = "augment_tests.rs"]
mod tests;
