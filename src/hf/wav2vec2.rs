//! The wav2vec 2.0 family (`Wav2Vec2Model`, `HubertModel`, `Data2VecAudioModel`):
//! `config.json` ↔ [`AudioSpec`], and the name table (pretext names ↔ the names
//! `save_pretrained` writes, with shapes) that serves loading and export.
//!
//! ```text
//! audio.convs.{i}.conv.{weight,bias}   feature_extractor.conv_layers.{i}.conv.{weight,bias}
//! audio.convs.{i}.norm.{weight,bias}   feature_extractor.conv_layers.{i}.layer_norm.*
//! audio.proj_norm.{weight,bias}        feature_projection.layer_norm.*
//! audio.proj.{weight,bias}             feature_projection.projection.*
//! audio.mask_embed                     masked_spec_embed
//! audio.pos_conv.weight_g              encoder.pos_conv_embed.conv.parametrizations.weight.original0
//!                                      (legacy: encoder.pos_conv_embed.conv.weight_g)
//! audio.pos_conv.weight_v              encoder.pos_conv_embed.conv.parametrizations.weight.original1
//!                                      (legacy: encoder.pos_conv_embed.conv.weight_v)
//! audio.pos_conv.bias                  encoder.pos_conv_embed.conv.bias
//! audio.pos_conv.{j}.{weight,bias}     encoder.pos_conv_embed.layers.{j}.conv.*  (data2vec-audio)
//! audio.embed_norm.{weight,bias}       encoder.layer_norm.*   (post-norm: before the layers)
//! audio.encoder.norm.{weight,bias}     encoder.layer_norm.*   (stable layer norm: after them)
//! audio.encoder.layers.{i}.<block>     encoder.layers.{i}.<block>   (see BLOCK)
//! ```
//! Every name carries the prefix `wav2vec2.` / `hubert.` / `data2vec_audio.` inside task
//! wrappers (`…ForCTC`, `…ForPreTraining`, `…ForSequenceClassification`) and none in the bare
//! model; loading accepts both and drops the heads of CTC and pretraining wrappers. A
//! sequence classifier keeps its head (see [`SequenceHead`]):
//!
//! ```text
//! projector.{weight,bias}              projector.*    Linear(hidden → classifier_proj_size)
//! classifier.{weight,bias}             classifier.*   Linear(classifier_proj_size → num_labels)
//! ```
//! Export writes the bare model, or the sequence classifier with its prefix, with the
//! weight-norm names transformers 5 writes (`parametrizations.weight.original0/1`).
//!
//! Follows `transformers/models/wav2vec2/modeling_wav2vec2.py`, `hubert/modeling_hubert.py`
//! and `data2vec/modeling_data2vec_audio.py`.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::config::{activation, activation_name, Fields};
use super::vit::{block_shape, Row};
use crate::backbone::{EncoderConfig, NormPosition};
use crate::error::{Error, Result};
use crate::modality::audio::waveform::{FeatNorm, PosConv, WaveformConfig};

/// Which `transformers` family a waveform model belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFamily {
    Wav2Vec2,
    Hubert,
    Data2VecAudio,
}

impl AudioFamily {
    pub fn from_model_type(t: &str) -> Option<Self> {
        match t {
            "wav2vec2" => Some(AudioFamily::Wav2Vec2),
            "hubert" => Some(AudioFamily::Hubert),
            "data2vec-audio" => Some(AudioFamily::Data2VecAudio),
            _ => None,
        }
    }

