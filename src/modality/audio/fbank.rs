//! Kaldi-compatible log mel filter banks, computed as `torchaudio.compliance.kaldi.fbank`
//! does (the features of AST and Audio-MAE), with dither 0, `snip_edges = true`, no energy
//! term, no VTLN warping and no mean subtraction.
//!
//! Per frame of `frame_length_ms` every `frame_shift_ms`: scale by `waveform_scale`, remove
//! the DC offset, pre-emphasise, apply a symmetric window (Povey, Hanning or Hamming),
//! zero-pad to a power of two, take `|FFT|` (squared with `use_power`), apply Kaldi's
//! triangular mel bins (`1127 ln(1 + f/700)`, equally spaced between `low_freq` and
//! `high_freq`, no filter on the Nyquist bin) and take `ln(max(e, f32::EPSILON))`.
//!
//! AST multiplies the `[-1, 1]` waveform by 32768 before `fbank`; pass the samples as they
//! come from [`super::wav::read_wav`] and let `waveform_scale` (default 32768) do that.
//! The output is row-major `[frames, num_mel_bins]`: time-major, as Kaldi and torchaudio
//! lay it out (unlike [`super::mel`], which is `[n_mels, frames]`).

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};

/// Kaldi's window functions; all symmetric (`torch.*_window(periodic=False)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KaldiWindow {
    /// Hann raised to the power 0.85 (Kaldi's default).
    Povey,
    /// Hann (`window_type="hanning"`, used by AST).
    Hanning,
    Hamming,
}

/// Settings of [`fbank`]; defaults are AST's (`num_mel_bins=128`, `window_type="hanning"`),
/// otherwise Kaldi's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FbankConfig {
    /// Hz of the input samples.
    pub sample_rate: u32,
    pub num_mel_bins: usize,
    pub frame_length_ms: f32,
    pub frame_shift_ms: f32,
    pub window: KaldiWindow,
    /// Pre-emphasis coefficient in [0, 1].
    pub preemphasis: f32,
    pub remove_dc_offset: bool,
    /// Zero-pad each frame to the next power of two before the FFT.
    pub round_to_power_of_two: bool,
    /// Lowest mel bin edge, Hz.
    pub low_freq: f32,
    /// Highest mel bin edge, Hz; 0 means Nyquist, negative is an offset from Nyquist.
    pub high_freq: f32,
    /// Natural log of the energies (floored at `f32::EPSILON`); otherwise the energies.
    pub use_log_fbank: bool,
    /// Power spectrum (`|X|^2`); otherwise magnitude.
    pub use_power: bool,
    /// Multiplies the samples first (32768 turns [-1, 1] into Kaldi's int16 range).
    pub waveform_scale: f32,
}

impl Default for FbankConfig {
    fn default() -> Self {
        FbankConfig {
            sample_rate: 16000,
            num_mel_bins: 128,
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            window: KaldiWindow::Hanning,
            preemphasis: 0.97,
            remove_dc_offset: true,
            round_to_power_of_two: true,
            low_freq: 20.0,
            high_freq: 0.0,
            use_log_fbank: true,
            use_power: true,
            waveform_scale: 32768.0,
        }
    }
}

/// Frame sizes in samples: (window, shift, padded window), as torchaudio computes them.
struct Sizes {
    window: usize,
    shift: usize,
    padded: usize,
}

impl FbankConfig {
    fn sizes(&self) -> Sizes {
        let sr = self.sample_rate as f64;
        // torchaudio: int(sample_frequency * frame_length * 0.001)
        let window = (sr * self.frame_length_ms as f64 * 0.001).max(0.0) as usize;
        let shift = (sr * self.frame_shift_ms as f64 * 0.001).max(0.0) as usize;
        let padded = if self.round_to_power_of_two {
            window.max(1).next_power_of_two()
        } else {
            window
        };
        Sizes {
            window,
            shift,
            padded,
        }
    }

    /// The upper bin edge in effect.
    fn high_freq(&self) -> f64 {
        let nyquist = 0.5 * self.sample_rate as f64;
        if self.high_freq <= 0.0 {
            self.high_freq as f64 + nyquist
        } else {
            self.high_freq as f64
        }
    }

    /// Number of frames for `n` samples (`snip_edges`: whole frames only).
    pub fn frames(&self, n: usize) -> usize {
        let s = self.sizes();
        if s.shift == 0 || s.window == 0 || n < s.window {
            0
        } else {
            1 + (n - s.window) / s.shift
        }
    }

