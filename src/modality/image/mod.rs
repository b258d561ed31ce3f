//! Images: reading (IDX), tensors (patches), and the embedder that feeds the backbone.

pub mod dataset;
pub mod embed;
pub mod encoder;
pub mod grid;
pub mod idx;
pub mod patch;

pub use encoder::{ImageEncoder, ImageGeometry};
