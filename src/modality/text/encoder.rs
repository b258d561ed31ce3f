//! The text encoder (BERT / RoBERTa) and its masked-language-model head.
//!
//! Follows `transformers/models/bert/modeling_bert.py` (`BertEmbeddings`, post-norm
//! `BertLayer`, `BertLMPredictionHead`) and `roberta/modeling_roberta.py` (position ids that
//! skip padding, `RobertaLMHead`). The transformer stack is the shared
//! [`crate::backbone::Encoder`] in its post-norm arrangement; only the embeddings are text
//! specific:
//!
//! ```text
//! h = LayerNorm(word[ids] + position[pos] + token_type[types])   // [B, T, D]
//! h = Encoder(h, attention_mask)                                   // [B, T, D]
//! ```
//!
//! Parameters under the encoder's `VarBuilder`:
//! `embed.word [V, D]`, `embed.position [P, D]`, `embed.token_type [TV, D]`,
//! `embed.norm.{weight,bias}`, `layers.{i}.…` (see [`crate::backbone`]).
//! The MLM head's: `dense.{weight,bias}`, `norm.{weight,bias}`, `bias [V]`; its decoder weight
//! is the word embedding table (tied), passed to [`MlmHead::forward`].
//!
//! Lookups are `index_select`, so the tables receive gradients when pretraining.

use candle_core::{bail, DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::backbone::{ops, Activation, Encoder, EncoderConfig, LayerNorm, Linear, Mode};

/// How position ids are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextPositions {
    /// BERT: `0, 1, …, T-1` for every sequence.
    Absolute,
    /// RoBERTa: `cumsum(ids != pad) * (ids != pad) + pad_token_id`, as `transformers`'
    /// `create_position_ids_from_input_ids`: real tokens count from `pad + 1`, padding sits
    /// at `pad`. Sequences may be at most `max_positions - pad - 1` long.
    Roberta,
}

/// Shape and behaviour of a text encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Rows of the word embedding table (`vocab_size`).
    pub vocab_size: usize,
    /// Rows of the position table (`max_position_embeddings`; 512 for BERT, 514 for RoBERTa).
    pub max_positions: usize,
    /// Rows of the token type (segment) table (`type_vocab_size`; 2 for BERT, 1 for RoBERTa).
    pub type_vocab_size: usize,
    /// The padding token (`pad_token_id`; 0 for BERT, 1 for RoBERTa).
    pub pad_token_id: u32,
    pub positions: TextPositions,
    /// eps of the embedding LayerNorm and the MLM head's (`layer_norm_eps`, 1e-12).
    pub embed_norm_eps: f64,
    /// The transformer stack; post-norm for BERT and RoBERTa.
    pub encoder: EncoderConfig,
}

impl TextConfig {
    /// The longest sequence the position table allows.
    pub fn max_len(&self) -> usize {
        match self.positions {
            TextPositions::Absolute => self.max_positions,
            TextPositions::Roberta => self
                .max_positions
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        self.encoder.validate()?;
        if self.vocab_size == 0 || self.max_positions == 0 || self.type_vocab_size == 0 {
            return Err("vocab_size, max_positions and type_vocab_size must be positive".into());
        }
        if self.positions == TextPositions::Roberta && self.max_len() == 0 {
            return Err(format!(
                "RoBERTa positions need max_positions ({}) > pad_token_id + 1 ({})",
                self.max_positions,
                self.pad_token_id + 1
            ));
        }
        Ok(())
    }
}

/// Reads `t` ([B, T], an integer dtype) as rows of i64, checking the shape.
fn int_rows(t: &Tensor, what: &str, shape: Option<(usize, usize)>) -> Result<Vec<Vec<i64>>> {
    if t.dtype().is_float() {
        bail!("{what}: expected integer ids, found {:?}", t.dtype());
    }
    let dims = t.dims();
    match (dims, shape) {
        ([b, t_], Some(s)) if (*b, *t_) != s => {
            bail!("{what}: expected shape [{}, {}], found {dims:?}", s.0, s.1)
        }
        ([_, _], _) => {}
        _ => bail!("{what}: expected shape [batch, tokens], found {dims:?}"),
    }
    t.to_dtype(DType::I64)?.to_vec2::<i64>()
}

/// Checks every id in `rows` is in `0..n`; `kind` names the id in the message.
fn check_range(rows: &[Vec<i64>], n: usize, kind: &str, of: &str) -> Result<()> {
    for (i, row) in rows.iter().enumerate() {
        for (j, &id) in row.iter().enumerate() {
            if id < 0 || id as u64 >= n as u64 {
                bail!("{kind} {id} at [{i}, {j}] is out of range for {of} of {n}");
            }
        }
    }
    Ok(())
}

/// Token, position and token-type embeddings, summed and normalised.
#[derive(Debug, Clone)]
struct TextEmbeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

/// BERT / RoBERTa encoder: embeddings, then the post-norm transformer stack.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    embed: TextEmbeddings,
    encoder: Encoder,
    cfg: TextConfig,
}

