//! What a recipe will allocate, estimated from its sizes before anything is built: the
//! model's weights, their gradients and AdamW's two moments, and one training batch's
//! activations. `recipe check` reports it; a recipe over [`crate::limits::max_alloc`] is
//! refused naming the key that makes it so.

use std::fmt;
use std::path::Path;

use super::types::{ObjectiveSection, Recipe};
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
    pub per_example: u128,
    pub batch: u128,
}

impl Estimate {
    pub fn weights(&self) -> u128 {
        self.encoder + self.decoder + self.embeddings + self.positions
    }
    pub fn total(&self) -> u128 {
        self.weights() + self.optimizer + self.batch
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "about {} in all: weights {}, gradients and optimizer state {}, one batch {} (limit {})",
            limits::human(self.total()),
            limits::human(self.weights()),
            limits::human(self.optimizer),
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
    let decoder = match &r.objective {
        Some(ObjectiveSection::Mae(m)) => Some(EncoderConfig {
            dim: m.decoder.dim,
            depth: m.decoder.depth,
            heads: m.decoder.heads,
            mlp_dim: m.decoder.mlp_dim.unwrap_or(4 * m.decoder.dim),
            ..enc
        }),
        _ => None,
    };
    let dec_params = decoder.as_ref().map_or(0, |d| {
        let dd = d.dim as u128;
        d.num_params() + enc.dim as u128 * dd + dd * fp.patch_values
    });
    let positions = 4 * fp.tokens * (enc.dim + decoder.as_ref().map_or(0, |d| d.dim)) as u128;
    let encoder = 4 * enc.num_params();
    let decoder_bytes = 4 * dec_params;
    let embeddings = 4 * fp.embed_params;
    let per_example = enc.activation_bytes(fp.tokens)
        + decoder
            .as_ref()
            .map_or(0, |d| d.activation_bytes(fp.tokens))
        + 4 * (fp.input_values + 2 * fp.output_values);
    Some(Estimate {
        encoder,
        decoder: decoder_bytes,
        embeddings,
        positions,
        optimizer: 3 * (encoder + decoder_bytes + embeddings + positions),
        per_example,
        batch: per_example * r.train.batch_size as u128,
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
    let parts = [
        (4 * e.encoder, "model"),
        (4 * e.decoder, "objective.decoder"),
        (4 * e.embeddings, fp.embed_key),
        (4 * e.positions, fp.tokens_key),
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
