//! Images: IDX files or image folders, MAE or SimMIM pretraining ([`pretrain`]) and the
//! downstream heads on the pretrained ViT or raw pixels ([`task`]).

pub mod pretrain;
pub mod task;

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::modality::image::augment::{Augment, RandomErasing, RandomResizedCrop};
use crate::modality::image::dataset::ImageDataset;
use crate::objective::Objective;
use crate::params::ParamStore;
use crate::recipe::{self, AugmentSection, DataSource, ImageSection, Recipe};
use crate::run::classify::Task;
use crate::run::downstream::DownstreamTask;
use crate::run::{Model, Pipeline, PretrainStage};
use crate::train::loader::MakeBatch;
use pretrain::PretrainTask;

/// Everything a recipe needs, built and checked.
pub struct Prepared {
    model: Model,
    image: ImageSection,
    train: ImageDataset,
    test: Option<ImageDataset>,
    /// `data.labelled`'s splits, when the recipe names them: pretraining then uses `train`
    /// (which may be unlabelled) and the heads these (see [`Prepared::heads_data`]).
    labelled: Option<(ImageDataset, ImageDataset)>,
    objective: Box<dyn Objective<Batch = Tensor>>,
}

impl Prepared {
    /// The labelled train and test splits the downstream heads use: `data.labelled`, or
    /// else `data.train` and `data.test`.
    fn heads_data(&self, file: &Path) -> Result<(&ImageDataset, &ImageDataset)> {
        if let Some((train, test)) = &self.labelled {
            return Ok((train, test));
        }
        let test = self.test.as_ref().ok_or_else(|| Error::InvalidValue {
            file: file.to_path_buf(),
            key: "data.test".into(),
            message: "downstream evaluation needs a test split".into(),
        })?;
        Ok((&self.train, test))
    }
}

fn load_images(
    src: &DataSource,
    key: &str,
    image: &ImageSection,
    file: &Path,
) -> Result<ImageDataset> {
    let (mut data, origin) = match src {
        DataSource::Idx { images, labels, .. } => {
            let data = ImageDataset::from_idx(images, labels.as_deref())?;
            (data, images.as_path())
        }
        DataSource::Folder { root, .. } => {
            let data = ImageDataset::from_folder(root, image.channels, image.size)?;
            (data, root.as_path())
        }
        _ => {
            return Err(recipe::source::wrong_format(
                file,
                key,
                src,
                "image recipes read format = \"idx\" or \"folder\"",
            ))
        }
    };
    if data.size != image.size || data.channels != image.channels {
        return Err(Error::InvalidValue {
            file: file.to_path_buf(),
            key: "data.image".into(),
            message: format!(
                "{} ({key}) holds {}-channel {}x{} images but the recipe says channels = {}, size = {}",
                origin.display(),
                data.channels,
                data.size,
                data.size,
                image.channels,
                image.size
            ),
        });
    }
    if let Some(limit) = src.limit() {
        let keep: Vec<usize> = (0..data.len.min(limit)).collect();
        data = data.subset(&keep);
    }
    if data.len == 0 {
        return Err(Error::data(origin, format!("{key} has no examples")));
    }
    Ok(data)
}

pub fn prepare(r: &Recipe, file: &Path, device: Device) -> Result<Prepared> {
    let image = r.data.image.clone().ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.image".into(),
        message: "missing".into(),
    })?;
    let train = load_images(&r.data.train, "data.train", &image, file)?;
    let test = r
        .data
        .test
        .as_ref()
        .map(|t| load_images(t, "data.test", &image, file))
        .transpose()?;
    let labelled = match &r.data.labelled {
        Some(l) => Some((
            load_images(&l.train, "data.labelled.train", &image, file)?,
            load_images(&l.test, "data.labelled.test", &image, file)?,
        )),
        None => None,
    };
    let params = ParamStore::new(r.seed);
    let objective = pretrain::objective(r, &image, &params, &device)?;
    Ok(Prepared {
        model: Model {
            device,
            params,
            encoder_prefix: objective.encoder_prefix(),
        },
        image,
        train,
        test,
        labelled,
        objective,
    })
}

impl Pipeline for Prepared {
    fn model(&self) -> &Model {
        &self.model
    }

