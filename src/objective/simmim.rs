//! SimMIM (Xie et al. 2022, "SimMIM: A Simple Framework for Masked Image Modeling";
//! `models/simmim.py` of microsoft/SimMIM, ViT variant).
//!
//! The encoder sees every patch; the embeddings of removed patches are replaced by a learned
//! `mask_token` *before* the position embeddings are added (so the token carries its
//! position), a linear head maps each encoder output token to its patch's `p*p*C` pixels
//! (SimMIM's 1x1 convolution + pixel shuffle, per token), and the loss is L1 on the removed
//! patches only, averaged over their pixels. The backbone is the shared [`ImageEncoder`]
//! (weights under `vit.`, as for MAE), so downstream heads load it the same way. The mask is
//! an explicit `[B, L]` tensor (see [`super::masking`]) so tests can pin it; as an
//! [`Objective`], SimMIM draws it with its own [`GridMasker`].

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::mae::{denormalize_patches, normalize_patches};
use super::masking::{GridMasker, Masking};
use super::{Objective, Pass};
use crate::backbone::{EncoderConfig, Linear, Mode};
use crate::draws::Draws;
use crate::modality::image::patch::patchify;
use crate::modality::image::{ImageEncoder, ImageGeometry};

#[derive(Debug, Clone)]
pub struct SimMimConfig {
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    /// Fraction of patches removed, in (0, 1).
    pub mask_ratio: f64,
    /// `random` or `block` (SimMIM's default for ViT).
    pub masking: Masking,
    /// Predict per-patch normalised pixels (SimMIM's `NORM_TARGET`, MAE's `norm_pix_loss`);
    /// the paper's default is off (targets are the normalised image).
    pub norm_pix_loss: bool,
}

pub struct SimMimOutput {
    /// Scalar mean absolute error over the pixels of removed patches.
    pub loss: Tensor,
    /// `[B, L, p*p*C]` predicted patches, (p, q, c) order as [`patchify`].
    pub pred: Tensor,
    /// `[B, L]`, 0 is keep, 1 is remove.
    pub mask: Tensor,
}

pub struct SimMim {
    pub vit: ImageEncoder,
    mask_token: Tensor, // [1, 1, D]
    pred: Linear,       // D -> p*p*C
    masker: GridMasker,
    cfg: SimMimConfig,
}

impl SimMim {
    pub fn new(cfg: &SimMimConfig, vb: VarBuilder) -> Result<Self> {
        if !(cfg.mask_ratio > 0.0 && cfg.mask_ratio < 1.0) {
            candle_core::bail!("mask_ratio must be in (0, 1), found {}", cfg.mask_ratio);
        }
        let vit = ImageEncoder::new(cfg.geometry, &cfg.encoder, vb.pp("vit"))?;
        let d = cfg.encoder.dim;
        Ok(Self {
            vit,
            // SimMIM: trunc_normal_(std=.02).
            mask_token: crate::backbone::learned(&vb, (1, 1, d), "mask_token")?,
            pred: Linear::new(
                d,
                cfg.geometry.patch_dim(),
                true,
                vb.pp("decoder").pp("pred"),
            )?,
            masker: GridMasker::image(cfg.geometry.grid(), cfg.mask_ratio, cfg.masking)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &SimMimConfig {
        &self.cfg
    }

    /// Encoder hidden states with removed patches replaced by the mask token:
    /// `imgs [B, C, H, W]`, `mask [B, L]` → `[B, 1 + L, D]`.
    pub fn forward_encoder(&self, imgs: &Tensor, mask: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (b, c, h, w) = imgs.dims4()?;
        let g = self.cfg.geometry;
        let l = g.num_patches();
        if c != g.channels || h != g.size || w != g.size {
            candle_core::bail!(
                "simmim: expected images [B, {}, {}, {}], found {:?}",
                g.channels,
                g.size,
                g.size,
                imgs.dims()
            );
        }
        if mask.dims() != [b, l] {
            candle_core::bail!(
                "simmim: mask: expected shape [{b}, {l}], found {:?}",
                mask.dims()
            );
        }
        let x = self.vit.patch_embed.forward(imgs)?; // [B, L, D]
        let w = mask.to_dtype(x.dtype())?.unsqueeze(2)?; // [B, L, 1]
        let x = (x.broadcast_mul(&(1.0 - &w)?)? + w.broadcast_mul(&self.mask_token)?)?;
        let x = x.broadcast_add(&self.vit.pos_embed.narrow(1, 1, l)?)?;
        self.vit.encode_tokens(&x, None, mode)
    }

    /// The reconstruction target `[B, L, p*p*C]`: patches, per-patch normalised when
    /// `norm_pix_loss`.
    pub fn target(&self, imgs: &Tensor) -> Result<Tensor> {
        let target = patchify(imgs, self.cfg.geometry.patch)?;
        if !self.cfg.norm_pix_loss {
            return Ok(target);
        }
        normalize_patches(&target)
    }

    /// Mean absolute error over the pixels of removed patches.
    pub fn forward_loss(&self, imgs: &Tensor, pred: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let target = self.target(imgs)?;
        let per_patch = (pred - target)?.abs()?.sum(2)?; // [B, L]
        let mask = mask.to_dtype(per_patch.dtype())?;
        let removed = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        (per_patch * mask)?.sum_all()? / (removed * self.cfg.geometry.patch_dim() as f64).max(1.0)
    }

    pub fn forward(&self, imgs: &Tensor, mask: &Tensor, mode: &mut Mode) -> Result<SimMimOutput> {
        let hidden = self.forward_encoder(imgs, mask, mode)?;
        let l = self.cfg.geometry.num_patches();
        let pred = self.pred.forward(&hidden.narrow(1, 1, l)?)?;
        let loss = self.forward_loss(imgs, &pred, mask)?;
        Ok(SimMimOutput {
            loss,
            pred,
            mask: mask.clone(),
        })
    }

    /// Predictions mapped back to the normalised image (undoing per-patch normalisation
    /// with the original's statistics): `[B, L, p*p*C]`.
    pub fn pred_to_pixels(&self, imgs: &Tensor, pred: &Tensor) -> Result<Tensor> {
        if !self.cfg.norm_pix_loss {
            return Ok(pred.clone());
        }
        denormalize_patches(pred, &patchify(imgs, self.cfg.geometry.patch)?)
    }
}

/// SimMIM over images `[B, C, H, W]`.
impl Objective for SimMim {
    type Batch = Tensor;

    fn encoder_prefix(&self) -> &'static str {
        "vit."
    }

    fn loss(&self, imgs: &Tensor, draws: &Draws) -> crate::Result<Tensor> {
        let mask = self.masker.mask(draws, imgs.device())?;
        Ok(self.forward(imgs, &mask, &mut Mode::train(*draws))?.loss)
    }

    fn evaluate(&self, imgs: &Tensor, draws: &Draws) -> crate::Result<Pass> {
        let mask = self.masker.mask(draws, imgs.device())?;
        let out = self.forward(imgs, &mask, &mut Mode::Eval)?;
        let patches = self.pred_to_pixels(imgs, &out.pred)?;
        Ok(Pass::reconstructed(out.loss, patches, out.mask))
    }
}
