//! Downstream heads, whatever the modality: the linear probe and k-NN work on pooled
//! features `[N, D]`; fine-tuning takes the model's parameters and forward pass.

pub mod finetune;
pub mod knn;
pub mod linear_probe;
pub mod mix;
pub mod split;

pub use linear_probe::{LinearProbe, ProbeConfig, ProbeResult};
