//! Documents → token sequences: fixed-length blocks for MLM pretraining, truncated examples for
//! classification, and dynamic padding of a batch. Plain `Vec`s; the caller makes tensors.
//!
//! `pack_blocks` follows `group_texts` in Hugging Face `run_mlm.py`: every document is
//! tokenized without specials, the documents are concatenated with the separator (`[SEP]` /
//! `</s>`) between them, the stream is cut into chunks of `max_len - 2` tokens and each chunk is
//! wrapped as `[CLS] … [SEP]` (`<s> … </s>`). Unlike `group_texts`, which drops the remainder,
//! the last partial chunk is kept, padded, when it holds at least half a chunk, or when it is
//! the only chunk (a corpus shorter than one block still gives one); otherwise it is dropped.
//!
//! Word ids are numbered over the whole stream, so they are unique within a block and a word
//! cut by a block boundary keeps one id on each side (whole-word masking stays whole).

use std::sync::Arc;

use super::corpus::Document;
use super::tokenizer::TextTokenizer;
use crate::train::loader::MakeBatch;
use crate::{Error, Result};

/// Fixed-length blocks, row-major `[len(), seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBlocks {
    pub seq_len: usize,
    /// `[N, seq_len]` token ids; padding is the tokenizer's pad id.
    pub ids: Vec<u32>,
    /// `[N, seq_len]` 1 for a real token (specials included), 0 for padding.
    pub attention_mask: Vec<u8>,
    /// `[N, seq_len]` word of each token; `None` for specials, separators and padding.
    pub word_ids: Vec<Option<u32>>,
}

/// One row of `TokenBlocks`.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    pub ids: &'a [u32],
    pub attention_mask: &'a [u8],
    pub word_ids: &'a [Option<u32>],
}

impl TokenBlocks {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.ids.len().checked_div(self.seq_len).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Block `i`; panics when `i >= len()`.
    pub fn get(&self, i: usize) -> Block<'_> {
        let r = i * self.seq_len..(i + 1) * self.seq_len;
        Block {
            ids: &self.ids[r.clone()],
            attention_mask: &self.attention_mask[r.clone()],
            word_ids: &self.word_ids[r],
        }
    }

    /// No blocks yet, with room for `rows` blocks of `seq_len` tokens.
    pub fn with_capacity(seq_len: usize, rows: usize) -> Self {
        let n = rows * seq_len;
        TokenBlocks {
            seq_len,
            ids: Vec::with_capacity(n),
            attention_mask: Vec::with_capacity(n),
            word_ids: Vec::with_capacity(n),
        }
    }

    /// The blocks `indices`, in that order: a batch's rows.
    pub fn gather(&self, indices: &[usize]) -> TokenBlocks {
        let mut out = TokenBlocks::with_capacity(self.seq_len, indices.len());
        for &i in indices {
            let b = self.get(i);
            out.ids.extend_from_slice(b.ids);
            out.attention_mask.extend_from_slice(b.attention_mask);
            out.word_ids.extend_from_slice(b.word_ids);
        }
        out
    }

    /// Total number of real (non-padding) tokens.
    pub fn num_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m == 1).count()
    }
}

/// Where pretraining batches come from: blocks in memory ([`TokenBlocks`]) or packed on
/// demand from the token cache ([`super::shards::MappedBlocks`]).
pub trait BlockSource: Send + Sync + 'static {
    /// The blocks `indices`, in that order, in memory: a batch's rows. An index past the
    /// end is an error.
    fn gather_blocks(&self, indices: &[usize]) -> Result<TokenBlocks>;
}

impl BlockSource for TokenBlocks {
    fn gather_blocks(&self, indices: &[usize]) -> Result<TokenBlocks> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::Usage(format!(
                "block {i} requested from {} blocks",
                self.len()
            )));
        }
        Ok(self.gather(indices))
    }
}

/// Pretraining batches of blocks: the sampled blocks gathered, made on the training
/// loader's thread ([`crate::train::loader`]). They are not masked here: masking draws from
/// the training loop's RNG, on its thread.
#[derive(Debug)]
pub struct BlockBatches<B: BlockSource = TokenBlocks>(pub Arc<B>);

impl<B: BlockSource> Clone for BlockBatches<B> {
    fn clone(&self) -> Self {
        BlockBatches(self.0.clone())
    }
}

impl<B: BlockSource> MakeBatch for BlockBatches<B> {
    type Batch = TokenBlocks;

    fn make(&self, indices: &[usize], _epochs: &[usize]) -> Result<TokenBlocks> {
        self.0.gather_blocks(indices)
    }
}

/// Checks `max_len` for packing; the stream tokens a block holds.
pub fn chunk_len(max_len: usize) -> Result<usize> {
    if max_len < 3 {
        return Err(Error::Usage(format!(
            "max_len must be at least 3 (two specials and one token), found {max_len}"
        )));
    }
    Ok(max_len - 2)
}

/// How many blocks a stream of `tokens` tokens packs into, `chunk` stream tokens a block
/// (see the module doc for the rule).
pub fn block_count(tokens: usize, chunk: usize) -> usize {
    let full = tokens / chunk;
    let rest = tokens % chunk;
    let keep_rest = rest > 0 && (rest * 2 >= chunk || full == 0);
    full + usize::from(keep_rest)
}

