//! pretext: self-supervised (masked) pretraining for vision, text and audio on Candle.
//!
//! Direction of dependency (see DESIGN.md):
//! `cli` → `run` → `objective` / `head` / `modality` → `backbone` → candle;
//! `recipe`, `train`, `params` and `tensor_io` serve `run`; `hf` (Hugging Face weights in
//! and out) maps `transformers` checkpoints onto `modality` / `objective` models.

pub mod backbone;
pub mod cli;
pub mod device;
pub mod error;
pub mod head;
pub mod hf;
pub mod inspect;
pub mod modality;
pub mod objective;
pub mod params;
pub mod recipe;
pub mod run;
pub mod tensor_io;
pub mod train;

pub use error::{Error, Result};