    /// `model_type` in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            AudioFamily::Wav2Vec2 => "wav2vec2",
            AudioFamily::Hubert => "hubert",
            AudioFamily::Data2VecAudio => "data2vec-audio",
        }
    }

    /// The attribute task wrappers hold the base model under, with its dot.
    pub fn prefix(self) -> &'static str {
        match self {
            AudioFamily::Wav2Vec2 => "wav2vec2.",
            AudioFamily::Hubert => "hubert.",
            AudioFamily::Data2VecAudio => "data2vec_audio.",
        }
    }

    /// The base model class (what pretext runs and exports without a head).
    pub fn hf_class(self) -> &'static str {
        match self {
            AudioFamily::Wav2Vec2 => "Wav2Vec2Model",
            AudioFamily::Hubert => "HubertModel",
            AudioFamily::Data2VecAudio => "Data2VecAudioModel",
        }
    }

    /// The sequence classifier's class (`Wav2Vec2ForSequenceClassification`, …).
    pub fn classifier_class(self) -> &'static str {
        match self {
            AudioFamily::Wav2Vec2 => "Wav2Vec2ForSequenceClassification",
            AudioFamily::Hubert => "HubertForSequenceClassification",
            AudioFamily::Data2VecAudio => "Data2VecAudioForSequenceClassification",
        }
    }

    fn class_stem(self) -> &'static str {
        match self {
            AudioFamily::Wav2Vec2 => "Wav2Vec2",
            AudioFamily::Hubert => "Hubert",
            AudioFamily::Data2VecAudio => "Data2VecAudio",
        }
    }
}

/// Shape and behaviour of a waveform model.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioSpec {
    pub family: AudioFamily,
    pub config: WaveformConfig,
    /// The task wrapper the checkpoint came from (`Wav2Vec2ForCTC`, …), whose head is not
    /// loaded; `None` for a bare base model or a sequence classifier.
    pub wrapper: Option<String>,
    /// The head of a `…ForSequenceClassification`, loaded and exported with the model.
    pub head: Option<SequenceHead>,
}

impl AudioSpec {
    /// The class this spec loads as and exports to.
    pub fn hf_class(&self) -> &'static str {
        match self.head {
            Some(_) => self.family.classifier_class(),
            None => self.family.hf_class(),
        }
    }
}

/// `Wav2Vec2ForSequenceClassification`'s head (and HuBERT's and data2vec-audio's, the same):
/// `projector` Linear(hidden → `proj`) on every frame, the mean over the frames (the real
/// ones, under an attention mask), then `classifier` Linear(`proj` → `num_labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceHead {
    /// `classifier_proj_size` (transformers' default: 256).
    pub proj: usize,
    pub num_labels: usize,
}

impl SequenceHead {
    /// The head's rows (no prefix in the wrapper: they sit beside the base model).
    pub fn rows(self, hidden: usize) -> Vec<Row> {
        let (p, n) = (self.proj, self.num_labels);
        vec![
            Row::new("projector.weight", "projector.weight", vec![p, hidden]),
            Row::new("projector.bias", "projector.bias", vec![p]),
            Row::new("classifier.weight", "classifier.weight", vec![n, p]),
            Row::new("classifier.bias", "classifier.bias", vec![n]),
        ]
    }
}

/// The head settings of a `…ForSequenceClassification` config.
fn parse_head(f: &Fields) -> Result<SequenceHead> {
    if f.bool_or("use_weighted_layer_sum", false)? {
        return Err(f.err(
            "use_weighted_layer_sum",
            "a classifier on a learned weighted sum of every layer's hidden states is not \
             supported; pretext's reads the last layer (expected false)",
        ));
    }
    let num_labels = match f.map.get("id2label").and_then(Value::as_object) {
        Some(labels) if !labels.is_empty() => labels.len(),
        _ => f.usize_or("num_labels", 2)?,
    };
    Ok(SequenceHead {
        proj: f.usize_or("classifier_proj_size", 256)?,
        num_labels,
    })
}

