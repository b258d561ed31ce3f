//! The data order of the downstream heads: whole epochs over a chosen set of examples,
//! each shuffled from the training loop's RNG (one stream with dropout, as PyTorch's
//! `DataLoader(shuffle=True)` under one global seed), the last batch of an epoch partial.
//! With example lengths, batches are grouped by length (`transformers`' `group_by_length`).
//!
//! Unlike the pretraining [`Sampler`](super::sampler::Sampler), the order cannot be
//! recomputed from a position alone (the RNG has moved on since the epoch was drawn), so its
//! state is the position *and* the current epoch's order; checkpoints store both.

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::sampler::Position;
use crate::error::{Error, Result};

/// Megabatches (of this many batches) are sorted by length before batching.
const MEGABATCH: usize = 50;

/// How each epoch's order is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reshuffle {
    /// A fresh shuffle of the examples (fine-tuning).
    Fresh,
    /// A shuffle of the previous epoch's order, in place (the linear probe). As random as
    /// [`Reshuffle::Fresh`]; kept so probe results stay what they were.
    InPlace,
}

/// Epochs over `examples`, drawn from the loop's RNG.
#[derive(Debug, Clone)]
pub struct EpochOrder {
    examples: Vec<usize>,
    /// Example lengths (indexed like the data set) and the batch size they group for.
    grouping: Option<(Vec<usize>, usize)>,
    reshuffle: Reshuffle,
    /// The current epoch's order (before the first epoch: the examples as given).
    order: Vec<usize>,
    /// Epochs drawn so far.
    drawn: usize,
    /// Next position in `order`.
    cursor: usize,
}

impl EpochOrder {
    /// Freshly shuffled epochs over `examples`; with `lengths` (indexed like the data set),
    /// batches of `batch_size` grouped by length.
    pub fn fresh(examples: &[usize], lengths: Option<Vec<usize>>, batch_size: usize) -> Self {
        let grouping = lengths.map(|l| (l, batch_size));
        Self::new(examples, grouping, Reshuffle::Fresh)
    }

    /// Epochs over `0..n`, each a shuffle of the one before.
    pub fn in_place(n: usize) -> Self {
        let all: Vec<usize> = (0..n).collect();
        Self::new(&all, None, Reshuffle::InPlace)
    }

    fn new(
        examples: &[usize],
        grouping: Option<(Vec<usize>, usize)>,
        reshuffle: Reshuffle,
    ) -> Self {
        Self {
            examples: examples.to_vec(),
            grouping,
            reshuffle,
            order: examples.to_vec(),
            drawn: 0,
            cursor: 0,
        }
    }

    /// The next batch of at most `n` examples: the rest of the epoch when fewer are left,
    /// and a newly drawn epoch (from `rng`) when none are.
    pub fn next_batch(&mut self, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        if self.drawn == 0 || self.cursor >= self.order.len() {
            self.draw(rng);
        }
        let end = (self.cursor + n).min(self.order.len());
        let batch = self.order[self.cursor..end].to_vec();
        self.cursor = end;
        batch
    }

    fn draw(&mut self, rng: &mut ChaCha8Rng) {
        if self.reshuffle == Reshuffle::Fresh {
            self.order = self.examples.clone();
        }
        self.order.shuffle(rng);
        if let Some((lengths, batch_size)) = &self.grouping {
            self.order = group_by_length(&self.order, lengths, *batch_size, rng);
        }
        self.drawn += 1;
        self.cursor = 0;
    }

    /// The epoch being read, from 0.
    pub fn epoch(&self) -> usize {
        self.drawn.saturating_sub(1)
    }

    /// What a checkpoint stores: `(epochs drawn, cursor)` and the current order.
    pub fn state(&self) -> (Position, Vec<usize>) {
        (
            Position {
                epoch: self.drawn,
                index: self.cursor,
            },
            self.order.clone(),
        )
    }

    /// Continues from a checkpoint's [`EpochOrder::state`]; an order that is not a
    /// permutation of this run's examples is an error (the checkpoint belongs to another
    /// run or its file was edited).
    pub fn restore(&mut self, pos: Position, order: Vec<usize>) -> Result<()> {
        let mut a = order.clone();
        let mut b = self.examples.clone();
        a.sort_unstable();
        b.sort_unstable();
        if a != b || pos.index > order.len() {
            return Err(Error::Usage(format!(
                "the checkpoint's data order ({} examples, at {}) is not one of this run's \
                 {} examples: it was written by another run",
                order.len(),
                pos.index,
                self.examples.len()
            )));
        }
        self.order = order;
        self.drawn = pos.epoch;
        self.cursor = pos.index;
        Ok(())
    }
}

/// `order` cut into megabatches of [`MEGABATCH`] batches, each sorted by length (longest
/// first), and the resulting batches shuffled (`transformers`' `LengthGroupedSampler`).
fn group_by_length(
    order: &[usize],
    lengths: &[usize],
    batch_size: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let mut order = order.to_vec();
    for mega in order.chunks_mut(batch_size * MEGABATCH) {
        mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    }
    let mut batches: Vec<&[usize]> = order.chunks(batch_size).collect();
    batches.shuffle(rng);
    batches.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn length_grouped_epochs_cover_every_example_in_tight_batches() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 128 + 1).collect();
        let chosen: Vec<usize> = (0..1000).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut grouped = EpochOrder::fresh(&chosen, Some(lengths.clone()), 8);
        let order: Vec<usize> = (0..125)
            .flat_map(|_| grouped.next_batch(8, &mut rng))
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, chosen);
        // Padding to each batch's longest: grouped batches waste far less than random ones.
        let waste = |o: &[usize]| -> usize {
            o.chunks(8)
                .map(|b| {
                    let max = b.iter().map(|&i| lengths[i]).max().unwrap();
                    b.iter().map(|&i| max - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let mut plain = EpochOrder::fresh(&chosen, None, 8);
        let random: Vec<usize> = (0..125)
            .flat_map(|_| plain.next_batch(8, &mut rng))
            .collect();
        assert!(
            waste(&order) * 5 < waste(&random),
            "{} vs {}",
            waste(&order),
            waste(&random)
        );
    }

    #[test]
    fn an_epoch_ends_in_a_partial_batch_and_the_next_is_a_new_permutation() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut o = EpochOrder::in_place(10);
        let sizes: Vec<usize> = (0..6).map(|_| o.next_batch(4, &mut rng).len()).collect();
        assert_eq!(sizes, [4, 4, 2, 4, 4, 2]);
        assert_eq!(o.epoch(), 1);
    }

    #[test]
    fn a_restored_order_continues_exactly() {
        let chosen: Vec<usize> = (0..30).map(|i| i * 3).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut a = EpochOrder::fresh(&chosen, None, 4);
        for _ in 0..9 {
            a.next_batch(4, &mut rng);
        }
        let (pos, order) = a.state();
        let mut b = EpochOrder::fresh(&chosen, None, 4);
        b.restore(pos, order).unwrap();
        let mut rng_b = rng.clone();
        for _ in 0..20 {
            assert_eq!(a.next_batch(4, &mut rng), b.next_batch(4, &mut rng_b));
        }
        // An order of other examples is refused.
        let mut c = EpochOrder::fresh(&chosen[..10], None, 4);
        let (pos, order) = a.state();
        assert!(c.restore(pos, order).is_err());
    }
}