impl TextEncoder {
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(msg) = cfg.validate() {
            bail!("invalid text config: {msg}");
        }
        let d = cfg.encoder.dim;
        // BERT's initialisation: N(0, 0.02) for every table.
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let e = vb.pp("embed");
        let embed = TextEmbeddings {
            word: e.get_with_hints((cfg.vocab_size, d), "word", init)?,
            position: e.get_with_hints((cfg.max_positions, d), "position", init)?,
            token_type: e.get_with_hints((cfg.type_vocab_size, d), "token_type", init)?,
            norm: LayerNorm::new(d, cfg.embed_norm_eps, e.pp("norm"))?,
        };
        Ok(Self {
            embed,
            encoder: Encoder::new(&cfg.encoder, vb.clone())?,
            cfg: cfg.clone(),
        })
    }

    /// Position ids `[B, T]` (u32) for `ids`, as the config's scheme assigns them.
    pub fn position_ids(&self, ids: &[Vec<i64>], device: &candle_core::Device) -> Result<Tensor> {
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        let pad = self.cfg.pad_token_id;
        let flat: Vec<u32> = match self.cfg.positions {
            TextPositions::Absolute => (0..b).flat_map(|_| 0..t as u32).collect(),
            TextPositions::Roberta => ids
                .iter()
                .flat_map(|row| {
                    let mut count = 0u32;
                    row.iter()
                        .map(move |&id| {
                            if id == pad as i64 {
                                pad
                            } else {
                                count += 1;
                                count + pad
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        Tensor::from_vec(flat, (b, t), device)
    }

    /// # Shapes
    /// - `input_ids`: `[B, T]`, u32 or i64, each `< vocab_size`
    /// - `token_type_ids`: `[B, T]`, each `< type_vocab_size` (`None`: zeros)
    /// - `attention_mask`: `[B, T]`, 1 for real tokens, 0 for padding (`None`: all ones)
    /// - returns `[B, T, D]`
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let dev = input_ids.device();
        let ids = int_rows(input_ids, "input_ids", None)?;
        let (b, t) = input_ids.dims2()?;
        check_range(&ids, cfg.vocab_size, "token id", "a vocabulary")?;
        if t > cfg.max_len() {
            bail!(
                "input_ids: a sequence of {t} tokens is longer than the {} positions this model has{}",
                cfg.max_len(),
                match cfg.positions {
                    TextPositions::Roberta => format!(
                        " (max_position_embeddings {} less pad_token_id + 1)",
                        cfg.max_positions
                    ),
                    TextPositions::Absolute => String::new(),
                }
            );
        }
        let types = match token_type_ids {
            Some(tt) => {
                let rows = int_rows(tt, "token_type_ids", Some((b, t)))?;
                check_range(
                    &rows,
                    cfg.type_vocab_size,
                    "token type",
                    "a type vocabulary",
                )?;
                let flat: Vec<u32> = rows.concat().into_iter().map(|x| x as u32).collect();
                Tensor::from_vec(flat, b * t, dev)?
            }
            None => Tensor::zeros(b * t, DType::U32, dev)?,
        };
        let mask = match attention_mask {
            Some(m) => {
                if m.dims() != [b, t] {
                    bail!(
                        "attention_mask: expected shape [{b}, {t}], found {:?}",
                        m.dims()
                    );
                }
                Some(m.to_dtype(DType::F32)?)
            }
            None => None,
        };
        let flat_ids: Vec<u32> = ids.iter().flatten().map(|&x| x as u32).collect();
        let id_t = Tensor::from_vec(flat_ids, b * t, dev)?;
        let pos = self.position_ids(&ids, dev)?.flatten_all()?;
        let d = cfg.encoder.dim;
        let e = &self.embed;
        let x = (e.word.index_select(&id_t, 0)? + e.token_type.index_select(&types, 0)?)?
            .broadcast_add(&e.position.index_select(&pos, 0)?)?
            .reshape((b, t, d))?;
        let x = e.norm.forward(&x)?;
        let x = ops::dropout(&x, cfg.encoder.dropout, mode)?;
        self.encoder.forward(&x, mask.as_ref(), mode)
    }

    /// The word embedding table `[V, D]`, the MLM decoder's (tied) weight.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.embed.word
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }
}

/// The MLM head: `norm(act(dense(h))) @ word_embeddings^T + bias` (BERT's
/// `BertLMPredictionHead`, RoBERTa's `RobertaLMHead`).
#[derive(Debug, Clone)]
pub struct MlmHead {
    dense: Linear,
    norm: LayerNorm,
    bias: Tensor,
    activation: Activation,
}

impl MlmHead {
    /// BERT's head applies the encoder's `hidden_act`; RoBERTa's always exact GELU.
    pub fn new(cfg: &TextConfig, vb: VarBuilder) -> Result<Self> {
        let act = match cfg.positions {
            TextPositions::Absolute => cfg.encoder.activation,
            TextPositions::Roberta => Activation::Gelu,
        };
        Self::with_activation(cfg, act, vb)
    }

    pub fn with_activation(
        cfg: &TextConfig,
        activation: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d = cfg.encoder.dim;
        Ok(Self {
            dense: Linear::new(d, d, true, vb.pp("dense"))?,
            norm: LayerNorm::new(d, cfg.embed_norm_eps, vb.pp("norm"))?,
            bias: vb.get_with_hints(cfg.vocab_size, "bias", Init::Const(0.0))?,
            activation,
        })
    }

    /// # Shapes
    /// - `hidden`: `[N, D]` or `[B, T, D]`
    /// - `word_embeddings`: `[V, D]`
    /// - returns `[N, V]` or `[B, T, V]` logits
    pub fn forward(&self, hidden: &Tensor, word_embeddings: &Tensor) -> Result<Tensor> {
        let (v, d) = word_embeddings.dims2()?;
        if hidden.dim(D::Minus1)? != d || self.bias.dim(0)? != v {
            bail!(
                "MLM head: hidden {:?} and word embeddings {:?} do not fit a head of bias [{}]",
                hidden.dims(),
                word_embeddings.dims(),
                self.bias.dim(0)?
            );
        }
        let h = self.activation.apply(&self.dense.forward(hidden)?)?;
        let h = self.norm.forward(&h)?;
        let lead = h.dims()[..h.rank() - 1].to_vec();
        let rows: usize = lead.iter().product();
        // The tied decoder: a linear layer on the word embeddings.
        let logits = ops::linear(&h.reshape((rows, d))?, word_embeddings, Some(&self.bias))?;
        let mut shape = lead;
        shape.push(v);
        logits.reshape(shape)
    }
}
