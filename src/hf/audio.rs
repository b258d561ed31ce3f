//! Waveform models (wav2vec 2.0, HuBERT, data2vec-audio) in and out: a Hugging Face
//! directory → [`AudioLoaded`], the runnable [`AudioModel`] with inputs and outputs named as in
//! `transformers`, and export ([`write_hf`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::{Map, Value};

use super::checkpoint::{reject_leftovers, take_prefixed, weights_file, CONFIG_FILE, WEIGHTS_FILE};
use super::wav2vec2::{self, AudioSpec};
use crate::backbone::Mode;
use crate::error::{Error, Result};
use crate::modality::audio::waveform::{WaveformConfig, WaveformEncoder};
use crate::tensor_io;

/// A waveform model's spec and weights under pretext's names (`audio.*`).
#[derive(Debug, Clone)]
pub struct AudioLoaded {
    pub spec: AudioSpec,
    pub tensors: BTreeMap<String, Tensor>,
    /// The `config.json` it came from, if any (keys pretext does not interpret are kept on
    /// export).
    pub hf_config: Option<Map<String, Value>>,
    /// Where it came from, for messages.
    pub origin: String,
}

pub use super::text::model_type;

/// Whether a `model_type` is one of the waveform families.
pub fn is_audio_type(model_type: &str) -> bool {
    wav2vec2::AudioFamily::from_model_type(model_type).is_some()
}

/// Reads a wav2vec2 / HuBERT / data2vec-audio directory (`config.json` + `model.safetensors`).
pub fn read_dir(dir: &Path, device: &Device, origin: &str) -> Result<AudioLoaded> {
    let config_path = dir.join(CONFIG_FILE);
    let text = crate::input::read_to_string(&config_path)?;
    let raw: Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| Error::data(&config_path, format!("invalid JSON object: {e}")))?;
    let mut spec = wav2vec2::parse_config(&raw, &config_path)?;
    let weights = weights_file(dir)?;
    let file = tensor_io::read(&weights, device)?.tensors;
    let tensors = from_hf(&mut spec, file, &weights)?;
    Ok(AudioLoaded {
        spec,
        tensors,
        hf_config: Some(raw),
        origin: origin.to_string(),
    })
}

/// Maps a checkpoint's tensors (Hugging Face names) onto pretext's, settling whether the
/// model has `masked_spec_embed` from the weights; a wrapper's head is dropped.
fn from_hf(
    spec: &mut AudioSpec,
    mut file: BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<BTreeMap<String, Tensor>> {
    let prefix = spec.family.prefix();
    spec.config.mask_embed = file.contains_key("masked_spec_embed")
        || file.contains_key(&format!("{prefix}masked_spec_embed"));
    let what = match &spec.wrapper {
        Some(w) => format!("the base model of {w}"),
        None => spec.hf_class().to_string(),
    };
    let rows = wav2vec2::rows(spec);
    let mut out = take_prefixed(&rows, &mut file, path, &what, prefix)?;
    if spec.wrapper.is_some() {
        // The head (lm_head, quantizer, project_q, project_hid, …) is not pretext's.
        file.retain(|name, _| name.starts_with(prefix));
    }
    reject_leftovers(&file, path, &what)?;
    for t in out.values_mut() {
        *t = t.contiguous()?;
    }
    Ok(out)
}

/// The runnable waveform model.
pub struct AudioModel {
    pub encoder: WaveformEncoder,
}

impl AudioModel {
    /// Builds the model around the loaded weights (frozen: no gradient graph is recorded).
    pub fn build(m: &AudioLoaded, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = m
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(device)?.detach())))
            .collect::<Result<_>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let encoder = WaveformEncoder::new(&m.spec.config, vb.pp("audio"))?;
        Ok(Self { encoder })
    }

    pub fn config(&self) -> &WaveformConfig {
        self.encoder.config()
    }

    /// Final hidden states `[B, T, D]` and the frame mask `[B, T]` (f32, 1 = real) when an
    /// attention mask `[B, S]` is given.
    pub fn hidden(
        &self,
        input_values: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let o = self
            .encoder
            .forward(input_values, attention_mask, &mut Mode::Eval)?;
        Ok((o.last_hidden_state, o.feature_mask))
    }

    /// Runs the model on `inputs` (`input_values` `[B, S]` float, optional `attention_mask`
    /// `[B, S]` of any dtype), returning `last_hidden_state` and `extract_features` as
    /// `Wav2Vec2Model` does (for HuBERT, which does not return them, the conv features after
    /// the feature projection's LayerNorm where it has one).
    pub fn forward(&self, inputs: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
        let x = inputs.get("input_values").ok_or_else(|| {
            Error::Usage("inputs: missing tensor `input_values` [B, S] (float)".into())
        })?;
        if !x.dtype().is_float() {
            return Err(Error::Usage(format!(
                "inputs: `input_values` must be float samples, found {:?}",
                x.dtype()
            )));
        }
        if x.rank() != 2 {
            return Err(Error::Usage(format!(
                "inputs: `input_values` must have shape [B, S], found {:?}",
                x.dims()
            )));
        }
        let mask = inputs.get("attention_mask");
        if let Some(m) = mask {
            if m.dims() != x.dims() {
                return Err(Error::Usage(format!(
                    "inputs: `attention_mask` must have shape {:?} like input_values, found {:?}",
                    x.dims(),
                    m.dims()
                )));
            }
        }
        let o = self.encoder.forward(x, mask, &mut Mode::Eval)?;
        Ok(BTreeMap::from([
            ("last_hidden_state".to_string(), o.last_hidden_state),
            ("extract_features".to_string(), o.extract_features),
        ]))
    }
}

