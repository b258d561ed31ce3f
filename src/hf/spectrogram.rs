//! Audio-MAE encoders in and out: an exported directory (a run's checkpoint is read by
//! `run::source`) → [`SpectrogramLoaded`], the runnable
//! [`SpectrogramModel`], and export ([`write`]) in pretext's own documented layout
//! (`docs/audio-mae-export.md`), since `transformers` has no class for it:
//!
//! - `config.json`: `{"model_type": "pretext-audio-mae", "features": {mel settings, frames,
//!   mean, std}, "geometry": {n_mels, frames, patch_freq, patch_time}, "encoder": {dim,
//!   depth, heads, mlp_dim, norm, activation, norm_eps, ...}}`
//! - `model.safetensors`: the encoder under pretext's names without the `audio.` prefix
//!   (`patch_embed.{weight,bias}`, `cls_token`, `pos_embed` — the fixed sin-cos table, stored
//!   so the file is self-contained — `encoder.layers.{i}.{norm1,attn.{q,k,v,o},norm2,
//!   mlp.{fc1,fc2}}.*`, `encoder.norm.*`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::{json, Map, Value};

use super::checkpoint::{weights_file, CONFIG_FILE, WEIGHTS_FILE};

use crate::backbone::PooledEncoder;
use crate::backbone::{Mode, Pooling};
use crate::error::{Error, Result};
use crate::modality::audio::clips::AudioFeatures;
use crate::modality::audio::config::AudioRunConfig;
use crate::modality::audio::encoder::{SpectrogramEncoder, Spectrograms};
use crate::modality::audio::mel::MelSpectrogram;
use crate::tensor_io;

/// `model_type` of an exported Audio-MAE encoder.
pub const MODEL_TYPE: &str = "pretext-audio-mae";

/// An Audio-MAE encoder: its feature settings, shape and weights (`audio.*`).
#[derive(Debug, Clone)]
pub struct SpectrogramLoaded {
    pub config: AudioRunConfig,
    pub tensors: BTreeMap<String, Tensor>,
    /// Where it came from, for messages.
    pub origin: String,
}

/// An exported directory ([`write`]).
pub fn read_dir(dir: &Path, device: &Device, origin: &str) -> Result<SpectrogramLoaded> {
    let config_path = dir.join(CONFIG_FILE);
    let text = crate::input::read_to_string(&config_path)?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(&config_path, format!("invalid JSON: {e}")))?;
    let field = |k: &str| {
        raw.get(k)
            .cloned()
            .ok_or_else(|| Error::data(&config_path, format!("missing key `{k}`")))
    };
    let config: AudioRunConfig = serde_json::from_value(json!({
        "features": field("features")?,
        "geometry": field("geometry")?,
        "encoder": field("encoder")?,
    }))
    .map_err(|e| Error::data(&config_path, e.to_string()))?;
    let weights = weights_file(dir)?;
    let tensors = tensor_io::read(&weights, device)?
        .tensors
        .into_iter()
        .map(|(k, v)| (format!("audio.{k}"), v))
        .collect();
    let loaded = SpectrogramLoaded {
        config,
        tensors,
        origin: origin.to_string(),
    };
    loaded.check(&weights, "audio.")?;
    Ok(loaded)
}

impl SpectrogramLoaded {
    /// Every tensor the encoder needs is there with its shape, and nothing else. Messages name
    /// tensors as `path` does: without `strip` (`"audio."` for an export's file).
    pub fn check(&self, path: &Path, strip: &str) -> Result<()> {
        let shown = |name: &str| name.strip_prefix(strip).unwrap_or(name).to_string();
        let reference = crate::params::ParamStore::new(0);
        let c = &self.config;
        SpectrogramEncoder::new(
            c.geometry,
            &c.encoder,
            reference.var_builder(&Device::Cpu).pp("audio"),
        )?;
        let expected: BTreeMap<String, Vec<usize>> = reference
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.dims().to_vec()))
            .collect();
        for (name, dims) in &expected {
            match self.tensors.get(name) {
                None => {
                    return Err(Error::Checkpoint {
                        path: path.to_path_buf(),
                        message: format!("missing tensor `{}` (shape {dims:?})", shown(name)),
                    })
                }
                Some(t) if t.dims() != dims.as_slice() => {
                    return Err(Error::Checkpoint {
                        path: path.to_path_buf(),
                        message: format!(
                            "tensor `{}`: expected shape {dims:?}, found {:?}",
                            shown(name),
                            t.dims()
                        ),
                    })
                }
                _ => {}
            }
        }
        if let Some(stored) = self.tensors.get("audio.pos_embed") {
            let fixed = crate::modality::audio::encoder::positions(
                c.encoder.dim,
                &c.geometry,
                &Device::Cpu,
            )?;
            if stored.dims() != fixed.dims() {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{}`: expected shape {:?}, found {:?}",
                        shown("audio.pos_embed"),
                        fixed.dims(),
                        stored.dims()
                    ),
                });
            }
            let diff = (stored.to_device(&Device::Cpu)?.to_dtype(DType::F32)? - &fixed)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            if diff.is_nan() || diff > 1e-5 {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{}` is not the fixed 2-D sin-cos table of this geometry (max difference {diff}): see docs/audio-mae-export.md",
                        shown("audio.pos_embed")
                    ),
                });
            }
        }
        let extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !expected.contains_key(*k) && k.as_str() != "audio.pos_embed")
            .collect();
        if let Some(name) = extra.first() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "unexpected tensor `{}` ({} unexpected in all)",
                    shown(name),
                    extra.len()
                ),
            });
        }
        Ok(())
    }
}

