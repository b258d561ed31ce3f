//! The ViT-MAE family's name table (`ViTMAEForPreTraining`): the ViT encoder rows
//! ([`super::vit::encoder_rows`], under `vit.`) and the decoder:
//!
//! ```text
//! decoder.embed.{weight,bias}             decoder.decoder_embed.{weight,bias}
//! decoder.mask_token                      decoder.mask_token
//! decoder.pos_embed   (fixed)             decoder.decoder_pos_embed
//! decoder.blocks.layers.{i}.<block>       decoder.decoder_layers.{i}.<block>
//! decoder.blocks.norm.{weight,bias}       decoder.decoder_norm.{weight,bias}
//! decoder.pred.{weight,bias}              decoder.decoder_pred.{weight,bias}
//! ```
//! `decoder.decoder_layers.{i}` is what the hub's checkpoints and transformers 4.x hold and
//! what export writes; transformers 5.x's `save_pretrained` writes
//! `decoder.decoder_encoder.layer.{i}` instead (its renaming of `layers.` back to
//! `encoder.layer.` also hits `decoder_layers.`), which loading accepts as an alias. Both load
//! in transformers 5.x. The encoder's `vit.pos_embed` is the fixed
//! `embeddings.position_embeddings` table here.

use super::spec::{Kind, ModelSpec};
use super::vit::{encoder_rows, stack_rows, Row};

/// The ViT-MAE family's table. Empty for models that are not MAEs.
pub fn rows(spec: &ModelSpec) -> Vec<Row> {
    let Kind::Mae { decoder, .. } = &spec.kind else {
        return Vec::new();
    };
    let g = spec.geometry;
    let (d, dd) = (spec.encoder.dim, decoder.dim);
    let mut rows = encoder_rows(spec);
    rows.extend([
        Row::new(
            "decoder.embed.weight",
            "decoder.decoder_embed.weight",
            vec![dd, d],
        ),
        Row::new("decoder.embed.bias", "decoder.decoder_embed.bias", vec![dd]),
        Row::new("decoder.mask_token", "decoder.mask_token", vec![1, 1, dd]),
        Row::new(
            "decoder.pos_embed",
            "decoder.decoder_pos_embed",
            vec![1, 1 + g.num_patches(), dd],
        ),
    ]);
    rows.extend(stack_rows(
        decoder,
        "decoder.blocks",
        |i| format!("decoder.decoder_layers.{i}"),
        |i| vec![format!("decoder.decoder_encoder.layer.{i}")],
        "decoder.decoder_norm",
    ));
    rows.extend([
        Row::new(
            "decoder.pred.weight",
            "decoder.decoder_pred.weight",
            vec![g.patch_dim(), dd],
        ),
        Row::new(
            "decoder.pred.bias",
            "decoder.decoder_pred.bias",
            vec![g.patch_dim()],
        ),
    ]);
    rows
}
