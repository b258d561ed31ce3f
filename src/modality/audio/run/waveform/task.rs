//! The downstream stage on a waveform model (wav2vec 2.0, HuBERT, data2vec-audio) named by
//! an audio recipe's `model.source`: labelled clips as waveforms, the source's encoder
//! (`audio.*`, mean-pooled final hidden states) and a [`WaveformClassifier`] on it (with the
//! projector a section's `projector` asks for), fine-tuned end to end.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::head::mix;
use crate::modality::audio::classifier::{
    ProjectedEncoder, WaveformClassifier, WaveformClassifierSpec,
};
use crate::modality::audio::clips::ClipSet;
use crate::modality::audio::waveform::WaveformEncoder;
use crate::recipe::{DownstreamSection, Pooling};
use crate::run::classify::{require_labels, Labelled, Split};

/// Labelled clips and the source model's shape and input settings (its `classes` are the
/// task's).
pub struct WaveformSplits<'a> {
    pub train: &'a ClipSet,
    pub test: &'a ClipSet,
    pub spec: &'a WaveformClassifierSpec,
}

impl WaveformSplits<'_> {
    fn split(&self, split: Split) -> &ClipSet {
        split.pick(self.train, self.test)
    }

    /// The saved description of the classifier `head` trains (its projector, if any).
    fn head_spec(&self, head: &DownstreamSection) -> WaveformClassifierSpec {
        WaveformClassifierSpec {
            projector: head.projector,
            ..self.spec.clone()
        }
    }
}

impl Labelled for WaveformSplits<'_> {
    type Encoder = ProjectedEncoder;
    const PREFIX: &'static str = "audio";
    /// Waveform models see many frames per clip: the attention matrices dominate memory.
    const FEATURE_CHUNK: usize = 16;

    fn labels(&self, split: Split) -> Result<&[u32]> {
        require_labels(self.split(split).labels.as_deref(), split)
    }

    fn num_classes(&self) -> usize {
        self.spec.classes.len()
    }

    fn inputs(&self, split: Split, idx: &[usize], device: &Device) -> Result<Tensor> {
        self.split(split).waveform_batch(idx, device)
    }

    /// Mixup of the raw waveforms (a CutMix box has no meaning on a waveform: recipe
    /// validation refuses `cutmix_alpha` for waveform models).
    fn mix_inputs(
        &self,
        x: &Tensor,
        mixup: &mix::Mixup,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<(Tensor, f64)>> {
        let Some(drawn) = mix::draw(mixup, 1, x.dim(1)?, rng)? else {
            return Ok(None);
        };
        if drawn.cut.is_some() {
            return Err(Error::Usage(
                "mixup: CutMix cuts boxes out of spectrograms and images; a waveform model \
                 (model.source) takes mixup only: set cutmix_alpha = 0"
                    .into(),
            ));
        }
        Ok(Some((mix::mix_images(x, &drawn)?, drawn.lam)))
    }

    fn depth(&self) -> usize {
        self.spec.config.encoder.depth
    }

    fn encoder(&self, vb: VarBuilder) -> candle_core::Result<ProjectedEncoder> {
        Ok(ProjectedEncoder::bare(WaveformEncoder::new(
            &self.spec.config,
            vb,
        )?))
    }

    fn classifier(&self, head: &DownstreamSection, vb: VarBuilder) -> Result<WaveformClassifier> {
        mean_only(head.pooling)?;
        if head.drop_path > 0.0 {
            return Err(Error::Usage(
                "downstream drop_path: waveform models (model.source) take no stochastic depth; remove it".into(),
            ));
        }
        Ok(WaveformClassifier::new(&self.head_spec(head), vb)?)
    }

    fn write_spec(&self, head: &DownstreamSection, dir: &Path) -> Result<()> {
        self.head_spec(head).write(dir)
    }
}

/// Waveform classifiers pool by the mean: `cls` is rejected when the recipe is validated,
/// and checked again here for callers of the task.
fn mean_only(pooling: Pooling) -> Result<()> {
    if pooling == Pooling::Cls {
        return Err(Error::Usage(
            "waveform models have no class token: use pooling = \"mean\"".into(),
        ));
    }
    Ok(())
}
