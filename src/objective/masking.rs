//! Which patches an objective removes, over a `rows × cols` patch grid (patch `r * cols + c`):
//! uniformly random, BEiT's block-wise masking (Bao et al. 2021, `masking_generator.py`) on
//! image grids, or whole time steps / frequency bands / both on spectrogram grids
//! (Audio-MAE, Huang et al. 2022; a spectrogram's grid is time-major: rows are time steps,
//! columns frequency bands).
//!
//! Every kind removes the same number of patches from every example, so batches stay
//! rectangular; random and block masking remove `L - floor(L * (1 - ratio))` of the `L`
//! patches, MAE's count. Masks are drawn from an explicit RNG (the training loop's, which
//! checkpoints save), so they are seeded and resumable. A mask is `[B, L]`, 0 is keep, 1 is
//! remove; as MAE noise, removed patches get `noise + 1`, so MAE's `random_masking`, which
//! keeps the lowest noise, keeps exactly the unmasked ones.

use candle_core::{Device, Result, Tensor};
use rand::seq::index::sample;
use rand::Rng;

use crate::draws::{Draws, Purpose};
use serde::{Deserialize, Serialize};

/// Which patches are removed: a recipe's `objective.masking`, for every modality. Images
/// take `random` or `block`; spectrograms `random`, `time`, `frequency` or
/// `time-frequency` (see [`GridMasker`]).
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

/// Draws masks of one kind over a patch grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridMasker {
    /// Rows of the grid: an image's patch rows, a spectrogram's time steps.
    pub rows: usize,
    /// Columns of the grid: an image's patch columns, a spectrogram's frequency bands.
    pub cols: usize,
    pub kind: Masking,
    /// Patches removed from each example.
    num_masked: usize,
    /// Whole rows / columns removed (`time`, `frequency`, `time-frequency`).
    masked_rows: usize,
    masked_cols: usize,
    /// How random masking draws. On an image grid the noise alone decides (MAE's
    /// `random_masking`); on a spectrogram grid the removed patches are sampled first, then
    /// the noise is drawn (the path Audio-MAE runs took). Both remove the same count
    /// uniformly at random, but their RNG draws differ, and runs must stay bit for bit what
    /// they were.
    sample_first: bool,
}

impl GridMasker {
    /// Random or block masking of a `grid × grid` image grid; the spectrogram kinds are an
    /// error (an image grid has no time axis).
    pub fn image(grid: usize, ratio: f64, kind: Masking) -> Result<Self> {
        if !matches!(kind, Masking::Random | Masking::Block) {
            candle_core::bail!(
                "{kind:?} masking is for spectrograms; images use `random` or `block` masking"
            );
        }
        Ok(Self::new(grid, grid, ratio, kind, false))
    }

    /// `random`, `time`, `frequency` or `time-frequency` masking of a spectrogram grid of
    /// `time` steps × `freq` bands; `block` is an error (it is image masking).
    pub fn spectrogram(time: usize, freq: usize, ratio: f64, kind: Masking) -> Result<Self> {
        if kind == Masking::Block {
            candle_core::bail!(
                "block masking is for images; spectrograms use `random`, `time`, `frequency` or `time-frequency`"
            );
        }
        Ok(Self::new(time, freq, ratio, kind, true))
    }

    fn new(rows: usize, cols: usize, ratio: f64, kind: Masking, sample_first: bool) -> Self {
        let l = rows * cols;
        let count = |n: usize, r: f64| {
            ((r * n as f64).round() as usize).clamp(1, n.saturating_sub(1).max(1))
        };
        let each = 1.0 - (1.0 - ratio).sqrt();
        let (masked_rows, masked_cols) = match kind {
            Masking::Random | Masking::Block => (0, 0),
            Masking::Time => (count(rows, ratio), 0),
            Masking::Frequency => (0, count(cols, ratio)),
            Masking::TimeFrequency => (count(rows, each), count(cols, each)),
        };
        let num_masked = match kind {
            Masking::Random | Masking::Block => l - (((l as f64) * (1.0 - ratio)) as usize).min(l),
            _ => l - (rows - masked_rows) * (cols - masked_cols),
        };
        Self {
            rows,
            cols,
            kind,
            num_masked,
            masked_rows,
            masked_cols,
            sample_first,
        }
    }

    pub fn num_patches(&self) -> usize {
        self.rows * self.cols
    }

    /// Patches removed from each example.
    pub fn num_masked(&self) -> usize {
        self.num_masked
    }

    /// Patches the encoder keeps, the same for every example.
    pub fn len_keep(&self) -> usize {
        self.num_patches() - self.num_masked
    }

    /// One example's mask, `true` = removed.
    pub fn example_mask(&self, rng: &mut impl Rng) -> Vec<bool> {
        let l = self.num_patches();
        match self.kind {
            Masking::Random if self.sample_first => {
                let mut m = vec![false; l];
                for i in sample(rng, l, self.num_masked) {
                    m[i] = true;
                }
                m
            }
            Masking::Random => {
                let noise: Vec<f32> = (0..l).map(|_| rng.gen::<f32>()).collect();
                mask_from_noise(&noise, self.len_keep())
            }
            Masking::Block => block_mask(self.rows, self.cols, self.num_masked, rng),
            Masking::Time | Masking::Frequency | Masking::TimeFrequency => {
                let mut rows = vec![false; self.rows];
                for i in sample(rng, self.rows, self.masked_rows) {
                    rows[i] = true;
                }
                let mut cols = vec![false; self.cols];
                for i in sample(rng, self.cols, self.masked_cols) {
                    cols[i] = true;
                }
                (0..l)
                    .map(|i| rows[i / self.cols] || cols[i % self.cols])
                    .collect()
            }
        }
    }

