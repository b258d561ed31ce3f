//! The downstream stage on a waveform model (wav2vec 2.0, HuBERT, data2vec-audio) named by
//! an audio recipe's `model.source`: mean-pooled final hidden states of the frozen encoder,
//! and fine-tuning of a [`WaveformClassifier`] end to end.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::backbone::{pool, Mode, Tokens};
use crate::error::{Error, Result};
use crate::head::finetune::FineTuneConfig;
use crate::head::linear_probe::accuracy;
use crate::modality::audio::classifier::{WaveformClassifier, WaveformClassifierSpec};
use crate::modality::audio::clips::ClipSet;
use crate::modality::audio::waveform::WaveformEncoder;
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection, Pooling};
use crate::run::classify::{
    encoder_store, fine_tune, map_chunks, Classifier, FineTuneData, FineTuned,
};
use crate::run::downstream::DownstreamTask;

/// Clips per forward pass when computing features or accuracy (waveform models see many
/// frames per clip: the attention matrices dominate memory).
const EVAL_CHUNK: usize = 16;

/// Labelled waveform splits and the source's encoder.
pub struct WaveformTask<'a> {
    pub train: &'a ClipSet,
    pub test: &'a ClipSet,
    /// The model's shape and input settings; its `classes` are the task's.
    pub spec: &'a WaveformClassifierSpec,
    /// Holds the source's encoder as `audio.*`.
    pub pretrained: &'a ParamStore,
    pub seed: u64,
    pub device: &'a Device,
    train_labels: Vec<u32>,
    test_labels: Vec<u32>,
}

impl<'a> WaveformTask<'a> {
    pub fn new(
        train: &'a ClipSet,
        test: &'a ClipSet,
        spec: &'a WaveformClassifierSpec,
        pretrained: &'a ParamStore,
        seed: u64,
        device: &'a Device,
    ) -> Result<Self> {
        Ok(Self {
            train_labels: train.require_labels("training")?.to_vec(),
            test_labels: test.require_labels("test")?.to_vec(),
            train,
            test,
            spec,
            pretrained,
            seed,
            device,
        })
    }

    /// A frozen encoder: the source's, or the same architecture freshly initialised with the
    /// run's seed.
    pub fn frozen_encoder(&self, input: DownstreamInput) -> Result<WaveformEncoder> {
        let store = encoder_store(self.pretrained, input, self.seed, self.device, &|vb| {
            WaveformEncoder::new(&self.spec.config, vb.pp("audio")).map(|_| ())
        })?;
        Ok(WaveformEncoder::new(
            &self.spec.config,
            store.frozen_var_builder(self.device).pp("audio"),
        )?)
    }

    /// Runs `f` on waveform batches of the clips `idx` and concatenates.
    fn map_batches(
        &self,
        set: &ClipSet,
        idx: &[usize],
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let make = |c: &[usize]| set.waveform_batch(c, self.device);
        map_chunks(idx, EVAL_CHUNK, &make, f)
    }

    fn accuracy_on(&self, model: &WaveformClassifier, set: &ClipSet, idx: &[usize]) -> Result<f64> {
        let logits = self.map_batches(set, idx, &|x| Ok(model.forward(x, &mut Mode::Eval)?))?;
        accuracy(&logits, &set.label_batch(idx, self.device)?)
    }
}

impl DownstreamTask for WaveformTask<'_> {
    fn train_labels(&self) -> &[u32] {
        &self.train_labels
    }

    fn test_labels(&self) -> &[u32] {
        &self.test_labels
    }

    fn num_classes(&self) -> usize {
        self.spec.classes.len()
    }

    fn features(&self, input: DownstreamInput, pooling: Pooling) -> Result<(Tensor, Tensor)> {
        let enc = self.frozen_encoder(input)?;
        let f = |set: &ClipSet| {
            let all: Vec<usize> = (0..set.len()).collect();
            self.map_batches(set, &all, &|x| {
                let h = enc.forward(x, None, &mut Mode::Eval)?.last_hidden_state;
                Ok(pool(&h, pooling, Tokens::Frames)?)
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
        // Rejected when the recipe is validated; checked again for callers of the task.
        if section.pooling == Pooling::Cls {
            return Err(Error::Usage(
                "waveform models have no class token: use pooling = \"mean\"".into(),
            ));
        }
        let spec = self.spec;
        let batch = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
            Ok((
                self.train.waveform_batch(idx, self.device)?,
                self.train.label_batch(idx, self.device)?,
            ))
        };
        fine_tune(
            &Classifier {
                build: &|vb| Ok(WaveformClassifier::new(spec, vb)?),
                encoder_prefix: "audio.",
                depth: spec.config.encoder.depth,
                write_spec: &|dir| spec.write(dir),
            },
            &FineTuneData {
                batch: &batch,
                accuracy: &|m, idx, on_test| {
                    let set = if on_test { self.test } else { self.train };
                    self.accuracy_on(m, set, idx)
                },
                test_len: self.test.len(),
            },
            self.pretrained,
            self.device,
            section,
            chosen,
            cfg,
            dir,
        )
    }
}
