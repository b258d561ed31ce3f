//! Seeded pretraining augmentations with torchvision's semantics: `RandomResizedCrop`
//! (bilinear) then `RandomHorizontalFlip`, the pipeline of MAE's `main_pretrain.py`, and for
//! fine-tuning [random erasing](super::erase) of the normalised image.
//!
//! Each example's randomness comes from its own ChaCha8 stream keyed by
//! `(seed, epoch, example index)` ([`Augment::rng`]), never from a shared generator: the
//! result of augmenting an example does not depend on which thread ran it, in which order,
//! or whether the run was resumed in between.

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Pixel};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub use super::erase::RandomErasing;

/// torchvision's `RandomResizedCrop(size, scale, ratio)`: a crop covering a random fraction
/// `scale` of the area, with aspect ratio (width / height) log-uniform in `ratio`, resized
/// (bilinear) to the output size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
}

impl Default for RandomResizedCrop {
    /// torchvision's defaults.
    fn default() -> Self {
        Self {
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
        }
    }
}

/// A crop box in pixels: top row, left column, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

impl RandomResizedCrop {
    /// `RandomResizedCrop.get_params`: ten tries at a random box that fits, else a central
    /// crop clamped to the ratio range.
    pub fn params(&self, height: u32, width: u32, rng: &mut impl Rng) -> CropBox {
        let area = (height * width) as f64;
        let log_ratio = (self.ratio[0].ln(), self.ratio[1].ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale[0], self.scale[1]);
            let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
            let w = (target_area * aspect).sqrt().round() as u32;
            let h = (target_area / aspect).sqrt().round() as u32;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.gen_range(0..=height - h);
                let left = rng.gen_range(0..=width - w);
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (min_r, max_r) = (
            self.ratio[0].min(self.ratio[1]),
            self.ratio[0].max(self.ratio[1]),
        );
        let (h, w) = if in_ratio < min_r {
            (((width as f64) / min_r).round() as u32, width)
        } else if in_ratio > max_r {
            (height, ((height as f64) * max_r).round() as u32)
        } else {
            (height, width)
        };
        let (h, w) = (h.clamp(1, height), w.clamp(1, width));
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }
}

/// `torch.empty(1).uniform_(lo, hi)` (and Python's `random.uniform`); also correct when
/// `lo == hi`.
pub(super) fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

/// The augmentations of a recipe's `augment` table; the default does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    pub crop: Option<RandomResizedCrop>,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Random erasing of the normalised image, after the crop and flip.
    pub erase: Option<RandomErasing>,
    /// The run's seed.
    pub seed: u64,
}

impl Augment {
    pub fn is_identity(&self) -> bool {
        self.crop.is_none() && self.hflip <= 0.0 && self.erase.is_none()
    }

    /// Whether [`Self::apply`] changes pixels (erasing comes later, on normalised values).
    pub fn moves_pixels(&self) -> bool {
        self.crop.is_some() || self.hflip > 0.0
    }

    /// The random stream of one example in one epoch: a pure function of
    /// `(seed, epoch, index)` (the three are the ChaCha key, so streams never collide).
    pub fn rng(&self, epoch: usize, index: usize) -> ChaCha8Rng {
        crate::draws::example_rng(self.seed, epoch, index, b"augment\0")
    }

    /// Random erasing's stream for one example in one epoch, independent of [`Self::rng`].
    fn erase_rng(&self, epoch: usize, index: usize) -> ChaCha8Rng {
        crate::draws::example_rng(self.seed, epoch, index, b"erasing\0")
    }

    /// Erases (if configured) one normalised `[C, H, W]` example in place.
    pub fn erase(&self, chw: &mut [f32], channels: usize, size: usize, epoch: usize, index: usize) {
        if let Some(e) = &self.erase {
            e.apply(chw, channels, size, &mut self.erase_rng(epoch, index));
        }
    }

    /// Crops (if configured) and resizes `img` to `size x size`, then flips it with
    /// probability `hflip`, drawing from `rng` in torchvision's order.
    pub fn apply<P>(
        &self,
        img: &ImageBuffer<P, Vec<u8>>,
        size: u32,
        rng: &mut impl Rng,
    ) -> ImageBuffer<P, Vec<u8>>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let out = match &self.crop {
            Some(crop) => {
                let b = crop.params(img.height(), img.width(), rng);
                let view = imageops::crop_imm(img, b.left, b.top, b.width, b.height).to_image();
                resize(&view, size)
            }
            None => resize(img, size),
        };
        if self.hflip > 0.0 && rng.gen::<f64>() < self.hflip {
            imageops::flip_horizontal(&out)
        } else {
            out
        }
    }
}

/// Bilinear resize to `size x size` (the image crate's triangle filter, which widens its
/// support when shrinking, like PIL's antialiased bilinear); a no-op copy at the same size.
pub fn resize<P>(img: &ImageBuffer<P, Vec<u8>>, size: u32) -> ImageBuffer<P, Vec<u8>>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    if img.width() == size && img.height() == size {
        img.clone()
    } else {
        imageops::resize(img, size, size, FilterType::Triangle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_params_fit_and_respect_the_ranges() {
        let crop = RandomResizedCrop {
            scale: [0.2, 1.0],
            ratio: [0.75, 4.0 / 3.0],
        };
        let aug = Augment::default();
        for i in 0..200 {
            let b = crop.params(28, 40, &mut aug.rng(0, i));
            assert!(b.height > 0 && b.width > 0);
            assert!(b.top + b.height <= 28 && b.left + b.width <= 40, "{b:?}");
            let frac = (b.height * b.width) as f64 / (28.0 * 40.0);
            // Rounding of the sides moves the area a little outside the range on small images.
            assert!((0.15..=1.0).contains(&frac), "{b:?} covers {frac}");
        }
        // An impossible ratio falls back to the central crop clamped to the range.
        let thin = RandomResizedCrop {
            scale: [1.0, 1.0],
            ratio: [3.0, 4.0],
        };
        let b = thin.params(30, 30, &mut aug.rng(0, 0));
        assert_eq!((b.top, b.left, b.height, b.width), (10, 0, 10, 30));
    }

    #[test]
    fn streams_depend_on_seed_epoch_and_index_only() {
        let a = Augment {
            seed: 1,
            ..Default::default()
        };
        let draw = |aug: &Augment, e, i| aug.rng(e, i).gen::<u64>();
        assert_eq!(draw(&a, 2, 3), draw(&a, 2, 3));
        assert_ne!(draw(&a, 2, 3), draw(&a, 3, 2));
        assert_ne!(draw(&a, 2, 3), draw(&Augment { seed: 2, ..a }, 2, 3));
    }

    #[test]
    fn flip_always_mirrors() {
        let img = image::GrayImage::from_fn(4, 4, |x, y| image::Luma([(x + 4 * y) as u8]));
        let aug = Augment {
            hflip: 1.0,
            ..Default::default()
        };
        let out = aug.apply(&img, 4, &mut aug.rng(0, 0));
        assert_eq!(out.get_pixel(0, 1).0[0], 7);
        assert_eq!(out.get_pixel(3, 1).0[0], 4);
    }
}
