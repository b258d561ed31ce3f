//! Training machinery shared by every objective: the optimizer, LR schedules, the data
//! sampler and the loader that prefetches its batches, full-state checkpoints, metrics, and
//! the loop that ties them together.

pub mod checkpoint;
pub mod config;
pub mod epochs;
pub mod loader;
pub mod r#loop;
pub mod metrics;
pub mod optim;
pub mod sampler;
pub mod schedule;

pub use r#loop::{train, Driver, Loss, Setup, StepStats, TrainOutcome, TrainTask, Trainer};
