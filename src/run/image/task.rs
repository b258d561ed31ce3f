//! The image side of the downstream stage: features of the pretrained (or untrained)
//! ViT encoder or of raw pixels, and fine-tuning of an [`ImageClassifier`].

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::backbone::{pool, EncoderConfig, Mode, Tokens};
use crate::error::Result;
use crate::head::finetune::FineTuneConfig;
use crate::head::linear_probe::accuracy;
use crate::modality::image::classifier::{ClassifierSpec, ImageClassifier};
use crate::modality::image::dataset::ImageDataset;
use crate::modality::image::{ImageEncoder, ImageGeometry};
use crate::params::ParamStore;
use crate::recipe::{DownstreamInput, DownstreamSection, ImageSection, Pooling};
use crate::run::classify::{encoder_store, fine_tune, Classifier, FineTuneData, FineTuned};
use crate::run::downstream::DownstreamTask;

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
    for chunk in all.chunks(256) {
        let imgs = data.batch(chunk, &image.mean, &image.std, device)?;
        let h = encoder.forward(&imgs, &mut Mode::Eval)?.detach();
        let pooled = pool(&h, pooling, Tokens::ClsThenPatches)?;
        out.push(pooled);
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

/// Labelled image splits and the pretrained image encoder.
pub struct ImageTask<'a> {
    pub train: &'a ImageDataset,
    pub test: &'a ImageDataset,
    pub image: &'a ImageSection,
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    /// Holds the pretrained encoder as `vit.*`.
    pub pretrained: &'a ParamStore,
    pub seed: u64,
    pub device: &'a Device,
    train_labels: Vec<u32>,
    test_labels: Vec<u32>,
}

impl<'a> ImageTask<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        train: &'a ImageDataset,
        test: &'a ImageDataset,
        image: &'a ImageSection,
        geometry: ImageGeometry,
        encoder: EncoderConfig,
        pretrained: &'a ParamStore,
        seed: u64,
        device: &'a Device,
    ) -> Result<Self> {
        let labels = |d: &ImageDataset, split: &str| {
            d.labels.clone().ok_or_else(|| {
                crate::error::Error::Usage(format!(
                    "downstream heads need labels for the {split} split"
                ))
            })
        };
        Ok(Self {
            train_labels: labels(train, "training")?,
            test_labels: labels(test, "test")?,
            train,
            test,
            image,
            geometry,
            encoder,
            pretrained,
            seed,
            device,
        })
    }

    /// A frozen image encoder: the pretrained one, or the same architecture at its
    /// initialisation (seeded like the pretraining run's, so "scratch" is exactly the
    /// pretraining's starting point).
    fn frozen_encoder(&self, input: DownstreamInput) -> Result<ImageEncoder> {
        let store = encoder_store(self.pretrained, input, self.seed, self.device, &|vb| {
            ImageEncoder::new(self.geometry, &self.encoder, vb.pp("vit")).map(|_| ())
        })?;
        Ok(ImageEncoder::new(
            self.geometry,
            &self.encoder,
            store.frozen_var_builder(self.device).pp("vit"),
        )?)
    }

    fn accuracy_on(
        &self,
        model: &ImageClassifier,
        data: &ImageDataset,
        idx: &[usize],
    ) -> Result<f64> {
        let mut logits = Vec::new();
        for chunk in idx.chunks(500) {
            let x = data.batch(chunk, &self.image.mean, &self.image.std, self.device)?;
            logits.push(model.forward(&x, &mut Mode::Eval)?);
        }
        accuracy(
            &Tensor::cat(&logits, 0)?,
            &data.label_batch(idx, self.device)?,
        )
    }
}

impl DownstreamTask for ImageTask<'_> {
    fn train_labels(&self) -> &[u32] {
        &self.train_labels
    }

    fn test_labels(&self) -> &[u32] {
        &self.test_labels
    }

    fn num_classes(&self) -> usize {
        self.train.num_classes().max(self.test.num_classes())
    }

    fn features(&self, input: DownstreamInput, pooling: Pooling) -> Result<(Tensor, Tensor)> {
        Ok(match input {
            DownstreamInput::Pixels => (
                pixel_features(self.train, self.image, self.device)?,
                pixel_features(self.test, self.image, self.device)?,
            ),
            _ => {
                let enc = self.frozen_encoder(input)?;
                (
                    features(&enc, self.train, self.image, pooling, self.device)?,
                    features(&enc, self.test, self.image, pooling, self.device)?,
                )
            }
        })
    }

    fn fine_tune(
        &self,
        section: &DownstreamSection,
        chosen: &[usize],
        cfg: &FineTuneConfig,
        dir: &Path,
    ) -> Result<FineTuned> {
        let spec = ClassifierSpec::new(
            self.geometry,
            self.encoder.clone(),
            self.num_classes(),
            section.pooling,
        );
        let batch = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
            Ok((
                self.train
                    .batch(idx, &self.image.mean, &self.image.std, self.device)?,
                self.train.label_batch(idx, self.device)?,
            ))
        };
        fine_tune(
            &Classifier {
                build: &|vb| Ok(ImageClassifier::new(&spec, vb)?),
                encoder_prefix: "vit.",
                depth: self.encoder.depth,
                write_spec: &|dir| spec.write(dir),
            },
            &FineTuneData {
                batch: &batch,
                accuracy: &|m, idx, on_test| {
                    let set = if on_test { self.test } else { self.train };
                    self.accuracy_on(m, set, idx)
                },
                test_len: self.test.len,
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
