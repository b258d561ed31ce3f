//! The downstream stage on a waveform model (wav2vec 2.0, HuBERT, data2vec-audio) named by
//! an audio recipe's `model.source`: mean-pooled final hidden states of the frozen encoder,
//! and fine-tuning of a [`WaveformClassifier`] end to end.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::backbone::{pool, Mode, Tokens};
use crate::error::{Error, Result};
use crate::head::finetune::{self, FineTuneConfig, FineTuneLog};
use crate::head::linear_probe::accuracy;
use crate::modality::audio::classifier::{
    WaveformClassifier, WaveformClassifierSpec, WEIGHTS_FILE,
};
use crate::modality::audio::clips::ClipSet;
use crate::modality::audio::waveform::WaveformEncoder;
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection, Pooling};
use crate::run::downstream::{finish_fine_tune, DownstreamTask, FineTuned};

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
        let store = match input {
            DownstreamInput::Pretrained => self.pretrained.clone(),
            _ => {
                let fresh = ParamStore::new(self.seed);
                WaveformEncoder::new(
                    &self.spec.config,
                    fresh.var_builder(self.device).pp("audio"),
                )?;
                fresh
            }
        };
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
        let mut out = Vec::new();
        for chunk in idx.chunks(EVAL_CHUNK) {
            let x = set.waveform_batch(chunk, self.device)?;
            out.push(f(&x)?.detach());
        }
        Ok(Tensor::cat(&out, 0)?.contiguous()?)
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
        if input == DownstreamInput::Pixels {
            return Err(Error::Usage(
                "`pixels` is an image baseline; audio heads take `pretrained` or `scratch`".into(),
            ));
        }
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
        log: &mut dyn FnMut(&FineTuneLog) -> Result<()>,
    ) -> Result<FineTuned> {
        // Rejected when the recipe is validated; checked again for callers of the task.
        if section.pooling == Pooling::Cls {
            return Err(Error::Usage(
                "waveform models have no class token: use pooling = \"mean\"".into(),
            ));
        }
        let spec = self.spec;
        let store = ParamStore::new(self.seed);
        let model = WaveformClassifier::new(spec, store.var_builder(self.device))?;
        if section.input == DownstreamInput::Pretrained {
            store.copy_prefix_from(self.pretrained, "audio.")?;
        }
        let batch = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
            Ok((
                self.train.waveform_batch(idx, self.device)?,
                self.train.label_batch(idx, self.device)?,
            ))
        };
        let steps = finetune::fine_tune(
            &store,
            spec.config.encoder.depth,
            &|x, mode| model.forward(x, mode),
            &batch,
            chosen,
            cfg,
            log,
        )?;
        let frozen = WaveformClassifier::new(spec, store.frozen_var_builder(self.device))?;
        let all: Vec<usize> = (0..self.test.len()).collect();
        finish_fine_tune(
            steps,
            chosen,
            &|idx, on_test| {
                let set = if on_test { self.test } else { self.train };
                self.accuracy_on(&frozen, set, idx)
            },
            &all,
            &|| {
                store.save(&dir.join(WEIGHTS_FILE))?;
                spec.write(dir)
            },
        )
    }
}
