//! Downstream heads. They work on pooled encoder features `[N, D]` and labels, whatever
//! the modality that produced them.

pub mod linear_probe;
pub mod split;

pub use linear_probe::{LinearProbe, ProbeConfig, ProbeResult};
