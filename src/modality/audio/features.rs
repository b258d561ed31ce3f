//! What turns a waveform into an encoder input ([`AudioFeatures`]): the clip length, the
//! log-mel spectrogram, normalisation, and which frames of a short clip are padding; and
//! how a clip is fitted to the window ([`fit_length`]) or a long recording cut into windows
//! ([`windows`]).

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::encoder::Spectrograms;
use super::mel::{MelConfig, MelSpectrogram};
use crate::error::Result;

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
    /// Leading and trailing audio more than this many dB below the clip's loudest frame is
    /// cut off before the clip is fitted to the window ([`trim_silence`]); `None` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trim_db: Option<f64>,
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

    /// `samples` as a clip is featurised: without its leading and trailing silence when
    /// [`Self::trim_db`] says so (frames of `hop_length` samples), else whole.
    pub fn trim<'a>(&self, samples: &'a [f32]) -> &'a [f32] {
        match self.trim_db {
            Some(db) => trim_silence(samples, db, self.mel.hop_length),
            None => samples,
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

    /// [`Self::spectrogram`] and the clip's length in samples as it was cut (at most
    /// [`Self::clip_len`]): what a cache stores.
    pub fn spectrogram_and_length(&self, mel: &MelSpectrogram, samples: &[f32]) -> (Vec<f32>, u32) {
        let len = samples.len().min(self.clip_len()).min(u32::MAX as usize) as u32;
        (self.spectrogram(mel, samples), len)
    }

    /// Which frames of a clip `length` samples long hold it: `[frames]`, 1 for a frame
    /// whose window overlaps the clip, 0 for padding. The first frame always counts, so
    /// that an empty clip still has a token.
    pub fn frame_mask(&self, length: usize) -> Vec<f32> {
        let hop = self.mel.hop_length.max(1);
        // Frame i's window starts at i * hop, or i * hop - n_fft / 2 when centred.
        let reach = length
            + if self.mel.center {
                self.mel.n_fft / 2
            } else {
                0
            };
        let held = reach.div_ceil(hop).clamp(1, self.frames);
        let mut m = vec![0.0; self.frames];
        m[..held].fill(1.0);
        m
    }

    /// The frame masks of clips of `lengths`, concatenated (`[B, frames]`), or `None` when
    /// no clip is padded.
    pub fn frame_masks(&self, lengths: &[u32]) -> Option<Vec<f32>> {
        let full = self.clip_len();
        if lengths.iter().all(|&l| l as usize >= full) {
            return None;
        }
        Some(
            lengths
                .iter()
                .flat_map(|&l| self.frame_mask(l as usize))
                .collect(),
        )
    }

    /// The encoder input of waveform windows at `mel.sample_rate` (each cut or padded to
    /// [`Self::clip_len`]), with the frame masks of those shorter than that.
    pub fn windows_input(
        &self,
        mel: &MelSpectrogram,
        windows: &[&[f32]],
        device: &Device,
    ) -> Result<Spectrograms> {
        let (specs, lengths): (Vec<Vec<f32>>, Vec<u32>) = windows
            .iter()
            .map(|w| self.spectrogram_and_length(mel, w))
            .unzip();
        let refs: Vec<&[f32]> = specs.iter().map(Vec::as_slice).collect();
        let frames = self.frame_masks(&lengths);
        self.to_input(self.normalised(&refs), frames, windows.len(), device)
    }

    /// Normalised values and frame masks as an encoder input (`[B, n_mels, frames]`,
    /// `[B, frames]`).
    pub fn to_input(
        &self,
        values: Vec<f32>,
        frames: Option<Vec<f32>>,
        batch: usize,
        device: &Device,
    ) -> Result<Spectrograms> {
        Ok(Spectrograms {
            values: self.values_to_tensor(values, batch, device)?,
            frames: frames
                .map(|m| Tensor::from_vec(m, (batch, self.frames), device))
                .transpose()?,
        })
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

/// `samples` without the leading and trailing stretches more than `top_db` below their
/// loudest frame: the RMS of non-overlapping frames of `frame` samples, in dB against the
/// loudest one (librosa's `effects.trim`, with its `ref = max`), keeping everything from
/// the first frame within `top_db` to the end of the last. Silence throughout is kept
/// whole.
pub fn trim_silence(samples: &[f32], top_db: f64, frame: usize) -> &[f32] {
    let frame = frame.max(1);
    let power: Vec<f64> = samples
        .chunks(frame)
        .map(|c| c.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / c.len() as f64)
        .collect();
    let loudest = power.iter().copied().fold(0.0, f64::max);
    if loudest <= 0.0 {
        return samples;
    }
    let floor = loudest * 10f64.powf(-top_db / 10.0);
    let loud = |p: &&f64| **p >= floor;
    let first = power.iter().position(|p| loud(&p)).unwrap_or(0);
    let last = power.iter().rposition(|p| loud(&p)).unwrap_or(0);
    &samples[first * frame..((last + 1) * frame).min(samples.len())]
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
            trim_db: None,
        };
        let mel = MelSpectrogram::new(&f.mel).unwrap();
        assert_eq!(mel.frames(f.clip_len()), 96);
    }

    #[test]
    fn trimming_keeps_the_loud_part_whole_frames_at_a_time() {
        // 10 frames of 4: silence, a quiet frame 30 dB down, two loud frames, silence.
        let mut x = vec![0f32; 40];
        x[8..12].fill(0.01);
        x[12..20].fill(0.3);
        x[20..22].fill(0.3);
        assert_eq!(trim_silence(&x, 20.0, 4), &x[12..24]);
        assert_eq!(trim_silence(&x, 40.0, 4), &x[8..24]);
        // A partial last frame, loud: kept to the end.
        assert_eq!(trim_silence(&x[..22], 20.0, 4), &x[12..22]);
        let silent = vec![0f32; 10];
        assert_eq!(trim_silence(&silent, 20.0, 4), &silent[..]);
    }
}