/// What a user of the export should know, if anything.
pub fn notes(spec: &AudioSpec) -> Option<String> {
    spec.wrapper.as_ref().map(|w| {
        format!(
            "loaded the base model of {w}; its head is not exported: the export is a {}",
            spec.hf_class()
        )
    })
}

/// Writes `m` in the layout `save_pretrained` writes (the bare base model); returns the
/// files written.
pub fn write_hf(m: &AudioLoaded, out: &Path) -> Result<Vec<PathBuf>> {
    let spec = &m.spec;
    let cfg = wav2vec2::config_json(spec, m.hf_config.as_ref())?;
    let mut list = Vec::new();
    for row in wav2vec2::rows(spec) {
        let t = m.tensors.get(&row.ours).ok_or_else(|| {
            Error::data(
                &m.origin,
                format!("missing tensor `{}` to export", row.ours),
            )
        })?;
        if t.dims() != row.shape.as_slice() {
            return Err(Error::data(
                &m.origin,
                format!(
                    "tensor `{}`: expected shape {:?} for {}, found {:?}",
                    row.ours,
                    row.shape,
                    spec.hf_class(),
                    t.dims()
                ),
            ));
        }
        list.push((row.hf.clone(), t.to_dtype(DType::F32)?.contiguous()?));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let weights = out.join(WEIGHTS_FILE);
    tensor_io::write_pt(&weights, &list)?;
    let config_path = out.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&Value::Object(cfg))
        .map_err(|e| Error::data(&config_path, e.to_string()))?;
    tensor_io::write_atomic(&config_path, format!("{text}\n").as_bytes())?;
    Ok(vec![config_path, weights])
}

/// Whether the feature extractor next to a model normalises each input to zero mean and unit
/// variance (`do_normalize` in `preprocessor_config.json`; `Wav2Vec2FeatureExtractor`'s
/// default, true, when there is no such file or it does not say). A file that is there but
/// is not JSON, or whose `do_normalize` is not true or false, is an error naming it: a
/// wrong guess would silently change every input.
pub fn do_normalize(origin: &str) -> Result<bool> {
    let dir = Path::new(origin);
    let dir = if dir.is_file() {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let path = dir.join("preprocessor_config.json");
    if !path.exists() {
        return Ok(true);
    }
    let text = crate::input::read_to_string(&path)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("invalid JSON: {e}")))?;
    match v.get("do_normalize") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::InvalidValue {
            file: path.clone(),
            key: "do_normalize".into(),
            message: format!("must be true or false, not {other}"),
        }),
    }
}

pub use crate::modality::audio::waveform::zero_mean_unit_var;
