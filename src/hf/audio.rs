//! Waveform models (wav2vec 2.0, HuBERT, data2vec-audio) in and out: a Hugging Face
//! directory, or a waveform classifier pretext saved ([`read_saved`]), → [`AudioLoaded`]; the
//! runnable [`AudioModel`] with inputs and outputs named as in `transformers` (a sequence
//! classifier's `logits` included); and export ([`write_hf`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::{Map, Value};

use super::checkpoint::{
    reject_leftovers, take_prefixed, weights_file, CONFIG_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE,
};
use super::wav2vec2::{self, AudioFamily, AudioSpec, SequenceHead};
use crate::backbone::{masked_mean, Linear, Mode};
use crate::error::{Error, Result};
use crate::modality::audio::classifier::WaveformClassifierSpec;
use crate::modality::audio::waveform::{FeatNorm, WaveformConfig, WaveformEncoder};
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
    /// Its feature extractor's sample rate and `do_normalize` (from `preprocessor_config.json`,
    /// or a saved classifier's `model.json`), written back on export.
    pub sample_rate: u32,
    pub normalize: bool,
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
    let local = dir.display().to_string();
    Ok(AudioLoaded {
        spec,
        tensors,
        hf_config: Some(raw),
        origin: origin.to_string(),
        sample_rate: sampling_rate(&local)?,
        normalize: do_normalize(&local)?,
    })
}

/// The waveform classifier pretext saved at `src` (its directory or a file in it, with a
/// `model.json` of kind `waveform-classifier`), as the sequence classifier it exports to;
/// `None` when `src` is not one. A classifier without a projector gets the identity (width
/// = hidden size, bias 0), which computes exactly what it did.
pub fn read_saved(src: &str, device: &Device) -> Result<Option<AudioLoaded>> {
    let path = Path::new(src);
    let dir = match path.parent() {
        Some(parent) if path.is_file() => parent,
        _ => path,
    };
    let spec_path = dir.join(crate::modality::audio::classifier::SPEC_FILE);
    if !spec_path.is_file() {
        return Ok(None);
    }
    let json: Value = serde_json::from_str(&crate::input::read_to_string(&spec_path)?)
        .map_err(|e| Error::data(&spec_path, format!("invalid JSON: {e}")))?;
    if json.get("kind").and_then(Value::as_str) != Some(WaveformClassifierSpec::KIND) {
        return Ok(None);
    }
    let saved: WaveformClassifierSpec =
        serde_json::from_value(json).map_err(|e| Error::data(&spec_path, e.to_string()))?;
    let family =
        AudioFamily::from_model_type(&saved.model_type).ok_or_else(|| Error::InvalidValue {
            file: spec_path.clone(),
            key: "model_type".into(),
            message: format!(
                "`{}` is not a waveform family; expected \"wav2vec2\", \"hubert\" or \
                 \"data2vec-audio\"",
                saved.model_type
            ),
        })?;
    saved.config.validate().map_err(|m| Error::InvalidValue {
        file: spec_path.clone(),
        key: "config".into(),
        message: m,
    })?;
    if saved.classes.is_empty() {
        return Err(Error::InvalidValue {
            file: spec_path.clone(),
            key: "classes".into(),
            message: "names no class; a classifier needs at least one".into(),
        });
    }
    let d = saved.config.encoder.dim;
    let head = SequenceHead {
        proj: saved.projector.unwrap_or(d),
        num_labels: saved.classes.len(),
    };
    let spec = AudioSpec {
        family,
        config: saved.config.clone(),
        wrapper: None,
        head: Some(head),
    };
    let weights = dir.join(WEIGHTS_FILE);
    let mut file = tensor_io::read(&weights, device)?.tensors;
    if saved.projector.is_none() {
        file.insert(
            "projector.weight".into(),
            Tensor::eye(d, DType::F32, device)?,
        );
        file.insert(
            "projector.bias".into(),
            Tensor::zeros(d, DType::F32, device)?,
        );
    }
    // The weights carry pretext's names: the table's pretext side stands in for the HF one.
    let rows: Vec<_> = all_rows(&spec)
        .into_iter()
        .map(|mut r| {
            r.hf = r.ours.clone();
            r.aliases.clear();
            r.base = false;
            r
        })
        .collect();
    let what = format!("the waveform classifier {}", spec_path.display());
    let tensors = take_prefixed(&rows, &mut file, &weights, &what, "")?;
    reject_leftovers(&file, &weights, &what)?;
    Ok(Some(AudioLoaded {
        spec,
        tensors,
        // Class names travel as the config's `id2label`, as in a Hugging Face classifier.
        hf_config: Some(super::config::id2label(&saved.classes)),
        origin: dir.display().to_string(),
        sample_rate: saved.sample_rate,
        normalize: saved.normalize,
    }))
}

