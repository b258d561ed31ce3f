//! Images: reading (IDX), tensors (patches), and the embedder that feeds the backbone.

pub mod classifier;
pub mod dataset;
pub mod embed;
pub mod encoder;
pub mod grid;
pub mod idx;
pub mod patch;

pub use classifier::{ClassifierSpec, ImageClassifier};
pub use encoder::{ImageEncoder, ImageGeometry, Positions};
