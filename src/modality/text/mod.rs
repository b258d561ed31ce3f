//! Text: documents (plain files, folders, JSON lines), tokenizers (Hugging Face
//! `tokenizers`), packing into fixed-length blocks for MLM and MLM masking (data only, no
//! tensors); the BERT / RoBERTa encoder and its MLM head; the sequence classifier.

pub mod classifier;
pub mod corpus;
pub mod encoder;
pub mod mapped;
pub mod mask;
pub mod pack;
pub mod recipe;
pub mod run;
pub mod shards;
pub mod stream;
pub mod tokenizer;

pub use encoder::{MlmHead, TextConfig, TextEncoder, TextPositions};
