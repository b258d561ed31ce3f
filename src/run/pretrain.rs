//! The pretraining stage for images with MAE: builds the model from the recipe, feeds the
//! training loop, and draws reconstruction pictures at each checkpoint.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backbone::{Activation, EncoderConfig, Mode, NormPosition};
use crate::error::Result;
use crate::modality::image::dataset::ImageDataset;
use crate::modality::image::grid::save_grid;
use crate::modality::image::patch::unpatchify;
use crate::modality::image::ImageGeometry;
use crate::objective::mae::{Mae, MaeConfig};
use crate::recipe::{ImageSection, Recipe};
use crate::train::TrainTask;

/// The MAE configuration a recipe describes.
pub fn mae_config(r: &Recipe, img: &ImageSection) -> MaeConfig {
    let encoder = r.model.encoder_config();
    let d = &r.objective.decoder;
    MaeConfig {
        geometry: ImageGeometry {
            size: img.size,
            channels: img.channels,
            patch: img.patch,
        },
        decoder: EncoderConfig {
            dim: d.dim,
            depth: d.depth,
            heads: d.heads,
            mlp_dim: d.mlp_dim.unwrap_or(4 * d.dim),
            norm: NormPosition::Pre,
            activation: Activation::Gelu,
            norm_eps: encoder.norm_eps,
            qkv_bias: true,
            dropout: 0.0,
            attention_dropout: 0.0,
        },
        encoder,
        mask_ratio: r.objective.mask_ratio,
        norm_pix_loss: r.objective.norm_pix_loss,
    }
}

pub struct MaeTask<'a> {
    pub mae: &'a Mae,
    pub train: &'a ImageDataset,
    /// Images shown in the reconstruction pictures.
    pub preview: &'a ImageDataset,
    pub image: &'a ImageSection,
    pub device: Device,
    pub seed: u64,
}

impl MaeTask<'_> {
    fn denormalise(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.image.channels;
        let mean = Tensor::from_vec(self.image.mean.clone(), (1, c, 1, 1), x.device())?;
        let std = Tensor::from_vec(self.image.std.clone(), (1, c, 1, 1), x.device())?;
        Ok(x.broadcast_mul(&std)?.broadcast_add(&mean)?)
    }

    /// Rows: original, masked (removed patches grey), reconstruction (visible patches
    /// kept, removed ones predicted) — `[N, C, H, W]` each, in [0, 1].
    pub fn reconstruction_rows(&self, n: usize) -> Result<Vec<Tensor>> {
        let n = n.min(self.preview.len);
        let idx: Vec<usize> = (0..n).collect();
        let imgs = self
            .preview
            .batch(&idx, &self.image.mean, &self.image.std, &self.device)?;
        // The same masks at every checkpoint, so pictures are comparable over training.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x7069_6373);
        let noise = self.mae.sample_noise(n, &mut rng, &self.device)?;
        let out = self.mae.forward(&imgs, &noise, &mut Mode::Eval)?;
        let p = self.image.patch;
        let c = self.image.channels;
        let pred = unpatchify(&self.mae.pred_to_pixels(&imgs, &out.pred)?, p, c)?;
        let patch_dim = p * p * c;
        let mask = unpatchify(&out.mask.unsqueeze(2)?.repeat((1, 1, patch_dim))?, p, c)?;
        let keep = (1.0 - &mask)?;
        let original = self.denormalise(&imgs)?;
        let masked = ((&original * &keep)? + (&mask * 0.5)?)?;
        let recon = ((&original * &keep)? + (self.denormalise(&pred)? * &mask)?)?;
        Ok(vec![original, masked, recon])
    }
}

impl TrainTask for MaeTask<'_> {
    fn num_examples(&self) -> usize {
        self.train.len
    }

    fn loss(&self, indices: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let imgs = self
            .train
            .batch(indices, &self.image.mean, &self.image.std, &self.device)?;
        let noise = self.mae.sample_noise(indices.len(), rng, &self.device)?;
        Ok(self.mae.forward(&imgs, &noise, &mut Mode::Train(rng))?.loss)
    }

    fn on_checkpoint(&self, step: usize, run_dir: &Path) -> Result<()> {
        let rows = self.reconstruction_rows(8)?;
        save_grid(
            &rows,
            4,
            &run_dir
                .join("pictures")
                .join(format!("reconstruction-step-{step:07}.png")),
        )
    }
}
