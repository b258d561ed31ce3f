//! Masked autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners").
//!
//! Follows `models_mae.py` step by step: `random_masking`, `forward_encoder` (visible
//! patches only), `forward_decoder` (mask tokens, unshuffle, light transformer),
//! `forward_loss` (MSE on removed patches, optionally on per-patch normalised pixels).
//! Masking is driven by an explicit `noise` tensor so tests can pin it.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::Rng;

use crate::backbone::{Encoder, EncoderConfig, Linear, Mode};
use crate::modality::image::encoder::sincos_with_cls;
use crate::modality::image::patch::patchify;
use crate::modality::image::{ImageEncoder, ImageGeometry};

#[derive(Debug, Clone)]
pub struct MaeConfig {
    pub geometry: ImageGeometry,
    pub encoder: EncoderConfig,
    /// The decoder is a backbone stack too (pre-norm; its final norm is MAE's `decoder_norm`).
    pub decoder: EncoderConfig,
    /// Fraction of patches removed, in (0, 1).
    pub mask_ratio: f64,
    /// Predict per-patch normalised pixels (MAE's `norm_pix_loss`).
    pub norm_pix_loss: bool,
}

/// What one forward pass gives.
pub struct MaeOutput {
    /// Scalar mean squared error over removed patches.
    pub loss: Tensor,
    /// `[B, L, p*p*C]` predicted patches (in normalised space when `norm_pix_loss`).
    pub pred: Tensor,
    /// `[B, L]`, 0 is keep, 1 is remove.
    pub mask: Tensor,
    /// `[B, L]` (u32): the permutation that restores the original patch order.
    pub ids_restore: Tensor,
}

pub struct Mae {
    pub vit: ImageEncoder,
    decoder: MaeDecoder,
    cfg: MaeConfig,
}

/// MAE's light decoder (under `decoder.`): the encoder's latent (class token + kept tokens)
/// embedded to the decoder's width, mask tokens for the removed patches, the original order
/// restored, fixed positions added, a pre-norm stack, and a linear prediction per patch.
/// Shared by the image MAE and Audio-MAE.
pub struct MaeDecoder {
    embed: Linear,
    mask_token: Tensor, // [1, 1, Dd]
    pos_embed: Tensor,  // [1, 1 + L, Dd], fixed
    blocks: Encoder,
    pred: Linear,
}

impl MaeDecoder {
    /// `pos_embed: [1, 1 + L, Dd]` (fixed); predictions have `out_dim` values per patch.
    pub fn new(
        encoder_dim: usize,
        cfg: &EncoderConfig,
        pos_embed: Tensor,
        out_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let dd = cfg.dim;
        Ok(Self {
            embed: Linear::new(encoder_dim, dd, true, vb.pp("embed"))?,
            mask_token: vb.get_with_hints(
                (1, 1, dd),
                "mask_token",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
            pos_embed,
            blocks: Encoder::new(cfg, vb.pp("blocks"))?,
            pred: Linear::new(dd, out_dim, true, vb.pp("pred"))?,
        })
    }

    /// The fixed position table `[1, 1 + L, Dd]`.
    pub fn pos_embed(&self) -> &Tensor {
        &self.pos_embed
    }

    /// latent `[B, 1 + keep, D]` → predicted patches `[B, L, out_dim]`.
    pub fn forward(
        &self,
        latent: &Tensor,
        ids_restore: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let x = self.embed.forward(latent)?;
        let (b, t, dd) = x.dims3()?;
        let l = ids_restore.dim(1)?;
        let mask_tokens = self.mask_token.broadcast_as((b, l + 1 - t, dd))?;
        let x_ = Tensor::cat(&[&x.narrow(1, 1, t - 1)?, &mask_tokens], 1)?.contiguous()?;
        let idx = ids_restore
            .unsqueeze(2)?
            .broadcast_as((b, l, dd))?
            .contiguous()?;
        let x_ = x_.gather(&idx, 1)?;
        let x = Tensor::cat(&[&x.narrow(1, 0, 1)?, &x_], 1)?;
        let x = x.broadcast_add(&self.pos_embed)?;
        let x = self.blocks.forward(&x, None, mode)?;
        let x = self.pred.forward(&x)?;
        x.narrow(1, 1, l)
    }
}

/// Keeps, per row, the `keep` tokens with the lowest noise.
/// `x: [B, L, D]`, `noise: [B, L]` → (`[B, keep, D]`, mask `[B, L]` (1 = removed),
/// ids_restore `[B, L]`).
pub fn random_masking(x: &Tensor, noise: &Tensor, keep: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, l, d) = x.dims3()?;
    if noise.dims() != [b, l] {
        candle_core::bail!("noise: expected shape [{b}, {l}], found {:?}", noise.dims());
    }
    let m = masking_from_noise(&noise.to_dtype(DType::F32)?.to_vec2::<f32>()?, keep);
    let dev = x.device();
    let ids_keep = Tensor::from_vec(m.ids_keep, (b, m.keep, 1), dev)?
        .broadcast_as((b, m.keep, d))?
        .contiguous()?;
    let x_masked = x.contiguous()?.gather(&ids_keep, 1)?;
    let mask = Tensor::from_vec(m.mask, (b, l), dev)?.to_dtype(x.dtype())?;
    let ids_restore = Tensor::from_vec(m.ids_restore, (b, l), dev)?;
    Ok((x_masked, mask, ids_restore))
}