    /// MAE noise `[B, L]` for the batch rows of `draws`, each row from its own mask
    /// stream: keeping the `len_keep` lowest keeps exactly the unmasked patches. Image random
    /// masking draws uniform noise alone (MAE's `random_masking`); the other kinds draw the
    /// example's mask, then its noise. Removed patches get `noise + 1`.
    pub fn noise(&self, draws: &Draws, device: &Device) -> Result<Tensor> {
        let (batch, l) = (draws.rows(), self.num_patches());
        let mut v = Vec::with_capacity(batch * l);
        for b in 0..batch {
            let rng = &mut draws.rng(b, Purpose::Mask);
            match self.kind {
                Masking::Random if !self.sample_first => v.extend((0..l).map(|_| rng.gen::<f32>())),
                _ => {
                    let m = self.example_mask(rng);
                    v.extend(
                        m.iter()
                            .map(|&m| rng.gen::<f32>() + if m { 1.0 } else { 0.0 }),
                    );
                }
            }
        }
        Tensor::from_vec(v, (batch, l), device)
    }

    /// A mask `[B, L]` (f32, 1 = remove) for the batch rows of `draws`, for objectives that
    /// take one directly (SimMIM).
    pub fn mask(&self, draws: &Draws, device: &Device) -> Result<Tensor> {
        let batch = draws.rows();
        let mut v = Vec::with_capacity(batch * self.num_patches());
        for b in 0..batch {
            let m = self.example_mask(&mut draws.rng(b, Purpose::Mask));
            v.extend(m.into_iter().map(|b| if b { 1f32 } else { 0.0 }));
        }
        Tensor::from_vec(v, (batch, self.num_patches()), device)
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
        let err = GridMasker::image(7, 0.5, Masking::Time).unwrap_err();
        assert!(err.to_string().contains("`random` or `block`"), "{err}");
    }

    #[test]
    fn block_masking_of_a_spectrogram_is_an_error_naming_the_kinds_it_takes() {
        let err = GridMasker::spectrogram(6, 4, 0.5, Masking::Block).unwrap_err();
        assert!(err.to_string().contains("time-frequency"), "{err}");
    }

    #[test]
    fn count_matches_maes_len_keep() {
        // 49 patches at 0.75: MAE keeps floor(12.25) = 12, so 37 are removed.
        let block = GridMasker::image(7, 0.75, Masking::Block).unwrap();
        assert_eq!(block.num_masked(), 37);
        assert_eq!(block.len_keep(), 12);
        let random = GridMasker::image(14, 0.4, Masking::Random).unwrap();
        assert_eq!(random.num_masked(), 79);
    }

    #[test]
    fn random_noise_is_maes_sample_noise() {
        let g = GridMasker::image(7, 0.75, Masking::Random).unwrap();
        let draws = Draws::new(5, 0, 0, 3);
        let a = g.noise(&draws, &Device::Cpu).unwrap();
        let b: Vec<f32> = (0..3)
            .flat_map(|r| {
                let mut rng = draws.rng(r, Purpose::Mask);
                (0..49).map(move |_| rng.gen::<f32>())
            })
            .collect();
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b);
    }

    #[test]
    fn every_spectrogram_kind_removes_a_fixed_count_with_its_structure() {
        // 6 time steps x 4 frequency bands.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for kind in [
            Masking::Random,
            Masking::Time,
            Masking::Frequency,
            Masking::TimeFrequency,
        ] {
            let m = GridMasker::spectrogram(6, 4, 0.5, kind).unwrap();
            for _ in 0..5 {
                let mask = m.example_mask(&mut rng);
                let kept = mask.iter().filter(|r| !**r).count();
                assert_eq!(kept, m.len_keep(), "{kind:?}");
                match kind {
                    Masking::Time => {
                        // A column is removed whole or not at all.
                        for t in 0..6 {
                            let col: Vec<bool> = (0..4).map(|f| mask[t * 4 + f]).collect();
                            assert!(col.iter().all(|&c| c == col[0]), "{col:?}");
                        }
                        assert_eq!(kept, 3 * 4);
                    }
                    Masking::Frequency => {
                        for f in 0..4 {
                            let row: Vec<bool> = (0..6).map(|t| mask[t * 4 + f]).collect();
                            assert!(row.iter().all(|&c| c == row[0]), "{row:?}");
                        }
                        assert_eq!(kept, 6 * 2);
                    }
                    Masking::TimeFrequency => assert!(kept < 24 && kept > 0),
                    Masking::Random => assert_eq!(kept, 12),
                    Masking::Block => unreachable!("not in the list"),
                }
            }
        }
    }

    #[test]
    fn noise_keeps_exactly_the_unmasked_patches() {
        let m = GridMasker::spectrogram(6, 4, 0.6, Masking::TimeFrequency).unwrap();
        let noise = m.noise(&Draws::new(1, 0, 0, 3), &Device::Cpu).unwrap();
        for row in noise.to_vec2::<f32>().unwrap() {
            let low = row.iter().filter(|&&v| v < 1.0).count();
            assert_eq!(low, m.len_keep());
        }
    }
}
