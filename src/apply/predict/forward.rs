//! `pretext forward` on the classifiers a run saves for text and audio (image classifiers
//! run as Hugging Face ViT classifiers do): inputs named as in `transformers` — text
//! `input_ids` `[B, T]` (with an optional `attention_mask`, whose zeros become padding),
//! audio `input_values` `[B, S]` (waveforms at the model's rate; a spectrogram classifier
//! fits each row to its window and computes its log-mel input, a waveform classifier takes
//! each as `predict` prepares a window: fitted to it and, when the model normalises its
//! input, brought to zero mean and unit variance) — and optional `labels` `[B]` → `logits`
//! (and `loss`).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use super::classifier::{Loaded, Predictor};
use super::window_logits;
use crate::backbone::Mode;
use crate::error::{Error, Result};
use crate::hf;

/// The outputs of the classifier `c` on `inputs`.
pub fn forward(
    c: &Loaded,
    inputs: &BTreeMap<String, Tensor>,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let input = |name: &str, shape: &str| {
        inputs
            .get(name)
            .ok_or_else(|| Error::Usage(format!("inputs: missing tensor `{name}` {shape}")))
    };
    let logits = match &c.predictor {
        Predictor::Text { model, .. } => {
            let ids = input("input_ids", "[B, T]")?;
            if ids.dtype().is_float() {
                return Err(Error::Usage(format!(
                    "inputs: `input_ids` must be integer ids (int64 or uint32), found {:?}",
                    ids.dtype()
                )));
            }
            let mut ids = ids.to_dtype(DType::U32)?;
            if let Some(mask) = inputs.get("attention_mask") {
                let pad = model.encoder.config().pad_token_id;
                let pads = ids.ones_like()?.affine(0.0, f64::from(pad))?;
                ids = mask.ne(0u32)?.where_cond(&ids, &pads)?;
            }
            model.forward(&ids, &mut Mode::Eval)?
        }
        Predictor::Spectrogram { spec, .. } => {
            let window = spec.features.clip_len();
            audio_logits(c, input("input_values", "[B, S]")?, window, device)?
        }
        Predictor::Waveform { spec, .. } => {
            audio_logits(c, input("input_values", "[B, S]")?, spec.samples, device)?
        }
        _ => unreachable!("image classifiers run through hf::Model"),
    };
    let mut out = BTreeMap::new();
    if let Some(labels) = inputs.get("labels") {
        out.insert("loss".into(), hf::loss::classifier_loss(&logits, labels)?);
    }
    out.insert("logits".into(), logits);
    Ok(out)
}

/// Logits of waveform rows `[B, S]`, each fitted to `window` samples.
fn audio_logits(c: &Loaded, x: &Tensor, window: usize, device: &Device) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let rows: Vec<&[f32]> = x.iter().map(Vec::as_slice).collect();
    window_logits(&c.predictor, &rows, window, device)
}
