//! The pretraining stage for images: builds the objective (MAE or SimMIM, which owns its
//! masking) from the recipe, feeds the training loop from a prefetching loader (with the
//! recipe's augmentations), and draws reconstruction pictures at each checkpoint.

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::backbone::{Activation, EncoderConfig, Mode, NormPosition};
use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::modality::image::augment::Augment;
use crate::modality::image::batch::BatchMaker;
use crate::modality::image::dataset::ImageDataset;
use crate::modality::image::grid::save_grid;
use crate::modality::image::patch::unpatchify;
use crate::modality::image::{ImageEncoder, ImageGeometry};
use crate::objective::data2vec::patch::{ImageData2vec, ImageData2vecConfig};
use crate::objective::mae::{ImageMae, ImageMaeConfig};
use crate::objective::masking::GridMasker;
use crate::objective::simmim::{SimMim, SimMimConfig};
use crate::objective::Objective;
use crate::params::ParamStore;
use crate::recipe::{DataSection, ImageSection, ObjectiveKind, ObjectiveSection, Recipe};
use crate::train::loader::BatchShape;
use crate::train::loader::TaskLoader;
use crate::train::sampler::Sampler;
use crate::train::{Loss, TrainTask};

/// The encoder's input and patch sizes.
pub fn geometry(img: &ImageSection) -> ImageGeometry {
    ImageGeometry {
        size: img.size,
        channels: img.channels,
        patch: img.patch,
    }
}

/// MAE's light decoder as a recipe describes it (pre-norm, exact GELU, the model's
/// norm_eps, no dropout); images and audio share it.
pub fn decoder_config(r: &Recipe) -> Result<EncoderConfig> {
    let d = r
        .objective()?
        .decoder()
        .ok_or_else(|| Error::Usage("objective.decoder: required for kind = \"mae\"".into()))?;
    Ok(EncoderConfig {
        dim: d.dim,
        depth: d.depth,
        heads: d.heads,
        mlp_dim: d.mlp_dim.unwrap_or(4 * d.dim),
        norm: NormPosition::Pre,
        activation: Activation::Gelu,
        norm_eps: r.model.norm_eps,
        qkv_bias: true,
        dropout: 0.0,
        attention_dropout: 0.0,
        drop_path: 0.0,
    })
}

/// The MAE configuration a recipe describes.
pub fn mae_config(r: &Recipe, img: &ImageSection) -> Result<ImageMaeConfig> {
    Ok(ImageMaeConfig {
        geometry: geometry(img),
        decoder: decoder_config(r)?,
        encoder: r.model.encoder_config(),
        mask_ratio: r.objective()?.mask_ratio(),
        masking: r.objective()?.masking(),
        norm_pix_loss: r.objective()?.norm_pix_loss(),
    })
}

/// The SimMIM configuration a recipe describes.
pub fn simmim_config(r: &Recipe, img: &ImageSection) -> Result<SimMimConfig> {
    Ok(SimMimConfig {
        geometry: geometry(img),
        encoder: r.model.encoder_config(),
        mask_ratio: r.objective()?.mask_ratio(),
        masking: r.objective()?.masking(),
        norm_pix_loss: r.objective()?.norm_pix_loss(),
    })
}

/// The data2vec configuration a recipe describes.
pub fn data2vec_config(r: &Recipe, img: &ImageSection) -> Result<ImageData2vecConfig> {
    let ObjectiveSection::Data2vec(d) = r.objective()? else {
        return Err(Error::Usage("objective.kind: not \"data2vec\"".into()));
    };
    Ok(ImageData2vecConfig {
        geometry: geometry(img),
        encoder: r.model.encoder_config(),
        decoder: decoder_config(r)?,
        mask_ratio: d.mask_ratio_for(false),
        masking: d.masking,
        top_k: d.top_k_for(r.model.depth),
        ema: d.ema_schedule(r.train.steps),
    })
}

/// The recipe's masker (the one its objective draws with).
pub fn masker(r: &Recipe, img: &ImageSection) -> Result<GridMasker> {
    Ok(GridMasker::image(
        img.size / img.patch,
        r.objective()?.mask_ratio(),
        r.objective()?.masking(),
    )?)
}

/// The recipe's pretraining augmentations, if any.
pub fn augment(data: &DataSection, seed: u64) -> Option<Augment> {
    let aug = super::augment_of(data.augment.as_ref()?, seed);
    (!aug.is_identity()).then_some(aug)
}

/// The recipe's pretraining objective, over images `[B, C, H, W]`, with the shared image
/// encoder under `vit.`, its parameters in `params`.
pub fn objective(
    r: &Recipe,
    img: &ImageSection,
    params: &ParamStore,
    device: &Device,
) -> Result<Box<dyn Objective<Batch = Tensor>>> {
    let vb = params.var_builder(device);
    Ok(match r.objective()?.kind() {
        ObjectiveKind::Mae => Box::new(ImageMae::new(&mae_config(r, img)?, vb)?),
        ObjectiveKind::Simmim => Box::new(SimMim::new(&simmim_config(r, img)?, vb)?),
        ObjectiveKind::Data2vec => Box::new(ImageData2vec::new(
            &data2vec_config(r, img)?,
            params,
            device,
        )?),
        ObjectiveKind::Mlm => {
            return Err(Error::Usage(
                "`mlm` is a text objective; images use `mae`, `simmim` or `data2vec`".into(),
            ))
        }
    })
}

