//! Random erasing (Zhong et al. 2020) with timm's semantics (`RandomErasing`, mode
//! `"pixel"`, one box), the last step of MAE's fine-tuning augmentation (`--reprob 0.25`):
//! with probability `prob`, a box covering a random fraction `scale` of the image, with
//! aspect ratio (height / width) log-uniform in `ratio`, is replaced by standard normal noise,
//! per pixel and channel, in the normalised image.

use rand::Rng;
use rand_distr::StandardNormal;

use super::augment::uniform;

/// timm's `RandomErasing(probability, min_area, max_area, min_aspect, max_aspect,
/// mode="pixel", max_count=1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomErasing {
    pub prob: f64,
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
}

impl Default for RandomErasing {
    /// timm's defaults, at MAE's fine-tuning probability.
    fn default() -> Self {
        Self {
            prob: 0.25,
            scale: [0.02, 1.0 / 3.0],
            ratio: [0.3, 1.0 / 0.3],
        }
    }
}

/// An erased box in pixels: top row, left column, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraseBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl RandomErasing {
    /// `RandomErasing._erase`'s box: none with probability `1 - prob`, else ten tries at a
    /// box strictly smaller than the image on both sides (none if all ten fail).
    pub fn params(&self, height: usize, width: usize, rng: &mut impl Rng) -> Option<EraseBox> {
        if rng.gen::<f64>() >= self.prob {
            return None;
        }
        let area = (height * width) as f64;
        let (lo, hi) = (self.ratio[0].ln(), self.ratio[1].ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale[0], self.scale[1]);
            let aspect = uniform(rng, lo, hi).exp();
            let h = (target * aspect).sqrt().round() as usize;
            let w = (target / aspect).sqrt().round() as usize;
            if 0 < h && h < height && 0 < w && w < width {
                let top = rng.gen_range(0..=height - h);
                let left = rng.gen_range(0..=width - w);
                return Some(EraseBox {
                    top,
                    left,
                    height: h,
                    width: w,
                });
            }
        }
        None
    }

    /// Erases one normalised `[C, H, W]` image in place (noise drawn channel by channel, row
    /// by row, as `torch.empty((C, h, w)).normal_()` lays it out).
    pub fn apply(&self, chw: &mut [f32], channels: usize, size: usize, rng: &mut impl Rng) {
        debug_assert_eq!(chw.len(), channels * size * size);
        let Some(b) = self.params(size, size, rng) else {
            return;
        };
        for c in 0..channels {
            for y in b.top..b.top + b.height {
                let row = c * size * size + y * size;
                for v in &mut chw[row + b.left..row + b.left + b.width] {
                    *v = rng.sample::<f32, _>(StandardNormal);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn boxes_fit_and_follow_the_probability() {
        let e = RandomErasing::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let n = 4000;
        let mut erased = 0;
        for _ in 0..n {
            if let Some(b) = e.params(28, 28, &mut rng) {
                erased += 1;
                assert!(b.height < 28 && b.width < 28, "{b:?}");
                assert!(b.top + b.height <= 28 && b.left + b.width <= 28, "{b:?}");
                let frac = (b.height * b.width) as f64 / 784.0;
                // Rounding of the sides moves the area a little outside [0.02, 1/3].
                assert!((0.005..=0.45).contains(&frac), "{b:?} covers {frac}");
            }
        }
        let rate = erased as f64 / n as f64;
        // Some draws of the largest areas fail all ten tries (timm's behaviour too).
        assert!((0.21..=0.27).contains(&rate), "erased {rate} of the images");
        let never = RandomErasing { prob: 0.0, ..e };
        assert!((0..100).all(|_| never.params(28, 28, &mut rng).is_none()));
    }

    #[test]
    fn erasing_replaces_exactly_the_box_with_noise() {
        let e = RandomErasing {
            prob: 1.0,
            ..Default::default()
        };
        let (channels, size) = (3, 16);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let b = e.params(size, size, &mut rng.clone()).expect("a box");
        let mut img = vec![5.0f32; channels * size * size];
        e.apply(&mut img, channels, size, &mut rng);
        let mut noise = Vec::new();
        for c in 0..channels {
            for y in 0..size {
                for x in 0..size {
                    let v = img[c * size * size + y * size + x];
                    let inside = (b.top..b.top + b.height).contains(&y)
                        && (b.left..b.left + b.width).contains(&x);
                    if inside {
                        noise.push(v as f64);
                    } else {
                        assert_eq!(v, 5.0, "pixel ({c}, {y}, {x}) outside {b:?} changed");
                    }
                }
            }
        }
        assert_eq!(noise.len(), channels * b.height * b.width);
        let mean = noise.iter().sum::<f64>() / noise.len() as f64;
        let var = noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / noise.len() as f64;
        assert!(
            mean.abs() < 0.5 && (0.4..2.0).contains(&var),
            "{mean} {var}"
        );
    }
}
