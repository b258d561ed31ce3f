//! Text: the BERT / RoBERTa encoder and its MLM head.

pub mod encoder;

pub use encoder::{MlmHead, TextConfig, TextEncoder, TextPositions};
