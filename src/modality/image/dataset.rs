//! An in-memory image data set (u8 pixels, optional labels) and its batching into
//! normalised tensors.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::idx::{read_idx_images, read_idx_labels};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ImageDataset {
    /// `[n, channels, size, size]`, row-major, 0..=255.
    pixels: Vec<u8>,
    pub labels: Option<Vec<u32>>,
    pub len: usize,
    pub channels: usize,
    pub size: usize,
}

impl ImageDataset {
    /// Reads an IDX image file and, when given, its label file (counts must agree).
    pub fn from_idx(images: &Path, labels: Option<&Path>) -> Result<Self> {
        let imgs = read_idx_images(images)?;
        if imgs.rows != imgs.cols {
            return Err(Error::data(
                images,
                format!(
                    "images are {}x{}; only square images are supported",
                    imgs.rows, imgs.cols
                ),
            ));
        }
        let labels = match labels {
            Some(path) => {
                let l = read_idx_labels(path)?;
                if l.len() != imgs.n {
                    return Err(Error::data(
                        path,
                        format!(
                            "{} labels for {} images in {}",
                            l.len(),
                            imgs.n,
                            images.display()
                        ),
                    ));
                }
                Some(l.into_iter().map(u32::from).collect())
            }
            None => None,
        };
        Ok(Self {
            pixels: imgs.pixels,
            labels,
            len: imgs.n,
            channels: 1,
            size: imgs.rows,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.labels
            .as_ref()
            .and_then(|l| l.iter().max())
            .map_or(0, |&m| m as usize + 1)
    }

    /// Keeps the listed examples, in order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let per = self.channels * self.size * self.size;
        let mut pixels = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * per..(i + 1) * per]);
        }
        Self {
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            len: indices.len(),
            channels: self.channels,
            size: self.size,
        }
    }

    /// Images `indices` as `[B, C, H, W]` f32, scaled to [0, 1] then normalised per channel.
    pub fn batch(
        &self,
        indices: &[usize],
        mean: &[f32],
        std: &[f32],
        device: &Device,
    ) -> Result<Tensor> {
        let per = self.channels * self.size * self.size;
        let plane = self.size * self.size;
        let mut out = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            let px = &self.pixels[i * per..(i + 1) * per];
            for (j, &p) in px.iter().enumerate() {
                let c = j / plane;
                out.push((p as f32 / 255.0 - mean[c]) / std[c]);
            }
        }
        Ok(Tensor::from_vec(
            out,
            (indices.len(), self.channels, self.size, self.size),
            device,
        )?)
    }

    /// Labels of `indices` as a u32 tensor `[B]`.
    pub fn label_batch(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let labels = self
            .labels
            .as_ref()
            .ok_or_else(|| Error::Usage("this data set has no labels".into()))?;
        let v: Vec<u32> = indices.iter().map(|&i| labels[i]).collect();
        Ok(Tensor::from_vec(v, indices.len(), device)?)
    }
}
