//! Audio: WAV input ([`wav`]), sample-rate conversion ([`resample`]), log-mel spectrograms
//! matching torchaudio's `MelSpectrogram` ([`mel`]), Kaldi-compatible filter banks matching
//! `torchaudio.compliance.kaldi.fbank` as AST / Audio-MAE use them ([`fbank`]), data set
//! listings from class folders or CSV manifests ([`dataset`]), clips as fixed-length
//! normalised spectrograms ([`clips`]) and their augmentation ([`augment`]), the spectrogram
//! encoder of Audio-MAE ([`encoder`]) and its classifier ([`classifier`]), and the
//! raw-waveform front end of wav2vec 2.0, HuBERT and data2vec-audio ([`waveform`]).
//!
//! Everything works on mono `f32` samples in [-1, 1]; the parity tests against torchaudio are
//! in `tests/audio_features.rs` (fixture made by `scripts/make_mel_fixture.py`).

pub mod augment;
pub mod cache;
pub mod classifier;
pub mod clips;
pub mod config;
pub mod dataset;
pub mod encoder;
pub mod fbank;
pub mod features;
pub mod mel;
pub mod recipe;
pub mod resample;
pub mod run;
pub mod wav;
pub mod waveform;

pub use mel::{MelConfig, MelScale, MelSpectrogram, Window};
pub use resample::{load_clip, resample};
pub use wav::{read_wav, write_wav_i16, Waveform};
