//! The audio side of the downstream stage: labelled clips as normalised spectrograms, the
//! spectrogram encoder (`audio.*`) and an [`AudioClassifier`] on it.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarBuilder;
use rand::Rng;

use super::AudioRunConfig;
use crate::draws::{Draws, Purpose};
use crate::error::Result;
use crate::modality::audio::classifier::{AudioClassifier, AudioClassifierSpec};
use crate::modality::audio::clips::ClipSet;
use crate::modality::audio::encoder::{SpectrogramEncoder, Spectrograms};
use crate::recipe::{DownstreamSection, Pooling};
use crate::run::classify::{require_labels, Labelled, Split};

/// Labelled clips and the run's features and encoder shape.
pub struct AudioSplits<'a> {
    pub train: &'a ClipSet,
    pub test: &'a ClipSet,
    pub classes: &'a [String],
    pub config: &'a AudioRunConfig,
}

impl AudioSplits<'_> {
    fn split(&self, split: Split) -> &ClipSet {
        split.pick(self.train, self.test)
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
}

impl Labelled for AudioSplits<'_> {
    type Encoder = SpectrogramEncoder;
    const PREFIX: &'static str = "audio";
    const FEATURE_CHUNK: usize = 256;

    fn labels(&self, split: Split) -> Result<&[u32]> {
        require_labels(self.split(split).labels.as_deref(), split)
    }

    fn num_classes(&self) -> usize {
        self.classes.len()
    }

    fn inputs(&self, split: Split, idx: &[usize], device: &Device) -> Result<Spectrograms> {
        self.split(split).batch(idx, &self.config.features, device)
    }

    /// With `section.augment`, each batch draws one key from its first row's augmentation
    /// stream; clip `i`'s augmentation is then a function of (key, i), as pretraining's is of
    /// (seed, epoch, i).
    fn train_inputs(
        &self,
        section: &DownstreamSection,
        idx: &[usize],
        draws: &Draws,
        device: &Device,
    ) -> Result<Spectrograms> {
        let f = &self.config.features;
        let seed = draws.rng(0, Purpose::Augment).gen();
        let Some(augment) = super::augment(section.augment.as_ref(), &f.mel, seed)? else {
            return self.inputs(Split::Train, idx, device);
        };
        let (values, frames) = self
            .train
            .augmented(idx, f, &augment, &vec![0; idx.len()])?;
        f.to_input(values, frames, idx.len(), device)
    }

    fn depth(&self) -> usize {
        self.config.encoder.depth
    }

    fn encoder(&self, vb: VarBuilder) -> candle_core::Result<SpectrogramEncoder> {
        SpectrogramEncoder::new(self.config.geometry, &self.config.encoder, vb)
    }

    fn classifier(&self, head: &DownstreamSection, vb: VarBuilder) -> Result<AudioClassifier> {
        // Stochastic depth trains this classifier only: the written spec leaves it out.
        let mut spec = self.spec(head.pooling);
        spec.encoder.drop_path = head.drop_path;
        Ok(AudioClassifier::new(&spec, vb)?)
    }

    fn write_spec(&self, head: &DownstreamSection, dir: &Path) -> Result<()> {
        self.spec(head.pooling).write(dir)
    }
}