    /// Checks the settings as torchaudio does; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.sample_rate == 0 {
            return Err("sample_rate must be positive".into());
        }
        let s = self.sizes();
        if s.window < 2 {
            return Err(format!(
                "frame_length_ms {} gives a window of {} samples; at least 2 are needed",
                self.frame_length_ms, s.window
            ));
        }
        if s.shift == 0 {
            return Err(format!(
                "frame_shift_ms {} gives a shift of 0 samples",
                self.frame_shift_ms
            ));
        }
        if !s.padded.is_multiple_of(2) {
            return Err(format!(
                "the padded window ({} samples) must be even: set round_to_power_of_two or change frame_length_ms",
                s.padded
            ));
        }
        if !(0.0..=1.0).contains(&self.preemphasis) {
            return Err(format!(
                "preemphasis must be in [0, 1], got {}",
                self.preemphasis
            ));
        }
        if self.num_mel_bins <= 3 {
            return Err(format!(
                "num_mel_bins must be more than 3, got {}",
                self.num_mel_bins
            ));
        }
        let nyquist = 0.5 * self.sample_rate as f64;
        let (lo, hi) = (self.low_freq as f64, self.high_freq());
        if !(0.0 <= lo && lo < nyquist && 0.0 < hi && hi <= nyquist && lo < hi) {
            return Err(format!(
                "bad low_freq {lo} / high_freq {hi} (from {}) for Nyquist {nyquist}",
                self.high_freq
            ));
        }
        if !self.waveform_scale.is_finite() {
            return Err("waveform_scale must be finite".into());
        }
        Ok(())
    }
}

