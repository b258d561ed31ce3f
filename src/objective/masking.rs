//! Which patches an objective removes: uniformly random, or BEiT's block-wise masking
//! (Bao et al. 2021, `masking_generator.py`).
//!
//! Both remove exactly `L - floor(L * (1 - ratio))` of the `L` patches — MAE's count, so a
//! block mask expressed as noise keeps exactly `Mae::len_keep` patches — and draw from an
//! explicit RNG (the training loop's, which checkpoints save), so masks are seeded and
//! resumable. A mask is `[B, L]`, 0 is keep, 1 is remove; as MAE noise, removed patches get
//! `noise + 1`, so `Mae::random_masking`, which keeps the lowest noise, keeps exactly the
//! unmasked ones.

use candle_core::{Device, Result, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which patches are removed: a recipe's `objective.masking`, for every modality. Images
/// take `random` or `block`; spectrograms `random`, `time`, `frequency` or
/// `time-frequency` ([`crate::objective::audio_mae::AudioMasker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Masking {
    /// Patches removed uniformly at random.
    #[default]
    Random,
    /// BEiT's block-wise masking: random rectangles (at least 4 patches, aspect ratio in
    /// [0.3, 1/0.3]) until the count is reached.
    Block,
    /// Spectrograms: whole time columns of patches (`round(mask_ratio * columns)`).
    Time,
    /// Spectrograms: whole frequency rows of patches.
    Frequency,
    /// Spectrograms: time columns and frequency rows, each at `1 - sqrt(1 - mask_ratio)`, so
    /// that their union covers about `mask_ratio` of the patches.
    TimeFrequency,
}

/// BEiT's defaults: blocks of at least 4 patches, aspect ratio in [0.3, 1/0.3].
pub const MIN_BLOCK_PATCHES: usize = 4;
pub const MIN_ASPECT: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskGenerator {
    /// Patches per side of the (square) grid.
    pub grid: usize,
    pub num_masked: usize,
    pub kind: Masking,
}

impl MaskGenerator {
    /// Masks `L - floor(L * (1 - ratio))` of the `grid x grid` patches, `random` or
    /// `block`; the spectrogram kinds are an error (an image grid has no time axis).
    pub fn new(grid: usize, ratio: f64, kind: Masking) -> Result<Self> {
        if !matches!(kind, Masking::Random | Masking::Block) {
            candle_core::bail!(
                "{kind:?} masking is for spectrograms; images use `random` or `block` masking"
            );
        }
        let l = grid * grid;
        let keep = ((l as f64) * (1.0 - ratio)) as usize;
        Ok(Self {
            grid,
            num_masked: l - keep.min(l),
            kind,
        })
    }

    fn num_patches(&self) -> usize {
        self.grid * self.grid
    }

    /// Noise `[B, L]` for `Mae::random_masking`. For random masking these are the same
    /// draws as `Mae::sample_noise`; for block masking, a block mask (see [`block_mask`]) is
    /// drawn first for each example, then uniform noise, plus 1 on removed patches.
    pub fn noise(&self, batch: usize, rng: &mut impl Rng, device: &Device) -> Result<Tensor> {
        let l = self.num_patches();
        let v: Vec<f32> = match self.kind {
            Masking::Random => (0..batch * l).map(|_| rng.gen::<f32>()).collect(),
            // Block (`new` admits no other kind).
            _ => {
                let masks: Vec<Vec<bool>> = (0..batch)
                    .map(|_| block_mask(self.grid, self.grid, self.num_masked, rng))
                    .collect();
                masks
                    .iter()
                    .flatten()
                    .map(|&m| rng.gen::<f32>() + if m { 1.0 } else { 0.0 })
                    .collect()
            }
        };
        Tensor::from_vec(v, (batch, l), device)
    }

    /// A mask `[B, L]` (f32, 1 = remove), for objectives that take one directly.
    pub fn mask(&self, batch: usize, rng: &mut impl Rng, device: &Device) -> Result<Tensor> {
        let l = self.num_patches();
        let mut v = Vec::with_capacity(batch * l);
        for _ in 0..batch {
            let m = match self.kind {
                Masking::Random => {
                    let noise: Vec<f32> = (0..l).map(|_| rng.gen::<f32>()).collect();
                    mask_from_noise(&noise, l - self.num_masked)
                }
                _ => block_mask(self.grid, self.grid, self.num_masked, rng),
            };
            v.extend(m.into_iter().map(|b| if b { 1f32 } else { 0.0 }));
        }
        Tensor::from_vec(v, (batch, l), device)
    }
}