/// The base model's rows, then the sequence classifier's head's where there is one.
fn all_rows(spec: &AudioSpec) -> Vec<super::vit::Row> {
    let mut rows = wav2vec2::rows(spec);
    if let Some(h) = spec.head {
        rows.extend(h.rows(spec.config.encoder.dim));
    }
    rows
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
    let rows = all_rows(spec);
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
    /// A sequence classifier's `projector` and `classifier`.
    pub head: Option<(Linear, Linear)>,
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
        let head = match m.spec.head {
            Some(h) => Some((
                Linear::new(m.spec.config.encoder.dim, h.proj, true, vb.pp("projector"))?,
                Linear::new(h.proj, h.num_labels, true, vb.pp("classifier"))?,
            )),
            None => None,
        };
        Ok(Self { encoder, head })
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
    /// the feature projection's LayerNorm where it has one). A sequence classifier returns
    /// `logits` `[B, num_labels]` (the projected frames averaged over the real ones) and,
    /// given `labels` `[B]`, `loss`, as `Wav2Vec2ForSequenceClassification` does.
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
        if let Some((projector, classifier)) = &self.head {
            use candle_core::Module;
            let frames = projector.forward(&o.last_hidden_state)?; // [B, T, P]
            let pooled = masked_mean(&frames, o.feature_mask.as_ref())?; // [B, P]
            let logits = classifier.forward(&pooled)?;
            let mut out = BTreeMap::new();
            if let Some(labels) = inputs.get("labels") {
                out.insert(
                    "loss".to_string(),
                    super::loss::classifier_loss(&logits, labels)?,
                );
            }
            out.insert("logits".to_string(), logits);
            return Ok(out);
        }
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

/// Writes `m` in the layout `save_pretrained` writes (the bare base model, or the sequence
/// classifier with the base model under its prefix), with a `preprocessor_config.json` for
/// `Wav2Vec2FeatureExtractor`; returns the files written.
pub fn write_hf(m: &AudioLoaded, out: &Path) -> Result<Vec<PathBuf>> {
    let spec = &m.spec;
    let cfg = wav2vec2::config_json(spec, m.hf_config.as_ref())?;
    let prefix = if spec.head.is_some() {
        spec.family.prefix()
    } else {
        ""
    };
    let mut list = Vec::new();
    for row in all_rows(spec) {
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
        let name = if row.base {
            format!("{prefix}{}", row.hf)
        } else {
            row.hf.clone()
        };
        list.push((name, t.to_dtype(DType::F32)?.contiguous()?));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let weights = out.join(WEIGHTS_FILE);
    tensor_io::write_pt(&weights, &list)?;
    let config_path = out.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&Value::Object(cfg))
        .map_err(|e| Error::data(&config_path, e.to_string()))?;
    tensor_io::write_atomic(&config_path, format!("{text}\n").as_bytes())?;
    let pre = serde_json::json!({
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": m.sample_rate,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": m.normalize,
        // As the checkpoints on the hub: models with layer-normed convs take a mask.
        "return_attention_mask": spec.config.feat_extract_norm == FeatNorm::Layer,
    });
    let pre_path = out.join(PREPROCESSOR_FILE);
    let text =
        serde_json::to_string_pretty(&pre).map_err(|e| Error::data(&pre_path, e.to_string()))?;
    tensor_io::write_atomic(&pre_path, format!("{text}\n").as_bytes())?;
    Ok(vec![config_path, weights, pre_path])
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

/// The sample rate the feature extractor next to a model expects (`sampling_rate` in
/// `preprocessor_config.json`; 16 kHz, the family's, when there is no such file or it does
/// not say).
pub fn sampling_rate(origin: &str) -> Result<u32> {
    let path = Path::new(origin).join(PREPROCESSOR_FILE);
    if !path.is_file() {
        return Ok(16_000);
    }
    let text = crate::input::read_to_string(&path)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(&path, format!("invalid JSON: {e}")))?;
    match v.get("sampling_rate") {
        None | Some(Value::Null) => Ok(16_000),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::InvalidValue {
                file: path.clone(),
                key: "sampling_rate".into(),
                message: format!("must be a positive number of samples per second, not {n}"),
            }),
    }
}

pub use crate::modality::audio::waveform::zero_mean_unit_var;
