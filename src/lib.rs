//! pretext: self-supervised (masked) pretraining for vision, text and audio on Candle.
//!
//! Direction of dependency (each module uses only those to its left; `tests/layering.rs`
//! enforces it):
//!
//! ```text
//! error ← device, limits ← input ← tensor_io ← params ← backbone ← train ← modality
//!       ← objective ← head, hf ← recipe ← run ← apply, inspect ← cli
//! ```
//!
//! `backbone` is the shared transformer; `modality/*` read data and build encoders;
//! `objective/*` are the pretext tasks; `head/*` the probes and fine-tuning; `hf` maps
//! Hugging Face files onto these models and back; `recipe` is the schema, `run` the
//! pipeline; `apply` uses finished models (forward, embed, export); `cli` parses and
//! dispatches.

pub mod apply;
pub mod backbone;
pub mod cli;
pub mod device;
pub mod dist;
pub mod draws;
pub mod error;
pub mod head;
pub mod hf;
pub mod input;
pub mod inspect;
pub mod limits;
pub mod modality;
pub mod objective;
pub mod params;
pub mod plot;
pub mod recipe;
pub mod run;
pub mod tensor_io;
pub mod train;

pub use error::{Error, Result};
