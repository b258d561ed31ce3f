//! `config.json` ↔ [`ModelSpec`], after `configuration_vit.py` and
//! `configuration_vit_mae.py`.
//!
//! Fields that shape the weights (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
//! `intermediate_size`, `image_size`, `patch_size`, and the `decoder_*` sizes for ViT-MAE)
//! are required; the others take `transformers`' defaults when absent. What pretext cannot
//! run (another `hidden_act`, a non-square image, another pooler activation) is an error
//! naming the file and the field.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::spec::{Kind, ModelSpec};
use crate::backbone::Pooling;
use crate::backbone::{Activation, EncoderConfig, NormPosition};
use crate::error::{Error, Result};
use crate::modality::image::{ImageGeometry, Positions};

/// The `transformers` classes pretext loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    ViTModel,
    ViTForImageClassification,
    ViTMAEForPreTraining,
}

/// A parsed `config.json`: the class, everything but what only the weights tell (whether a
/// `ViTModel` has its pooler), and the raw object.
#[derive(Debug, Clone)]
pub struct HfConfig {
    pub architecture: Architecture,
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    pub pooler_output_size: usize,
    pub num_labels: usize,
    /// (decoder, mask_ratio, norm_pix_loss) for ViT-MAE.
    pub mae: Option<(EncoderConfig, f64, bool)>,
    pub raw: Map<String, Value>,
}

impl HfConfig {
    /// The spec; `pooler` says whether a `ViTModel`'s weights include the pooler.
    pub fn spec(&self, pooler: bool) -> ModelSpec {
        let (positions, kind) = match (&self.architecture, &self.mae) {
            (Architecture::ViTMAEForPreTraining, Some((decoder, mask_ratio, norm_pix_loss))) => (
                Positions::Sincos,
                Kind::Mae {
                    decoder: decoder.clone(),
                    mask_ratio: *mask_ratio,
                    norm_pix_loss: *norm_pix_loss,
                },
            ),
            (Architecture::ViTForImageClassification, _) => (
                Positions::Learned,
                Kind::Classifier {
                    num_labels: self.num_labels,
                    pooling: Pooling::Cls,
                },
            ),
            _ => (
                Positions::Learned,
                Kind::Encoder {
                    pooler: pooler.then_some(self.pooler_output_size),
                },
            ),
        };
        ModelSpec {
            geometry: self.geometry,
            encoder: self.encoder.clone(),
            positions,
            kind,
        }
    }
}

