//! Audio: WAV input, log-mel features, the spectrogram encoder (Audio-MAE) and the
//! raw-waveform front end of wav2vec2-style models.

pub mod classifier;
pub mod clips;
pub mod dataset;
pub mod encoder;
pub mod mel;
pub mod resample;
pub mod waveform;
