//! The `[data.text]` section of a recipe (sequence length, tokenizer) and the checks of a
//! text recipe.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tokenizer::TokenizerKind;
use crate::error::{Error, Result};
use crate::recipe::memory::Footprint;
use crate::recipe::source::{sources, DataSource};
use crate::recipe::{check, ModalityRecipe, ObjectiveKind, Recipe};

/// Text pretrains with masked-language modelling or data2vec.
pub const RECIPE: ModalityRecipe = ModalityRecipe {
    name: "text",
    objectives: &[ObjectiveKind::Mlm, ObjectiveKind::Data2vec],
    validate,
    footprint,
};

fn footprint(r: &Recipe) -> Option<Footprint> {
    let text = r.data.text.as_ref()?;
    let tokens = text.max_len as f64;
    // A tokenizer file's vocabulary is known once it is read; its default size stands in.
    let vocab = text.tokenizer.as_ref().map_or(8000, |t| t.vocab_size) as f64;
    let d = r.model.dim as f64;
    Some(Footprint {
        tokens: tokens as u128,
        tokens_key: "data.text.max_len",
        input_values: (2.0 * tokens) as u128,
        patch_values: 0,
        // Word and type embeddings and their norm; the MLM head's transform and output bias
        // (its decoder is tied to the word embeddings). Positions are counted by tokens.
        embed_params: ((vocab + 2.0) * d + 2.0 * d + d * d + 3.0 * d + vocab) as u128,
        embed_key: "data.text.tokenizer.vocab_size",
        output_values: (tokens * vocab) as u128,
    })
}

/// How text becomes token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSection {
    /// Tokens per sequence, special tokens included (pretraining blocks; longer downstream
    /// examples are truncated).
    #[serde(default = "max_len")]
    pub max_len: usize,
    /// Absent with `model.source`: the source's own `tokenizer.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerSection>,
}

/// `{ file = "tokenizer.json" }`, or `{ train = "wordpiece" | "bpe", vocab_size = N }` to
/// train one on `data.train` (saved as `tokenizer.json` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TokenizerKind>,
    /// Vocabulary size of a trained tokenizer, special tokens included.
    #[serde(default = "vocab_size")]
    pub vocab_size: usize,
    /// Lower-case before tokenizing (trained WordPiece tokenizers).
    #[serde(default = "yes")]
    pub lowercase: bool,
}

fn max_len() -> usize {
    128
}

fn vocab_size() -> usize {
    8000
}

fn yes() -> bool {
    true
}

/// Text recipes: a tokenizer from a file, from training, or from the model source.
pub fn validate(r: &Recipe, file: &Path) -> Result<()> {
    let text = r.data.text.as_ref().ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.text".into(),
        message: "required when data.modality = \"text\" (e.g. text = { max_len = 128, tokenizer = { train = \"wordpiece\", vocab_size = 8000 } })".into(),
    })?;
    check(text.max_len >= 8, file, "data.text.max_len", || {
        format!("must be at least 8, found {}", text.max_len)
    })?;
    match (&text.tokenizer, &r.model.source) {
        (None, None) => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: "data.text.tokenizer".into(),
                message: "required without model.source: { file = \"tokenizer.json\" } or { train = \"wordpiece\", vocab_size = 8000 }".into(),
            })
        }
        (Some(t), _) => {
            check(
                t.file.is_some() != t.train.is_some(),
                file,
                "data.text.tokenizer",
                || "give exactly one of `file` and `train`".into(),
            )?;
            check(
                t.file.is_none() || r.model.source.is_none(),
                file,
                "data.text.tokenizer.file",
                || "model.source brings its own tokenizer.json; remove this key".into(),
            )?;
            check(
                t.vocab_size >= 100,
                file,
                "data.text.tokenizer.vocab_size",
                || format!("must be at least 100, found {}", t.vocab_size),
            )?;
        }
        (None, Some(_)) => {}
    }
    for (key, src) in sources(r) {
        check(
            matches!(src, DataSource::Text { .. } | DataSource::Jsonl { .. }),
            file,
            &format!("{key}.format"),
            || "text recipes read format = \"text\" or \"jsonl\"".into(),
        )?;
    }
    Ok(())
}