/// Typed access to a JSON object, with errors naming the file and the field.
pub(crate) struct Fields<'a> {
    pub(crate) path: &'a Path,
    pub(crate) map: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::InvalidValue {
            file: self.path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn required(&self, key: &str) -> Result<&Value> {
        self.map
            .get(key)
            .filter(|v| !v.is_null())
            .ok_or_else(|| self.err(key, "missing; the model's weights depend on it"))
    }

    pub(crate) fn usize_of(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| self.err(key, format!("expected a positive integer, found {v}")))
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.usize_of(key, self.required(key)?)
    }

    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.map.get(key).filter(|v| !v.is_null()) {
            Some(v) => self.usize_of(key, v),
            None => Ok(default),
        }
    }

    /// Checks a transformer's settings, naming the `config.json` key at fault;
    /// `dropouts` are the family's names for the hidden and attention dropout.
    pub(crate) fn check_encoder(&self, e: &EncoderConfig, dropouts: [&str; 2]) -> Result<()> {
        e.check().map_err(|(field, m)| {
            let key = match field {
                "dim" => "hidden_size",
                "depth" => "num_hidden_layers",
                "heads" => "num_attention_heads",
                "mlp_dim" => "intermediate_size",
                "norm_eps" => "layer_norm_eps",
                "dropout" => dropouts[0],
                "attention_dropout" => dropouts[1],
                other => other,
            };
            self.err(key, m)
        })
    }

    /// A transformer's shape in `transformers`' names (`hidden_size`, `num_hidden_layers`,
    /// `num_attention_heads`, `intermediate_size`); the other fields are placeholders each
    /// family sets.
    pub(crate) fn transformer_shape(&self) -> Result<EncoderConfig> {
        Ok(EncoderConfig {
            dim: self.usize("hidden_size")?,
            depth: self.usize("num_hidden_layers")?,
            heads: self.usize("num_attention_heads")?,
            mlp_dim: self.usize("intermediate_size")?,
            norm: NormPosition::Pre,
            activation: crate::backbone::Activation::Gelu,
            norm_eps: 1e-12,
            qkv_bias: true,
            dropout: 0.0,
            attention_dropout: 0.0,
            drop_path: 0.0,
        })
    }

    /// An image or patch size: an integer or a square `[n, n]`.
    pub(crate) fn side(&self, key: &str) -> Result<usize> {
        let v = self.required(key)?;
        match v {
            Value::Array(a) if a.len() == 2 && a[0] == a[1] => self.usize_of(key, &a[0]),
            Value::Array(_) => {
                Err(self.err(key, format!("only square sizes are supported, found {v}")))
            }
            _ => self.usize_of(key, v),
        }
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.map.get(key).filter(|v| !v.is_null()) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
            None => Ok(default),
        }
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key).filter(|v| !v.is_null()) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}"))),
            None => Ok(default),
        }
    }

    pub(crate) fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str> {
        match self.map.get(key).filter(|v| !v.is_null()) {
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(key, format!("expected a string, found {v}"))),
            None => Ok(default),
        }
    }

    /// `hidden_act` (default `gelu`) as an activation pretext supports.
    pub(crate) fn hidden_act(&self) -> Result<Activation> {
        let name = self.str_or("hidden_act", "gelu")?;
        activation(name).ok_or_else(|| {
            self.err(
                "hidden_act",
                format!(
                    "`{name}` is not supported; expected gelu, gelu_new, gelu_pytorch_tanh or relu"
                ),
            )
        })
    }
}

/// `hidden_act` → activation.
pub fn activation(name: &str) -> Option<Activation> {
    match name {
        "gelu" => Some(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
        "relu" => Some(Activation::Relu),
        _ => None,
    }
}

/// Activation → `hidden_act`.
pub fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_new",
        Activation::Relu => "relu",
    }
}

