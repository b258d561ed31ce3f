//! The BERT / RoBERTa family: `config.json` ↔ [`TextSpec`], and the name table (pretext
//! names ↔ the names `save_pretrained` writes, with shapes) that serves loading and export.
//!
//! ```text
//! text.embed.word                  embeddings.word_embeddings.weight
//! text.embed.position              embeddings.position_embeddings.weight
//! text.embed.token_type            embeddings.token_type_embeddings.weight
//! text.embed.norm.{weight,bias}    embeddings.LayerNorm.{weight,bias}
//! text.layers.{i}.<block>          encoder.layer.{i}.<block>   (see BLOCK)
//! pooler.dense.{weight,bias}       pooler.dense.{weight,bias}            (BertModel, RobertaModel)
//! mlm.dense.{weight,bias}          cls.predictions.transform.dense.*     lm_head.dense.*
//! mlm.norm.{weight,bias}           cls.predictions.transform.LayerNorm.* lm_head.layer_norm.*
//! mlm.bias                         cls.predictions.bias                  lm_head.bias
//! pooler.dense.{weight,bias}       (BERT: the pooler)                    classifier.dense.*
//! classifier.{weight,bias}         classifier.*                          classifier.out_proj.*
//! ```
//! (the last two lines for `…ForSequenceClassification`: RoBERTa's classification head is
//! BERT's pooler + classifier under other names).
//! Base-model names (all but the MLM head's) carry the prefix `bert.` / `roberta.` inside task
//! wrappers and none in a bare `BertModel`; loading accepts both, as `from_pretrained` does.
//! The MLM decoder weight is tied to `embeddings.word_embeddings.weight`: checkpoints may or
//! may not hold it (`cls.predictions.decoder.weight`, `lm_head.decoder.weight`), export does
//! not write it (transformers 5's `save_pretrained` does not either).
//!
//! Follows `transformers/models/bert/modeling_bert.py` and `roberta/modeling_roberta.py`.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::config::{activation_name, label_names, Fields};
use super::vit::{block_shape, Row};
use crate::backbone::{EncoderConfig, NormPosition};
use crate::error::{Error, Result};
use crate::modality::text::{TextConfig, TextPositions};

/// BERT or RoBERTa: the position scheme, the wrapper prefix and the MLM head's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFamily {
    Bert,
    Roberta,
}

impl TextFamily {
    /// The family whose positions `cfg` uses.
    pub fn of(cfg: &TextConfig) -> Self {
        match cfg.positions {
            TextPositions::Absolute => TextFamily::Bert,
            TextPositions::Roberta => TextFamily::Roberta,
        }
    }

    /// `model_type` in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            TextFamily::Bert => "bert",
            TextFamily::Roberta => "roberta",
        }
    }

    /// The attribute task wrappers hold the base model under, with its dot.
    pub fn prefix(self) -> &'static str {
        match self {
            TextFamily::Bert => "bert.",
            TextFamily::Roberta => "roberta.",
        }
    }

    /// The MLM head's module path.
    fn head(self) -> &'static str {
        match self {
            TextFamily::Bert => "cls.predictions",
            TextFamily::Roberta => "lm_head",
        }
    }
}

/// The task wrapper around the text encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `BertModel` / `RobertaModel`, with its pooler (`tanh(dense(h[:, 0]))`) when the
    /// checkpoint has one.
    Encoder { pooler: bool },
    /// `BertForMaskedLM` / `RobertaForMaskedLM`.
    MaskedLm,
    /// `BertForSequenceClassification` / `RobertaForSequenceClassification`:
    /// `classifier(tanh(dense(h[:, 0])))`. BERT's `dense` is its pooler; RoBERTa's is
    /// `classifier.dense` (its `classifier.out_proj` is pretext's `classifier`).
    Classifier { num_labels: usize },
}

/// Shape and behaviour of a text model, enough to build it around its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSpec {
    pub config: TextConfig,
    pub kind: TextKind,
}

impl TextSpec {
    pub fn family(&self) -> TextFamily {
        TextFamily::of(&self.config)
    }

