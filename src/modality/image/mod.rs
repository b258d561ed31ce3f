//! Images: reading (IDX, image folders), augmentation, pretraining batches (made on the
//! training loader's thread), tensors (patches), and the embedder that feeds the backbone.

pub mod augment;
pub mod batch;
pub mod budget;
pub mod classifier;
pub mod dataset;
pub mod embed;
pub mod encoder;
pub mod erase;
pub mod folder;
pub mod grid;
pub mod idx;
pub mod patch;
pub mod recipe;
pub mod run;

pub use classifier::{ClassifierSpec, ImageClassifier};
pub use encoder::{ImageEncoder, ImageGeometry, Positions};
