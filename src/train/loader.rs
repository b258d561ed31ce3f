//! Batches for the training loop, for every modality, produced synchronously or prefetched
//! on a worker thread.
//!
//! The sampler is deterministic, so the batches the loop will ask for are known in advance: a
//! prefetching [`Loader`] runs its own copy of the sampler on a worker thread, makes up to
//! `depth` batches ahead with a [`MakeBatch`] (decoding and augmenting images, normalising
//! spectrograms, gathering token blocks) and hands them over through a bounded channel while
//! the training step runs. A batch is plain data (`Vec`s), turned into tensors on the step
//! thread. What depends on the training loop's RNG (masking, dropout) is not made here, so
//! the loop's draws are the same in both modes; batch making itself must be a pure function
//! of the indices and epochs, so both modes give the same batches bit for bit, and a loader
//! started from a resumed sampler position continues exactly.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sampler::Sampler;
use crate::dist::Shard;
use crate::error::{Error, Result};

/// Micro-batches a pretraining loader prepares ahead of the training step.
pub const PREFETCH_DEPTH: usize = 2;

/// Turns sampled example indices (and the epoch each was drawn in) into one batch's data.
pub trait MakeBatch: Send + Sync + 'static {
    type Batch: Send + 'static;
    fn make(&self, indices: &[usize], epochs: &[usize]) -> Result<Self::Batch>;
}

/// One micro-batch: the sampled examples and their data.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<B> {
    pub indices: Vec<usize>,
    pub epochs: Vec<usize>,
    pub data: B,
}

type Maker<B> = Arc<dyn MakeBatch<Batch = B>>;

enum Source<B> {
    Inline {
        maker: Maker<B>,
        sampler: Sampler,
    },
    Worker {
        rx: Option<Receiver<Result<Batch<B>>>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// What a loader makes of each global batch of the sampler: `size` examples, of which
/// this process takes the `shard`'s rows.
#[derive(Debug, Clone, Copy)]
pub struct BatchShape {
    pub size: usize,
    pub shard: Shard,
}

impl BatchShape {
    /// Whole batches of `size`, for a process training alone.
    pub fn whole(size: usize) -> Self {
        Self {
            size,
            shard: Shard::ALL,
        }
    }
}

/// Yields this process's rows of the micro-batches of `sampler`, in order.
pub struct Loader<B> {
    source: Source<B>,
    shape: BatchShape,
    waited: Duration,
}

fn make<B: Send + 'static>(
    maker: &Maker<B>,
    sampler: &mut Sampler,
    shape: BatchShape,
) -> Result<Batch<B>> {
    let (mut indices, mut epochs) = sampler.next_batch_with_epochs(shape.size);
    let rows = shape.shard.rows(indices.len());
    indices.truncate(rows.end);
    indices.drain(..rows.start);
    epochs.truncate(rows.end);
    epochs.drain(..rows.start);
    let data = maker.make(&indices, &epochs)?;
    Ok(Batch {
        indices,
        epochs,
        data,
    })
}

impl<B: Send + 'static> Loader<B> {
    /// A loader producing `depth` batches ahead on a worker thread, or, with `depth` 0,
    /// each batch when asked for it, on the calling thread.
    pub fn new(
        maker: impl MakeBatch<Batch = B>,
        sampler: Sampler,
        shape: BatchShape,
        depth: usize,
    ) -> Result<Self> {
        match depth {
            0 => Ok(Self::synchronous(maker, sampler, shape)),
            _ => Self::prefetching(maker, sampler, shape, depth),
        }
    }

    /// Produces each batch when asked for it, on the calling thread.
    pub fn synchronous(
        maker: impl MakeBatch<Batch = B>,
        sampler: Sampler,
        shape: BatchShape,
    ) -> Self {
        Self {
            source: Source::Inline {
                maker: Arc::new(maker),
                sampler,
            },
            shape,
            waited: Duration::ZERO,
        }
    }

    /// Produces batches on a worker thread, up to `depth` (≥ 1) ready ahead of the consumer.
    pub fn prefetching(
        maker: impl MakeBatch<Batch = B>,
        mut sampler: Sampler,
        shape: BatchShape,
        depth: usize,
    ) -> Result<Self> {
        let (tx, rx) = sync_channel::<Result<Batch<B>>>(depth.max(1));
        let maker: Maker<B> = Arc::new(maker);
        let handle = std::thread::Builder::new()
            .name("pretext-loader".into())
            .spawn(move || loop {
                let made = make(&maker, &mut sampler, shape);
                let failed = made.is_err();
                // The receiver is gone once the loader is dropped: stop.
                if tx.send(made).is_err() || failed {
                    break;
                }
            })
            .map_err(|e| Error::Usage(format!("cannot start the data loader thread: {e}")))?;
        Ok(Self {
            source: Source::Worker {
                rx: Some(rx),
                handle: Some(handle),
            },
            shape,
            waited: Duration::ZERO,
        })
    }

