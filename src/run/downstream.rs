//! The downstream stage: pooled features of the frozen encoder, then each head of the
//! recipe at each label fraction.

use candle_core::{Device, Tensor};

use crate::backbone::Mode;
use crate::error::Result;
use crate::head::{split, LinearProbe, ProbeConfig};
use crate::modality::image::dataset::ImageDataset;
use crate::modality::image::ImageEncoder;
use crate::recipe::{DownstreamSection, HeadKind, ImageSection, Pooling};

#[derive(Debug, Clone, serde::Serialize)]
pub struct DownstreamResult {
    pub head: HeadKind,
    pub pooling: Pooling,
    pub label_fraction: f64,
    pub train_examples: usize,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

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
        let pooled = match pooling {
            Pooling::Cls => h.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => h.narrow(1, 1, h.dim(1)? - 1)?.mean(1)?,
        };
        out.push(pooled);
    }
    Ok(Tensor::cat(&out, 0)?.contiguous()?)
}

/// Runs one downstream section at each of its label fractions.
pub fn evaluate(
    section: &DownstreamSection,
    encoder: &ImageEncoder,
    train: &ImageDataset,
    test: &ImageDataset,
    image: &ImageSection,
    seed: u64,
    device: &Device,
) -> Result<Vec<DownstreamResult>> {
    let train_x = features(encoder, train, image, section.pooling, device)?;
    let test_x = features(encoder, test, image, section.pooling, device)?;
    let all: Vec<usize> = (0..test.len).collect();
    let test_y = test.label_batch(&all, device)?;
    let labels = train.labels.as_deref().unwrap_or_default();
    let classes = train.num_classes().max(test.num_classes());
    let mut results = Vec::new();
    for &fraction in &section.label_fractions {
        let chosen = split::stratified(labels, fraction, seed);
        let idx = Tensor::from_vec(
            chosen.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            chosen.len(),
            device,
        )?;
        let x = train_x.index_select(&idx, 0)?;
        let y = train.label_batch(&chosen, device)?;
        let r = match section.head {
            HeadKind::LinearProbe => LinearProbe::evaluate(
                (&x, &y),
                (&test_x, &test_y),
                classes,
                &ProbeConfig {
                    epochs: section.epochs,
                    lr: section.lr,
                    weight_decay: section.weight_decay,
                    batch_size: section.batch_size,
                    seed,
                },
            )?,
        };
        results.push(DownstreamResult {
            head: section.head,
            pooling: section.pooling,
            label_fraction: fraction,
            train_examples: r.train_examples,
            train_accuracy: r.train_accuracy,
            test_accuracy: r.test_accuracy,
        });
    }
    Ok(results)
}
