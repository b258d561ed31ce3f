//! Mel spectrograms computed as torchaudio's `transforms.MelSpectrogram` does (and librosa's
//! `feature.melspectrogram` with the same options): a centred, reflect-padded STFT with a
//! periodic window, `|X|^power`, and a triangular filterbank built like
//! `torchaudio.functional.melscale_fbanks` (HTK or Slaney mel scale, optional Slaney area
//! normalisation). Arithmetic is in `f64`; results are `f32`.
//!
//! Layouts are row-major `[n_mels, frames]` (torchaudio's `(..., n_mels, time)`).
//!
//! Checked against torchaudio run in `float64` throughout (filterbank included): equal up to
//! the final `f32` rounding. torchaudio's default `float32` filterbank rounds the filter edges,
//! which moves quiet bands of its log-mel by up to ~3e-4 from the exact values computed here.
//!
//! Short clips: with `center = true`, torch's reflect padding needs more than `n_fft / 2`
//! samples and raises an error otherwise. [`MelSpectrogram::try_mel_power`] and
//! [`MelSpectrogram::try_log_mel`] return that error; [`MelSpectrogram::mel_power`] and
//! [`MelSpectrogram::log_mel`] instead reflect repeatedly, as `numpy.pad(mode="reflect")`
//! (and so librosa with `pad_mode="reflect"`) does, and treat an empty clip as one zero
//! sample. They never panic.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use serde::{Deserialize, Serialize};

/// The mel scale: HTK (`2595 log10(1 + f/700)`) or Slaney (linear below 1 kHz, logarithmic
/// above), as in torchaudio's `mel_scale` / librosa's `htk` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MelScale {
    Htk,
    Slaney,
}

/// Analysis window, periodic (like `torch.hann_window(n)` / librosa's `"hann"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Hann,
    Hamming,
}

/// Settings of a [`MelSpectrogram`]; the names and defaults follow torchaudio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MelConfig {
    /// Hz of the input samples.
    pub sample_rate: u32,
    /// FFT size; the spectrum has `n_fft / 2 + 1` bins.
    pub n_fft: usize,
    /// Window length; `None` means `n_fft`. A shorter window is zero-padded centrally to
    /// `n_fft`, as `torch.stft` and librosa do.
    pub win_length: Option<usize>,
    /// Samples between frames.
    pub hop_length: usize,
    /// Number of mel filters.
    pub n_mels: usize,
    /// Lowest filter edge, Hz.
    pub f_min: f32,
    /// Highest filter edge, Hz; `None` means `sample_rate / 2`.
    pub f_max: Option<f32>,
    pub mel_scale: MelScale,
    /// Slaney area normalisation of each filter (torchaudio / librosa `norm="slaney"`).
    pub slaney_norm: bool,
    pub window: Window,
    /// Reflect-pad `n_fft / 2` samples on each side so frame `t` is centred on `t * hop`.
    pub center: bool,
    /// Exponent of the magnitude: 2 for power, 1 for magnitude.
    pub power: f32,
    /// Added before the logarithm: `log_mel = ln(mel + log_offset)`.
    pub log_offset: f32,
}

impl Default for MelConfig {
    fn default() -> Self {
        MelConfig {
            sample_rate: 16000,
            n_fft: 400,
            win_length: None,
            hop_length: 160,
            n_mels: 64,
            f_min: 0.0,
            f_max: None,
            mel_scale: MelScale::Htk,
            slaney_norm: false,
            window: Window::Hann,
            center: true,
            power: 2.0,
            log_offset: 1e-6,
        }
    }
}

impl MelConfig {
    /// The window length in effect.
    pub fn win_length(&self) -> usize {
        self.win_length.unwrap_or(self.n_fft)
    }

    /// The upper filter edge in effect (torchaudio: `sample_rate // 2`).
    pub fn f_max(&self) -> f64 {
        self.f_max
            .map(|f| f as f64)
            .unwrap_or((self.sample_rate / 2) as f64)
    }