/// Writes `config.json` + `model.safetensors` in the layout above.
pub fn write(m: &SpectrogramLoaded, out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let model = SpectrogramModel::build(m, &Device::Cpu)?;
    let mut tensors: Vec<(String, Tensor)> = m
        .tensors
        .iter()
        .filter(|(k, _)| k.as_str() != "audio.pos_embed")
        .map(|(k, v)| (k.trim_start_matches("audio.").to_string(), v.clone()))
        .collect();
    tensors.push(("pos_embed".into(), model.encoder.pos_embed.clone()));
    let weights = out.join(WEIGHTS_FILE);
    tensor_io::write_pt(&weights, &tensors)?;
    let mut config = Map::new();
    config.insert("model_type".into(), json!(MODEL_TYPE));
    config.insert(
        "layout".into(),
        json!("pretext Audio-MAE encoder: see docs/audio-mae-export.md"),
    );
    let c = serde_json::to_value(&m.config).map_err(|e| Error::data(out, e.to_string()))?;
    if let Value::Object(c) = c {
        config.extend(c);
    }
    let config_path = out.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&Value::Object(config))
        .map_err(|e| Error::data(&config_path, e.to_string()))?;
    tensor_io::write_atomic(&config_path, text.as_bytes())?;
    Ok(vec![config_path, weights])
}

/// The runnable encoder, with the feature pipeline its run used.
pub struct SpectrogramModel {
    pub encoder: SpectrogramEncoder,
    pub features: AudioFeatures,
    mel: MelSpectrogram,
}

impl SpectrogramModel {
    /// Builds the encoder around the loaded weights (frozen).
    pub fn build(m: &SpectrogramLoaded, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = m
            .tensors
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.to_device(device)?.to_dtype(DType::F32)?.detach(),
                ))
            })
            .collect::<Result<_>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let c = &m.config;
        let encoder = SpectrogramEncoder::new(c.geometry, &c.encoder, vb.pp("audio"))?;
        let mel = MelSpectrogram::new(&c.features.mel)
            .map_err(|e| Error::data(&m.origin, format!("mel settings: {e}")))?;
        Ok(Self {
            encoder,
            features: c.features.clone(),
            mel,
        })
    }

    /// Samples per input window at `features.mel.sample_rate`.
    pub fn window(&self) -> usize {
        self.features.clip_len()
    }

    /// Normalised spectrograms `[B, n_mels, frames]` of waveform windows (each cut or padded
    /// to [`Self::window`] samples), with the frame masks of padded ones.
    pub fn spectrograms(&self, windows: &[&[f32]], device: &Device) -> Result<Spectrograms> {
        self.features.windows_input(&self.mel, windows, device)
    }

    /// Pooled embeddings `[B, D]` of waveform windows (padding left out of the mean).
    pub fn embed(&self, windows: &[&[f32]], pooling: Pooling, device: &Device) -> Result<Tensor> {
        let x = self.spectrograms(windows, device)?;
        Ok(self.encoder.pooled(&x, pooling, &mut Mode::Eval)?)
    }

    /// `pretext forward`: `input_values` `[B, S]` (waveforms at the model's rate; each row
    /// cut or padded to the window) or `spectrogram` `[B, n_mels, frames]` (already
    /// normalised; with `frame_mask` `[B, frames]` when padded) → `last_hidden_state`
    /// `[B, 1 + L, D]` (and `spectrogram`, the input it computed, and `frame_mask` when
    /// the rows were padded).
    pub fn forward(&self, inputs: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
        let spec = match (inputs.get("input_values"), inputs.get("spectrogram")) {
            (Some(x), None) => {
                let rows: Vec<Vec<f32>> = x.to_dtype(DType::F32)?.to_vec2()?;
                let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
                self.spectrograms(&refs, x.device())?
            }
            (None, Some(s)) => Spectrograms {
                values: s.to_dtype(DType::F32)?,
                frames: inputs
                    .get("frame_mask")
                    .map(|m| m.to_dtype(DType::F32))
                    .transpose()?,
            },
            _ => {
                return Err(Error::Usage(
                    "inputs: give exactly one of `input_values` [B, samples] and `spectrogram` [B, n_mels, frames]".into(),
                ))
            }
        };
        let g = self.encoder.geometry;
        let dims = spec.values.dims();
        if dims.len() != 3 || dims[1..] != [g.n_mels, g.frames] {
            return Err(Error::Usage(format!(
                "inputs: `spectrogram` must be [B, {}, {}], found {dims:?}",
                g.n_mels, g.frames,
            )));
        }
        if let Some(m) = &spec.frames {
            if m.dims() != [dims[0], g.frames] {
                return Err(Error::Usage(format!(
                    "inputs: `frame_mask` must be [{}, {}] (1 = the frame holds the clip), found {:?}",
                    dims[0],
                    g.frames,
                    m.dims()
                )));
            }
        }
        let h = self.encoder.forward(&spec, &mut Mode::Eval)?;
        let mut out = BTreeMap::from([
            ("last_hidden_state".to_string(), h),
            ("spectrogram".to_string(), spec.values),
        ]);
        if let Some(m) = spec.frames {
            out.insert("frame_mask".to_string(), m);
        }
        Ok(out)
    }
}
