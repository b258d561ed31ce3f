//! Images: reading (IDX, image folders), augmentation, batching (synchronous or prefetched),
//! tensors (patches), and the embedder that feeds the backbone.

pub mod augment;
pub mod classifier;
pub mod dataset;
pub mod embed;
pub mod encoder;
pub mod folder;
pub mod grid;
pub mod idx;
pub mod loader;
pub mod patch;

pub use classifier::{ClassifierSpec, ImageClassifier};
pub use encoder::{ImageEncoder, ImageGeometry, Positions};
