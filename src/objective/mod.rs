//! Pretext tasks, one file each. An objective owns its masking, its decoder and its loss;
//! it depends on a modality's embedder and the backbone, never on another objective.
//! `masking` holds the mask generators objectives share.

pub mod audio_mae;
pub mod mae;
pub mod masking;
pub mod mlm;
pub mod simmim;