fn mel_scale(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

/// Kaldi's mel bins (`get_mel_banks` without VTLN), `[num_mel_bins, padded/2]`.
///
/// torchaudio builds these in `float32` whatever the waveform's dtype, and the rounding of
/// the triangle edges shows in quiet bands (up to ~1e-4 in log energy), so this follows its
/// arithmetic step by step in `f32`: scalars (`mel_low`, `delta`) in `f64` as Python floats,
/// tensors in `f32`.
fn mel_banks(cfg: &FbankConfig, padded: usize) -> Vec<f64> {
    let num_fft_bins = padded / 2;
    let bin_width = (cfg.sample_rate as f64 / padded as f64) as f32;
    let mel_low = mel_scale(cfg.low_freq as f64);
    let mel_high = mel_scale(cfg.high_freq());
    let delta = ((mel_high - mel_low) / (cfg.num_mel_bins + 1) as f64) as f32;
    let mel_low = mel_low as f32;
    // mel_scale(fft_bin_width * arange(num_fft_bins)) in float32
    let mel: Vec<f32> = (0..num_fft_bins)
        .map(|k| 1127.0f32 * (1.0f32 + (bin_width * k as f32) / 700.0f32).ln())
        .collect();
    let mut banks = vec![0.0; cfg.num_mel_bins * num_fft_bins];
    for b in 0..cfg.num_mel_bins {
        let left = mel_low + b as f32 * delta;
        let center = mel_low + (b as f32 + 1.0) * delta;
        let right = mel_low + (b as f32 + 2.0) * delta;
        for (k, &m) in mel.iter().enumerate() {
            let up = (m - left) / (center - left);
            let down = (right - m) / (right - center);
            banks[b * num_fft_bins + k] = up.min(down).max(0.0) as f64;
        }
    }
    banks
}

fn window(kind: KaldiWindow, n: usize) -> Vec<f64> {
    let two_pi = 2.0 * std::f64::consts::PI;
    (0..n)
        .map(|i| {
            let c = (two_pi * i as f64 / (n - 1) as f64).cos();
            match kind {
                KaldiWindow::Hanning => 0.5 - 0.5 * c,
                KaldiWindow::Povey => (0.5 - 0.5 * c).powf(0.85),
                KaldiWindow::Hamming => 0.54 - 0.46 * c,
            }
        })
        .collect()
}

/// Kaldi fbank features of `samples` (see the module documentation), row-major
/// `[frames, num_mel_bins]` with `frames = 1 + (n - window) / shift`. Errs on an invalid
/// config or, as torchaudio does, when the clip is shorter than one window.
pub fn fbank(samples: &[f32], cfg: &FbankConfig) -> Result<Vec<f32>, String> {
    cfg.validate()?;
    let s = cfg.sizes();
    if samples.len() < s.window {
        return Err(format!(
            "clip of {} samples is shorter than one {} ms window ({} samples)",
            samples.len(),
            cfg.frame_length_ms,
            s.window
        ));
    }
    let frames = cfg.frames(samples.len());
    let bins = cfg.num_mel_bins;
    let num_fft_bins = s.padded / 2;
    let banks = mel_banks(cfg, s.padded);
    let win = window(cfg.window, s.window);
    let fft = FftPlanner::<f64>::new().plan_fft_forward(s.padded);
    let mut scratch = vec![Complex::new(0.0, 0.0); fft.get_inplace_scratch_len()];
    let mut buf = vec![Complex::new(0.0, 0.0); s.padded];
    let mut frame = vec![0.0f64; s.window];
    let mut spec = vec![0.0f64; num_fft_bins];
    let scale = cfg.waveform_scale as f64;
    let pre = cfg.preemphasis as f64;
    let mut out = Vec::with_capacity(frames * bins);
    for t in 0..frames {
        let start = t * s.shift;
        for (f, &x) in frame.iter_mut().zip(&samples[start..start + s.window]) {
            *f = x as f64 * scale;
        }
        if cfg.remove_dc_offset {
            let mean = frame.iter().sum::<f64>() / s.window as f64;
            frame.iter_mut().for_each(|f| *f -= mean);
        }
        if pre != 0.0 {
            for i in (1..s.window).rev() {
                frame[i] -= pre * frame[i - 1];
            }
            frame[0] -= pre * frame[0];
        }
        buf.fill(Complex::new(0.0, 0.0));
        for ((b, &f), &w) in buf.iter_mut().zip(&frame).zip(&win) {
            *b = Complex::new(f * w, 0.0);
        }
        fft.process_with_scratch(&mut buf, &mut scratch);
        for (sp, b) in spec.iter_mut().zip(&buf) {
            let p = b.norm_sqr();
            *sp = if cfg.use_power { p } else { p.sqrt() };
        }
        for b in 0..bins {
            let row = &banks[b * num_fft_bins..(b + 1) * num_fft_bins];
            let e: f64 = row.iter().zip(&spec).map(|(w, p)| w * p).sum();
            out.push(if cfg.use_log_fbank {
                e.max(f32::EPSILON as f64).ln() as f32
            } else {
                e as f32
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_frames() {
        let cfg = FbankConfig::default();
        let s = cfg.sizes();
        assert_eq!((s.window, s.shift, s.padded), (400, 160, 512));
        assert_eq!(cfg.frames(16000), 98);
        assert_eq!(cfg.frames(399), 0);
        assert_eq!(fbank(&vec![0.0; 16000], &cfg).unwrap().len(), 98 * 128);
        assert!(fbank(&[0.1; 399], &cfg).unwrap_err().contains("shorter"));
        // Silence floors at ln(f32::EPSILON).
        let silent = fbank(&[0.0; 400], &cfg).unwrap();
        assert!(silent
            .iter()
            .all(|&v| v == (f32::EPSILON as f64).ln() as f32));
    }

    #[test]
    fn validation() {
        let bad = |c: FbankConfig, what: &str| {
            let e = c.validate().unwrap_err();
            assert!(e.contains(what), "{e}");
        };
        let d = FbankConfig::default;
        bad(
            FbankConfig {
                num_mel_bins: 3,
                ..d()
            },
            "num_mel_bins",
        );
        bad(
            FbankConfig {
                preemphasis: 1.5,
                ..d()
            },
            "preemphasis",
        );
        bad(
            FbankConfig {
                high_freq: 9000.0,
                ..d()
            },
            "high_freq",
        );
        bad(
            FbankConfig {
                low_freq: 8000.0,
                ..d()
            },
            "low_freq",
        );
        bad(
            FbankConfig {
                frame_shift_ms: 0.01,
                ..d()
            },
            "frame_shift_ms",
        );
        bad(
            FbankConfig {
                frame_length_ms: 25.0625,
                round_to_power_of_two: false,
                ..d()
            },
            "even",
        );
        let c: FbankConfig = serde_json::from_str(r#"{"window": "povey"}"#).unwrap();
        assert_eq!(c.window, KaldiWindow::Povey);
        assert!(serde_json::from_str::<FbankConfig>(r#"{"bins": 3}"#).is_err());
    }
}