    /// Checks the settings; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.sample_rate == 0 {
            return Err("sample_rate must be positive".into());
        }
        if self.n_fft < 2 {
            return Err(format!("n_fft must be at least 2, got {}", self.n_fft));
        }
        if self.hop_length == 0 {
            return Err("hop_length must be positive".into());
        }
        let win = self.win_length();
        if win == 0 || win > self.n_fft {
            return Err(format!(
                "win_length must be in 1..=n_fft ({}), got {win}",
                self.n_fft
            ));
        }
        if self.n_mels == 0 {
            return Err("n_mels must be positive".into());
        }
        let nyquist = self.sample_rate as f64 / 2.0;
        let f_max = self.f_max();
        if !(self.f_min.is_finite() && self.f_min >= 0.0) {
            return Err(format!("f_min must be >= 0, got {}", self.f_min));
        }
        if !(f_max.is_finite() && f_max > self.f_min as f64 && f_max <= nyquist) {
            return Err(format!(
                "f_max must be in (f_min, sample_rate/2] = ({}, {nyquist}], got {f_max}",
                self.f_min
            ));
        }
        if !(self.power.is_finite() && self.power > 0.0) {
            return Err(format!("power must be positive, got {}", self.power));
        }
        if !(self.log_offset.is_finite() && self.log_offset >= 0.0) {
            return Err(format!("log_offset must be >= 0, got {}", self.log_offset));
        }
        Ok(())
    }
}

fn hz_to_mel(f: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + f / 700.0).log10(),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let (min_log_hz, min_log_mel) = (1000.0, 15.0);
            let logstep = 6.4f64.ln() / 27.0;
            if f >= min_log_hz {
                min_log_mel + (f / min_log_hz).ln() / logstep
            } else {
                f / f_sp
            }
        }
    }
}

fn mel_to_hz(m: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(m / 2595.0) - 1.0),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let (min_log_hz, min_log_mel) = (1000.0, 15.0);
            let logstep = 6.4f64.ln() / 27.0;
            if m >= min_log_mel {
                min_log_hz * (logstep * (m - min_log_mel)).exp()
            } else {
                f_sp * m
            }
        }
    }
}

/// `torchaudio.functional.melscale_fbanks`, transposed to `[n_mels, n_freqs]`.
fn melscale_fbanks(cfg: &MelConfig) -> Vec<f64> {
    let n_freqs = cfg.n_fft / 2 + 1;
    let n_mels = cfg.n_mels;
    let top = (cfg.sample_rate / 2) as f64;
    let all_freqs: Vec<f64> = (0..n_freqs)
        .map(|i| {
            if n_freqs == 1 {
                0.0
            } else {
                top * i as f64 / (n_freqs - 1) as f64
            }
        })
        .collect();
    let m_min = hz_to_mel(cfg.f_min as f64, cfg.mel_scale);
    let m_max = hz_to_mel(cfg.f_max(), cfg.mel_scale);
    let f_pts: Vec<f64> = (0..n_mels + 2)
        .map(|i| {
            let m = m_min + (m_max - m_min) * i as f64 / (n_mels + 1) as f64;
            mel_to_hz(m, cfg.mel_scale)
        })
        .collect();
    let mut fb = vec![0.0; n_mels * n_freqs];
    for m in 0..n_mels {
        let (lo, c, hi) = (f_pts[m], f_pts[m + 1], f_pts[m + 2]);
        let enorm = if cfg.slaney_norm {
            2.0 / (hi - lo)
        } else {
            1.0
        };
        for (k, &f) in all_freqs.iter().enumerate() {
            let down = (f - lo) / (c - lo);
            let up = (hi - f) / (hi - c);
            fb[m * n_freqs + k] = down.min(up).max(0.0) * enorm;
        }
    }
    fb
}

/// `x` padded by `pad` samples each side with `numpy.pad(mode="reflect")` semantics (edge
/// sample not repeated; reflects again when `pad` exceeds the length).
fn reflect_pad(x: &[f64], pad: usize) -> Vec<f64> {
    let n = x.len() as i64;
    let idx = |i: i64| -> usize {
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - j;
        }
        j as usize
    };
    (-(pad as i64)..n + pad as i64).map(|i| x[idx(i)]).collect()
}

