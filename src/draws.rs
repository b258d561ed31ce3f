//! Random draws keyed by what they are for, not by who draws them.
//!
//! A training example's masks, dropout and augmentation come from its own random stream,
//! a function of the run's seed, the optimizer step and the example's place in that step's
//! global batch (its *sample index*). Nothing depends on a per-process stream, so a batch
//! split over N processes draws exactly what one process draws for the whole batch, and a
//! run resumed under another world size continues as it would have.
//!
//! Each example has several independent streams ([`Purpose`]): one for its mask, one for
//! its augmentation, one per dropout site of the forward pass.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The stream of one example in one epoch of a data pipeline (its augmentation): a pure
/// function of `(seed, epoch, index)` and a `tag` naming the pipeline (the four are the
/// ChaCha key, so streams never collide), whichever thread draws it and in whichever order.
pub fn example_rng(seed: u64, epoch: usize, index: usize, tag: &[u8; 8]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(epoch as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(index as u64).to_le_bytes());
    key[24..].copy_from_slice(tag);
    ChaCha8Rng::from_seed(key)
}

/// What a stream is drawn for; each gives an independent stream of the same example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Which patches or tokens are masked (and what replaces a masked token).
    Mask,
    /// Crops, flips and other input augmentation.
    Augment,
    /// Mixup / CutMix of a fine-tuning batch (drawn once per batch, from its first row).
    Mix,
    /// The `n`-th dropout layer of the forward pass.
    Dropout(u32),
    /// Stochastic depth: residual branch `n` of the encoder (block `n / 2`, attention when
    /// `n` is even, MLP when odd).
    DropPath(u32),
}

impl Purpose {
    fn stream(self) -> u64 {
        match self {
            Purpose::Mask => 1,
            Purpose::Augment => 2,
            Purpose::Mix => 3,
            Purpose::Dropout(site) => (1 << 32) | site as u64,
            Purpose::DropPath(branch) => (2 << 32) | branch as u64,
        }
    }
}

/// The random streams of the examples of one (micro-)batch: row `r` of the batch is
/// sample `first + r` of optimizer step `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draws {
    seed: u64,
    step: u64,
    first: u64,
    rows: usize,
}

impl Draws {
    /// The streams of `rows` examples, the first being sample `first` of step `step`.
    pub fn new(seed: u64, step: u64, first: u64, rows: usize) -> Self {
        Self {
            seed,
            step,
            first,
            rows,
        }
    }

    /// Fixed draws for evaluation passes that should draw the same masks every time
    /// (held-out scores, reconstruction pictures): step 0, samples from 0.
    pub fn fixed(seed: u64, rows: usize) -> Self {
        Self::new(seed, 0, 0, rows)
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The stream of row `row` for `purpose`.
    pub fn rng(&self, row: usize, purpose: Purpose) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.seed.to_le_bytes());
        key[8..16].copy_from_slice(&self.step.to_le_bytes());
        key[16..24].copy_from_slice(&(self.first + row as u64).to_le_bytes());
        key[24..].copy_from_slice(b"pretext\0");
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(purpose.stream());
        rng
    }

    /// The draws of rows `range` of this batch, as a batch of their own.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            rows: range.len(),
            first: self.first + range.start as u64,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn first_draw(d: &Draws, row: usize, p: Purpose) -> u64 {
        d.rng(row, p).gen()
    }

    #[test]
    fn a_row_draws_the_same_whichever_batch_it_is_drawn_in() {
        let whole = Draws::new(7, 3, 64, 8);
        let half = whole.slice(4..8);
        for r in 0..4 {
            assert_eq!(
                first_draw(&whole, r + 4, Purpose::Mask),
                first_draw(&half, r, Purpose::Mask)
            );
        }
        assert_eq!(half.rows(), 4);
    }

    #[test]
    fn seeds_steps_rows_and_purposes_give_different_streams() {
        let d = Draws::new(7, 3, 0, 2);
        let base = first_draw(&d, 0, Purpose::Mask);
        assert_ne!(base, first_draw(&d, 1, Purpose::Mask));
        assert_ne!(base, first_draw(&d, 0, Purpose::Augment));
        assert_ne!(
            first_draw(&d, 0, Purpose::Augment),
            first_draw(&d, 0, Purpose::Mix)
        );
        assert_ne!(base, first_draw(&d, 0, Purpose::Dropout(0)));
        assert_ne!(
            first_draw(&d, 0, Purpose::Dropout(0)),
            first_draw(&d, 0, Purpose::Dropout(1))
        );
        assert_ne!(base, first_draw(&Draws::new(8, 3, 0, 2), 0, Purpose::Mask));
        assert_ne!(base, first_draw(&Draws::new(7, 4, 0, 2), 0, Purpose::Mask));
    }
}