/// Removes all but the `keep` patches with the lowest noise (ties by position), as MAE does.
pub fn mask_from_noise(noise: &[f32], keep: usize) -> Vec<bool> {
    let mut ids: Vec<usize> = (0..noise.len()).collect();
    ids.sort_by(|&i, &j| noise[i].total_cmp(&noise[j]));
    let mut mask = vec![true; noise.len()];
    for &i in &ids[..keep.min(ids.len())] {
        mask[i] = false;
    }
    mask
}

/// BEiT's `MaskingGenerator` on a `height x width` grid (row-major, `true` = remove), then
/// topped up to exactly `count`: BEiT stops when ten tries in a row add nothing, which can
/// leave it short, and batches need equal counts. The top-up grows the existing blocks (a
/// random unmasked patch next to a masked one), so the mask stays block-shaped. BEiT never
/// overshoots (a block is placed only if it adds at most the patches still missing), so no
/// trimming is needed.
pub fn block_mask(height: usize, width: usize, count: usize, rng: &mut impl Rng) -> Vec<bool> {
    let count = count.min(height * width);
    let mut mask = vec![false; height * width];
    let log_aspect = (MIN_ASPECT.ln(), (1.0 / MIN_ASPECT).ln());
    let mut masked = 0;
    while masked < count {
        let max_patches = count - masked;
        // `_mask`: up to ten tries at a block that adds 1..=max_patches new patches.
        let mut delta = 0;
        for _ in 0..10 {
            let lo = MIN_BLOCK_PATCHES as f64;
            let target = lo + (max_patches as f64 - lo) * rng.gen::<f64>();
            let aspect = (log_aspect.0 + (log_aspect.1 - log_aspect.0) * rng.gen::<f64>()).exp();
            let h = (target * aspect).sqrt().round() as usize;
            let w = (target / aspect).sqrt().round() as usize;
            if w < width && h < height {
                let top = rng.gen_range(0..=height - h);
                let left = rng.gen_range(0..=width - w);
                let cells = || {
                    (top..top + h).flat_map(move |i| (left..left + w).map(move |j| i * width + j))
                };
                let new = cells().filter(|&c| !mask[c]).count();
                if 0 < new && new <= max_patches {
                    for c in cells() {
                        mask[c] = true;
                    }
                    delta += new;
                }
                if delta > 0 {
                    break;
                }
            }
        }
        if delta == 0 {
            break;
        }
        masked += delta;
    }
    while masked < count {
        let neighbours = |c: usize| {
            let (i, j) = (c / width, c % width);
            [
                (i > 0).then(|| c - width),
                (i + 1 < height).then(|| c + width),
                (j > 0).then(|| c - 1),
                (j + 1 < width).then(|| c + 1),
            ]
            .into_iter()
            .flatten()
        };
        let frontier: Vec<usize> = (0..mask.len())
            .filter(|&c| !mask[c] && neighbours(c).any(|n| mask[n]))
            .collect();
        let pool: Vec<usize> = if frontier.is_empty() {
            (0..mask.len()).filter(|&c| !mask[c]).collect()
        } else {
            frontier
        };
        mask[pool[rng.gen_range(0..pool.len())]] = true;
        masked += 1;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn spectrogram_masking_of_an_image_grid_is_an_error() {
        let err = MaskGenerator::new(7, 0.5, Masking::Time).unwrap_err();
        assert!(err.to_string().contains("`random` or `block`"), "{err}");
    }

    #[test]
    fn count_matches_maes_len_keep() {
        // 49 patches at 0.75: MAE keeps floor(12.25) = 12, so 37 are removed.
        assert_eq!(
            MaskGenerator::new(7, 0.75, Masking::Block)
                .unwrap()
                .num_masked,
            37
        );
        assert_eq!(
            MaskGenerator::new(14, 0.4, Masking::Random)
                .unwrap()
                .num_masked,
            79
        );
    }

    #[test]
    fn random_noise_is_maes_sample_noise() {
        let g = MaskGenerator::new(7, 0.75, Masking::Random).unwrap();
        let a = g
            .noise(3, &mut ChaCha8Rng::seed_from_u64(5), &Device::Cpu)
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let b: Vec<f32> = (0..3 * 49).map(|_| rng.gen::<f32>()).collect();
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b);
    }
}
