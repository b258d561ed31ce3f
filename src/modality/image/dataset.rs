//! An image data set — in memory (IDX) or an indexed folder decoded on demand — and its
//! batching into normalised tensors, optionally through the seeded pretraining
//! augmentations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::{GrayImage, RgbImage};
use rayon::prelude::*;

use super::augment::{resize, Augment};
use super::budget::Held;
use super::folder;
use super::idx::{read_idx_images, read_idx_labels};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Storage {
    /// `[n, channels, size, size]`, row-major, 0..=255.
    Memory(Arc<[u8]>),
    /// One file per example, decoded when needed.
    Folder(Arc<[PathBuf]>),
}

/// Cloning is cheap: pixels and file lists are shared.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    storage: Storage,
    pub labels: Option<Vec<u32>>,
    pub len: usize,
    /// Channels and side of the images batches hold (a folder's files are converted and
    /// resized to these).
    pub channels: usize,
    pub size: usize,
    /// Class names of a folder with class directories (label `i` is `classes[i]`).
    pub classes: Vec<String>,
}

/// One decoded image at its own size, in the data set's channel count.
enum Picture {
    Luma(GrayImage),
    Rgb(RgbImage),
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
            storage: Storage::Memory(imgs.pixels.into()),
            labels,
            len: imgs.n,
            channels: 1,
            size: imgs.rows,
            classes: Vec::new(),
        })
    }

    /// Indexes an image folder (see [`folder`]); its images, of any size and channel count,
    /// will be converted to `channels` (1 = luma, 3 = RGB) and resized to `size x size`.
    pub fn from_folder(root: &Path, channels: usize, size: usize) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::data(
                root,
                format!("image folders give 1 (luma) or 3 (RGB) channels, not {channels}"),
            ));
        }
        let index = folder::scan(root)?;
        Ok(Self {
            len: index.files.len(),
            storage: Storage::Folder(index.files.into()),
            labels: index.labels,
            channels,
            size,
            classes: index.classes,
        })
    }

    /// Unlabelled images from a list of files, in order (`pretext embed`); converted and
    /// resized like a folder's.
    pub fn from_files(files: Vec<PathBuf>, channels: usize, size: usize) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::Usage(format!(
                "images from files give 1 (luma) or 3 (RGB) channels, not {channels}"
            )));
        }
        Ok(Self {
            len: files.len(),
            storage: Storage::Folder(files.into()),
            labels: None,
            channels,
            size,
            classes: Vec::new(),
        })
    }

    pub fn num_classes(&self) -> usize {
        self.labels
            .as_ref()
            .and_then(|l| l.iter().max())
            .map_or(0, |&m| m as usize + 1)
    }

    /// The file example `i` is read from, for a folder.
    pub fn file(&self, i: usize) -> Option<&Path> {
        match &self.storage {
            Storage::Folder(files) => files.get(i).map(PathBuf::as_path),
            Storage::Memory(_) => None,
        }
    }

    /// Keeps the listed examples, in order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let storage = match &self.storage {
            Storage::Memory(pixels) => {
                let per = self.channels * self.size * self.size;
                let mut out = Vec::with_capacity(indices.len() * per);
                for &i in indices {
                    out.extend_from_slice(&pixels[i * per..(i + 1) * per]);
                }
                Storage::Memory(out.into())
            }
            Storage::Folder(files) => {
                Storage::Folder(indices.iter().map(|&i| files[i].clone()).collect())
            }
        };
        Self {
            storage,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            len: indices.len(),
            channels: self.channels,
            size: self.size,
            classes: self.classes.clone(),
        }
    }

    /// Example `i` as an image at its own size, in `self.channels` channels, with its share
    /// of the decoding budget when it was decoded from a file (keep it while the picture lives).
    fn picture(&self, i: usize) -> Result<(Picture, Option<Held<'static>>)> {
        Ok(match &self.storage {
            Storage::Memory(pixels) => {
                let (s, plane) = (self.size as u32, self.size * self.size);
                let px = &pixels[i * self.channels * plane..(i + 1) * self.channels * plane];
                let picture = if self.channels == 1 {
                    Picture::Luma(GrayImage::from_fn(s, s, |x, y| {
                        image::Luma([px[(y * s + x) as usize]])
                    }))
                } else {
                    Picture::Rgb(RgbImage::from_fn(s, s, |x, y| {
                        let at = (y * s + x) as usize;
                        image::Rgb([px[at], px[plane + at], px[2 * plane + at]])
                    }))
                };
                (picture, None)
            }
            Storage::Folder(files) => {
                let (img, held) = folder::decode(&files[i])?;
                let picture = if self.channels == 1 {
                    Picture::Luma(img.into_luma8())
                } else {
                    Picture::Rgb(img.into_rgb8())
                };
                (picture, Some(held))
            }
        })
    }

    /// Example `i` as `[C, size, size]` u8, augmented with `augment`'s stream for
    /// `(epoch, i)` when given.
    pub fn example(&self, i: usize, augment: Option<(&Augment, usize)>) -> Result<Vec<u8>> {
        if i >= self.len {
            return Err(Error::Usage(format!(
                "example {i} of a data set of {}",
                self.len
            )));
        }
        let augment = augment.filter(|(a, _)| a.moves_pixels());
        if let (Storage::Memory(pixels), None) = (&self.storage, augment) {
            let per = self.channels * self.size * self.size;
            return Ok(pixels[i * per..(i + 1) * per].to_vec());
        }
        let s = self.size as u32;
        let (picture, _held) = self.picture(i)?;
        Ok(match picture {
            Picture::Luma(img) => match augment {
                Some((a, epoch)) => a.apply(&img, s, &mut a.rng(epoch, i)).into_raw(),
                None => resize(&img, s).into_raw(),
            },
            Picture::Rgb(img) => {
                let out = match augment {
                    Some((a, epoch)) => a.apply(&img, s, &mut a.rng(epoch, i)),
                    None => resize(&img, s),
                };
                // HWC → CHW
                let plane = self.size * self.size;
                let mut chw = vec![0u8; 3 * plane];
                for (at, px) in out.pixels().enumerate() {
                    for c in 0..3 {
                        chw[c * plane + at] = px.0[c];
                    }
                }
                chw
            }
        })
    }

    /// Examples `indices`, scaled to [0, 1] and normalised per channel, as a flat
    /// `[B, C, H, W]` buffer. With `augment`, example `indices[k]` is augmented with its stream
    /// for epoch `epochs[k]`. Examples are decoded in parallel; the result does not depend
    /// on the number of threads.
    pub fn normalised(
        &self,
        indices: &[usize],
        augment: Option<(&Augment, &[usize])>,
        mean: &[f32],
        std: &[f32],
    ) -> Result<Vec<f32>> {
        if mean.len() != self.channels || std.len() != self.channels {
            return Err(Error::shape(
                "normalisation mean/std",
                format!("{} values each", self.channels),
                format!("{} and {}", mean.len(), std.len()),
            ));
        }
        if let Some((_, epochs)) = augment {
            if epochs.len() != indices.len() {
                return Err(Error::shape("augment epochs", indices.len(), epochs.len()));
            }
        }
        let plane = self.size * self.size;
        let one = |k: usize| -> Result<Vec<f32>> {
            let px = self.example(indices[k], augment.map(|(a, e)| (a, e[k])))?;
            let mut v: Vec<f32> = px
                .iter()
                .enumerate()
                .map(|(j, &p)| {
                    let c = j / plane;
                    (p as f32 / 255.0 - mean[c]) / std[c]
                })
                .collect();
            if let Some((a, epochs)) = augment {
                a.erase(&mut v, self.channels, self.size, epochs[k], indices[k]);
            }
            Ok(v)
        };
        let in_memory = matches!(self.storage, Storage::Memory(_));
        let parts: Vec<Vec<f32>> = if in_memory && augment.is_none() {
            (0..indices.len()).map(one).collect::<Result<_>>()?
        } else {
            (0..indices.len())
                .into_par_iter()
                .map(one)
                .collect::<Result<_>>()?
        };
        Ok(parts.concat())
    }

    /// Images `indices` as `[B, C, H, W]` f32, scaled to [0, 1] then normalised per channel.
    pub fn batch(
        &self,
        indices: &[usize],
        mean: &[f32],
        std: &[f32],
        device: &Device,
    ) -> Result<Tensor> {
        let v = self.normalised(indices, None, mean, std)?;
        self.to_tensor(v, indices.len(), device)
    }

    /// A flat buffer from [`Self::normalised`] as `[B, C, H, W]`.
    pub fn to_tensor(&self, values: Vec<f32>, batch: usize, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            values,
            (batch, self.channels, self.size, self.size),
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
