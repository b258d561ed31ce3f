//! The text side of the downstream stage: pooled features of the pretrained (or untrained)
//! text encoder, and fine-tuning of a [`TextClassifier`], on tokenised labelled examples.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::backbone::Mode;
use crate::error::Result;
use crate::head::finetune::FineTuneConfig;
use crate::head::linear_probe::accuracy;
use crate::modality::text::classifier::{pool, TextClassifier, TextClassifierSpec};
use crate::modality::text::encoder::{TextConfig, TextEncoder};
use crate::modality::text::pack;
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection, Pooling};
use crate::run::classify::{encoder_store, fine_tune, Classifier, FineTuneData, FineTuned};
use crate::run::downstream::DownstreamTask;

/// Examples per forward pass when extracting features or evaluating.
const EVAL_BATCH: usize = 64;

/// Tokenised examples (special tokens included, truncated) and their labels.
#[derive(Debug, Clone)]
pub struct Labelled {
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

/// Runs `f` over `idx` in batches of similar length (less padding), and returns its
/// `[N, …]` outputs in the order of `idx`.
fn by_length(
    examples: &[Vec<u32>],
    idx: &[usize],
    pad: u32,
    device: &Device,
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut order: Vec<usize> = (0..idx.len()).collect();
    order.sort_by_key(|&k| examples[idx[k]].len());
    let mut outs = Vec::new();
    for chunk in order.chunks(EVAL_BATCH) {
        let rows: Vec<usize> = chunk.iter().map(|&k| idx[k]).collect();
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

/// Labelled text splits and the pretrained text encoder.
pub struct TextTask<'a> {
    pub train: &'a Labelled,
    pub test: &'a Labelled,
    /// Class names, in label order.
    pub label_names: &'a [String],
    pub config: TextConfig,
    /// Holds the pretrained encoder as `text.*`.
    pub pretrained: &'a ParamStore,
    pub seed: u64,
    pub device: &'a Device,
}

impl TextTask<'_> {
    /// A frozen text encoder: the pretrained one, or the same architecture at the seeded
    /// initialisation the pretraining started from.
    fn frozen_encoder(&self, input: DownstreamInput) -> Result<TextEncoder> {
        let store = encoder_store(self.pretrained, input, self.seed, self.device, &|vb| {
            TextEncoder::new(&self.config, vb.pp("text")).map(|_| ())
        })?;
        Ok(TextEncoder::new(
            &self.config,
            store.frozen_var_builder(self.device).pp("text"),
        )?)
    }

    fn accuracy_on(&self, model: &TextClassifier, data: &Labelled, idx: &[usize]) -> Result<f64> {
        let pad = self.config.pad_token_id;
        let logits = by_length(&data.ids, idx, pad, self.device, &|ids| {
            Ok(model.forward(ids, &mut Mode::Eval)?)
        })?;
        let y: Vec<u32> = idx.iter().map(|&i| data.labels[i]).collect();
        accuracy(&logits, &Tensor::from_vec(y, idx.len(), self.device)?)
    }
}

impl DownstreamTask for TextTask<'_> {
    fn train_labels(&self) -> &[u32] {
        &self.train.labels
    }

    fn test_labels(&self) -> &[u32] {
        &self.test.labels
    }

    fn num_classes(&self) -> usize {
        self.label_names.len()
    }

    fn features(&self, input: DownstreamInput, pooling: Pooling) -> Result<(Tensor, Tensor)> {
        let enc = self.frozen_encoder(input)?;
        let pad = self.config.pad_token_id;
        let f = |data: &Labelled| -> Result<Tensor> {
            let all: Vec<usize> = (0..data.ids.len()).collect();
            by_length(&data.ids, &all, pad, self.device, &|ids| {
                Ok(pool(&enc, ids, pooling, &mut Mode::Eval)?)
            })
        };
        Ok((f(self.train)?, f(self.test)?))
    }

    fn fine_tune(
        &self,
        section: &DownstreamSection,
        chosen: &[usize],
        cfg: &FineTuneConfig,
        dir: &Path,
    ) -> Result<FineTuned> {
        let spec = TextClassifierSpec::new(
            self.config.clone(),
            section.pooling,
            self.label_names.to_vec(),
        );
        let pad = self.config.pad_token_id;
        let batch = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
            let y: Vec<u32> = idx.iter().map(|&i| self.train.labels[i]).collect();
            Ok((
                padded_ids(&self.train.ids, idx, pad, self.device)?,
                Tensor::from_vec(y, idx.len(), self.device)?,
            ))
        };
        // Batches of similar lengths: texts vary from a few tokens to max_len.
        let cfg = FineTuneConfig {
            lengths: Some(self.train.ids.iter().map(Vec::len).collect()),
            ..cfg.clone()
        };
        fine_tune(
            &Classifier {
                build: &|vb| TextClassifier::new(&spec, vb),
                encoder_prefix: "text.",
                depth: self.config.encoder.depth,
                write_spec: &|dir| spec.write(dir),
            },
            &FineTuneData {
                batch: &batch,
                accuracy: &|m, idx, on_test| {
                    let set = if on_test { self.test } else { self.train };
                    self.accuracy_on(m, set, idx)
                },
                test_len: self.test.ids.len(),
            },
            self.pretrained,
            self.device,
            section,
            chosen,
            &cfg,
            dir,
        )
    }
}
