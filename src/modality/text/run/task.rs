//! The text side of the downstream stage: tokenised labelled examples, batched by length
//! and padded, the text encoder (`text.*`) and a [`TextClassifier`] on it.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::modality::text::classifier::{TextClassifier, TextClassifierSpec};
use crate::modality::text::encoder::{TextConfig, TextEncoder};
use crate::modality::text::pack;
use crate::recipe::DownstreamSection;
use crate::run::classify::{Labelled, Split};

/// Tokenised examples (special tokens included, truncated) and their labels.
#[derive(Debug, Clone)]
pub struct Examples {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
}

/// `[B, T]` ids of the examples `idx`, padded with `pad` to the longest.
pub fn padded_ids(
    examples: &[Vec<u32>],
    idx: &[usize],
    pad: u32,
    device: &Device,
) -> Result<Tensor> {
    let seqs: Vec<&[u32]> = idx.iter().map(|&i| examples[i].as_slice()).collect();
    let p = pack::pad_batch(&seqs, pad);
    Ok(Tensor::from_vec(p.ids, (p.batch, p.seq_len), device)?)
}

/// Runs `f` over `idx` in batches of `chunk` examples of similar length (less padding), and
/// returns its `[N, …]` outputs in the order of `idx`.
fn by_length(
    examples: &[Vec<u32>],
    idx: &[usize],
    chunk: usize,
    pad: u32,
    device: &Device,
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut order: Vec<usize> = (0..idx.len()).collect();
    order.sort_by_key(|&k| examples[idx[k]].len());
    let mut outs = Vec::new();
    for piece in order.chunks(chunk.max(1)) {
        let rows: Vec<usize> = piece.iter().map(|&k| idx[k]).collect();
        outs.push(f(&padded_ids(examples, &rows, pad, device)?)?.detach());
    }
    let sorted = Tensor::cat(&outs, 0)?;
    let mut inverse = vec![0u32; idx.len()];
    for (pos, &k) in order.iter().enumerate() {
        inverse[k] = pos as u32;
    }
    let inverse = Tensor::from_vec(inverse, idx.len(), device)?;
    Ok(sorted.index_select(&inverse, 0)?.contiguous()?)
}

/// Labelled text splits, tokenised, and the encoder's configuration.
pub struct TextSplits<'a> {
    pub train: &'a Examples,
    pub test: &'a Examples,
    /// Class names, in label order.
    pub label_names: &'a [String],
    pub config: TextConfig,
}

impl TextSplits<'_> {
    fn split(&self, split: Split) -> &Examples {
        split.pick(self.train, self.test)
    }

    fn spec(&self, head: &DownstreamSection) -> TextClassifierSpec {
        TextClassifierSpec::new(self.config.clone(), head.pooling, self.label_names.to_vec())
            .with_pooler(head.pooler)
    }
}

impl Labelled for TextSplits<'_> {
    type Encoder = TextEncoder;
    const PREFIX: &'static str = "text";
    const FEATURE_CHUNK: usize = 64;

    fn labels(&self, split: Split) -> Result<&[u32]> {
        Ok(&self.split(split).labels)
    }

    fn num_classes(&self) -> usize {
        self.label_names.len()
    }

    fn inputs(&self, split: Split, idx: &[usize], device: &Device) -> Result<Tensor> {
        padded_ids(
            &self.split(split).ids,
            idx,
            self.config.pad_token_id,
            device,
        )
    }

    fn map_inputs(
        &self,
        split: Split,
        idx: &[usize],
        chunk: usize,
        device: &Device,
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let pad = self.config.pad_token_id;
        by_length(&self.split(split).ids, idx, chunk, pad, device, f)
    }

    fn depth(&self) -> usize {
        self.config.encoder.depth
    }

    fn encoder(&self, vb: VarBuilder) -> candle_core::Result<TextEncoder> {
        TextEncoder::new(&self.config, vb)
    }

    fn classifier(&self, head: &DownstreamSection, vb: VarBuilder) -> Result<TextClassifier> {
        // Stochastic depth trains this classifier only: the written spec leaves it out.
        let mut spec = self.spec(head);
        spec.text.encoder.drop_path = head.drop_path;
        TextClassifier::new(&spec, vb)
    }

    fn write_spec(&self, head: &DownstreamSection, dir: &Path) -> Result<()> {
        self.spec(head).write(dir)
    }

    /// Batches of similar lengths: texts vary from a few tokens to `max_len`.
    fn lengths(&self) -> Option<Vec<usize>> {
        Some(self.train.ids.iter().map(Vec::len).collect())
    }
}
