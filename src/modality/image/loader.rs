//! Batches for the training loop, produced synchronously or prefetched on worker threads.
//!
//! The sampler is deterministic, so the batches the loop will ask for are known in advance: a
//! prefetching [`Loader`] runs its own copy of the sampler on a worker thread, decodes and
//! augments up to `depth` batches ahead (examples in parallel with rayon), and hands them
//! over through a bounded channel while the training step runs. Each example's augmentation
//! is a pure function of `(seed, epoch, index)`, so both modes give the same values bit for
//! bit, and a loader started from a resumed sampler position continues exactly.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::augment::Augment;
use super::dataset::ImageDataset;
use crate::error::{Error, Result};
use crate::train::sampler::Sampler;

/// What turns sampled indices into normalised pixels.
#[derive(Debug, Clone)]
pub struct BatchMaker {
    pub data: ImageDataset,
    /// `None` (or an identity augmentation): images as they are.
    pub augment: Option<Augment>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl BatchMaker {
    /// `[B, C, H, W]` normalised values of `indices`, drawn in `epochs`.
    pub fn make(&self, indices: &[usize], epochs: &[usize]) -> Result<Vec<f32>> {
        let augment = self.augment.as_ref().map(|a| (a, epochs));
        self.data
            .normalised(indices, augment, &self.mean, &self.std)
    }
}

/// One micro-batch: the sampled examples and their pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub indices: Vec<usize>,
    pub epochs: Vec<usize>,
    /// `[B, C, H, W]`, normalised.
    pub values: Vec<f32>,
}

enum Source {
    Inline {
        maker: Box<BatchMaker>,
        sampler: Sampler,
    },
    Worker {
        rx: Option<Receiver<Result<Batch>>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// Yields the micro-batches of `sampler` in order, each of `batch_size` examples.
pub struct Loader {
    source: Source,
    batch_size: usize,
    waited: Duration,
}

impl Loader {
    /// Produces each batch when asked for it, on the calling thread (examples still decode
    /// in parallel).
    pub fn synchronous(maker: BatchMaker, sampler: Sampler, batch_size: usize) -> Self {
        Self {
            source: Source::Inline {
                maker: Box::new(maker),
                sampler,
            },
            batch_size,
            waited: Duration::ZERO,
        }
    }

    /// Produces batches on a worker thread, up to `depth` (≥ 1) ready ahead of the consumer.
    pub fn prefetching(
        maker: BatchMaker,
        mut sampler: Sampler,
        batch_size: usize,
        depth: usize,
    ) -> Result<Self> {
        let (tx, rx) = sync_channel::<Result<Batch>>(depth.max(1));
        let maker = Arc::new(maker);
        let handle = std::thread::Builder::new()
            .name("pretext-loader".into())
            .spawn(move || loop {
                let (indices, epochs) = sampler.next_batch_with_epochs(batch_size);
                let made = maker.make(&indices, &epochs).map(|values| Batch {
                    indices,
                    epochs,
                    values,
                });
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
            batch_size,
            waited: Duration::ZERO,
        })
    }

    /// The next micro-batch.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let t0 = Instant::now();
        let out = match &mut self.source {
            Source::Inline { maker, sampler } => {
                let (indices, epochs) = sampler.next_batch_with_epochs(self.batch_size);
                let values = maker.make(&indices, &epochs)?;
                Ok(Batch {
                    indices,
                    epochs,
                    values,
                })
            }
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

impl Drop for Loader {
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