/// pretext ↔ Hugging Face names inside one encoder layer (`Wav2Vec2EncoderLayer` and its
/// stable-layer-norm twin).
pub const BLOCK: &[(&str, &str)] = &[
    ("attn.q.weight", "attention.q_proj.weight"),
    ("attn.q.bias", "attention.q_proj.bias"),
    ("attn.k.weight", "attention.k_proj.weight"),
    ("attn.k.bias", "attention.k_proj.bias"),
    ("attn.v.weight", "attention.v_proj.weight"),
    ("attn.v.bias", "attention.v_proj.bias"),
    ("attn.o.weight", "attention.out_proj.weight"),
    ("attn.o.bias", "attention.out_proj.bias"),
    ("norm1.weight", "layer_norm.weight"),
    ("norm1.bias", "layer_norm.bias"),
    ("mlp.fc1.weight", "feed_forward.intermediate_dense.weight"),
    ("mlp.fc1.bias", "feed_forward.intermediate_dense.bias"),
    ("mlp.fc2.weight", "feed_forward.output_dense.weight"),
    ("mlp.fc2.bias", "feed_forward.output_dense.bias"),
    ("norm2.weight", "final_layer_norm.weight"),
    ("norm2.bias", "final_layer_norm.bias"),
];

/// The weight-norm names: (pretext leaf, transformers 5 name, legacy name).
const WEIGHT_NORM: [(&str, &str, &str); 2] = [
    ("weight_g", "parametrizations.weight.original0", "weight_g"),
    ("weight_v", "parametrizations.weight.original1", "weight_v"),
];

/// The table for `spec` (every row a base-model row).
pub fn rows(spec: &AudioSpec) -> Vec<Row> {
    let c = &spec.config;
    let d = c.encoder.dim;
    let mut rows = Vec::new();
    let mut c_in = 1;
    for (i, (&ch, &k)) in c.conv_dim.iter().zip(&c.conv_kernel).enumerate() {
        let ours = format!("audio.convs.{i}");
        let hf = format!("feature_extractor.conv_layers.{i}");
        rows.push(Row::new(
            format!("{ours}.conv.weight"),
            format!("{hf}.conv.weight"),
            vec![ch, c_in, k],
        ));
        if c.conv_bias {
            rows.push(Row::new(
                format!("{ours}.conv.bias"),
                format!("{hf}.conv.bias"),
                vec![ch],
            ));
        }
        if c.feat_extract_norm == FeatNorm::Layer || i == 0 {
            for leaf in ["weight", "bias"] {
                rows.push(Row::new(
                    format!("{ours}.norm.{leaf}"),
                    format!("{hf}.layer_norm.{leaf}"),
                    vec![ch],
                ));
            }
        }
        c_in = ch;
    }
    if c.feat_proj_layer_norm {
        for leaf in ["weight", "bias"] {
            rows.push(Row::new(
                format!("audio.proj_norm.{leaf}"),
                format!("feature_projection.layer_norm.{leaf}"),
                vec![c_in],
            ));
        }
    }
    rows.push(Row::new(
        "audio.proj.weight",
        "feature_projection.projection.weight",
        vec![d, c_in],
    ));
    rows.push(Row::new(
        "audio.proj.bias",
        "feature_projection.projection.bias",
        vec![d],
    ));
    if c.mask_embed {
        rows.push(Row::new("audio.mask_embed", "masked_spec_embed", vec![d]));
    }
    let (k, g) = (c.pos_conv.kernel(), c.pos_conv.groups());
    match c.pos_conv {
        PosConv::WeightNorm { .. } => {
            let hf = "encoder.pos_conv_embed.conv";
            for (ours, now, legacy) in WEIGHT_NORM {
                let shape = if ours == "weight_g" {
                    vec![1, 1, k]
                } else {
                    vec![d, d / g, k]
                };
                let mut row = Row::new(
                    format!("audio.pos_conv.{ours}"),
                    format!("{hf}.{now}"),
                    shape,
                );
                row.aliases = vec![format!("{hf}.{legacy}")];
                rows.push(row);
            }
            rows.push(Row::new(
                "audio.pos_conv.bias",
                format!("{hf}.bias"),
                vec![d],
            ));
        }
        PosConv::Stack { layers, .. } => {
            for j in 0..layers {
                let hf = format!("encoder.pos_conv_embed.layers.{j}.conv");
                rows.push(Row::new(
                    format!("audio.pos_conv.{j}.weight"),
                    format!("{hf}.weight"),
                    vec![d, d / g, k],
                ));
                rows.push(Row::new(
                    format!("audio.pos_conv.{j}.bias"),
                    format!("{hf}.bias"),
                    vec![d],
                ));
            }
        }
    }
    let norm = match c.encoder.norm {
        NormPosition::Post => "audio.embed_norm",
        NormPosition::Pre => "audio.encoder.norm",
    };
    for leaf in ["weight", "bias"] {
        rows.push(Row::new(
            format!("{norm}.{leaf}"),
            format!("encoder.layer_norm.{leaf}"),
            vec![d],
        ));
    }
    for i in 0..c.encoder.depth {
        for (ours, hf) in BLOCK {
            if let Some(shape) = block_shape(ours, &c.encoder) {
                rows.push(Row::new(
                    format!("audio.encoder.layers.{i}.{ours}"),
                    format!("encoder.layers.{i}.{hf}"),
                    shape,
                ));
            }
        }
    }
    rows.into_iter().map(Row::base).collect()
}