pub struct PretrainTask<'a> {
    pub objective: &'a dyn Objective<Batch = Tensor>,
    pub train: &'a ImageDataset,
    pub augment: Option<Augment>,
    /// Images shown in the reconstruction pictures.
    pub preview: &'a ImageDataset,
    pub image: &'a ImageSection,
    /// The encoder's shape (the model's).
    pub encoder: EncoderConfig,
    pub device: Device,
    pub seed: u64,
    /// Normalised pixels of the training batches, decoded and augmented ahead on a worker
    /// thread (`loader.depth` 0: on the training thread).
    pub loader: TaskLoader<Vec<f32>>,
}

impl<'a> PretrainTask<'a> {
    pub fn new(
        r: &Recipe,
        objective: &'a dyn Objective<Batch = Tensor>,
        train: &'a ImageDataset,
        preview: &'a ImageDataset,
        image: &'a ImageSection,
        device: Device,
    ) -> Self {
        Self {
            objective,
            train,
            augment: augment(&r.data, r.seed),
            preview,
            image,
            encoder: r.model.encoder_config(),
            device,
            seed: r.seed,
            loader: TaskLoader::default(),
        }
    }

    pub fn batch_maker(&self) -> BatchMaker {
        BatchMaker {
            data: self.train.clone(),
            augment: self.augment,
            mean: self.image.mean.clone(),
            std: self.image.std.clone(),
        }
    }

    fn denormalise(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.image.channels;
        let mean = Tensor::from_vec(self.image.mean.clone(), (1, c, 1, 1), x.device())?;
        let std = Tensor::from_vec(self.image.std.clone(), (1, c, 1, 1), x.device())?;
        Ok(x.broadcast_mul(&std)?.broadcast_add(&mean)?)
    }

    /// Rows: original, masked (removed patches grey), reconstruction (visible patches
    /// kept, removed ones predicted) — `[N, C, H, W]` each, in [0, 1]; `None` for an
    /// objective that reconstructs no pixels (data2vec).
    pub fn reconstruction_rows(&self, n: usize) -> Result<Option<Vec<Tensor>>> {
        let n = n.min(self.preview.len);
        let idx: Vec<usize> = (0..n).collect();
        let imgs = self
            .preview
            .batch(&idx, &self.image.mean, &self.image.std, &self.device)?;
        // The same masks at every checkpoint, so pictures are comparable over training.
        let draws = Draws::fixed(self.seed ^ 0x7069_6373, n);
        let Some(out) = self.objective.evaluate(&imgs, &draws)?.reconstruction else {
            return Ok(None);
        };
        let p = self.image.patch;
        let c = self.image.channels;
        let pred = unpatchify(&out.patches, p, c)?;
        let patch_dim = p * p * c;
        let mask = unpatchify(&out.mask.unsqueeze(2)?.repeat((1, 1, patch_dim))?, p, c)?;
        let keep = (1.0 - &mask)?;
        let original = self.denormalise(&imgs)?;
        let masked = ((&original * &keep)? + (&mask * 0.5)?)?;
        let recon = ((&original * &keep)? + (self.denormalise(&pred)? * &mask)?)?;
        Ok(Some(vec![original, masked, recon]))
    }
}

impl TrainTask for PretrainTask<'_> {
    fn num_examples(&self) -> usize {
        self.train.len
    }

    fn begin(&self, sampler: &Sampler, shape: BatchShape) -> Result<()> {
        self.loader.start(self.batch_maker(), sampler, shape)
    }

    fn start(&self, resumed: bool) -> Result<()> {
        self.objective.start(resumed)
    }

    fn after_step(&self, step: usize) -> Result<()> {
        self.objective.after_step(step)
    }

    fn loss(&self, indices: &[usize], draws: &Draws) -> Result<Loss> {
        let values = self.loader.next(indices)?;
        let imgs = self.train.to_tensor(values, indices.len(), &self.device)?;
        Ok(Loss::per_example(
            self.objective.loss(&imgs, draws)?,
            indices.len(),
        ))
    }

    fn infer(&self, params: &ParamStore, indices: &[usize]) -> Result<Option<Tensor>> {
        let imgs = self
            .train
            .batch(indices, &self.image.mean, &self.image.std, &self.device)?;
        let vit = frozen_encoder(params, self.image, &self.encoder, &self.device)?;
        Ok(Some(vit.forward(&imgs, &mut Mode::Eval)?))
    }

    fn on_checkpoint(&self, step: usize, run_dir: &Path) -> Result<()> {
        let Some(rows) = self.reconstruction_rows(8)? else {
            return Ok(());
        };
        save_grid(
            &rows,
            4,
            &run_dir
                .join("pictures")
                .join(format!("reconstruction-step-{step:07}.png")),
        )
    }
}

/// The image encoder `cfg` of `params` (`vit.*`), on detached weights.
pub fn frozen_encoder(
    params: &ParamStore,
    image: &ImageSection,
    cfg: &EncoderConfig,
    device: &Device,
) -> Result<ImageEncoder> {
    Ok(ImageEncoder::new(
        geometry(image),
        cfg,
        params.frozen_var_builder(device).pp("vit"),
    )?)
}

impl crate::run::PretrainStage for PretrainTask<'_> {
    fn data_wait(&self) -> std::time::Duration {
        self.loader.waited()
    }
}
