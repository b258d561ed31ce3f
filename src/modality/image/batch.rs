//! Pretraining batches of images: sampled examples decoded, augmented (each example's
//! augmentation a pure function of `(seed, epoch, index)`) and normalised, as plain values
//! the training loader ([`crate::train::loader`]) can make on its worker thread.

use super::augment::Augment;
use super::dataset::ImageDataset;
use crate::error::Result;
use crate::train::loader::MakeBatch;

/// What turns sampled indices into normalised pixels.
#[derive(Debug, Clone)]
pub struct BatchMaker {
    pub data: ImageDataset,
    /// `None` (or an identity augmentation): images as they are.
    pub augment: Option<Augment>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl MakeBatch for BatchMaker {
    /// `[B, C, H, W]` normalised values (see [`ImageDataset::to_tensor`]).
    type Batch = Vec<f32>;

    /// The examples `indices`, drawn in `epochs` (examples decode in parallel).
    fn make(&self, indices: &[usize], epochs: &[usize]) -> Result<Vec<f32>> {
        let augment = self.augment.as_ref().map(|a| (a, epochs));
        self.data
            .normalised(indices, augment, &self.mean, &self.std)
    }
}