fn usize_list(f: &Fields, key: &str, default: &[usize]) -> Result<Vec<usize>> {
    match f.map.get(key).filter(|v| !v.is_null()) {
        None => Ok(default.to_vec()),
        Some(Value::Array(a)) => a.iter().map(|v| f.usize_of(key, v)).collect(),
        Some(v) => Err(f.err(
            key,
            format!("expected a list of positive integers, found {v}"),
        )),
    }
}

/// The `transformers` waveform classes pretext loads, by `config.json`.
pub fn parse_config(map: &Map<String, Value>, path: &Path) -> Result<AudioSpec> {
    let f = Fields { path, map };
    let model_type = f.str_or("model_type", "")?;
    let family = AudioFamily::from_model_type(model_type).ok_or_else(|| {
        f.err(
            "model_type",
            format!(
                "`{model_type}` is not an audio model pretext loads; expected \"wav2vec2\", \
                 \"hubert\" or \"data2vec-audio\""
            ),
        )
    })?;
    let arch = map
        .get("architectures")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str());
    let stem = family.class_stem();
    let mut head = None;
    let wrapper = match arch {
        None => None,
        Some(a) if a == family.hf_class() => None,
        Some(a) if a == family.classifier_class() => {
            head = Some(parse_head(&f)?);
            None
        }
        Some(a) if a == format!("{stem}ForCTC") || a == format!("{stem}ForPreTraining") => {
            Some(a.to_string())
        }
        Some(other) => {
            return Err(f.err(
                "architectures",
                format!(
                    "`{other}` is not supported; pretext loads {0} and {1}, and the base \
                     model of {stem}ForCTC and {stem}ForPreTraining",
                    family.hf_class(),
                    family.classifier_class()
                ),
            ))
        }
    };
    if f.bool_or("add_adapter", false)? {
        return Err(f.err("add_adapter", "adapters are not supported; expected false"));
    }
    if map.get("adapter_attn_dim").is_some_and(|v| !v.is_null()) {
        return Err(f.err(
            "adapter_attn_dim",
            "attention adapters are not supported; expected null",
        ));
    }
    if f.bool_or("conv_pos_batch_norm", false)? {
        return Err(f.err(
            "conv_pos_batch_norm",
            "a BatchNorm in the positional conv is not supported; expected false",
        ));
    }
    let act = f.hidden_act()?;
    let feat_act_name = f.str_or("feat_extract_activation", "gelu")?;
    let feat_act = activation(feat_act_name).ok_or_else(|| {
        f.err(
            "feat_extract_activation",
            format!("`{feat_act_name}` is not supported; expected gelu, gelu_new or relu"),
        )
    })?;
    let conv_dim = usize_list(&f, "conv_dim", &[512; 7])?;
    let conv_kernel = usize_list(&f, "conv_kernel", &[10, 3, 3, 3, 3, 2, 2])?;
    let conv_stride = usize_list(&f, "conv_stride", &[5, 2, 2, 2, 2, 2, 2])?;
    let (feat_extract_norm, stable) = match family {
        AudioFamily::Data2VecAudio => (FeatNorm::Layer, false),
        _ => {
            let norm = match f.str_or("feat_extract_norm", "group")? {
                "group" => FeatNorm::Group,
                "layer" => FeatNorm::Layer,
                other => {
                    return Err(f.err(
                        "feat_extract_norm",
                        format!("`{other}` is not supported; expected \"group\" or \"layer\""),
                    ))
                }
            };
            (norm, f.bool_or("do_stable_layer_norm", false)?)
        }
    };
    let groups = f.usize_or("num_conv_pos_embedding_groups", 16)?;
    let pos_conv = match family {
        AudioFamily::Data2VecAudio => PosConv::Stack {
            layers: f.usize_or("num_conv_pos_embeddings", 5)?,
            kernel: f.usize_or("conv_pos_kernel_size", 19)?,
            groups,
        },
        _ => PosConv::WeightNorm {
            kernel: f.usize_or("num_conv_pos_embeddings", 128)?,
            groups,
        },
    };
    let eps = f.f64_or("layer_norm_eps", 1e-5)?;
    let encoder = EncoderConfig {
        norm: if stable {
            NormPosition::Pre
        } else {
            NormPosition::Post
        },
        activation: act,
        norm_eps: eps,
        qkv_bias: true,
        dropout: f.f64_or("hidden_dropout", 0.1)?,
        attention_dropout: f.f64_or("attention_dropout", 0.1)?,
        drop_path: 0.0,
        ..f.transformer_shape()?
    };
    let config = WaveformConfig {
        conv_dim,
        conv_kernel,
        conv_stride,
        conv_bias: f.bool_or("conv_bias", false)?,
        feat_extract_norm,
        feat_extract_activation: feat_act,
        feat_proj_layer_norm: match family {
            AudioFamily::Hubert => f.bool_or("feat_proj_layer_norm", true)?,
            _ => true,
        },
        feat_proj_dropout: f.f64_or("feat_proj_dropout", 0.0)?,
        pos_conv,
        layer_norm_eps: eps,
        mask_embed: f.f64_or("mask_time_prob", 0.05)? > 0.0
            || f.f64_or("mask_feature_prob", 0.0)? > 0.0,
        encoder,
    };
    f.check_encoder(&config.encoder, ["hidden_dropout", "attention_dropout"])?;
    config.validate().map_err(|m| f.err("conv_dim", m))?;
    Ok(AudioSpec {
        family,
        config,
        wrapper,
        head,
    })
}

