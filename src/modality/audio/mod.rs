//! Audio: WAV input, log-mel features, the spectrogram encoder (Audio-MAE) and the
//! raw-waveform front end of wav2vec2-style models.

pub mod encoder;
pub mod dataset;
pub mod mel;
pub mod resample;
pub mod classifier;
pub mod clips;
