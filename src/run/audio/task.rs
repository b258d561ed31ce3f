//! The audio side of the downstream stage: pooled features of the pretrained (or untrained)
//! spectrogram encoder, and fine-tuning of an [`AudioClassifier`].

use std::path::Path;

use candle_core::{Device, Tensor};

use super::AudioRunConfig;
use crate::backbone::{pool, Mode, Tokens};
use crate::error::Result;
use crate::head::finetune::FineTuneConfig;
use crate::head::linear_probe::accuracy;
use crate::modality::audio::classifier::{AudioClassifier, AudioClassifierSpec};
use crate::modality::audio::clips::ClipSet;
use crate::modality::audio::encoder::SpectrogramEncoder;
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection, Pooling};
use crate::run::classify::{
    encoder_store, fine_tune, map_chunks, Classifier, FineTuneData, FineTuned,
};
use crate::run::downstream::DownstreamTask;

/// Clips per forward pass when computing features or accuracy.
const EVAL_CHUNK: usize = 256;

/// Labelled audio splits and the pretrained spectrogram encoder.
pub struct AudioTask<'a> {
    pub train: &'a ClipSet,
    pub test: &'a ClipSet,
    pub classes: &'a [String],
    pub config: &'a AudioRunConfig,
    /// Holds the pretrained encoder as `audio.*`.
    pub pretrained: &'a ParamStore,
    pub seed: u64,
    pub device: &'a Device,
    train_labels: Vec<u32>,
    test_labels: Vec<u32>,
}

impl<'a> AudioTask<'a> {
    pub fn new(
        train: &'a ClipSet,
        test: &'a ClipSet,
        classes: &'a [String],
        config: &'a AudioRunConfig,
        pretrained: &'a ParamStore,
        seed: u64,
        device: &'a Device,
    ) -> Result<Self> {
        Ok(Self {
            train_labels: train.require_labels("training")?.to_vec(),
            test_labels: test.require_labels("test")?.to_vec(),
            train,
            test,
            classes,
            config,
            pretrained,
            seed,
            device,
        })
    }

    /// A frozen encoder: the pretrained one, or the same architecture at the seeded
    /// initialisation the pretraining started from.
    fn frozen_encoder(&self, input: DownstreamInput) -> Result<SpectrogramEncoder> {
        let c = self.config;
        let store = encoder_store(self.pretrained, input, self.seed, self.device, &|vb| {
            SpectrogramEncoder::new(c.geometry, &c.encoder, vb.pp("audio")).map(|_| ())
        })?;
        Ok(SpectrogramEncoder::new(
            c.geometry,
            &c.encoder,
            store.frozen_var_builder(self.device).pp("audio"),
        )?)
    }

    fn spec(&self, pooling: Pooling) -> AudioClassifierSpec {
        AudioClassifierSpec {
            kind: AudioClassifierSpec::KIND.into(),
            features: self.config.features.clone(),
            geometry: self.config.geometry,
            encoder: self.config.encoder.clone(),
            pooling,
            classes: self.classes.to_vec(),
        }
    }

    /// Runs `f` on normalised spectrogram batches of the clips `idx` and concatenates.
    fn map_batches(
        &self,
        set: &ClipSet,
        idx: &[usize],
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let make = |c: &[usize]| set.batch(c, &self.config.features, self.device);
        map_chunks(idx, EVAL_CHUNK, &make, f)
    }

    fn accuracy_on(&self, model: &AudioClassifier, set: &ClipSet, idx: &[usize]) -> Result<f64> {
        let logits = self.map_batches(set, idx, &|x| Ok(model.forward(x, &mut Mode::Eval)?))?;
        accuracy(&logits, &set.label_batch(idx, self.device)?)
    }
}

impl DownstreamTask for AudioTask<'_> {
    fn train_labels(&self) -> &[u32] {
        &self.train_labels
    }

    fn test_labels(&self) -> &[u32] {
        &self.test_labels
    }

    fn num_classes(&self) -> usize {
        self.classes.len()
    }

    fn features(&self, input: DownstreamInput, pooling: Pooling) -> Result<(Tensor, Tensor)> {
        let enc = self.frozen_encoder(input)?;
        let f = |set: &ClipSet| {
            let all: Vec<usize> = (0..set.len()).collect();
            self.map_batches(set, &all, &|x| {
                Ok(pool(
                    &enc.forward(x, &mut Mode::Eval)?,
                    pooling,
                    Tokens::ClsThenPatches,
                )?)
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
        let spec = self.spec(section.pooling);
        let batch = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
            Ok((
                self.train.batch(idx, &self.config.features, self.device)?,
                self.train.label_batch(idx, self.device)?,
            ))
        };
        fine_tune(
            &Classifier {
                build: &|vb| Ok(AudioClassifier::new(&spec, vb)?),
                encoder_prefix: "audio.",
                depth: self.config.encoder.depth,
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