    fn pretrain<'a>(
        &'a self,
        r: &'a Recipe,
        _log_dir: Option<&Path>,
        _resume_step: Option<usize>,
    ) -> Result<Option<Box<dyn PretrainStage + 'a>>> {
        let preview = (self.test.as_ref())
            .or(self.labelled.as_ref().map(|(_, test)| test))
            .unwrap_or(&self.train);
        Ok(Some(Box::new(PretrainTask::new(
            r,
            self.objective.as_ref(),
            &self.train,
            preview,
            &self.image,
            self.model.device.clone(),
        ))))
    }

    fn downstream<'a>(
        &'a self,
        r: &'a Recipe,
        file: &Path,
    ) -> Result<Box<dyn DownstreamTask + 'a>> {
        let (train, test) = self.heads_data(file)?;
        let classes = match &r.data.classes {
            Some(names) => {
                let n = train.num_classes().max(test.num_classes());
                if names.len() < n {
                    return Err(Error::InvalidValue {
                        file: file.to_path_buf(),
                        key: "data.classes".into(),
                        message: format!(
                            "names {} classes, but the labels go up to {}",
                            names.len(),
                            n - 1
                        ),
                    });
                }
                names.clone()
            }
            None => train.classes.clone(),
        };
        let splits = task::ImageSplits {
            train,
            test,
            image: &self.image,
            geometry: pretrain::geometry(&self.image),
            encoder: r.model.encoder_config(),
            classes,
        };
        Ok(Box::new(Task::new(splits, &self.model, r.seed)?))
    }

    fn dry_run(&self, r: &Recipe) -> Result<String> {
        let b = r.train.batch_size.min(self.train.len);
        let idx: Vec<usize> = (0..b).collect();
        // The first batch as training makes it (augmented, decoded on the loader's path).
        let task = PretrainTask::new(
            r,
            self.objective.as_ref(),
            &self.train,
            &self.train,
            &self.image,
            self.model.device.clone(),
        );
        let values = task.batch_maker().make(&idx, &vec![0; b])?;
        let imgs = self.train.to_tensor(values, b, &self.model.device)?;
        let pass = self.objective.evaluate(&imgs, &Draws::fixed(r.seed, b))?;
        let loss = pass.loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Err(Error::NonFinite { step: 0, loss });
        }
        let encoder_params = self
            .model
            .params
            .num_params_with_prefix(self.model.encoder_prefix);
        let mut report = format!(
            "recipe `{}` is valid\n  train: {} images{}{}\n  model: {:?}, {} parameters ({} in the encoder)\n  batch: images {:?} -> {} of {} patches removed ({:?}) -> {}\n  initial loss: {loss:.4}\n",
            r.name,
            self.train.len,
            self.test.as_ref().map_or(String::new(), |t| format!(", test: {} images", t.len)),
            self.labelled.as_ref().map_or(String::new(), |(train, test)| format!(
                "\n  labelled: train {} images, test {} images",
                train.len, test.len
            )),
            r.objective()?.kind(),
            self.model.params.num_params(),
            encoder_params,
            imgs.dims(),
            pretrain::masker(r, &self.image)?.num_masked(),
            self.image.size / self.image.patch * (self.image.size / self.image.patch),
            r.objective()?.masking(),
            match &pass.reconstruction {
                Some(rec) => format!("prediction {:?}", rec.patches.dims()),
                None => "the teacher's targets at the removed patches".to_string(),
            },
        );
        let encoder = pretrain::frozen_encoder(
            &self.model.params,
            &self.image,
            &task.encoder,
            &self.model.device,
        )?;
        let heads_train = self
            .labelled
            .as_ref()
            .map_or(&self.train, |(train, _)| train);
        for (i, d) in r.downstream.iter().enumerate() {
            let n = heads_train.len.min(4);
            let sample = heads_train.subset(&(0..n).collect::<Vec<_>>());
            let f = match d.input {
                recipe::DownstreamInput::Pixels => {
                    task::pixel_features(&sample, &self.image, &self.model.device)?
                }
                _ => task::features(
                    &encoder,
                    &sample,
                    &self.image,
                    d.pooling,
                    &self.model.device,
                )?,
            };
            let on = match d.input {
                recipe::DownstreamInput::Pixels => "pixels".to_string(),
                _ => format!("{:?}-pooled features", d.pooling),
            };
            report.push_str(&format!(
                "  downstream[{i}]: {} on {on} {:?}, label fractions {:?}\n",
                d.label(),
                f.dims(),
                d.label_fractions
            ));
        }
        Ok(report)
    }
}

/// An `augment` table (the recipe's or a downstream section's) with its stream's seed.
pub fn augment_of(a: &AugmentSection, seed: u64) -> Augment {
    Augment {
        crop: a.random_resized_crop.as_ref().map(|c| RandomResizedCrop {
            scale: c.scale,
            ratio: c.ratio,
        }),
        hflip: a.hflip,
        erase: a.random_erasing.as_ref().map(|e| RandomErasing {
            prob: e.prob,
            scale: e.scale,
            ratio: e.ratio,
        }),
        seed,
    }
}