    /// The `transformers` class this model corresponds to.
    pub fn hf_class(&self) -> &'static str {
        match (self.family(), self.kind) {
            (TextFamily::Bert, TextKind::Encoder { .. }) => "BertModel",
            (TextFamily::Bert, TextKind::MaskedLm) => "BertForMaskedLM",
            (TextFamily::Roberta, TextKind::Encoder { .. }) => "RobertaModel",
            (TextFamily::Roberta, TextKind::MaskedLm) => "RobertaForMaskedLM",
            (TextFamily::Bert, TextKind::Classifier { .. }) => "BertForSequenceClassification",
            (TextFamily::Roberta, TextKind::Classifier { .. }) => {
                "RobertaForSequenceClassification"
            }
        }
    }
}

/// pretext ↔ Hugging Face names inside one post-norm block (`BertLayer` / `RobertaLayer`).
pub const BLOCK: &[(&str, &str)] = &[
    ("attn.q.weight", "attention.self.query.weight"),
    ("attn.q.bias", "attention.self.query.bias"),
    ("attn.k.weight", "attention.self.key.weight"),
    ("attn.k.bias", "attention.self.key.bias"),
    ("attn.v.weight", "attention.self.value.weight"),
    ("attn.v.bias", "attention.self.value.bias"),
    ("attn.o.weight", "attention.output.dense.weight"),
    ("attn.o.bias", "attention.output.dense.bias"),
    ("norm1.weight", "attention.output.LayerNorm.weight"),
    ("norm1.bias", "attention.output.LayerNorm.bias"),
    ("mlp.fc1.weight", "intermediate.dense.weight"),
    ("mlp.fc1.bias", "intermediate.dense.bias"),
    ("mlp.fc2.weight", "output.dense.weight"),
    ("mlp.fc2.bias", "output.dense.bias"),
    ("norm2.weight", "output.LayerNorm.weight"),
    ("norm2.bias", "output.LayerNorm.bias"),
];

/// The family's table for `spec`: encoder, then the pooler or the MLM head.
pub fn rows(spec: &TextSpec) -> Vec<Row> {
    let c = &spec.config;
    let d = c.encoder.dim;
    let mut rows = vec![
        Row::new(
            "text.embed.word",
            "embeddings.word_embeddings.weight",
            vec![c.vocab_size, d],
        ),
        Row::new(
            "text.embed.position",
            "embeddings.position_embeddings.weight",
            vec![c.max_positions, d],
        ),
        Row::new(
            "text.embed.token_type",
            "embeddings.token_type_embeddings.weight",
            vec![c.type_vocab_size, d],
        ),
        Row::new(
            "text.embed.norm.weight",
            "embeddings.LayerNorm.weight",
            vec![d],
        ),
        Row::new("text.embed.norm.bias", "embeddings.LayerNorm.bias", vec![d]),
    ];
    for i in 0..c.encoder.depth {
        for (ours, hf) in BLOCK {
            if let Some(shape) = block_shape(ours, &c.encoder) {
                rows.push(Row::new(
                    format!("text.layers.{i}.{ours}"),
                    format!("encoder.layer.{i}.{hf}"),
                    shape,
                ));
            }
        }
    }
    let bert_pooler = match spec.kind {
        TextKind::Encoder { pooler } => pooler,
        TextKind::Classifier { .. } => spec.family() == TextFamily::Bert,
        TextKind::MaskedLm => false,
    };
    if bert_pooler {
        rows.push(Row::new(
            "pooler.dense.weight",
            "pooler.dense.weight",
            vec![d, d],
        ));
        rows.push(Row::new("pooler.dense.bias", "pooler.dense.bias", vec![d]));
    }
    let mut rows: Vec<Row> = rows.into_iter().map(Row::base).collect();
    if let TextKind::Classifier { num_labels: n } = spec.kind {
        let (dense, out) = match spec.family() {
            TextFamily::Bert => (None, "classifier"),
            TextFamily::Roberta => (Some("classifier.dense"), "classifier.out_proj"),
        };
        if let Some(dense) = dense {
            rows.push(Row::new(
                "pooler.dense.weight",
                format!("{dense}.weight"),
                vec![d, d],
            ));
            rows.push(Row::new(
                "pooler.dense.bias",
                format!("{dense}.bias"),
                vec![d],
            ));
        }
        rows.push(Row::new(
            "classifier.weight",
            format!("{out}.weight"),
            vec![n, d],
        ));
        rows.push(Row::new("classifier.bias", format!("{out}.bias"), vec![n]));
    }
    if spec.kind == TextKind::MaskedLm {
        let (head, norm) = match spec.family() {
            TextFamily::Bert => ("cls.predictions.transform", "LayerNorm"),
            TextFamily::Roberta => ("lm_head", "layer_norm"),
        };
        let top = spec.family().head();
        rows.extend([
            Row::new(
                "mlm.dense.weight",
                format!("{head}.dense.weight"),
                vec![d, d],
            ),
            Row::new("mlm.dense.bias", format!("{head}.dense.bias"), vec![d]),
            Row::new("mlm.norm.weight", format!("{head}.{norm}.weight"), vec![d]),
            Row::new("mlm.norm.bias", format!("{head}.{norm}.bias"), vec![d]),
        ]);
        let mut bias = Row::new("mlm.bias", format!("{top}.bias"), vec![c.vocab_size]);
        // transformers ties `decoder.bias` to `bias`; older checkpoints hold only the former.
        bias.aliases = vec![format!("{top}.decoder.bias")];
        rows.push(bias);
    }
    rows
}

