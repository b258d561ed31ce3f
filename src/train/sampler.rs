//! The data order: a fresh seeded permutation each epoch. Its whole state is
//! `(epoch, position)`, so a resumed run continues exactly where it stopped without
//! replaying data.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Position {
    pub epoch: usize,
    pub index: usize,
}

#[derive(Debug, Clone)]
pub struct Sampler {
    len: usize,
    seed: u64,
    pos: Position,
    order: Vec<usize>,
}

impl Sampler {
    pub fn new(len: usize, seed: u64, pos: Position) -> Self {
        let mut s = Self {
            len,
            seed,
            pos,
            order: Vec::new(),
        };
        s.order = s.permutation(pos.epoch);
        s
    }

    fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch as u64);
        order.shuffle(&mut rng);
        order
    }

    /// The next `n` example indices, continuing into the next epoch when one ends.
    pub fn next_batch(&mut self, n: usize) -> Vec<usize> {
        self.next_batch_with_epochs(n).0
    }

    /// [`Self::next_batch`], with the epoch each index was drawn in.
    pub fn next_batch_with_epochs(&mut self, n: usize) -> (Vec<usize>, Vec<usize>) {
        let mut out = Vec::with_capacity(n);
        let mut epochs = Vec::with_capacity(n);
        while out.len() < n && self.len > 0 {
            if self.pos.index == self.len {
                self.pos = Position {
                    epoch: self.pos.epoch + 1,
                    index: 0,
                };
                self.order = self.permutation(self.pos.epoch);
            }
            let take = (n - out.len()).min(self.len - self.pos.index);
            out.extend_from_slice(&self.order[self.pos.index..self.pos.index + take]);
            epochs.resize(out.len(), self.pos.epoch);
            self.pos.index += take;
        }
        (out, epochs)
    }

    pub fn position(&self) -> Position {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_resume_continues() {
        let mut a = Sampler::new(10, 3, Position::default());
        let first: Vec<usize> = (0..5).flat_map(|_| a.next_batch(4)).collect();
        let mut epoch0 = first[..10].to_vec();
        epoch0.sort();
        assert_eq!(epoch0, (0..10).collect::<Vec<_>>());
        assert_ne!(&first[..10], &first[10..20]);
        // Resume from a saved position gives the same continuation.
        let mut b = Sampler::new(10, 3, Position::default());
        b.next_batch(4);
        b.next_batch(4);
        let mut c = Sampler::new(10, 3, b.position());
        assert_eq!(b.next_batch(7), c.next_batch(7));
    }
}
