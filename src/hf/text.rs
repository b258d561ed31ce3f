//! Text models (BERT, RoBERTa) in and out: a Hugging Face directory → [`TextLoaded`], the
//! runnable [`TextModel`] with inputs and outputs named as in `transformers`, and export
//! ([`write_hf`] for a loaded model, [`export`] for tensors under pretext's names, e.g. a
//! pretext MLM run's `text.*` + `mlm.*`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde_json::{Map, Value};

use super::bert::{self, TextKind, TextSpec};
use super::checkpoint::{reject_leftovers, take_prefixed, weights_file, CONFIG_FILE, WEIGHTS_FILE};
use super::loss::{classifier_loss, mlm_loss};
use crate::backbone::{pool, Linear, Mode, Pooling, Tokens};
use crate::error::{Error, Result};
use crate::modality::text::pack::pad_batch;
use crate::modality::text::{MlmHead, TextConfig, TextEncoder};
use crate::tensor_io;

pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A text model's spec and weights under pretext's names.
#[derive(Debug, Clone)]
pub struct TextLoaded {
    pub spec: TextSpec,
    pub tensors: BTreeMap<String, Tensor>,
    /// The model's `tokenizer.json`, when its directory has one.
    pub tokenizer: Option<PathBuf>,
    /// The `config.json` it came from, if any (keys pretext does not interpret are kept on
    /// export).
    pub hf_config: Option<Map<String, Value>>,
    /// Where it came from, for messages.
    pub origin: String,
}

/// `model_type` of the `config.json` in `dir`, if it has one that says.
pub fn model_type(dir: &Path) -> Option<String> {
    let text = crate::input::read_to_string(&dir.join(CONFIG_FILE)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("model_type")?.as_str().map(str::to_string)
}

/// Whether a `model_type` is one of the text families.
pub fn is_text_type(model_type: &str) -> bool {
    matches!(model_type, "bert" | "roberta")
}

/// Loads `tokenizer.json` (errors name the file).
pub fn read_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    crate::modality::text::tokenizer::read_checked(path)
}

/// Errors when the tokenizer can produce ids the embedding table does not have.
pub fn check_tokenizer(tok: &tokenizers::Tokenizer, path: &Path, vocab_size: usize) -> Result<()> {
    // Ids need not be dense: the largest one, not the count, must fit the table.
    let largest = tok.get_vocab(true).into_iter().max_by_key(|(_, id)| *id);
    if let Some((token, id)) = largest.filter(|(_, id)| *id as usize >= vocab_size) {
        return Err(Error::data(
            path,
            format!(
                "tokenizer.json maps `{token}` to id {id}, but config.json's vocab_size is {vocab_size} (ids 0 to {}): the tokenizer is not this model's",
                vocab_size.saturating_sub(1)
            ),
        ));
    }
    Ok(())
}

/// Reads a BERT / RoBERTa directory (`config.json` + `model.safetensors` [+ `tokenizer.json`]).
pub fn read_dir(dir: &Path, device: &Device, origin: &str) -> Result<TextLoaded> {
    let config_path = dir.join(CONFIG_FILE);
    let text = crate::input::read_to_string(&config_path)?;
    let raw: Map<String, Value> = serde_json::from_str(&text)
        .map_err(|e| Error::data(&config_path, format!("invalid JSON object: {e}")))?;
    let mut spec = bert::parse_config(&raw, &config_path)?;
    let weights = weights_file(dir)?;
    let tokenizer = dir.join(TOKENIZER_FILE);
    let tokenizer = if tokenizer.is_file() {
        check_tokenizer(
            &read_tokenizer(&tokenizer)?,
            &tokenizer,
            spec.config.vocab_size,
        )?;
        Some(tokenizer)
    } else {
        None
    };
    let file = tensor_io::read(&weights, device)?.tensors;
    let tensors = from_hf(&mut spec, file, &weights)?;
    Ok(TextLoaded {
        spec,
        tensors,
        tokenizer,
        hf_config: Some(raw),
        origin: origin.to_string(),
    })
}

