//! Hugging Face weights in and out: `transformers`' ViT (`ViTModel`,
//! `ViTForImageClassification`) and ViT-MAE (`ViTMAEForPreTraining`) checkpoints mapped onto
//! pretext's image encoder, classifier and MAE, and pretext models written back in the layout
//! `save_pretrained` writes.
//!
//! Follows `transformers/models/vit/modeling_vit.py` and
//! `transformers/models/vit_mae/modeling_vit_mae.py`. The backbone knows nothing of these
//! names: one mapping table per family ([`vit::rows`], [`vit_mae::rows`]) pairs every pretext
//! parameter with its Hugging Face name and shape, and serves both loading and export.
//!
//! - [`config`]: `config.json` ↔ [`ModelSpec`]
//! - [`checkpoint`]: a Hugging Face directory → [`LoadedModel`] (names, shapes, dtypes checked)
//! - [`source`]: any model source (run, checkpoint, classifier dir, HF dir, `hf:org/name`)
//! - [`hub`]: `hf:org/name[@rev]` in the local Hugging Face cache, [`download`]ed there
//!   when missing
//! - [`model`]: the runnable model and its outputs, named as in `transformers`
//! - [`export`]: [`LoadedModel`] → `config.json` + `model.safetensors`
//! - [`bert`], [`text`]: the text families (`BertModel`, `BertForMaskedLM`, `RobertaModel`,
//!   `RobertaForMaskedLM`): name table, loading, the runnable model, export (also of a
//!   pretext MLM run's tensors, [`text::export`]); [`text_classifier`]: a fine-tuned text
//!   classifier as `…ForSequenceClassification` (or the encoder and its linear layer)
//! - [`wav2vec2`], [`audio`]: the waveform families (`Wav2Vec2Model`, `HubertModel`,
//!   `Data2VecAudioModel`, and the base model of their `…ForCTC` / `…ForPreTraining`): name
//!   table, loading onto [`crate::modality::audio::waveform::WaveformEncoder`], the runnable
//!   model, export

pub mod audio;
pub mod bert;
pub mod checkpoint;
pub mod config;
pub mod download;
pub mod export;
pub mod hub;
pub mod linear_head;
pub mod loss;
pub mod model;
pub mod source;
pub mod spec;
pub mod spectrogram;
pub mod spectrogram_classifier;
pub mod text;
pub mod text_classifier;
pub mod vit;
pub mod vit_mae;
pub mod wav2vec2;

pub use model::Model;
pub use spec::{Kind, LoadedModel, ModelSpec, Normalize};

/// The name table for `spec`: ViT-MAE for MAEs, ViT otherwise.
pub fn table(spec: &ModelSpec) -> Vec<vit::Row> {
    match spec.kind {
        Kind::Mae { .. } => vit_mae::rows(spec),
        _ => vit::rows(spec),
    }
}