/// Names a checkpoint may hold that carry nothing the model needs: buffers
/// (`position_ids`, `token_type_ids`), the tied decoder (checked against the word embeddings
/// by the loader) and, for MLM heads, BERT pretraining leftovers (the pooler and the
/// next-sentence head of `BertForPreTraining` checkpoints, which `from_pretrained` also drops).
pub fn ignorable(spec: &TextSpec, name: &str) -> bool {
    let p = spec.family().prefix();
    let base = name.strip_prefix(p).unwrap_or(name);
    let head = spec.family().head();
    matches!(
        base,
        "embeddings.position_ids" | "embeddings.token_type_ids"
    ) || name == format!("{head}.decoder.bias")
        || (spec.kind == TextKind::MaskedLm
            && (base.starts_with("pooler.") || name.starts_with("cls.seq_relationship.")))
        || (matches!(spec.kind, TextKind::Classifier { .. })
            && spec.family() == TextFamily::Roberta
            && base.starts_with("pooler."))
}

/// The tied decoder weight's name in a checkpoint.
pub fn decoder_weight(spec: &TextSpec) -> String {
    format!("{}.decoder.weight", spec.family().head())
}

/// The `transformers` text classes pretext loads, by `config.json`.
pub fn parse_config(map: &Map<String, Value>, path: &Path) -> Result<TextSpec> {
    let f = Fields { path, map };
    let model_type = f.str_or("model_type", "")?;
    let family = match model_type {
        "bert" => TextFamily::Bert,
        "roberta" => TextFamily::Roberta,
        other => {
            return Err(f.err(
                "model_type",
                format!(
                    "`{other}` is not a text model pretext loads; expected \"bert\" or \"roberta\""
                ),
            ))
        }
    };
    let arch = map
        .get("architectures")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
        .and_then(|a| a.as_str());
    let kind = match (family, arch) {
        (_, None)
        | (TextFamily::Bert, Some("BertModel"))
        | (TextFamily::Roberta, Some("RobertaModel")) => TextKind::Encoder { pooler: true },
        (TextFamily::Bert, Some("BertForMaskedLM"))
        | (TextFamily::Roberta, Some("RobertaForMaskedLM")) => TextKind::MaskedLm,
        (TextFamily::Bert, Some("BertForSequenceClassification"))
        | (TextFamily::Roberta, Some("RobertaForSequenceClassification")) => {
            let num_labels = match map.get("id2label").and_then(|v| v.as_object()) {
                Some(labels) => labels.len(),
                None => f.usize_or("num_labels", 2)?,
            };
            let problem = f.str_or("problem_type", "")?;
            if problem == "multi_label_classification" {
                return Err(f.err(
                    "problem_type",
                    "multi-label classification is not supported",
                ));
            }
            TextKind::Classifier { num_labels }
        }
        (_, Some(other)) => {
            return Err(f.err(
                "architectures",
                format!(
                    "`{other}` is not supported; pretext loads BertModel, BertForMaskedLM, \
                     BertForSequenceClassification and their RoBERTa counterparts"
                ),
            ))
        }
    };
    if f.bool_or("is_decoder", false)? {
        return Err(f.err("is_decoder", "decoders are not supported; expected false"));
    }
    let pos_type = f.str_or("position_embedding_type", "absolute")?;
    if pos_type != "absolute" {
        return Err(f.err(
            "position_embedding_type",
            format!("`{pos_type}` is not supported; expected \"absolute\""),
        ));
    }
    let act = f.hidden_act()?;
    let eps = f.f64_or("layer_norm_eps", 1e-12)?;
    let encoder = EncoderConfig {
        norm: NormPosition::Post,
        activation: act,
        norm_eps: eps,
        qkv_bias: true,
        dropout: f.f64_or("hidden_dropout_prob", 0.1)?,
        attention_dropout: f.f64_or("attention_probs_dropout_prob", 0.1)?,
        drop_path: 0.0,
        ..f.transformer_shape()?
    };
    let default_pad = match family {
        TextFamily::Bert => 0,
        TextFamily::Roberta => 1,
    };
    let pad = match map.get("pad_token_id").filter(|v| !v.is_null()) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| f.err("pad_token_id", format!("expected an integer, found {v}")))?
            as u32,
        None => default_pad,
    };
    let config = TextConfig {
        vocab_size: f.usize("vocab_size")?,
        max_positions: f.usize_or("max_position_embeddings", 512)?,
        type_vocab_size: f.usize_or("type_vocab_size", 2)?,
        pad_token_id: pad,
        positions: match family {
            TextFamily::Bert => TextPositions::Absolute,
            TextFamily::Roberta => TextPositions::Roberta,
        },
        embed_norm_eps: eps,
        encoder,
    };
    f.check_encoder(
        &config.encoder,
        ["hidden_dropout_prob", "attention_probs_dropout_prob"],
    )?;
    config.validate().map_err(|m| f.err("hidden_size", m))?;
    Ok(TextSpec { config, kind })
}