/// Per-patch mean and standard deviation of `patches` (`[B, L, P]` → `[B, L, 1]` each),
/// with the unbiased variance and eps 1e-6 of MAE's `norm_pix_loss`.
pub fn patch_stats(patches: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = patches.dim(2)? as f64;
    let mean = patches.mean_keepdim(2)?;
    let var = (patches.broadcast_sub(&mean)?.sqr()?.sum_keepdim(2)? / (n - 1.0).max(1.0))?;
    Ok((mean, (var + 1e-6)?.sqrt()?))
}

/// Per-patch normalised `patches` (MAE's `norm_pix_loss` target).
pub fn normalize_patches(patches: &Tensor) -> Result<Tensor> {
    let (mean, std) = patch_stats(patches)?;
    patches.broadcast_sub(&mean)?.broadcast_div(&std)
}

/// Mean over removed patches of the per-patch mean squared error (`mask`: 1 = removed).
pub fn masked_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let per_patch = (pred - target)?.sqr()?.mean(2)?; // [B, L]
    (per_patch * mask)?.sum_all()? / mask.sum_all()?.to_scalar::<f32>()? as f64
}

/// Undoes [`normalize_patches`] with the statistics of `original` patches.
pub fn denormalize_patches(pred: &Tensor, original: &Tensor) -> Result<Tensor> {
    let (mean, std) = patch_stats(original)?;
    pred.broadcast_mul(&std)?.broadcast_add(&mean)
}

/// Per-sample shuffles derived from `noise` (`[B, L]`): ascending noise is kept.
struct Masking {
    ids_keep: Vec<u32>,    // [B, keep]
    ids_restore: Vec<u32>, // [B, L]
    mask: Vec<f32>,        // [B, L]
    keep: usize,
}

fn masking_from_noise(noise: &[Vec<f32>], keep: usize) -> Masking {
    let l = noise.first().map_or(0, |r| r.len());
    let mut m = Masking {
        ids_keep: Vec::with_capacity(noise.len() * keep),
        ids_restore: vec![0; noise.len() * l],
        mask: vec![1.0; noise.len() * l],
        keep,
    };
    for (b, row) in noise.iter().enumerate() {
        let mut ids: Vec<usize> = (0..l).collect();
        // Stable sort: ties (never seen with continuous noise) resolve by position.
        ids.sort_by(|&i, &j| row[i].total_cmp(&row[j]));
        for (rank, &id) in ids.iter().enumerate() {
            m.ids_restore[b * l + id] = rank as u32;
            if rank < keep {
                m.mask[b * l + id] = 0.0;
            }
        }
        m.ids_keep.extend(ids[..keep].iter().map(|&i| i as u32));
    }
    m
}

