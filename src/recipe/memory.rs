//! What a recipe will allocate, estimated from its sizes before anything is built: the
//! model's weights, their gradients and AdamW's two moments, data2vec's EMA teacher, and one
//! training batch's activations. `recipe check` reports it; a recipe over [`crate::limits::max_alloc`] is
//! refused naming the key that makes it so.

use std::fmt;
use std::path::Path;

use super::types::Recipe;
use super::ObjectiveSection;
use crate::backbone::EncoderConfig;
use crate::error::{Error, Result};
use crate::limits;

/// A modality's sizes per example, from its recipe section.
pub struct Footprint {
    /// Tokens the encoder sees, and the key that sets their number.
    pub tokens: u128,
    pub tokens_key: &'static str,
    /// Values of one input (pixels, ids, spectrogram bins) and of one patch (0 for text).
    pub input_values: u128,
    pub patch_values: u128,
    /// Parameters outside the block stack and the position tables (embeddings, output
    /// heads), and the key that sets their number.
    pub embed_params: u128,
    pub embed_key: &'static str,
    /// Values of the objective's output per example beyond the hidden states (text: the
    /// vocabulary logits).
    pub output_values: u128,
}

/// Bytes, by where they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub encoder: u128,
    pub decoder: u128,
    pub embeddings: u128,
    /// Position tables of the encoder and decoder (one row per token).
    pub positions: u128,
    /// Gradients and AdamW's two moments: three times the weights.
    pub optimizer: u128,
    /// data2vec's EMA teacher: a copy of the encoder, its embeddings and position table (no
    /// gradients, no optimizer state), and per example its top-K block outputs and their
    /// average, which the targets are made of. 0 for the other objectives.
    pub teacher: u128,
    pub per_example: u128,
    pub batch: u128,
}

impl Estimate {
    pub fn weights(&self) -> u128 {
        [self.encoder, self.decoder, self.embeddings, self.positions]
            .into_iter()
            .fold(0, u128::saturating_add)
    }
    pub fn total(&self) -> u128 {
        [self.weights(), self.optimizer, self.teacher, self.batch]
            .into_iter()
            .fold(0, u128::saturating_add)
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "about {} in all: weights {}, gradients and optimizer state {}",
            limits::human(self.total()),
            limits::human(self.weights()),
            limits::human(self.optimizer),
        )?;
        if self.teacher > 0 {
            write!(f, ", EMA teacher {}", limits::human(self.teacher))?;
        }
        write!(
            f,
            ", one batch {} (limit {})",
            limits::human(self.batch),
            limits::human(limits::max_alloc() as u128),
        )
    }
}

/// The estimate for a recipe whose shape it gives itself (`None` with `model.source`: the
/// shape is read from the source's config, which is checked when it is loaded).
pub fn estimate(r: &Recipe) -> Option<Estimate> {
    if r.model.source.is_some() {
        return None;
    }
    let fp = (r.data.modality.recipe().footprint)(r)?;
    let enc = r.model.encoder_config();
    let decoder = r
        .objective
        .as_ref()
        .and_then(|o| o.decoder())
        .map(|d| EncoderConfig {
            dim: d.dim,
            depth: d.depth,
            heads: d.heads,
            mlp_dim: d.mlp_dim.unwrap_or(d.dim.saturating_mul(4)),
            ..enc
        });
    // Saturating sums and products: every size here may come from a hostile recipe.
    let (add, mul) = (u128::saturating_add, u128::saturating_mul);
    let dec_params = decoder.as_ref().map_or(0, |d| {
        let dd = d.dim as u128;
        add(
            d.num_params(),
            add(mul(enc.dim as u128, dd), mul(dd, fp.patch_values)),
        )
    });
    let width = add(
        enc.dim as u128,
        decoder.as_ref().map_or(0, |d| d.dim as u128),
    );
    let positions = mul(4, mul(fp.tokens, width));
    let encoder = mul(4, enc.num_params());
    let decoder_bytes = mul(4, dec_params);
    let embeddings = mul(4, fp.embed_params);
    let per_example = add(
        add(
            enc.activation_bytes(fp.tokens),
            decoder
                .as_ref()
                .map_or(0, |d| d.activation_bytes(fp.tokens)),
        ),
        mul(4, add(fp.input_values, mul(2, fp.output_values))),
    );
    let weights = add(add(encoder, decoder_bytes), add(embeddings, positions));
    let teacher = match &r.objective {
        Some(ObjectiveSection::Data2vec(d)) => {
            let encoder_positions = mul(4, mul(fp.tokens, enc.dim as u128));
            let targets = mul(
                4,
                mul(
                    (d.top_k_for(enc.depth) as u128).saturating_add(1),
                    mul(fp.tokens, enc.dim as u128),
                ),
            );
            add(
                add(encoder, add(embeddings, encoder_positions)),
                mul(targets, r.train.batch_size as u128),
            )
        }
        _ => 0,
    };
    Some(Estimate {
        encoder,
        decoder: decoder_bytes,
        embeddings,
        positions,
        optimizer: mul(3, weights),
        teacher,
        per_example,
        batch: mul(per_example, r.train.batch_size as u128),
    })
}

/// Refuses a recipe over the allocation limit, naming the key that puts it over.
pub fn check(r: &Recipe, file: &Path) -> Result<()> {
    let (Some(e), Some(fp)) = (estimate(r), (r.data.modality.recipe().footprint)(r)) else {
        return Ok(());
    };
    let limit = limits::max_alloc() as u128;
    if e.total() <= limit {
        return Ok(());
    }
    // The first part that alone is over the limit names the key; otherwise the largest.
    let batch_key = match e.per_example > limit {
        true => fp.tokens_key,
        false => "train.batch_size",
    };
    let four = |x: u128| x.saturating_mul(4);
    let parts = [
        (four(e.encoder), "model"),
        (four(e.decoder), "objective.decoder"),
        (four(e.embeddings), fp.embed_key),
        (four(e.positions), fp.tokens_key),
        (e.teacher, "model"),
        (e.per_example, fp.tokens_key),
        (e.batch, batch_key),
    ];
    let key = match parts.iter().find(|p| p.0 > limit) {
        Some(p) => p.1,
        None => parts.iter().max_by_key(|p| p.0).map_or("model", |p| p.1),
    };
    let message = limits::check(e.total(), "this recipe")
        .err()
        .unwrap_or_default();
    Err(Error::InvalidValue {
        file: file.to_path_buf(),
        key: key.into(),
        message: format!("{message}; estimate: {e}"),
    })
}