/// Reads and checks `path` (a `config.json`).
pub fn read(path: &Path) -> Result<HfConfig> {
    let text = crate::input::read_to_string(path)?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Error::data(path, format!("invalid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::data(path, "expected a JSON object"));
    };
    parse(&map, path)
}

/// Parses a `config.json` object; `path` names it in errors.
pub fn parse(map: &Map<String, Value>, path: &Path) -> Result<HfConfig> {
    let f = Fields { path, map };
    let model_type = f.str_or("model_type", "")?;
    let first_arch = map
        .get("architectures")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str());
    let architecture = match (model_type, first_arch) {
        ("vit", Some("ViTModel")) | ("vit", None) => Architecture::ViTModel,
        ("vit", Some("ViTForImageClassification")) => Architecture::ViTForImageClassification,
        ("vit_mae", Some("ViTMAEForPreTraining")) | ("vit_mae", None) => {
            Architecture::ViTMAEForPreTraining
        }
        ("vit" | "vit_mae", Some(other)) => {
            return Err(f.err(
                "architectures",
                format!(
                    "`{other}` is not supported; pretext loads ViTModel, \
                     ViTForImageClassification and ViTMAEForPreTraining"
                ),
            ))
        }
        ("", _) => return Err(f.err("model_type", "missing; expected \"vit\" or \"vit_mae\"")),
        (other, _) => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not supported; expected \"vit\" or \"vit_mae\""),
            ))
        }
    };
    let act = f.hidden_act()?;
    let norm_eps = f.f64_or("layer_norm_eps", 1e-12)?;
    let qkv_bias = f.bool_or("qkv_bias", true)?;
    let dropout = f.f64_or("hidden_dropout_prob", 0.0)?;
    let attention_dropout = f.f64_or("attention_probs_dropout_prob", 0.0)?;
    let encoder = EncoderConfig {
        norm: NormPosition::Pre,
        activation: act,
        norm_eps,
        qkv_bias,
        dropout,
        attention_dropout,
        ..f.transformer_shape()?
    };
    f.check_encoder(
        &encoder,
        ["hidden_dropout_prob", "attention_probs_dropout_prob"],
    )?;
    let geometry = ImageGeometry {
        size: f.side("image_size")?,
        channels: f.usize_or("num_channels", 3)?,
        patch: f.side("patch_size")?,
    };
    if !geometry.size.is_multiple_of(geometry.patch) {
        return Err(f.err(
            "patch_size",
            format!(
                "{} does not divide image_size {}",
                geometry.patch, geometry.size
            ),
        ));
    }
    let pooler_act = f.str_or("pooler_act", "tanh")?;
    if pooler_act != "tanh" {
        return Err(f.err(
            "pooler_act",
            format!("`{pooler_act}` is not supported; expected tanh"),
        ));
    }
    let pooler_output_size = f.usize_or("pooler_output_size", encoder.dim)?;
    let num_labels = match map.get("id2label").and_then(|v| v.as_object()) {
        Some(labels) => labels.len(),
        None => f.usize_or("num_labels", 2)?,
    };
    let mae = if architecture == Architecture::ViTMAEForPreTraining {
        let decoder = EncoderConfig {
            dim: f.usize("decoder_hidden_size")?,
            depth: f.usize("decoder_num_hidden_layers")?,
            heads: f.usize("decoder_num_attention_heads")?,
            mlp_dim: f.usize("decoder_intermediate_size")?,
            ..encoder.clone()
        };
        decoder
            .validate()
            .map_err(|m| f.err("decoder_hidden_size", m))?;
        let mask_ratio = f.f64_or("mask_ratio", 0.75)?;
        if !(mask_ratio > 0.0 && mask_ratio < 1.0) {
            return Err(f.err(
                "mask_ratio",
                format!("must be in (0, 1), found {mask_ratio}"),
            ));
        }
        for (key, dim) in [
            ("hidden_size", encoder.dim),
            ("decoder_hidden_size", decoder.dim),
        ] {
            if !dim.is_multiple_of(4) {
                return Err(f.err(
                    key,
                    format!("ViT-MAE's sin-cos positions need a multiple of 4, found {dim}"),
                ));
            }
        }
        Some((decoder, mask_ratio, f.bool_or("norm_pix_loss", false)?))
    } else {
        None
    };
    Ok(HfConfig {
        architecture,
        geometry,
        encoder,
        pooler_output_size,
        num_labels,
        mae,
        raw: map.clone(),
    })
}

/// Why `spec` cannot be written as a `transformers` model, if it cannot.
pub fn unrepresentable(spec: &ModelSpec) -> Option<String> {
    let e = &spec.encoder;
    if e.norm != NormPosition::Pre {
        return Some("the encoder is post-norm; transformers' ViT is pre-norm only".into());
    }
    match &spec.kind {
        Kind::Classifier {
            pooling: Pooling::Mean,
            ..
        } => Some(
            "the classifier pools by the mean of the patch tokens; \
             ViTForImageClassification pools the class token (pooling = \"cls\")"
                .into(),
        ),
        Kind::Mae { decoder, .. } => {
            if spec.positions != Positions::Sincos {
                return Some(
                    "the MAE encoder has learned positions; ViT-MAE's are a fixed sin-cos table"
                        .into(),
                );
            }
            let differs = [
                (decoder.norm != NormPosition::Pre, "is post-norm"),
                (decoder.activation != e.activation, "has another activation"),
                (decoder.norm_eps != e.norm_eps, "has another layer-norm eps"),
                (decoder.qkv_bias != e.qkv_bias, "has another qkv_bias"),
            ];
            differs.iter().find(|(d, _)| *d).map(|(_, what)| {
                format!(
                    "the MAE decoder {what} than the encoder; ViTMAEConfig has one setting for both"
                )
            })
        }
        Kind::Encoder { .. } | Kind::Classifier { .. } => None,
    }
}