/// Maps a checkpoint's tensors (Hugging Face names) onto pretext's, settling whether an
/// encoder has its pooler from the weights.
fn from_hf(
    spec: &mut TextSpec,
    mut file: BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<BTreeMap<String, Tensor>> {
    let prefix = spec.family().prefix();
    if let TextKind::Encoder { pooler } = &mut spec.kind {
        *pooler = file.contains_key("pooler.dense.weight")
            || file.contains_key(&format!("{prefix}pooler.dense.weight"));
    }
    let decoder = file.remove(&bert::decoder_weight(spec));
    let what = spec.hf_class();
    let rows = bert::rows(spec);
    let mut out = take_prefixed(&rows, &mut file, path, what, prefix)?;
    file.retain(|name, _| !bert::ignorable(spec, name));
    reject_leftovers(&file, path, what)?;
    if let Some(dec) = decoder {
        let word = &out["text.embed.word"];
        let same = dec.dims() == word.dims()
            && (dec.to_dtype(DType::F32)? - word)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?
                == 0.0;
        if !same {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "`{}` differs from the word embeddings; pretext's MLM decoder is tied to them",
                    bert::decoder_weight(spec)
                ),
            });
        }
    }
    // Stored as contiguous float32 for the model.
    for t in out.values_mut() {
        *t = t.contiguous()?;
    }
    Ok(out)
}

/// The runnable text model.
pub struct TextModel {
    pub encoder: TextEncoder,
    /// `tanh(dense(h[:, 0]))`.
    pub pooler: Option<Linear>,
    pub mlm: Option<MlmHead>,
    /// On the pooler's output (sequence classification).
    pub classifier: Option<Linear>,
}

/// `input_ids` and friends read from an inputs file, any integer dtype.
fn int_input(inputs: &BTreeMap<String, Tensor>, name: &str) -> Result<Option<Tensor>> {
    match inputs.get(name) {
        None => Ok(None),
        Some(t) if t.dtype().is_float() && name != "attention_mask" => Err(Error::Usage(format!(
            "inputs: `{name}` must be integer ids (int64 or uint32), found {:?}",
            t.dtype()
        ))),
        Some(t) => Ok(Some(t.clone())),
    }
}

