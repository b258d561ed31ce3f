//! PLACEHOLDER (replaced by the audio-io branch on merge).
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MelScale { Htk, Slaney }
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window { Hann, Hamming }
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MelConfig {
  pub sample_rate: u32, pub n_fft: usize, pub win_length: Option<usize>, pub hop_length: usize,
  pub n_mels: usize, pub f_min: f32, pub f_max: Option<f32>, pub mel_scale: MelScale,
  pub slaney_norm: bool, pub window: Window, pub center: bool, pub power: f32, pub log_offset: f32,
}
impl Default for MelConfig { fn default() -> Self { Self { sample_rate: 16000, n_fft: 400, win_length: None, hop_length: 160, n_mels: 64, f_min: 0.0, f_max: None, mel_scale: MelScale::Htk, slaney_norm: false, window: Window::Hann, center: true, power: 2.0, log_offset: 1e-6 } } }
impl MelConfig { pub fn validate(&self) -> std::result::Result<(), String> { Ok(()) } }
pub struct MelSpectrogram { cfg: MelConfig }
impl MelSpectrogram {
  pub fn new(cfg: &MelConfig) -> std::result::Result<Self, String> { Ok(Self{cfg: cfg.clone()}) }
  pub fn config(&self) -> &MelConfig { &self.cfg }
  pub fn frames(&self, n: usize) -> usize { 1 + n / self.cfg.hop_length }
  pub fn log_mel(&self, samples: &[f32]) -> Vec<f32> { vec![0.0; self.cfg.n_mels * self.frames(samples.len())] }
}
