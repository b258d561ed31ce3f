//! The audio side of the downstream stage: labelled clips as normalised spectrograms, the
//! spectrogram encoder (`audio.*`) and an [`AudioClassifier`] on it.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarBuilder;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::AudioRunConfig;
use crate::draws::{Draws, Purpose};
use crate::error::Result;
use crate::head::mix;
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

    /// timm's batch mixup and CutMix on the normalised log-mels (a CutMix box spans mel
    /// bands and frames); a mixed clip holds input wherever either of its two clips does.
    fn mix_inputs(
        &self,
        x: &Spectrograms,
        mixup: &mix::Mixup,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<(Spectrograms, f64)>> {
        let g = &self.config.geometry;
        let Some(drawn) = mix::draw(mixup, g.n_mels, g.frames, rng)? else {
            return Ok(None);
        };
        Ok(Some((mix_spectrograms(x, &drawn)?, drawn.lam)))
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

/// The batch `x` mixed as `drawn` says: its values as images of mel bands × frames, and its
/// padding mask the union of each clip's and its partner's.
fn mix_spectrograms(x: &Spectrograms, drawn: &mix::Mix) -> Result<Spectrograms> {
    let frames = match &x.frames {
        Some(f) => Some(f.maximum(&mix::partner_rows(f)?)?),
        None => None,
    };
    Ok(Spectrograms {
        values: mix::mix_images(&x.values, drawn)?,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    #[test]
    fn a_mixed_clip_blends_values_and_holds_input_where_either_clip_does() {
        let dev = Device::Cpu;
        // Two clips of 2 mel bands x 4 frames; the first holds 2 frames, the second 3.
        let values = Tensor::arange(0f32, 16.0, &dev)
            .unwrap()
            .reshape((2, 2, 4))
            .unwrap();
        let frames = Tensor::new(&[[1f32, 1., 0., 0.], [1., 1., 1., 0.]], &dev).unwrap();
        let x = Spectrograms {
            values,
            frames: Some(frames),
        };
        let blend = mix::Mix {
            lam: 0.75,
            cut: None,
        };
        let y = mix_spectrograms(&x, &blend).unwrap();
        let v: Vec<Vec<Vec<f32>>> = y.values.to_vec3().unwrap();
        assert_eq!(v[0][0][0], 0.75 * 0.0 + 0.25 * 8.0);
        assert_eq!(v[1][1][3], 0.75 * 15.0 + 0.25 * 7.0);
        let f: Vec<Vec<f32>> = y.frames.unwrap().to_vec2().unwrap();
        assert_eq!(f, vec![vec![1., 1., 1., 0.], vec![1., 1., 1., 0.]]);
        // CutMix: a box of bands x frames from the partner; the mask is the union too.
        let cut = mix::Mix {
            lam: 0.75,
            cut: Some((1..2, 0..2)),
        };
        let y = mix_spectrograms(&x, &cut).unwrap();
        let v: Vec<Vec<Vec<f32>>> = y.values.to_vec3().unwrap();
        assert_eq!(v[0][0], vec![0., 1., 2., 3.]);
        assert_eq!(v[0][1], vec![12., 13., 6., 7.]);
        // Unpadded batches stay unpadded.
        let full = Spectrograms::full(x.values.clone());
        assert!(mix_spectrograms(&full, &blend).unwrap().frames.is_none());
    }
}