impl TextModel {
    /// Builds the model around the loaded weights (frozen: no gradient graph is recorded).
    pub fn build(m: &TextLoaded, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = m
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(device)?.detach())))
            .collect::<Result<_>>()?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let c = &m.spec.config;
        let encoder = TextEncoder::new(c, vb.pp("text"))?;
        let d = c.encoder.dim;
        let pooler = || Linear::new(d, d, true, vb.pp("pooler.dense"));
        let (pooler, mlm, classifier) = match m.spec.kind {
            TextKind::Encoder { pooler: false } => (None, None, None),
            TextKind::Encoder { pooler: true } => (Some(pooler()?), None, None),
            TextKind::MaskedLm => (None, Some(MlmHead::new(c, vb.pp("mlm"))?), None),
            TextKind::Classifier { num_labels } => (
                Some(pooler()?),
                None,
                Some(Linear::new(d, num_labels, true, vb.pp("classifier"))?),
            ),
        };
        Ok(Self {
            encoder,
            pooler,
            mlm,
            classifier,
        })
    }

    pub fn config(&self) -> &TextConfig {
        self.encoder.config()
    }

    /// Final hidden states `[B, T, D]`.
    pub fn hidden(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .encoder
            .forward(input_ids, token_type_ids, attention_mask, &mut Mode::Eval)?)
    }

    /// Sentence embeddings `[B, D]`: the mean of the hidden states over the attention mask
    /// (`mean`, sentence-transformers' default) or the first token's (`cls`), L2-normalised
    /// when `normalize`.
    pub fn embed(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Tensor> {
        let h = self.hidden(input_ids, None, Some(attention_mask))?;
        let e = pool(&h, pooling, Tokens::Masked(attention_mask))?;
        if !normalize {
            return Ok(e);
        }
        // torch.nn.functional.normalize: x / max(||x||, 1e-12).
        let norm = e
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?;
        Ok(e.broadcast_div(&norm)?)
    }

    /// Runs the model on `inputs` (`input_ids`, optional `attention_mask`, `token_type_ids`,
    /// and `labels`: `[B, T]` with -100 = ignore for MLM, `[B]` for classifiers), returning
    /// `last_hidden_state`, `pooler_output` (encoders with pooler), `logits` and `loss` as
    /// `transformers` does.
    pub fn forward(&self, inputs: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
        let ids = int_input(inputs, "input_ids")?
            .ok_or_else(|| Error::Usage("inputs: missing tensor `input_ids` [B, T]".into()))?;
        let types = int_input(inputs, "token_type_ids")?;
        let mask = int_input(inputs, "attention_mask")?;
        let h = self.hidden(&ids, types.as_ref(), mask.as_ref())?;
        let mut out = BTreeMap::new();
        if let Some(p) = &self.pooler {
            let first = h.narrow(1, 0, 1)?.squeeze(1)?;
            let pooled = p.forward(&first)?.tanh()?;
            match &self.classifier {
                Some(c) => {
                    let logits = c.forward(&pooled)?;
                    if let Some(labels) = inputs.get("labels") {
                        out.insert("loss".into(), classifier_loss(&logits, labels)?);
                    }
                    out.insert("logits".into(), logits);
                }
                None => {
                    out.insert("pooler_output".into(), pooled);
                }
            }
        }
        if let Some(head) = &self.mlm {
            let logits = head.forward(&h, self.encoder.word_embeddings())?;
            if let Some(labels) = int_input(inputs, "labels")? {
                out.insert("loss".into(), mlm_loss(&logits, &labels)?);
            }
            out.insert("logits".into(), logits);
        }
        out.insert("last_hidden_state".into(), h);
        Ok(out)
    }
}

/// What a user of the export should know, if anything.
pub fn notes(spec: &TextSpec) -> Option<String> {
    match spec.kind {
        TextKind::Encoder { pooler: false } => Some(format!(
            "this {0} has no pooler: load it with {0}.from_pretrained(DIR, add_pooling_layer=False)",
            spec.hf_class()
        )),
        _ => None,
    }
}

/// Writes `m` in the layout `save_pretrained` writes; returns the files written.
pub fn write_hf(m: &TextLoaded, out: &Path) -> Result<Vec<PathBuf>> {
    write_as(
        &m.spec,
        &m.tensors,
        m.hf_config.as_ref(),
        m.tokenizer.as_deref(),
        out,
        &m.origin,
    )
}

/// Exports tensors under pretext's names — `text.*` (the encoder), and `mlm.*` (an
/// MLM head; the model is then `BertForMaskedLM` / `RobertaForMaskedLM`), or `pooler.dense.*`
/// and `classifier.*` (`…ForSequenceClassification`), or `pooler.dense.*` alone (a
/// `BertModel` / `RobertaModel` with pooler) — as a `transformers` directory: BERT layout
/// for [`crate::modality::text::TextPositions::Absolute`], RoBERTa for `Roberta`.
/// `tokenizer`, when given, is copied in as `tokenizer.json` (and checked against
/// `cfg.vocab_size`). Tensors under other names (optimizer state) are not exported. Returns the files written.
pub fn export(
    cfg: &TextConfig,
    tensors: &BTreeMap<String, Tensor>,
    tokenizer: Option<&Path>,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let kind = if tensors.contains_key("mlm.bias") {
        TextKind::MaskedLm
    } else if let Some(c) = tensors.get("classifier.bias") {
        TextKind::Classifier {
            num_labels: c.dim(0)?,
        }
    } else {
        TextKind::Encoder {
            pooler: tensors.contains_key("pooler.dense.weight"),
        }
    };
    let spec = TextSpec {
        config: cfg.clone(),
        kind,
    };
    write_as(&spec, tensors, None, tokenizer, out, "the exported model")
}

