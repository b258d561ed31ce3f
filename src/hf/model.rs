//! A [`LoadedModel`] built into something that runs, with inputs and outputs named as in
//! `transformers` (`pixel_values`, `noise`, `labels` → `last_hidden_state`,
//! `pooler_output`, `logits`, `loss`, `mask`, `ids_restore`).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::spec::{Kind, LoadedModel};
use crate::backbone::{pool, Pooling, Tokens};
use crate::backbone::{Linear, Mode};
use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::modality::image::{ImageClassifier, ImageEncoder, Positions};
use crate::objective::mae::{ImageMae, ImageMaeConfig};
use crate::objective::masking::Masking;

/// Seed of the masking noise drawn when `forward` is given none.
pub const DEFAULT_NOISE_SEED: u64 = 0;

pub enum Model {
    /// `ViTModel`; the pooler is `tanh(dense(h[:, 0]))`.
    Encoder {
        vit: ImageEncoder,
        pooler: Option<Linear>,
    },
    Classifier(ImageClassifier),
    Mae(Box<ImageMae>),
}

impl Model {
    /// Builds the model around the loaded weights (frozen: no gradient graph is recorded).
    pub fn build(m: &LoadedModel, device: &Device) -> Result<Self> {
        let tensors: std::collections::HashMap<String, Tensor> = m
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(device)?.detach())))
            .collect::<Result<_>>()?;
        let table = |name: &str| -> Result<Tensor> {
            tensors.get(name).cloned().ok_or_else(|| {
                Error::data(
                    &m.origin,
                    format!("no position table `{name}` in the weights"),
                )
            })
        };
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let s = &m.spec;
        // A fixed table comes from the weights too, so a checkpoint's own table is used.
        let vit = || -> Result<ImageEncoder> {
            let mut vit =
                ImageEncoder::with_positions(s.geometry, &s.encoder, s.positions, vb.pp("vit"))?;
            if s.positions == Positions::Sincos {
                vit.set_fixed_positions(table("vit.pos_embed")?)?;
            }
            Ok(vit)
        };
        Ok(match &s.kind {
            Kind::Encoder { pooler } => {
                let vit = vit()?;
                let pooler = match pooler {
                    Some(p) => Some(Linear::new(s.encoder.dim, *p, true, vb.pp("pooler.dense"))?),
                    None => None,
                };
                Model::Encoder { vit, pooler }
            }
            Kind::Classifier {
                num_labels,
                pooling,
            } => Model::Classifier(ImageClassifier::on(
                vit()?,
                *num_labels,
                *pooling,
                vb.clone(),
            )?),
            Kind::Mae {
                decoder,
                mask_ratio,
                norm_pix_loss,
            } => {
                let cfg = ImageMaeConfig {
                    geometry: s.geometry,
                    encoder: s.encoder.clone(),
                    decoder: decoder.clone(),
                    mask_ratio: *mask_ratio,
                    // Uniform noise, as `ViTMAEForPreTraining` draws it.
                    masking: Masking::Random,
                    norm_pix_loss: *norm_pix_loss,
                };
                let mut mae = ImageMae::new(&cfg, vb)?;
                mae.set_fixed_positions(table("vit.pos_embed")?, table("decoder.pos_embed")?)?;
                Model::Mae(Box::new(mae))
            }
        })
    }

    /// The image encoder.
    pub fn vit(&self) -> &ImageEncoder {
        match self {
            Model::Encoder { vit, .. } => vit,
            Model::Classifier(c) => &c.encoder,
            Model::Mae(m) => &m.encoder,
        }
    }

    /// Final hidden states with every patch visible: `[B, C, H, W]` → `[B, 1 + L, D]`.
    pub fn hidden(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(self.vit().forward(pixel_values, &mut Mode::Eval)?)
    }

    /// Pooled embeddings `[B, D]`: the class token's final hidden state, or the mean of the
    /// patch tokens'.
    pub fn embed(&self, pixel_values: &Tensor, pooling: Pooling) -> Result<Tensor> {
        let h = self.hidden(pixel_values)?;
        Ok(pool(&h, pooling, Tokens::ClsThenPatches)?)
    }

    /// Runs the model on `inputs` (`pixel_values`, optional `noise` for MAE, optional
    /// `labels` for classifiers), returning the outputs `transformers` names. An MAE given no
    /// `noise` draws it with seed [`DEFAULT_NOISE_SEED`] and returns it as `noise`.
    pub fn forward(&self, inputs: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
        let input = |name: &str| inputs.get(name);
        let pixels = input("pixel_values").ok_or_else(|| {
            Error::Usage("inputs: missing tensor `pixel_values` [B, C, H, W]".into())
        })?;
        if !pixels.dtype().is_float() {
            return Err(Error::Usage(format!(
                "inputs: `pixel_values` must be floating point, found {:?}",
                pixels.dtype()
            )));
        }
        let pixels = pixels.to_dtype(DType::F32)?;
        let mut out = BTreeMap::new();
        match self {
            Model::Encoder { vit, pooler } => {
                let h = vit.forward(&pixels, &mut Mode::Eval)?;
                if let Some(p) = pooler {
                    let cls = h.narrow(1, 0, 1)?.squeeze(1)?;
                    out.insert("pooler_output".into(), p.forward(&cls)?.tanh()?);
                }
                out.insert("last_hidden_state".into(), h);
            }
            Model::Classifier(c) => {
                let h = c.encoder.forward(&pixels, &mut Mode::Eval)?;
                let logits = c
                    .classifier
                    .forward(&pool(&h, c.pooling, Tokens::ClsThenPatches)?)?;
                if let Some(labels) = input("labels") {
                    out.insert(
                        "loss".into(),
                        super::loss::classifier_loss(&logits, labels)?,
                    );
                }
                out.insert("logits".into(), logits);
                out.insert("last_hidden_state".into(), h);
            }
            Model::Mae(mae) => {
                let noise = match input("noise") {
                    Some(n) => n.to_dtype(DType::F32)?,
                    None => {
                        let draws = Draws::fixed(DEFAULT_NOISE_SEED, pixels.dim(0)?);
                        let n = mae.sample_noise(&draws, pixels.device())?;
                        out.insert("noise".into(), n.clone());
                        n
                    }
                };
                let (latent, m) = mae.forward_encoder(&pixels, &noise, &mut Mode::Eval)?;
                let pred = mae.forward_decoder(&latent, &m.ids_restore, None, &mut Mode::Eval)?;
                let loss = mae.forward_loss(&pixels, &pred, &m.loss_mask)?;
                let (mask, ids_restore) = (m.mask, m.ids_restore);
                out.insert("last_hidden_state".into(), latent);
                out.insert("logits".into(), pred);
                out.insert("loss".into(), loss);
                out.insert("mask".into(), mask.to_dtype(DType::F32)?);
                out.insert("ids_restore".into(), ids_restore.to_dtype(DType::I64)?);
            }
        }
        Ok(out)
    }
}
