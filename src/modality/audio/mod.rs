//! Audio: WAV input ([`wav`]), sample-rate conversion ([`resample`]), log-mel spectrograms
//! matching torchaudio's `MelSpectrogram` ([`mel`]), Kaldi-compatible filter banks matching
//! `torchaudio.compliance.kaldi.fbank` as AST / Audio-MAE use them ([`fbank`]), and data set
//! listings from class folders or CSV manifests ([`dataset`]).
//!
//! Everything works on mono `f32` samples in [-1, 1]; the parity tests against torchaudio are
//! in `tests/audio_features.rs` (fixture made by `scripts/make_mel_fixture.py`).

pub mod dataset;
pub mod fbank;
pub mod mel;
pub mod resample;
pub mod wav;

pub use fbank::{fbank, FbankConfig, KaldiWindow};
pub use mel::{MelConfig, MelScale, MelSpectrogram, Window};
pub use resample::{load_clip, resample};
pub use wav::{read_wav, write_wav_i16, Waveform};