/// Writes `tensors` (pretext's names) as the `transformers` model `spec` describes into
/// `out`: `config.json` (`base`'s keys, if any, with every field pretext knows set from the
/// spec), `model.safetensors`, and `tokenizer` copied in as `tokenizer.json` after checking
/// it fits the model. `origin` names the source in errors. Returns the files written.
pub fn write_as(
    spec: &TextSpec,
    tensors: &BTreeMap<String, Tensor>,
    base: Option<&Map<String, Value>>,
    tokenizer: Option<&Path>,
    out: &Path,
    origin: &str,
) -> Result<Vec<PathBuf>> {
    // Whatever the source, a tokenizer is copied only if it loads and fits the model.
    if let Some(tok) = tokenizer {
        check_tokenizer(&read_tokenizer(tok)?, tok, spec.config.vocab_size)?;
    }
    let cfg = bert::config_json(spec, base)?;
    let prefix = match spec.kind {
        TextKind::Encoder { .. } => "",
        TextKind::MaskedLm | TextKind::Classifier { .. } => spec.family().prefix(),
    };
    let mut list = Vec::new();
    for row in bert::rows(spec) {
        let t = tensors.get(&row.ours).ok_or_else(|| {
            Error::data(origin, format!("missing tensor `{}` to export", row.ours))
        })?;
        if t.dims() != row.shape.as_slice() {
            return Err(Error::data(
                origin,
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
    let mut files = vec![config_path, weights];
    if let Some(tok) = tokenizer {
        let dest = out.join(TOKENIZER_FILE);
        let bytes = crate::input::read(tok)?;
        tensor_io::write_atomic(&dest, &bytes)?;
        files.push(dest);
    }
    Ok(files)
}

/// sentence-transformers' `max_seq_length` (`sentence_bert_config.json` beside the
/// tokenizer), which it truncates to rather than the model's positions.
pub fn sentence_max_len(tokenizer: &Path) -> Option<usize> {
    let path = tokenizer.parent()?.join("sentence_bert_config.json");
    let v: Value = serde_json::from_str(&crate::input::read_to_string(&path).ok()?).ok()?;
    v.get("max_seq_length")?.as_u64().map(|n| n as usize)
}

/// A tokenized batch, padded to its longest sentence.
pub struct TokenBatch {
    /// `[B, T]` u32.
    pub input_ids: Tensor,
    /// `[B, T]` u32, 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// (index in the batch, tokens before truncation) of each sentence cut to `max_len`.
    pub truncated: Vec<(usize, usize)>,
}

/// Tokenizes `texts` with `tok` (its special tokens added, as its post-processor says),
/// truncated to `max_len` tokens and padded with `pad` to the longest in the batch.
/// `path` names the tokenizer in errors.
pub fn tokenize(
    tok: &tokenizers::Tokenizer,
    texts: &[String],
    max_len: usize,
    pad: u32,
    path: &Path,
    device: &Device,
) -> Result<TokenBatch> {
    let mut tok = tok.clone();
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map(|t| {
        t.with_padding(None);
    })
    .map_err(|e| Error::data(path, format!("cannot set truncation: {e}")))?;
    let enc = tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| Error::data(path, format!("tokenizing: {e}")))?;
    let mut truncated = Vec::new();
    for (i, e) in enc.iter().enumerate() {
        if !e.get_overflowing().is_empty() {
            let extra: usize = e.get_overflowing().iter().map(|o| o.get_ids().len()).sum();
            truncated.push((i, e.get_ids().len() + extra));
        }
    }
    let seqs: Vec<&[u32]> = enc.iter().map(|e| e.get_ids()).collect();
    let p = pad_batch(&seqs, pad);
    let mask: Vec<u32> = p.attention_mask.iter().map(|&m| u32::from(m)).collect();
    Ok(TokenBatch {
        input_ids: Tensor::from_vec(p.ids, (p.batch, p.seq_len), device)?,
        attention_mask: Tensor::from_vec(mask, (p.batch, p.seq_len), device)?,
        truncated,
    })
}
