//! A text classifier a run fine-tuned (`model.json` kind `text-classifier` +
//! `model.safetensors`) → files `transformers` loads.
//!
//! - With the `tanh-cls` pooler (`downstream[i].pooler`) the classifier is exactly
//!   `BertForSequenceClassification` (BERT positions: `pooler.dense` is `bert.pooler.dense`)
//!   or `RobertaForSequenceClassification` (`classifier.dense`, `classifier.out_proj`), with
//!   `id2label` / `label2id` from the run's class names.
//! - Without a pooler (`cls` or `mean` pooling straight into the linear layer) no
//!   `transformers` class computes it, so it is written as the encoder (`BertModel` /
//!   `RobertaModel` without pooler) plus `classifier.safetensors` (`weight [C, D]`,
//!   `bias [C]`), and `config.json` says how to pool under `pretext_classifier`
//!   (docs/huggingface.md shows the five lines that give the logits).
//!
//! The classifier's tokenizer (its own `tokenizer.json`, else its run's) is copied in.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::{json, Value};

use super::bert::{TextKind, TextSpec};
use super::config::id2label;
use crate::backbone::classifier::WEIGHTS_FILE;
use crate::backbone::{Pooler, Pooling};
use crate::error::{Error, Result};
use crate::modality::text::classifier::TextClassifierSpec;
use crate::tensor_io;

pub use super::linear_head::HEAD_FILE;

/// What the export wrote.
pub struct Written {
    pub files: Vec<PathBuf>,
    /// The `transformers` class, or the layout, the files load as.
    pub class: String,
    pub note: Option<String>,
}

/// Exports the text classifier saved in `dir` (spec `spec`, tokenizer `tokenizer`) into `out`.
pub fn export(
    dir: &Path,
    spec: &TextClassifierSpec,
    tokenizer: &Path,
    out: &Path,
) -> Result<Written> {
    let weights = dir.join(WEIGHTS_FILE);
    let tensors = tensor_io::read(&weights, &Device::Cpu)?.tensors;
    let n = spec.labels.len();
    let d = spec.text.encoder.dim;
    let labels = id2label(&spec.labels);
    match spec.pooler {
        Some(Pooler::TanhCls) => {
            let hf = TextSpec {
                config: spec.text.clone(),
                kind: TextKind::Classifier { num_labels: n },
            };
            let files = super::text::write_as(
                &hf,
                &tensors,
                Some(&labels),
                Some(tokenizer),
                out,
                &dir.display().to_string(),
            )?;
            Ok(Written {
                files,
                class: hf.hf_class().into(),
                note: None,
            })
        }
        None => {
            let hf = TextSpec {
                config: spec.text.clone(),
                kind: TextKind::Encoder { pooler: false },
            };
            let pooling = match spec.pooling {
                Pooling::Cls => "cls",
                Pooling::Mean => "mean",
            };
            let mut config = labels;
            config.insert(
                "pretext_classifier".into(),
                json!({
                    "pooling": pooling,
                    "weights": HEAD_FILE,
                    "logits": match spec.pooling {
                        Pooling::Cls => "last_hidden_state[:, 0] @ weight.T + bias",
                        Pooling::Mean => "mean of last_hidden_state over attention_mask @ weight.T + bias",
                    },
                }),
            );
            let mut files = super::text::write_as(
                &hf,
                &tensors,
                Some(&config),
                Some(tokenizer),
                out,
                &dir.display().to_string(),
            )?;
            files.push(super::linear_head::write(&tensors, &weights, n, d, out)?);
            let class = hf.hf_class();
            Ok(Written {
                files,
                class: format!("{class} + {HEAD_FILE} ({pooling} pooling; layout in docs/huggingface.md)"),
                note: Some(format!(
                    "no transformers class pools this way: load {class}.from_pretrained(DIR, \
                     add_pooling_layer=False), pool last_hidden_state ({pooling}) and apply \
                     {HEAD_FILE}'s weight and bias; for an exact {class_stem}ForSequenceClassification \
                     fine-tune with pooler = \"tanh-cls\"",
                    class_stem = class.trim_end_matches("Model"),
                )),
            })
        }
    }
}

/// Reads `value` (a text classifier's `model.json`) as its spec; `path` names it in errors.
pub fn read_spec(path: &Path, value: Value) -> Result<TextClassifierSpec> {
    let spec: TextClassifierSpec =
        serde_json::from_value(value).map_err(|e| Error::data(path, e.to_string()))?;
    spec.text
        .validate()
        .map_err(|m| Error::data(path, format!("text: {m}")))?;
    Ok(spec)
}