    /// The next micro-batch.
    pub fn next_batch(&mut self) -> Result<Batch<B>> {
        let t0 = Instant::now();
        let out = match &mut self.source {
            Source::Inline { maker, sampler } => make(maker, sampler, self.shape),
            Source::Worker { rx, .. } => match rx.as_ref().map(|rx| rx.recv()) {
                Some(Ok(batch)) => batch,
                _ => Err(Error::Usage("the data loader thread stopped".into())),
            },
        };
        self.waited += t0.elapsed();
        out
    }

    /// Total time [`Self::next_batch`] has spent producing or waiting for batches: for a
    /// prefetching loader, the time the training step was held up by data.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl<B> Drop for Loader<B> {
    fn drop(&mut self) {
        if let Source::Worker { rx, handle } = &mut self.source {
            // Closing the channel first makes a worker blocked on a full queue return.
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// A task's loader, started in `TrainTask::begin` and read in `TrainTask::loss` (both take
/// `&self`).
pub struct TaskLoader<B> {
    loader: Mutex<Option<Loader<B>>>,
    /// Batches made ahead; 0 = each on the training thread when asked for.
    pub depth: usize,
}

impl<B> Default for TaskLoader<B> {
    fn default() -> Self {
        Self {
            loader: Mutex::new(None),
            depth: PREFETCH_DEPTH,
        }
    }
}

impl<B: Send + 'static> TaskLoader<B> {
    /// Starts loading this process's rows of the batches of a copy of `sampler` (the
    /// loop's, at its position).
    pub fn start(
        &self,
        maker: impl MakeBatch<Batch = B>,
        sampler: &Sampler,
        shape: BatchShape,
    ) -> Result<()> {
        let loader = Loader::new(maker, sampler.clone(), shape, self.depth)?;
        *self.lock()? = Some(loader);
        Ok(())
    }

    /// The data of the next batch, which must be of the examples `indices` (the loop's
    /// sampler and the loader's copy agree).
    pub fn next(&self, indices: &[usize]) -> Result<B> {
        let batch = self
            .lock()?
            .as_mut()
            .ok_or_else(|| Error::Usage("a batch was asked for before TrainTask::begin".into()))?
            .next_batch()?;
        if batch.indices != indices {
            return Err(Error::Usage(format!(
                "the data loader is out of step with the sampler: {:?} vs {:?}",
                &batch.indices[..batch.indices.len().min(4)],
                &indices[..indices.len().min(4)]
            )));
        }
        Ok(batch.data)
    }

    /// Time the training steps have waited for batches so far.
    pub fn waited(&self) -> Duration {
        self.lock()
            .ok()
            .and_then(|l| l.as_ref().map(Loader::waited))
            .unwrap_or_default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Loader<B>>>> {
        self.loader
            .lock()
            .map_err(|_| Error::Usage("the data loader lock is poisoned".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::sampler::Position;

    /// A batch that depends only on its indices and epochs.
    struct Echo;

    impl MakeBatch for Echo {
        type Batch = Vec<usize>;
        fn make(&self, indices: &[usize], epochs: &[usize]) -> Result<Vec<usize>> {
            Ok(indices
                .iter()
                .zip(epochs)
                .map(|(i, e)| i * 100 + e)
                .collect())
        }
    }

    #[test]
    fn both_modes_follow_the_sampler_and_check_the_indices() {
        let sampler = Sampler::new(10, 1, Position { epoch: 2, index: 7 });
        let sync = TaskLoader {
            depth: 0,
            ..TaskLoader::default()
        };
        let pre = TaskLoader::default();
        sync.start(Echo, &sampler, BatchShape::whole(4)).unwrap();
        pre.start(Echo, &sampler, BatchShape::whole(4)).unwrap();
        let mut own = sampler.clone();
        for _ in 0..6 {
            let (indices, epochs) = own.next_batch_with_epochs(4);
            let want = Echo.make(&indices, &epochs).unwrap();
            assert_eq!(sync.next(&indices).unwrap(), want);
            assert_eq!(pre.next(&indices).unwrap(), want);
        }
        let err = sync.next(&[99]).unwrap_err().to_string();
        assert!(err.contains("out of step"), "{err}");
    }

    /// Each rank's loader makes its own rows of every global batch, and the ranks' rows
    /// together are the whole batch.
    #[test]
    fn sharded_loaders_split_every_global_batch() {
        let sampler = Sampler::new(13, 2, Position::default());
        let ranks: Vec<TaskLoader<Vec<usize>>> = (0..3).map(|_| TaskLoader::default()).collect();
        for (rank, l) in ranks.iter().enumerate() {
            let shard = Shard { rank, size: 3 };
            l.start(Echo, &sampler, BatchShape { size: 8, shard })
                .unwrap();
        }
        let mut own = sampler.clone();
        for _ in 0..5 {
            let (indices, epochs) = own.next_batch_with_epochs(8);
            let mut joined = Vec::new();
            for (rank, l) in ranks.iter().enumerate() {
                let rows = Shard { rank, size: 3 }.rows(8);
                joined.extend(l.next(&indices[rows]).unwrap());
            }
            assert_eq!(joined, Echo.make(&indices, &epochs).unwrap());
        }
    }
}
