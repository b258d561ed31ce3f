//! Using a model once it exists: `forward` (raw inputs to outputs, as `transformers`
//! names them), `embed` (pooled embeddings), `predict` (class names and probabilities),
//! `eval` (a classifier's accuracy on labelled data) and `export` (Hugging Face files). Each takes
//! any model source ([`crate::run::source`]) and the device the verb was given.

pub mod embed;
pub mod eval;
pub mod eval_data;
pub mod predict;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::hf;
use crate::run::source::{self, AnyModel};

pub use embed::{embed_audio, embed_images, embed_text, EmbedInputs};

/// What `export` wrote.
pub struct Exported {
    pub files: Vec<PathBuf>,
    /// The `transformers` class (or pretext layout) the files load as.
    pub class: String,
    /// Anything the user must know to load it (e.g. `add_pooling_layer=False`).
    pub note: Option<String>,
}

/// Writes the model `src` names as Hugging Face files into `out`.
pub fn export(src: &str, out: &Path, device: &Device) -> Result<Exported> {
    let src = &classifier_of_run(src)?;
    if let Some(saved) = predict::classifier::saved_spec(Path::new(src))? {
        if saved.kind == crate::modality::text::classifier::TextClassifierSpec::KIND {
            let spec = hf::text_classifier::read_spec(&saved.spec_path, saved.json)?;
            let tokenizer = predict::classifier::tokenizer_file(&saved.dir)?;
            let w = hf::text_classifier::export(&saved.dir, &spec, &tokenizer, out)?;
            return Ok(Exported {
                files: w.files,
                class: w.class,
                note: w.note,
            });
        }
        if saved.kind == crate::modality::audio::classifier::AudioClassifierSpec::KIND {
            let spec: crate::modality::audio::classifier::AudioClassifierSpec =
                serde_json::from_value(saved.json)
                    .map_err(|e| Error::data(&saved.spec_path, e.to_string()))?;
            return Ok(Exported {
                files: hf::spectrogram_classifier::export(&saved.dir, &spec, out)?,
                class: format!(
                    "pretext Audio-MAE encoder + {} ({} pooling), layout in docs/audio-mae-export.md",
                    hf::text_classifier::HEAD_FILE,
                    match spec.pooling {
                        crate::backbone::Pooling::Cls => "cls",
                        crate::backbone::Pooling::Mean => "mean",
                    }
                ),
                note: None,
            });
        }
    }
    Ok(match source::load_any(src, device)? {
        AnyModel::Image(m) => Exported {
            files: hf::export::write_hf(&m, out)?,
            class: m.spec.hf_class().into(),
            note: hf::export::notes(&m),
        },
        AnyModel::Audio(m) => Exported {
            files: hf::audio::write_hf(&m, out)?,
            class: m.spec.hf_class().into(),
            note: hf::audio::notes(&m.spec),
        },
        AnyModel::Spectrogram(m) => Exported {
            files: hf::spectrogram::write(&m, out)?,
            class: "pretext Audio-MAE encoder, layout in docs/audio-mae-export.md".into(),
            note: None,
        },
        AnyModel::Text(m) => Exported {
            files: hf::text::write_hf(&m, out)?,
            class: m.spec.hf_class().into(),
            note: hf::text::notes(&m.spec),
        },
    })
}

/// A run that pretrained nothing (downstream heads on a waveform `model.source`) exports
/// its best fine-tuned classifier, as `predict` picks it; any other `src` is itself.
fn classifier_of_run(src: &str) -> Result<String> {
    let path = Path::new(src);
    if !crate::run::dir::is_run_dir(path)
        || crate::train::checkpoint::latest(&path.join("checkpoints"))?.is_some()
    {
        return Ok(src.to_string());
    }
    Ok(predict::classifier::best_in_run(path)?
        .display()
        .to_string())
}

/// Runs the model `model` names on the tensors of the safetensors file `inputs` and writes
/// its outputs to `out`.
pub fn forward(model: &str, inputs: &Path, out: &Path, device: &Device) -> Result<()> {
    let tensors = crate::tensor_io::read(inputs, device)?.tensors;
    for (name, t) in &tensors {
        if t.dims().contains(&0) {
            return Err(Error::data(
                inputs,
                format!(
                    "`{name}` has shape {:?}: a batch needs at least one example, and an example at least one value",
                    t.dims()
                ),
            ));
        }
    }
    let outputs = if let Some(c) = predict::classifier::load_saved(Path::new(model), device)? {
        predict::forward::forward(&c, &tensors, device)
    } else {
        match source::load_any(model, device)? {
            AnyModel::Image(m) => hf::Model::build(&m, device)?.forward(&tensors),
            AnyModel::Text(m) => hf::text::TextModel::build(&m, device)?.forward(&tensors),
            AnyModel::Audio(m) => hf::audio::AudioModel::build(&m, device)?.forward(&tensors),
            AnyModel::Spectrogram(m) => {
                hf::spectrogram::SpectrogramModel::build(&m, device)?.forward(&tensors)
            }
        }
    };
    // A model that cannot take these inputs is an error in the inputs file.
    let outputs = outputs.map_err(|e| match e {
        Error::Usage(msg) => Error::data(inputs, msg),
        Error::Candle(c) => Error::data(inputs, c.to_string()),
        e => e,
    })?;
    let list: Vec<(String, Tensor)> = outputs.into_iter().collect();
    for (name, t) in &list {
        if t.dtype().is_float() {
            let values = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(Error::data(
                    inputs,
                    format!("the model's output `{name}` has NaN or infinite values; nothing was written"),
                ));
            }
        }
    }
    crate::tensor_io::write(out, &list, Default::default())
}