/// A config holding only `id2label` and `label2id` for `names`, in label order.
pub fn id2label(names: &[String]) -> Map<String, Value> {
    let id2label: Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), json!(n)))
        .collect();
    let label2id: Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), json!(i)))
        .collect();
    Map::from_iter([
        ("id2label".to_string(), Value::Object(id2label)),
        ("label2id".to_string(), Value::Object(label2id)),
    ])
}

/// Class names in label order from a config's `id2label` (`{"0": "cat", ...}`), when it
/// names each of `0..n` once; `LABEL_i` otherwise, as `transformers` calls them.
pub fn label_list(config: Option<&Map<String, Value>>, n: usize) -> Vec<String> {
    let map = config
        .and_then(|c| c.get("id2label"))
        .and_then(Value::as_object);
    (0..n)
        .map(|i| {
            map.and_then(|m| m.get(&i.to_string()))
                .and_then(Value::as_str)
                .map_or_else(|| format!("LABEL_{i}"), str::to_string)
        })
        .collect()
}

/// Gives a classifier's exported config `transformers`' default label names (`LABEL_0`, …)
/// unless its `id2label` (kept from the source's config) already names `n` labels.
pub fn label_names(out: &mut Map<String, Value>, n: usize) {
    let keep = out
        .get("id2label")
        .and_then(|v| v.as_object())
        .is_some_and(|m| m.len() == n);
    if !keep {
        let id2label: Map<String, Value> = (0..n)
            .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
            .collect();
        let label2id: Map<String, Value> =
            (0..n).map(|i| (format!("LABEL_{i}"), json!(i))).collect();
        out.insert("id2label".into(), Value::Object(id2label));
        out.insert("label2id".into(), Value::Object(label2id));
    }
}

/// The `config.json` for `spec`: `base` (the original config, if any) with every field
/// pretext knows set from the spec.
pub fn to_json(spec: &ModelSpec, base: Option<&Map<String, Value>>) -> Result<Map<String, Value>> {
    if let Some(why) = unrepresentable(spec) {
        return Err(Error::Usage(format!(
            "cannot export as {}: {why}",
            spec.hf_class()
        )));
    }
    let e = &spec.encoder;
    let g = spec.geometry;
    let mut out = base.cloned().unwrap_or_default();
    out.remove("transformers_version");
    let set = |out: &mut Map<String, Value>, v: Value| {
        if let Value::Object(m) = v {
            out.extend(m);
        }
    };
    set(
        &mut out,
        json!({
            "architectures": [spec.hf_class()],
            "hidden_size": e.dim,
            "num_hidden_layers": e.depth,
            "num_attention_heads": e.heads,
            "intermediate_size": e.mlp_dim,
            "hidden_act": activation_name(e.activation),
            "layer_norm_eps": e.norm_eps,
            "qkv_bias": e.qkv_bias,
            "hidden_dropout_prob": e.dropout,
            "attention_probs_dropout_prob": e.attention_dropout,
            "image_size": g.size,
            "patch_size": g.patch,
            "num_channels": g.channels,
            "dtype": "float32",
        }),
    );
    match &spec.kind {
        Kind::Encoder { pooler } => {
            out.insert("model_type".into(), json!("vit"));
            out.insert("pooler_act".into(), json!("tanh"));
            out.insert("pooler_output_size".into(), json!(pooler.unwrap_or(e.dim)));
        }
        Kind::Classifier { num_labels, .. } => {
            out.insert("model_type".into(), json!("vit"));
            label_names(&mut out, *num_labels);
        }
        Kind::Mae {
            decoder,
            mask_ratio,
            norm_pix_loss,
        } => {
            out.insert("model_type".into(), json!("vit_mae"));
            for key in ["pooler_act", "pooler_output_size", "encoder_stride"] {
                out.remove(key);
            }
            set(
                &mut out,
                json!({
                    "decoder_hidden_size": decoder.dim,
                    "decoder_num_hidden_layers": decoder.depth,
                    "decoder_num_attention_heads": decoder.heads,
                    "decoder_intermediate_size": decoder.mlp_dim,
                    "mask_ratio": mask_ratio,
                    "norm_pix_loss": norm_pix_loss,
                }),
            );
        }
    }
    Ok(out)
}