/// The `config.json` for `spec`: `base` (the original config, if any) with every field
/// pretext knows set from the spec.
pub fn config_json(
    spec: &TextSpec,
    base: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>> {
    let c = &spec.config;
    let e = &c.encoder;
    if e.norm != NormPosition::Post || !e.qkv_bias {
        return Err(Error::Usage(format!(
            "cannot export as {}: BERT and RoBERTa are post-norm with qkv bias",
            spec.hf_class()
        )));
    }
    if c.embed_norm_eps != e.norm_eps {
        return Err(Error::Usage(format!(
            "cannot export as {}: the embedding LayerNorm eps ({}) differs from the encoder's ({}); \
             transformers has one layer_norm_eps",
            spec.hf_class(),
            c.embed_norm_eps,
            e.norm_eps
        )));
    }
    let mut out = base.cloned().unwrap_or_default();
    out.remove("transformers_version");
    let fields = json!({
        "architectures": [spec.hf_class()],
        "model_type": spec.family().model_type(),
        "vocab_size": c.vocab_size,
        "hidden_size": e.dim,
        "num_hidden_layers": e.depth,
        "num_attention_heads": e.heads,
        "intermediate_size": e.mlp_dim,
        "hidden_act": activation_name(e.activation),
        "hidden_dropout_prob": e.dropout,
        "attention_probs_dropout_prob": e.attention_dropout,
        "max_position_embeddings": c.max_positions,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": e.norm_eps,
        "pad_token_id": c.pad_token_id,
        "position_embedding_type": "absolute",
        "is_decoder": false,
        "tie_word_embeddings": true,
        "dtype": "float32",
    });
    if let Value::Object(m) = fields {
        out.extend(m);
    }
    if let TextKind::Classifier { num_labels: n } = spec.kind {
        label_names(&mut out, n);
    }
    Ok(out)
}