/// Appends one block to `out`: `[CLS] ids [SEP]`, padded to `out.seq_len`; `ids` and
/// `words` are the block's share of the stream (at most `seq_len - 2` tokens).
pub fn push_block(out: &mut TokenBlocks, tok: &TextTokenizer, ids: &[u32], words: &[Option<u32>]) {
    let max_len = out.seq_len;
    let real = ids.len() + 2;
    out.ids.push(tok.cls_id());
    out.ids.extend_from_slice(ids);
    out.ids.push(tok.sep_id());
    out.ids.resize(out.ids.len() + max_len - real, tok.pad_id());
    out.word_ids.push(None);
    out.word_ids.extend_from_slice(words);
    out.word_ids.push(None);
    out.word_ids
        .resize(out.word_ids.len() + max_len - real, None);
    out.attention_mask
        .resize(out.attention_mask.len() + real, 1);
    out.attention_mask
        .resize(out.attention_mask.len() + max_len - real, 0);
}

/// Packs `docs` into blocks of exactly `max_len` tokens (see the module doc for the rule).
pub fn pack_blocks<S: AsRef<str>>(
    docs: &[S],
    tok: &TextTokenizer,
    max_len: usize,
) -> Result<TokenBlocks> {
    let chunk = chunk_len(max_len)?;
    let encoded = tok.encode_batch(docs, false)?;

    // The stream: documents separated by the separator, words numbered globally.
    let mut ids: Vec<u32> = Vec::new();
    let mut words: Vec<Option<u32>> = Vec::new();
    let mut next_word: u32 = 0;
    for enc in encoded.iter().filter(|e| !e.is_empty()) {
        if !ids.is_empty() {
            ids.push(tok.sep_id());
            words.push(None);
        }
        let mut max_word = None;
        for (&id, &w) in enc.ids.iter().zip(&enc.word_ids) {
            ids.push(id);
            words.push(w.map(|w| next_word + w));
            max_word = max_word.max(w);
        }
        next_word += max_word.map_or(0, |m| m + 1);
    }

    let n = block_count(ids.len(), chunk);
    let mut out = TokenBlocks::with_capacity(max_len, n);
    for b in 0..n {
        let r = b * chunk..((b + 1) * chunk).min(ids.len());
        push_block(&mut out, tok, &ids[r.clone()], &words[r]);
    }
    Ok(out)
}

/// Classification examples: ids with specials, at most `max_len` long, and class indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledSeqs {
    /// `[N][<= max_len]`: `[CLS] text… [SEP]`, the text truncated to `max_len - 2` tokens.
    pub ids: Vec<Vec<u32>>,
    /// `[N]` index into the class names.
    pub labels: Vec<usize>,
}

/// Encodes labelled documents for classification; `classes` are the training set's
/// `corpus::class_names` (a label outside them is an error naming the document).
pub fn encode_labelled(
    docs: &[Document],
    tok: &TextTokenizer,
    max_len: usize,
    classes: &[String],
) -> Result<LabelledSeqs> {
    if max_len < 3 {
        return Err(Error::Usage(format!(
            "max_len must be at least 3 (two specials and one token), found {max_len}"
        )));
    }
    let labels = super::corpus::label_indices(docs, classes)?;
    let ids = tok
        .encode_batch(docs, false)?
        .into_iter()
        .map(|enc| classification_ids(tok, &enc.ids, max_len))
        .collect();
    Ok(LabelledSeqs { ids, labels })
}

/// A document's token ids as a classifier reads them: `[CLS] ids [SEP]`, the ids cut to
/// leave room for the two specials within `max_len`.
pub fn classification_ids(tok: &TextTokenizer, ids: &[u32], max_len: usize) -> Vec<u32> {
    let n = ids.len().min(max_len.saturating_sub(2));
    let mut out = Vec::with_capacity(n + 2);
    out.push(tok.cls_id());
    out.extend_from_slice(&ids[..n]);
    out.push(tok.sep_id());
    out
}

/// A batch padded to its longest sequence, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    pub batch: usize,
    pub seq_len: usize,
    /// `[batch, seq_len]`, padded with `pad_id` on the right.
    pub ids: Vec<u32>,
    /// `[batch, seq_len]`, 1 for a real token, 0 for padding.
    pub attention_mask: Vec<u8>,
}

/// Right-pads `seqs` to the longest of them (dynamic padding).
pub fn pad_batch(seqs: &[&[u32]], pad_id: u32) -> PaddedBatch {
    let seq_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(seqs.len() * seq_len);
    let mut attention_mask = Vec::with_capacity(seqs.len() * seq_len);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.resize(ids.len() + seq_len - s.len(), pad_id);
        attention_mask.resize(attention_mask.len() + s.len(), 1);
        attention_mask.resize(attention_mask.len() + seq_len - s.len(), 0);
    }
    PaddedBatch {
        batch: seqs.len(),
        seq_len,
        ids,
        attention_mask,
    }
}
