//! Modalities: data readers, tensor layouts and embedders, one module each.

pub mod audio;
pub mod files;
pub mod image;
pub mod text;
