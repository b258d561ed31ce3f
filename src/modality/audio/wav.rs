//! WAV files in and out, through `hound`.
//!
//! [`read_wav`] accepts 8/16/24/32-bit integer PCM and 32-bit float, plain or
//! `WAVE_FORMAT_EXTENSIBLE`, any channel count (mixed down to mono as the mean of the
//! channels). Integers are scaled the way libsndfile (soundfile, librosa) and torchaudio do:
//! by 2^(bits-1) of the storage container, so 16-bit `-32768` is `-1.0` and `32767` is
//! `32767/32768`; 8-bit WAV data is unsigned with offset 128 (`(x-128)/128`).

use std::path::Path;

use crate::error::{Error, Result};

/// Mono samples in [-1, 1] at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Waveform {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Waveform {
    /// Length in seconds.
    pub fn duration_secs(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.samples.len() as f64 / self.sample_rate as f64
    }
}

/// Turns a hound error into one naming the file and the reason.
fn wav_error(path: &Path, e: hound::Error) -> Error {
    match e {
        // The file opened, so a read error here means it ends early (hound reports a short
        // read as a plain io error, not always `UnexpectedEof`).
        hound::Error::IoError(io) => Error::data(
            path,
            format!("truncated WAV file (ends inside the header or sample data: {io})"),
        ),
        hound::Error::FormatError(msg) => Error::data(path, format!("not a valid WAV file: {msg}")),
        hound::Error::Unsupported => Error::data(
            path,
            "unsupported WAV format (supported: 8/16/24/32-bit integer PCM, 32-bit float)",
        ),
        hound::Error::TooWide => Error::data(path, "unsupported WAV sample width (over 32 bits)"),
        other => Error::data(path, format!("cannot decode WAV: {other}")),
    }
}

/// The sample rates a WAV may declare: below 1 kHz is no recording of speech or sound
/// (and resampling it up would multiply its size), above 768 kHz no audio format.
pub const MIN_RATE: u32 = 1000;
pub const MAX_RATE: u32 = 768_000;

/// Reads a WAV with hound: 8/16/24/32-bit integer PCM and 32-bit float; multi-channel is
/// mixed down (mean of channels). Errors (`Error::Data` / `Error::Io`) name the file and the
/// reason: not a WAV, truncated, unsupported format (such as 64-bit float), zero channels,
/// zero sample rate, no samples. Never panics.
pub fn read_wav(path: &Path) -> Result<Waveform> {
    let file = crate::input::open(path)?;
    if file.metadata().map(|m| m.len() == 0).unwrap_or(false) {
        return Err(Error::data(path, "empty file (0 bytes), not a WAV"));
    }
    let reader =
        hound::WavReader::new(std::io::BufReader::new(file)).map_err(|e| wav_error(path, e))?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    if channels == 0 {
        return Err(Error::data(path, "WAV header declares zero channels"));
    }
    if !(MIN_RATE..=MAX_RATE).contains(&spec.sample_rate) {
        return Err(Error::data(
            path,
            format!(
                "WAV header declares a sample rate of {} Hz; pretext reads {MIN_RATE} to {MAX_RATE} Hz",
                spec.sample_rate
            ),
        ));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(Error::data(
                    path,
                    format!(
                        "unsupported WAV format: {}-bit float (only 32-bit float is read)",
                        spec.bits_per_sample
                    ),
                ));
            }
            reader
                .into_samples::<f32>()
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| wav_error(path, e))?
        }
        hound::SampleFormat::Int => {
            // hound reads 8, 16, 24 (in 3 or 4 bytes) and 32 bits, returning each sample in
            // the range of its bit depth (8-bit already made signed, `x - 128`), and rejects
            // other layouts as unsupported; so the scale is 2^(bits-1), as in libsndfile.
            let bits = spec.bits_per_sample as u32;
            if !matches!(bits, 8 | 16 | 24 | 32) {
                return Err(Error::data(
                    path,
                    format!("unsupported WAV format: {bits}-bit integer (8/16/24/32 are read)"),
                ));
            }
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| (v as f64 * scale) as f32))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| wav_error(path, e))?
        }
    };
    if interleaved.is_empty() {
        return Err(Error::data(path, "WAV file holds no samples (empty)"));
    }
    if let Some(i) = interleaved.iter().position(|v| !v.is_finite()) {
        return Err(Error::data(
            path,
            format!("sample {i} is NaN or infinite (a float WAV must hold finite values)"),
        ));
    }
    if !interleaved.len().is_multiple_of(channels) {
        return Err(Error::data(
            path,
            "truncated WAV file (last frame is incomplete)",
        ));
    }
    let samples = if channels == 1 {
        interleaved
    } else {
        interleaved
            .chunks_exact(channels)
            .map(|frame| (frame.iter().map(|&x| x as f64).sum::<f64>() / channels as f64) as f32)
            .collect()
    };
    Ok(Waveform {
        samples,
        sample_rate: spec.sample_rate,
    })
}

/// Writes 16-bit PCM mono (used by tests and scripts). Samples are clamped to [-1, 1] and
/// scaled by 32768 (rounded, `1.0` saturating at 32767), the inverse of [`read_wav`].
pub fn write_wav_i16(path: &Path, w: &Waveform) -> Result<()> {
    if w.sample_rate == 0 {
        return Err(Error::data(path, "cannot write a WAV with sample rate 0"));
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: w.sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let write = || -> std::result::Result<(), hound::Error> {
        let mut writer = hound::WavWriter::create(path, spec)?;
        for &x in &w.samples {
            // NaN clamps to NaN and casts to 0.
            let v = (x.clamp(-1.0, 1.0) as f64 * 32768.0).round();
            writer.write_sample(v.clamp(-32768.0, 32767.0) as i16)?;
        }
        writer.finalize()
    };
    write().map_err(|e| match e {
        hound::Error::IoError(io) => Error::io(path, io),
        other => Error::data(path, format!("cannot write WAV: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_i16() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let w = Waveform {
            samples: vec![0.0, 0.5, -0.5, -1.0, 32767.0 / 32768.0],
            sample_rate: 8000,
        };
        write_wav_i16(&p, &w).unwrap();
        assert_eq!(read_wav(&p).unwrap(), w);
    }

    #[test]
    fn missing_file_names_it() {
        let e = read_wav(Path::new("/nonexistent/x.wav")).unwrap_err();
        assert!(e.to_string().contains("x.wav"), "{e}");
    }

    #[test]
    fn absurd_rates_and_non_finite_samples_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let slow = dir.path().join("slow.wav");
        let w = Waveform {
            samples: vec![0.1; 2000],
            sample_rate: 1,
        };
        write_wav_i16(&slow, &w).unwrap();
        let err = read_wav(&slow).unwrap_err().to_string();
        assert!(
            err.contains("slow.wav") && err.contains("rate of 1 Hz"),
            "{err}"
        );

        let nan = dir.path().join("nan.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut wr = hound::WavWriter::create(&nan, spec).unwrap();
        for v in [0.0f32, f32::NAN, 0.5] {
            wr.write_sample(v).unwrap();
        }
        wr.finalize().unwrap();
        let err = read_wav(&nan).unwrap_err().to_string();
        assert!(
            err.contains("nan.wav") && err.contains("sample 1 is NaN"),
            "{err}"
        );
    }
}