/// A mel spectrogram extractor: window, filterbank and FFT plan, computed once.
#[derive(Clone)]
pub struct MelSpectrogram {
    cfg: MelConfig,
    /// Length `n_fft` (the window, zero-padded centrally).
    window: Vec<f64>,
    /// `[n_mels, n_fft/2+1]`.
    fb: Vec<f64>,
    fb_f32: Vec<f32>,
    /// Per filter, the range of bins with non-zero weight.
    support: Vec<(usize, usize)>,
    fft: Arc<dyn Fft<f64>>,
}

impl std::fmt::Debug for MelSpectrogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelSpectrogram")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl MelSpectrogram {
    /// Precomputes the window, filterbank and FFT plan; fails if the config does not validate.
    pub fn new(cfg: &MelConfig) -> Result<Self, String> {
        cfg.validate()?;
        let n_fft = cfg.n_fft;
        let win = cfg.win_length();
        let left = (n_fft - win) / 2;
        let mut window = vec![0.0; n_fft];
        for i in 0..win {
            let c = (2.0 * std::f64::consts::PI * i as f64 / win as f64).cos();
            window[left + i] = match cfg.window {
                Window::Hann => 0.5 - 0.5 * c,
                Window::Hamming => 0.54 - 0.46 * c,
            };
        }
        let fb = melscale_fbanks(cfg);
        let n_freqs = n_fft / 2 + 1;
        let support = fb
            .chunks_exact(n_freqs)
            .map(|row| {
                let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w != 0.0).map_or(0, |e| e + 1);
                (start, end.max(start))
            })
            .collect();
        Ok(MelSpectrogram {
            cfg: cfg.clone(),
            window,
            fb_f32: fb.iter().map(|&w| w as f32).collect(),
            fb,
            support,
            fft: FftPlanner::new().plan_fft_forward(n_fft),
        })
    }

    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Number of frames for `n` samples (center: `1 + n / hop`; else
    /// `1 + (n - n_fft) / hop`, 0 if shorter than `n_fft`).
    pub fn frames(&self, n: usize) -> usize {
        if self.cfg.center {
            1 + n / self.cfg.hop_length
        } else if n < self.cfg.n_fft {
            0
        } else {
            1 + (n - self.cfg.n_fft) / self.cfg.hop_length
        }
    }

    /// The mel filterbank, row-major `[n_mels, n_fft/2+1]`.
    pub fn filterbank(&self) -> &[f32] {
        &self.fb_f32
    }

    /// Mel power spectrogram (before log), row-major `[n_mels, frames]`. See the module
    /// documentation for clips of `n_fft / 2` samples or fewer.
    pub fn mel_power(&self, samples: &[f32]) -> Vec<f32> {
        self.compute(samples)
    }

    /// `ln(mel + log_offset)`, row-major `[n_mels, frames]`.
    pub fn log_mel(&self, samples: &[f32]) -> Vec<f32> {
        let offset = self.cfg.log_offset as f64;
        self.compute_f64(samples)
            .into_iter()
            .map(|m| (m + offset).ln() as f32)
            .collect()
    }

    /// Like [`Self::mel_power`], but errs where torch does: with `center`, a clip must have
    /// more than `n_fft / 2` samples for reflect padding.
    pub fn try_mel_power(&self, samples: &[f32]) -> Result<Vec<f32>, String> {
        self.check_len(samples.len())?;
        Ok(self.mel_power(samples))
    }

    /// Like [`Self::log_mel`], with [`Self::try_mel_power`]'s length check.
    pub fn try_log_mel(&self, samples: &[f32]) -> Result<Vec<f32>, String> {
        self.check_len(samples.len())?;
        Ok(self.log_mel(samples))
    }

    fn check_len(&self, n: usize) -> Result<(), String> {
        let pad = self.cfg.n_fft / 2;
        if self.cfg.center && n <= pad {
            return Err(format!(
                "clip of {n} samples is too short for reflect padding of {pad} (needs more than n_fft/2 = {pad})"
            ));
        }
        Ok(())
    }

    fn compute(&self, samples: &[f32]) -> Vec<f32> {
        self.compute_f64(samples)
            .into_iter()
            .map(|m| m as f32)
            .collect()
    }

    fn compute_f64(&self, samples: &[f32]) -> Vec<f64> {
        let cfg = &self.cfg;
        let n_fft = cfg.n_fft;
        let n_freqs = n_fft / 2 + 1;
        let frames = self.frames(samples.len());
        let x: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        let padded = if cfg.center {
            let x = if x.is_empty() { vec![0.0] } else { x };
            reflect_pad(&x, n_fft / 2)
        } else {
            x
        };
        let mut out = vec![0.0f64; cfg.n_mels * frames];
        let mut buf = vec![Complex::new(0.0, 0.0); n_fft];
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        let mut spec = vec![0.0f64; n_freqs];
        let power = cfg.power as f64;
        for t in 0..frames {
            let start = t * cfg.hop_length;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = Complex::new(padded[start + i] * self.window[i], 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (s, b) in spec.iter_mut().zip(&buf) {
                let p = b.norm_sqr();
                *s = if power == 2.0 {
                    p
                } else if power == 1.0 {
                    p.sqrt()
                } else {
                    p.powf(power / 2.0)
                };
            }
            for (m, &(lo, hi)) in self.support.iter().enumerate() {
                let row = &self.fb[m * n_freqs..(m + 1) * n_freqs];
                out[m * frames + t] = (lo..hi).map(|k| row[k] * spec[k]).sum();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_shapes() {
        let mel = MelSpectrogram::new(&MelConfig::default()).unwrap();
        assert_eq!(mel.frames(16000), 101);
        assert_eq!(mel.mel_power(&vec![0.1; 16000]).len(), 64 * 101);
        assert_eq!(mel.filterbank().len(), 64 * 201);
        let cfg = MelConfig {
            center: false,
            ..MelConfig::default()
        };
        let mel = MelSpectrogram::new(&cfg).unwrap();
        assert_eq!(mel.frames(399), 0);
        assert_eq!(mel.frames(400), 1);
        assert_eq!(mel.frames(720), 3);
        assert!(mel.log_mel(&[0.0; 10]).is_empty());
    }

    #[test]
    fn short_clips_do_not_panic() {
        let mel = MelSpectrogram::new(&MelConfig::default()).unwrap();
        for n in [0, 1, 2, 150, 200, 201] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
            let out = mel.log_mel(&x);
            assert_eq!(out.len(), 64 * mel.frames(n));
            assert!(out.iter().all(|v| v.is_finite()));
            assert_eq!(mel.try_log_mel(&x).is_ok(), n > 200, "n = {n}");
        }
    }

    #[test]
    fn reflect_pad_matches_numpy() {
        // numpy.pad([1, 2, 3], 5, mode="reflect") = [2 1 2 3 2 | 1 2 3 | 2 1 2 3 2]
        let p = reflect_pad(&[1.0, 2.0, 3.0], 5);
        assert_eq!(p, vec![2., 1., 2., 3., 2., 1., 2., 3., 2., 1., 2., 3., 2.]);
    }

    #[test]
    fn mel_scale_roundtrip_and_validation() {
        for s in [MelScale::Htk, MelScale::Slaney] {
            for f in [0.0, 440.0, 1000.0, 7999.0] {
                assert!((mel_to_hz(hz_to_mel(f, s), s) - f).abs() < 1e-6);
            }
        }
        let bad = MelConfig {
            f_max: Some(9000.0),
            ..MelConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("f_max"));
        let bad = MelConfig {
            win_length: Some(500),
            ..MelConfig::default()
        };
        assert!(MelSpectrogram::new(&bad).is_err());
        let cfg: MelConfig =
            serde_json::from_str(r#"{"mel_scale": "slaney", "window": "hamming"}"#).unwrap();
        assert_eq!(cfg.mel_scale, MelScale::Slaney);
        assert!(serde_json::from_str::<MelConfig>(r#"{"nfft": 3}"#).is_err());
    }
}
