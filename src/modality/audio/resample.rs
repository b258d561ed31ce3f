//! Sample-rate conversion with rubato's band-limited sinc interpolator.

use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use super::wav::{read_wav, Waveform};
use crate::error::{Error, Result};

/// Resamples the whole clip to `rate` Hz. Returns a clone when the rates are equal; otherwise
/// uses rubato's synchronous resampler (a Blackman-Harris windowed-sinc low-pass below the
/// lower Nyquist frequency, applied by FFT) with its delay trimmed, so output sample `i` lines
/// up with input time `i / rate`. The output has `round(n * rate / sample_rate)` samples.
pub fn resample(w: &Waveform, rate: u32) -> Result<Waveform> {
    let fail = |msg: String| {
        Error::Usage(format!(
            "resampling {} Hz -> {rate} Hz: {msg}",
            w.sample_rate
        ))
    };
    if rate == 0 || w.sample_rate == 0 {
        return Err(fail("sample rates must be positive".into()));
    }
    if rate == w.sample_rate {
        return Ok(w.clone());
    }
    let n = w.samples.len();
    let out_len = ((n as f64 * rate as f64) / w.sample_rate as f64).round() as usize;
    if n == 0 {
        return Ok(Waveform {
            samples: Vec::new(),
            sample_rate: rate,
        });
    }
    // rubato's synchronous FFT resampler (windowed-sinc low-pass applied by FFT). Its FFT
    // sizes are `c * rate / gcd`; `c` is kept even so that the filter's delay is a whole number
    // of samples on both sides and trimming it leaves no fractional time shift.
    let (sr_in, sr_out) = (w.sample_rate as usize, rate as usize);
    let min_in = sr_in / gcd(sr_in, sr_out);
    let c = 2 * 1024usize.div_ceil(2 * min_in);
    let mut rs = Fft::<f64>::new_custom(
        sr_in,
        sr_out,
        c * min_in,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|e| fail(e.to_string()))?;
    let input: Vec<f64> = w.samples.iter().map(|&x| x as f64).collect();
    let adapter = InterleavedSlice::new(&input, 1, n).map_err(|e| fail(e.to_string()))?;
    let out = rs
        .process_all(&adapter, n, None)
        .map_err(|e| fail(e.to_string()))?;
    let mut samples: Vec<f32> = out.take_data().into_iter().map(|x| x as f32).collect();
    samples.resize(out_len, 0.0);
    Ok(Waveform {
        samples,
        sample_rate: rate,
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Reads a WAV ([`read_wav`]) and resamples it to `rate` ([`resample`]). Errors name the file.
pub fn load_clip(path: &Path, rate: u32) -> Result<Vec<f32>> {
    let w = read_wav(path)?;
    let out = w.samples.len() as u128 * rate as u128 / w.sample_rate.max(1) as u128;
    crate::limits::check(4 * out, "resampling this clip").map_err(|m| Error::data(path, m))?;
    resample(&w, rate)
        .map(|w| w.samples)
        .map_err(|e| Error::data(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustfft::{num_complex::Complex, FftPlanner};

    fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Waveform {
        Waveform {
            samples: (0..n)
                .map(|i| {
                    (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin())
                        as f32
                })
                .collect(),
            sample_rate: rate,
        }
    }

    fn peak_hz(w: &Waveform) -> f64 {
        let n = w.samples.len();
        let mut buf: Vec<Complex<f64>> = w
            .samples
            .iter()
            .map(|&x| Complex::new(x as f64, 0.0))
            .collect();
        FftPlanner::new().plan_fft_forward(n).process(&mut buf);
        let (k, _) = buf[..n / 2]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.norm().total_cmp(&b.1.norm()))
            .unwrap();
        k as f64 * w.sample_rate as f64 / n as f64
    }

    #[test]
    fn sine_44k1_to_16k_keeps_frequency_and_amplitude() {
        let w = sine(440.0, 44100, 44100, 0.5);
        let r = resample(&w, 16000).unwrap();
        assert_eq!(r.samples.len(), 16000);
        assert_eq!(r.sample_rate, 16000);
        assert!((peak_hz(&r) - 440.0).abs() <= 1.0, "{}", peak_hz(&r));
        let want = sine(440.0, 16000, 16000, 0.5);
        // Away from the edges, the output is the sine sampled at 16 kHz.
        let errs: Vec<f32> = r.samples[200..15800]
            .iter()
            .zip(&want.samples[200..15800])
            .map(|(a, b)| (a - b).abs())
            .collect();
        let err = errs.iter().cloned().fold(0.0f32, f32::max);
        assert!(err < 1e-3, "max error {err}");
        let peak = r.samples[200..15800]
            .iter()
            .fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((peak - 0.5).abs() < 2e-3, "{peak}");
    }

    #[test]
    fn upsample_doubles_length() {
        let w = sine(300.0, 8000, 8001, 0.3);
        let r = resample(&w, 16000).unwrap();
        assert_eq!(r.samples.len(), 16002);
        assert!((peak_hz(&r) - 300.0).abs() <= 2.0);
    }

    #[test]
    fn identity_and_tiny_clips() {
        let w = sine(300.0, 8000, 10, 0.3);
        assert_eq!(resample(&w, 8000).unwrap(), w);
        assert_eq!(resample(&w, 16000).unwrap().samples.len(), 20);
        let empty = Waveform {
            samples: vec![],
            sample_rate: 8000,
        };
        assert!(resample(&empty, 16000).unwrap().samples.is_empty());
        assert!(resample(&w, 0).is_err());
    }
}
