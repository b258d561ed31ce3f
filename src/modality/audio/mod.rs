//! Audio: the raw-waveform front end (wav2vec 2.0, HuBERT, data2vec-audio).
pub mod waveform;
