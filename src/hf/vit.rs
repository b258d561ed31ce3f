//! The ViT family's name table (`ViTModel`, `ViTForImageClassification`): pretext names ↔
//! the names `save_pretrained` writes (transformers 4.x and 5.x alike), with shapes.
//!
//! ```text
//! vit.patch_embed.{weight,bias}      embeddings.patch_embeddings.projection.{weight,bias}
//! vit.cls_token                      embeddings.cls_token
//! vit.pos_embed                      embeddings.position_embeddings
//! vit.encoder.layers.{i}.<block>     encoder.layer.{i}.<block>   (see BLOCK)
//! vit.encoder.norm.{weight,bias}     layernorm.{weight,bias}
//! pooler.dense.{weight,bias}         pooler.dense.{weight,bias}       (ViTModel)
//! classifier.{weight,bias}           classifier.{weight,bias}         (ViTForImageClassification)
//! ```
//! Base-model names (the first five lines) carry the prefix `vit.` inside task wrappers and
//! none in a bare `ViTModel`; loading accepts both, as `from_pretrained` does.

use crate::backbone::{EncoderConfig, NormPosition};

use super::spec::{Kind, ModelSpec};

/// One parameter: its pretext name, its Hugging Face name (base-model names without `vit.`),
/// other Hugging Face names it is found under, and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub ours: String,
    pub hf: String,
    pub aliases: Vec<String>,
    pub shape: Vec<usize>,
    /// Part of the base model: `vit.`-prefixed in task wrappers.
    pub base: bool,
}

impl Row {
    pub fn new(ours: impl Into<String>, hf: impl Into<String>, shape: Vec<usize>) -> Self {
        Self {
            ours: ours.into(),
            hf: hf.into(),
            aliases: Vec::new(),
            shape,
            base: false,
        }
    }

    pub(crate) fn base(mut self) -> Self {
        self.base = true;
        self
    }
}

/// pretext ↔ Hugging Face names inside one transformer block (`ViTLayer` / `ViTMAELayer`).
pub const BLOCK: &[(&str, &str)] = &[
    ("norm1.weight", "layernorm_before.weight"),
    ("norm1.bias", "layernorm_before.bias"),
    ("attn.q.weight", "attention.attention.query.weight"),
    ("attn.q.bias", "attention.attention.query.bias"),
    ("attn.k.weight", "attention.attention.key.weight"),
    ("attn.k.bias", "attention.attention.key.bias"),
    ("attn.v.weight", "attention.attention.value.weight"),
    ("attn.v.bias", "attention.attention.value.bias"),
    ("attn.o.weight", "attention.output.dense.weight"),
    ("attn.o.bias", "attention.output.dense.bias"),
    ("norm2.weight", "layernorm_after.weight"),
    ("norm2.bias", "layernorm_after.bias"),
    ("mlp.fc1.weight", "intermediate.dense.weight"),
    ("mlp.fc1.bias", "intermediate.dense.bias"),
    ("mlp.fc2.weight", "output.dense.weight"),
    ("mlp.fc2.bias", "output.dense.bias"),
];

/// Shape of a block parameter; `None` when the block has no such parameter (qkv bias off).
pub(crate) fn block_shape(leaf: &str, cfg: &EncoderConfig) -> Option<Vec<usize>> {
    let (d, m) = (cfg.dim, cfg.mlp_dim);
    Some(match leaf {
        "attn.q.bias" | "attn.k.bias" | "attn.v.bias" if !cfg.qkv_bias => return None,
        "attn.q.weight" | "attn.k.weight" | "attn.v.weight" | "attn.o.weight" => vec![d, d],
        "mlp.fc1.weight" => vec![m, d],
        "mlp.fc1.bias" => vec![m],
        "mlp.fc2.weight" => vec![d, m],
        _ => vec![d],
    })
}

/// Rows of a stack: blocks `{ours}.layers.{i}` ↔ `hf_layer(i)` (plus `aliases(i)`),
/// then the final norm `{ours}.norm` ↔ `hf_norm`.
pub fn stack_rows(
    cfg: &EncoderConfig,
    ours: &str,
    hf_layer: impl Fn(usize) -> String,
    aliases: impl Fn(usize) -> Vec<String>,
    hf_norm: &str,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for i in 0..cfg.depth {
        for (our_leaf, hf_leaf) in BLOCK {
            if let Some(shape) = block_shape(our_leaf, cfg) {
                let mut row = Row::new(
                    format!("{ours}.layers.{i}.{our_leaf}"),
                    format!("{}.{hf_leaf}", hf_layer(i)),
                    shape,
                );
                row.aliases = aliases(i)
                    .into_iter()
                    .map(|a| format!("{a}.{hf_leaf}"))
                    .collect();
                rows.push(row);
            }
        }
    }
    // Post-norm stacks (pretext's own; not representable in transformers) have no final norm.
    let final_norm: &[&str] = match cfg.norm {
        NormPosition::Pre => &["weight", "bias"],
        NormPosition::Post => &[],
    };
    for leaf in final_norm {
        rows.push(Row::new(
            format!("{ours}.norm.{leaf}"),
            format!("{hf_norm}.{leaf}"),
            vec![cfg.dim],
        ));
    }
    rows
}

/// The image encoder (`vit.*`), shared by both families.
pub fn encoder_rows(spec: &ModelSpec) -> Vec<Row> {
    let g = spec.geometry;
    let d = spec.encoder.dim;
    let mut rows = vec![
        Row::new(
            "vit.patch_embed.weight",
            "embeddings.patch_embeddings.projection.weight",
            vec![d, g.channels, g.patch, g.patch],
        ),
        Row::new(
            "vit.patch_embed.bias",
            "embeddings.patch_embeddings.projection.bias",
            vec![d],
        ),
        Row::new("vit.cls_token", "embeddings.cls_token", vec![1, 1, d]),
        Row::new(
            "vit.pos_embed",
            "embeddings.position_embeddings",
            vec![1, 1 + g.num_patches(), d],
        ),
    ];
    rows.extend(stack_rows(
        &spec.encoder,
        "vit.encoder",
        |i| format!("encoder.layer.{i}"),
        |_| Vec::new(),
        "layernorm",
    ));
    rows.into_iter().map(Row::base).collect()
}

/// The ViT family's table: encoder, then the pooler or the classifier.
pub fn rows(spec: &ModelSpec) -> Vec<Row> {
    let d = spec.encoder.dim;
    let mut rows = encoder_rows(spec);
    match spec.kind {
        Kind::Encoder { pooler: Some(p) } => {
            rows.push(Row::new(
                "pooler.dense.weight",
                "pooler.dense.weight",
                vec![p, d],
            ));
            rows.push(Row::new("pooler.dense.bias", "pooler.dense.bias", vec![p]));
        }
        Kind::Classifier { num_labels: n, .. } => {
            rows.push(Row::new(
                "classifier.weight",
                "classifier.weight",
                vec![n, d],
            ));
            rows.push(Row::new("classifier.bias", "classifier.bias", vec![n]));
        }
        Kind::Encoder { pooler: None } | Kind::Mae { .. } => {}
    }
    rows
}
