//! The image side of the downstream stage: labelled image splits as normalised pixels, the
//! ViT encoder (`vit.*`) and an [`ImageClassifier`] on it; raw pixels are the baseline
//! features no encoder computes.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::backbone::{pool, EncoderConfig, Mode, Tokens};
use crate::draws::{Draws, Purpose};
use crate::error::Result;
use crate::head::mix;
use crate::modality::image::classifier::{ClassifierSpec, ImageClassifier};
use crate::modality::image::dataset::ImageDataset;
use crate::modality::image::{ImageEncoder, ImageGeometry};
use crate::recipe::{DownstreamSection, ImageSection, Pooling};
use crate::run::classify::{require_labels, Labelled, Split};

/// Pooled encoder features `[N, D]` for a whole data set, computed without a gradient graph.
pub fn features(
    encoder: &ImageEncoder,
    data: &ImageDataset,
    image: &ImageSection,
    pooling: Pooling,
    device: &Device,
) -> Result<Tensor> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..data.len).collect();
    for chunk in all.chunks(ImageSplits::FEATURE_CHUNK) {
        let imgs = data.batch(chunk, &image.mean, &image.std, device)?;
        let h = encoder.forward(&imgs, &mut Mode::Eval)?.detach();
        out.push(pool(&h, pooling, Tokens::ClsThenPatches)?);
    }
    Ok(Tensor::cat(&out, 0)?.contiguous()?)
}

/// Normalised pixels as features `[N, C*H*W]`.
pub fn pixel_features(
    data: &ImageDataset,
    image: &ImageSection,
    device: &Device,
) -> Result<Tensor> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..data.len).collect();
    for chunk in all.chunks(1024) {
        out.push(
            data.batch(chunk, &image.mean, &image.std, device)?
                .flatten_from(1)?,
        );
    }
    Ok(Tensor::cat(&out, 0)?.contiguous()?)
}

/// Labelled image splits and the encoder's shape.
pub struct ImageSplits<'a> {
    pub train: &'a ImageDataset,
    pub test: &'a ImageDataset,
    pub image: &'a ImageSection,
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    /// Class names in label order (empty: none known).
    pub classes: Vec<String>,
}

impl ImageSplits<'_> {
    fn split(&self, split: Split) -> &ImageDataset {
        split.pick(self.train, self.test)
    }

    fn spec(&self, pooling: Pooling) -> ClassifierSpec {
        ClassifierSpec::new(
            self.geometry,
            self.encoder.clone(),
            self.num_classes(),
            pooling,
            self.classes.clone(),
        )
    }
}

impl Labelled for ImageSplits<'_> {
    type Encoder = ImageEncoder;
    const PREFIX: &'static str = "vit";
    const FEATURE_CHUNK: usize = 256;
    const LOGIT_CHUNK: usize = 500;

    fn labels(&self, split: Split) -> Result<&[u32]> {
        require_labels(self.split(split).labels.as_deref(), split)
    }

    fn num_classes(&self) -> usize {
        // Named classes are all classes, seen in these splits or not.
        let seen = self.train.num_classes().max(self.test.num_classes());
        seen.max(self.classes.len())
    }

    fn inputs(&self, split: Split, idx: &[usize], device: &Device) -> Result<Tensor> {
        self.split(split)
            .batch(idx, &self.image.mean, &self.image.std, device)
    }

    /// With `section.augment`, each batch draws one key from its first row's augmentation
    /// stream; example `i`'s crop and flip are then a function of (key, i), as
    /// pretraining's are of (seed, epoch, i).
    fn train_inputs(
        &self,
        section: &DownstreamSection,
        idx: &[usize],
        draws: &Draws,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(a) = &section.augment else {
            return self.inputs(Split::Train, idx, device);
        };
        let augment = super::augment_of(a, draws.rng(0, Purpose::Augment).gen());
        let epochs = vec![0; idx.len()];
        let values = self.train.normalised(
            idx,
            Some((&augment, &epochs)),
            &self.image.mean,
            &self.image.std,
        )?;
        self.train.to_tensor(values, idx.len(), device)
    }

    fn mix_inputs(
        &self,
        x: &Tensor,
        mixup: &mix::Mixup,
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<(Tensor, f64)>> {
        let size = self.image.size;
        let Some(drawn) = mix::draw(mixup, size, size, rng)? else {
            return Ok(None);
        };
        Ok(Some((mix::mix_images(x, &drawn)?, drawn.lam)))
    }

    fn depth(&self) -> usize {
        self.encoder.depth
    }

    fn encoder(&self, vb: VarBuilder) -> candle_core::Result<ImageEncoder> {
        ImageEncoder::new(self.geometry, &self.encoder, vb)
    }

    fn classifier(&self, head: &DownstreamSection, vb: VarBuilder) -> Result<ImageClassifier> {
        // Stochastic depth trains this classifier only: the written spec leaves it out.
        let mut spec = self.spec(head.pooling);
        spec.encoder.drop_path = head.drop_path;
        Ok(ImageClassifier::new(&spec, vb)?)
    }

    fn write_spec(&self, head: &DownstreamSection, dir: &Path) -> Result<()> {
        self.spec(head.pooling).write(dir)
    }

    fn input_features(&self, split: Split, device: &Device) -> Result<Tensor> {
        pixel_features(self.split(split), self.image, device)
    }
}