/// Why `spec` cannot be written as its `transformers` class, if it cannot.
fn unrepresentable(spec: &AudioSpec) -> Option<String> {
    let c = &spec.config;
    let e = &c.encoder;
    if !e.qkv_bias {
        return Some("the attention projections of this family have biases".into());
    }
    if e.norm_eps != c.layer_norm_eps {
        return Some(format!(
            "the encoder LayerNorm eps ({}) differs from the feature projection's ({}); \
             transformers has one layer_norm_eps",
            e.norm_eps, c.layer_norm_eps
        ));
    }
    match spec.family {
        AudioFamily::Data2VecAudio => {
            if !matches!(c.pos_conv, PosConv::Stack { .. }) {
                return Some("data2vec-audio has a stack of positional convs".into());
            }
            if c.feat_extract_norm != FeatNorm::Layer || e.norm != NormPosition::Post {
                return Some(
                    "data2vec-audio has layer-normed convs and a post-norm encoder".into(),
                );
            }
            if !c.feat_proj_layer_norm {
                return Some("data2vec-audio has a feature-projection LayerNorm".into());
            }
        }
        AudioFamily::Wav2Vec2 | AudioFamily::Hubert => {
            if !matches!(c.pos_conv, PosConv::WeightNorm { .. }) {
                return Some("its positional conv is one weight-normalised conv".into());
            }
            if spec.family == AudioFamily::Wav2Vec2 && !c.feat_proj_layer_norm {
                return Some("wav2vec2 has a feature-projection LayerNorm".into());
            }
        }
    }
    None
}

