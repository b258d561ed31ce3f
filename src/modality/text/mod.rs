//! Text: documents (plain files, folders, JSON lines), tokenizers (Hugging Face `tokenizers`),
//! packing into fixed-length blocks for MLM, and MLM masking. Data only; no tensors here.

pub mod corpus;
pub mod mask;
pub mod pack;
pub mod tokenizer;
