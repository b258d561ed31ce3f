//! Audio-MAE or data2vec pretraining on the training clips, with reconstruction pictures
//! (original, masked, reconstructed spectrograms) at every checkpoint where the objective
//! reconstructs.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::backbone::{EncoderConfig, Mode};
use crate::draws::Draws;
use crate::error::Result;
use crate::modality::audio::augment::AudioAugment;
use crate::modality::audio::clips::{AudioFeatures, ClipSet, SpectrogramBatches};
use crate::modality::audio::encoder::{
    unpatchify, SpectrogramEncoder, SpectrogramGeometry, Spectrograms,
};
use crate::modality::image::grid::save_grid;
use crate::objective::{Objective, Reconstruction};
use crate::params::ParamStore;
use crate::run::PretrainStage;
use crate::train::loader::BatchShape;
use crate::train::loader::TaskLoader;
use crate::train::sampler::Sampler;
use crate::train::{Loss, TrainTask};

/// Clips shown in the reconstruction pictures.
const PREVIEW_CLIPS: usize = 8;

/// Audio-MAE or data2vec on the training clips.
pub struct AudioMaeTask<'a> {
    /// Audio-MAE or data2vec.
    pub objective: &'a dyn Objective<Batch = Spectrograms>,
    pub geometry: SpectrogramGeometry,
    pub encoder: EncoderConfig,
    pub train: Arc<ClipSet>,
    /// Clips shown in the reconstruction pictures.
    pub preview: &'a ClipSet,
    pub features: &'a AudioFeatures,
    pub device: Device,
    pub seed: u64,
    /// `[data.augment]` of the training batches (not of pictures or held-out passes).
    pub augment: Option<AudioAugment>,
    /// Normalised spectrograms (and frame masks) of the training batches, made ahead on a
    /// worker thread.
    pub loader: TaskLoader<(Vec<f32>, Option<Vec<f32>>)>,
}

/// Rows of spectrograms `[N, F, T]` as grey pictures `[N, 1, F, T]` in [0, 1], low
/// frequencies at the bottom; `range` maps to black..white.
fn picture(x: &Tensor, range: (f32, f32)) -> Result<Tensor> {
    let f = x.dim(1)?;
    let flip: Vec<u32> = (0..f as u32).rev().collect();
    let flip = Tensor::from_vec(flip, f, x.device())?;
    let x = x.index_select(&flip, 1)?;
    Ok(((x - range.0 as f64)? / (range.1 - range.0).max(1e-6) as f64)?.unsqueeze(1)?)
}

impl AudioMaeTask<'_> {
    /// An evaluation pass on the clips `idx` of `set`, masks drawn from `draws`: the
    /// spectrograms `[B, F, T]`, the loss and the reconstruction.
    pub fn evaluate(
        &self,
        set: &ClipSet,
        idx: &[usize],
        draws: &Draws,
    ) -> Result<(Tensor, Tensor, Option<Reconstruction>)> {
        let spec = set.batch(idx, self.features, &self.device)?;
        let pass = self.objective.evaluate(&spec, draws)?;
        Ok((spec.values, pass.loss, pass.reconstruction))
    }

    /// Original, masked (removed patches blank) and reconstructed spectrograms (kept patches
    /// as they were, removed ones predicted), one row each; `None` for an objective that
    /// reconstructs nothing (data2vec).
    pub fn reconstruction_rows(&self) -> Result<Option<Vec<Tensor>>> {
        let n = PREVIEW_CLIPS.min(self.preview.len());
        let idx: Vec<usize> = (0..n).collect();
        // The same masks at every checkpoint, so pictures are comparable over training.
        let draws = Draws::fixed(self.seed ^ 0x6175_6469, n);
        let (spec, _, rec) = self.evaluate(self.preview, &idx, &draws)?;
        let Some(rec) = rec else {
            return Ok(None);
        };
        let g = &self.geometry;
        let pred = unpatchify(&rec.patches, g)?;
        let mask = unpatchify(&rec.mask.unsqueeze(2)?.repeat((1, 1, g.patch_dim()))?, g)?;
        let keep = (1.0 - &mask)?;
        let lo = spec.min_all()?.to_scalar::<f32>()?;
        let hi = spec.max_all()?.to_scalar::<f32>()?;
        // Removed patches mid-grey, so they stand apart from silence (black).
        let masked = ((&spec * &keep)? + (&mask * ((lo + hi) / 2.0) as f64)?)?;
        let recon = ((&spec * &keep)? + (pred * &mask)?)?;
        [spec, masked, recon]
            .iter()
            .map(|x| picture(x, (lo, hi)))
            .collect::<Result<_>>()
            .map(Some)
    }
}

impl TrainTask for AudioMaeTask<'_> {
    fn num_examples(&self) -> usize {
        self.train.len()
    }

    fn begin(&self, sampler: &Sampler, shape: BatchShape) -> Result<()> {
        let maker = SpectrogramBatches {
            clips: self.train.clone(),
            features: self.features.clone(),
            augment: self.augment.clone(),
        };
        self.loader.start(maker, sampler, shape)
    }

    fn loss(&self, indices: &[usize], draws: &Draws) -> Result<Loss> {
        let (values, frames) = self.loader.next(indices)?;
        let spec = self
            .features
            .to_input(values, frames, indices.len(), &self.device)?;
        Ok(Loss::per_example(
            self.objective.loss(&spec, draws)?,
            indices.len(),
        ))
    }

    fn infer(&self, params: &ParamStore, indices: &[usize]) -> Result<Option<Tensor>> {
        let spec = self.train.batch(indices, self.features, &self.device)?;
        let enc = SpectrogramEncoder::new(
            self.geometry,
            &self.encoder,
            params.frozen_var_builder(&self.device).pp("audio"),
        )?;
        Ok(Some(enc.forward(&spec, &mut Mode::Eval)?))
    }

    fn start(&self, resumed: bool) -> Result<()> {
        self.objective.start(resumed)
    }

    fn after_step(&self, step: usize) -> Result<()> {
        self.objective.after_step(step)
    }

    fn on_checkpoint(&self, step: usize, run_dir: &Path) -> Result<()> {
        let Some(rows) = self.reconstruction_rows()? else {
            return Ok(());
        };
        save_grid(
            &rows,
            3,
            &run_dir
                .join("pictures")
                .join(format!("reconstruction-step-{step:07}.png")),
        )
    }
}

impl PretrainStage for AudioMaeTask<'_> {
    fn data_wait(&self) -> std::time::Duration {
        self.loader.waited()
    }
}