/// The `config.json` for `spec`: `base` (the original config, if any) with every field
/// pretext knows set from the spec.
pub fn config_json(
    spec: &AudioSpec,
    base: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>> {
    if let Some(why) = unrepresentable(spec) {
        return Err(Error::Usage(format!(
            "cannot export as {}: {why}",
            spec.hf_class()
        )));
    }
    let c = &spec.config;
    let e = &c.encoder;
    let mut out = base.cloned().unwrap_or_default();
    out.remove("transformers_version");
    let fields = json!({
        "architectures": [spec.hf_class()],
        "model_type": spec.family.model_type(),
        "hidden_size": e.dim,
        "num_hidden_layers": e.depth,
        "num_attention_heads": e.heads,
        "intermediate_size": e.mlp_dim,
        "hidden_act": activation_name(e.activation),
        "hidden_dropout": e.dropout,
        "attention_dropout": e.attention_dropout,
        "feat_proj_dropout": c.feat_proj_dropout,
        "layer_norm_eps": e.norm_eps,
        "conv_dim": c.conv_dim,
        "conv_kernel": c.conv_kernel,
        "conv_stride": c.conv_stride,
        "num_feat_extract_layers": c.conv_dim.len(),
        "conv_bias": c.conv_bias,
        "feat_extract_activation": activation_name(c.feat_extract_activation),
        "num_conv_pos_embedding_groups": c.pos_conv.groups(),
        "add_adapter": false,
        "dtype": "float32",
    });
    if let Value::Object(m) = fields {
        out.extend(m);
    }
    if let Some(h) = spec.head {
        out.insert("classifier_proj_size".into(), json!(h.proj));
        out.insert("use_weighted_layer_sum".into(), json!(false));
        // `id2label` says how many labels there are, as `save_pretrained` writes it.
        out.remove("num_labels");
        super::config::label_names(&mut out, h.num_labels);
    }
    match c.pos_conv {
        PosConv::WeightNorm { kernel, .. } => {
            out.insert("num_conv_pos_embeddings".into(), json!(kernel));
        }
        PosConv::Stack { layers, kernel, .. } => {
            out.insert("num_conv_pos_embeddings".into(), json!(layers));
            out.insert("conv_pos_kernel_size".into(), json!(kernel));
        }
    }
    if spec.family != AudioFamily::Data2VecAudio {
        let norm = match c.feat_extract_norm {
            FeatNorm::Group => "group",
            FeatNorm::Layer => "layer",
        };
        out.insert("feat_extract_norm".into(), json!(norm));
        out.insert(
            "do_stable_layer_norm".into(),
            json!(e.norm == NormPosition::Pre),
        );
    }
    if spec.family == AudioFamily::Hubert {
        out.insert("feat_proj_layer_norm".into(), json!(c.feat_proj_layer_norm));
        out.insert("conv_pos_batch_norm".into(), json!(false));
    }
    if spec.family == AudioFamily::Wav2Vec2 {
        out.insert("adapter_attn_dim".into(), Value::Null);
    }
    // transformers creates `masked_spec_embed` exactly when a mask probability is positive.
    let prob = |k: &str| out.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let has = prob("mask_time_prob") > 0.0 || prob("mask_feature_prob") > 0.0;
    if c.mask_embed && !has {
        out.insert("mask_time_prob".into(), json!(0.05));
    } else if !c.mask_embed {
        out.insert("mask_time_prob".into(), json!(0.0));
        out.insert("mask_feature_prob".into(), json!(0.0));
    }
    Ok(out)
}