impl Mae {
    pub fn new(cfg: &MaeConfig, vb: VarBuilder) -> Result<Self> {
        if !(cfg.mask_ratio > 0.0 && cfg.mask_ratio < 1.0) {
            candle_core::bail!("mask_ratio must be in (0, 1), found {}", cfg.mask_ratio);
        }
        let vit = ImageEncoder::new(cfg.geometry, &cfg.encoder, vb.pp("vit"))?;
        let decoder = MaeDecoder::new(
            cfg.encoder.dim,
            &cfg.decoder,
            sincos_with_cls(cfg.decoder.dim, cfg.geometry.grid(), vb.device())?,
            cfg.geometry.patch_dim(),
            vb.pp("decoder"),
        )?;
        Ok(Self {
            vit,
            decoder,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &MaeConfig {
        &self.cfg
    }

    /// The decoder's fixed position table `[1, 1 + L, Dd]`.
    pub fn decoder_pos_embed(&self) -> &Tensor {
        self.decoder.pos_embed()
    }

    /// Replaces both fixed position tables with those a checkpoint stores (Hugging Face
    /// ViT-MAE keeps them as `position_embeddings` / `decoder_pos_embed`), so a loaded model
    /// uses exactly its own tables. `encoder: [1, 1 + L, D]`, `decoder: [1, 1 + L, Dd]`.
    pub fn set_fixed_positions(&mut self, encoder: Tensor, decoder: Tensor) -> Result<()> {
        if decoder.dims() != self.decoder.pos_embed.dims() {
            candle_core::bail!(
                "decoder position table: expected shape {:?}, found {:?}",
                self.decoder.pos_embed.dims(),
                decoder.dims()
            );
        }
        self.vit.set_fixed_positions(encoder)?;
        self.decoder.pos_embed = decoder;
        Ok(())
    }

    /// Number of patches an encoder pass keeps.
    pub fn len_keep(&self) -> usize {
        let l = self.cfg.geometry.num_patches();
        ((l as f64) * (1.0 - self.cfg.mask_ratio)) as usize
    }

    /// Uniform noise `[B, L]` for `random_masking`, drawn from `rng`.
    pub fn sample_noise(
        &self,
        batch: usize,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Tensor> {
        let l = self.cfg.geometry.num_patches();
        let v: Vec<f32> = (0..batch * l).map(|_| rng.gen::<f32>()).collect();
        Tensor::from_vec(v, (batch, l), device)
    }

    /// Keeps the `len_keep` patches with the lowest noise.
    /// `x: [B, L, D]`, `noise: [B, L]` → (`[B, keep, D]`, mask `[B, L]`, ids_restore `[B, L]`).
    pub fn random_masking(&self, x: &Tensor, noise: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        random_masking(x, noise, self.len_keep())
    }

    /// `[B, C, H, W]` → latent `[B, 1 + keep, D]`, mask, ids_restore.
    pub fn forward_encoder(
        &self,
        imgs: &Tensor,
        noise: &Tensor,
        mode: &mut Mode,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let x = self.vit.embed_patches(imgs)?;
        let (x, mask, ids_restore) = self.random_masking(&x, noise)?;
        Ok((self.vit.encode_tokens(&x, mode)?, mask, ids_restore))
    }

    /// latent `[B, 1 + keep, D]` → predicted patches `[B, L, p*p*C]`.
    pub fn forward_decoder(
        &self,
        latent: &Tensor,
        ids_restore: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        self.decoder.forward(latent, ids_restore, mode)
    }

    /// The reconstruction target: patches, per-patch normalised when `norm_pix_loss`.
    pub fn target(&self, imgs: &Tensor) -> Result<Tensor> {
        let target = patchify(imgs, self.cfg.geometry.patch)?;
        if !self.cfg.norm_pix_loss {
            return Ok(target);
        }
        normalize_patches(&target)
    }

    /// Mean over removed patches of the per-patch mean squared error.
    pub fn forward_loss(&self, imgs: &Tensor, pred: &Tensor, mask: &Tensor) -> Result<Tensor> {
        masked_mse(pred, &self.target(imgs)?, mask)
    }

    pub fn forward(&self, imgs: &Tensor, noise: &Tensor, mode: &mut Mode) -> Result<MaeOutput> {
        let (latent, mask, ids_restore) = self.forward_encoder(imgs, noise, mode)?;
        let pred = self.forward_decoder(&latent, &ids_restore, mode)?;
        let loss = self.forward_loss(imgs, &pred, &mask)?;
        Ok(MaeOutput {
            loss,
            pred,
            mask,
            ids_restore,
        })
    }

    /// Predicted patches mapped back to pixel space (undoing the per-patch normalisation
    /// with the original's statistics, as MAE's visualisation does): `[B, L, p*p*C]`.
    pub fn pred_to_pixels(&self, imgs: &Tensor, pred: &Tensor) -> Result<Tensor> {
        if !self.cfg.norm_pix_loss {
            return Ok(pred.clone());
        }
        denormalize_patches(pred, &patchify(imgs, self.cfg.geometry.patch)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_lowest_noise_and_restores_order() {
        let noise = vec![vec![0.9, 0.1, 0.5, 0.3]];
        let m = masking_from_noise(&noise, 2);
        assert_eq!(m.ids_keep, vec![1, 3]);
        assert_eq!(m.mask, vec![1.0, 0.0, 1.0, 0.0]);
        // ids_shuffle = [1, 3, 2, 0]; ids_restore = argsort(ids_shuffle) = [3, 0, 2, 1]
        assert_eq!(m.ids_restore, vec![3, 0, 2, 1]);
    }
}
