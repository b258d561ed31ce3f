//! Masked autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"),
//! over any patch grid: images (ViT-MAE) and log-mel spectrograms (Audio-MAE, Huang et al.
//! 2022, "Masked Autoencoders that Listen") are the same algorithm on a different
//! [`PatchEncoder`].
//!
//! Follows `models_mae.py` step by step: `random_masking`, `forward_encoder` (visible
//! patches only), `forward_decoder` (mask tokens, unshuffle, light transformer),
//! `forward_loss` (MSE on removed patches, optionally on per-patch normalised values).
//! Masking is driven by an explicit `noise` tensor so tests can pin it; the objective's
//! [`GridMasker`] draws it (random, block, or structured time / frequency masking, expressed
//! as noise so the same gather-based encoder path serves every kind).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::masking::{GridMasker, Masking};
use super::patch::PatchEncoder;
use super::{Objective, Pass};
use crate::backbone::{Encoder, EncoderConfig, Linear, Mode};
use crate::draws::Draws;
use crate::modality::audio::encoder::{SpectrogramEncoder, SpectrogramGeometry};
use crate::modality::image::{ImageEncoder, ImageGeometry};

#[derive(Debug, Clone)]
pub struct MaeConfig<G> {
    /// The input and patch sizes of the encoder.
    pub geometry: G,
    pub encoder: EncoderConfig,
    /// The decoder is a backbone stack too (pre-norm; its final norm is MAE's `decoder_norm`).
    pub decoder: EncoderConfig,
    /// Fraction of patches removed, in (0, 1).
    pub mask_ratio: f64,
    /// Which patches are removed (the kinds the grid takes, see [`PatchEncoder::masker`]).
    pub masking: Masking,
    /// Predict per-patch normalised values (MAE's `norm_pix_loss`).
    pub norm_pix_loss: bool,
}

/// ViT-MAE: the image encoder under `vit.`, the decoder under `decoder.`.
pub type ImageMae = Mae<ImageEncoder>;
pub type ImageMaeConfig = MaeConfig<ImageGeometry>;
/// Audio-MAE: the spectrogram encoder under `audio.`, the decoder under `decoder.`.
pub type AudioMae = Mae<SpectrogramEncoder>;
pub type AudioMaeConfig = MaeConfig<SpectrogramGeometry>;

/// What one forward pass gives.
pub struct MaeOutput {
    /// Scalar mean squared error over removed patches.
    pub loss: Tensor,
    /// `[B, L, P]` predicted patches (in normalised space when `norm_pix_loss`).
    pub pred: Tensor,
    /// `[B, L]`, 0 is keep, 1 is remove.
    pub mask: Tensor,
    /// `[B, L]` (u32): the permutation that restores the original patch order.
    pub ids_restore: Tensor,
}

pub struct Mae<E: PatchEncoder> {
    /// Parameters under `E::PREFIX` (`vit.`, `audio.`).
    pub encoder: E,
    decoder: MaeDecoder,
    masker: GridMasker,
    cfg: MaeConfig<E::Geometry>,
}

/// MAE's light decoder (under `decoder.`): the encoder's latent (class token + kept tokens)
/// embedded to the decoder's width, mask tokens for the removed patches, the original order
/// restored, fixed positions added, a pre-norm stack, and a linear prediction per patch.
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
            mask_token: crate::backbone::learned(&vb, (1, 1, dd), "mask_token")?,
            pos_embed,
            blocks: Encoder::new(cfg, vb.pp("blocks"))?,
            pred: Linear::new(dd, out_dim, true, vb.pp("pred"))?,
        })
    }

    /// The fixed position table `[1, 1 + L, Dd]`.
    pub fn pos_embed(&self) -> &Tensor {
        &self.pos_embed
    }

    /// latent `[B, 1 + keep, D]` → predicted patches `[B, L, out_dim]`; `valid: [B, L]`
    /// (1 = the patch holds input) keeps attention off padded patches.
    pub fn forward(
        &self,
        latent: &Tensor,
        ids_restore: &Tensor,
        valid: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let x = self.embed.forward(latent)?;
        let x = match super::unshuffle_op::unshuffle(
            &x,
            &self.mask_token,
            ids_restore,
            &self.pos_embed,
        )? {
            Some(x) => x,
            None => unshuffle_composed(&x, &self.mask_token, ids_restore, &self.pos_embed)?,
        };
        let valid = valid.map(crate::backbone::with_cls).transpose()?;
        let x = self.blocks.forward(&x, valid.as_ref(), mode)?;
        let x = self.pred.forward(&x)?;
        x.narrow(1, 1, ids_restore.dim(1)?)
    }
}

/// MAE's decoder input from candle ops (see `unshuffle_op.rs`, its CPU op): mask tokens
/// appended to the kept tokens, the patch order restored by a gather, the class token back
/// in front, positions added. `x: [B, 1 + keep, D]` → `[B, 1 + L, D]`.
pub(super) fn unshuffle_composed(
    x: &Tensor,
    mask_token: &Tensor,
    ids_restore: &Tensor,
    pos_embed: &Tensor,
) -> Result<Tensor> {
    let (b, t, dd) = x.dims3()?;
    let l = ids_restore.dim(1)?;
    let mask_tokens = mask_token.broadcast_as((b, l + 1 - t, dd))?;
    let x_ = Tensor::cat(&[&x.narrow(1, 1, t - 1)?, &mask_tokens], 1)?.contiguous()?;
    let idx = ids_restore
        .unsqueeze(2)?
        .broadcast_as((b, l, dd))?
        .contiguous()?;
    let x_ = x_.gather(&idx, 1)?;
    let x = Tensor::cat(&[&x.narrow(1, 0, 1)?, &x_], 1)?;
    x.broadcast_add(pos_embed)
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

/// Noise added to padded patches: above any masker's (`< 2`), so they are removed first.
const PADDING_NOISE: f64 = 4.0;

/// [`random_masking`] of a batch that may hold padding.
pub struct Masked {
    /// `[B, keep, D]`: the kept tokens.
    pub kept: Tensor,
    /// `[B, keep]`, 1 where a kept token holds input (`None`: no padding).
    pub kept_valid: Option<Tensor>,
    /// `[B, L]`, 1 = removed.
    pub mask: Tensor,
    /// `[B, L]` (u32): the permutation that restores the original patch order.
    pub ids_restore: Tensor,
    /// `[B, L]`: where the loss is taken, the removed patches that hold input.
    pub loss_mask: Tensor,
}

/// Keeps the `keep` tokens of `x: [B, L, D]` with the lowest `noise`, padded patches
/// (`valid: [B, L]`, 0 = padding) last: they are removed before any patch that holds input
/// is, and an example with fewer than `keep` such patches keeps some padding, which
/// `kept_valid` marks for attention to leave out.
pub fn padded_masking(
    x: &Tensor,
    noise: &Tensor,
    keep: usize,
    valid: Option<&Tensor>,
) -> Result<Masked> {
    let Some(valid) = valid else {
        let (kept, mask, ids_restore) = random_masking(x, noise, keep)?;
        return Ok(Masked {
            kept,
            kept_valid: None,
            loss_mask: mask.clone(),
            mask,
            ids_restore,
        });
    };
    let valid = valid.to_dtype(DType::F32)?;
    let noise = (noise.to_dtype(DType::F32)? + ((1.0 - &valid)? * PADDING_NOISE)?)?;
    let (kept, mask, ids_restore) = random_masking(x, &noise, keep)?;
    let (kept_valid, _, _) = random_masking(&valid.unsqueeze(2)?, &noise, keep)?;
    let loss_mask = (&mask * valid.to_dtype(mask.dtype())?)?;
    Ok(Masked {
        kept,
        kept_valid: Some(kept_valid.squeeze(2)?),
        mask,
        ids_restore,
        loss_mask,
    })
}

/// The student side of MAE and data2vec: `x`'s patches embedded, the `keep` with the
/// lowest `noise` kept (padding, `valid: [B, L]`, removed first: [`padded_masking`]) and
/// encoded with the class token: latent `[B, 1 + keep, D]` and the masking.
pub fn encode_kept<E: PatchEncoder>(
    encoder: &E,
    x: &Tensor,
    valid: Option<&Tensor>,
    noise: &Tensor,
    keep: usize,
    mode: &mut Mode,
) -> Result<(Tensor, Masked)> {
    let tokens = encoder.embed_patches(x)?;
    let m = padded_masking(&tokens, noise, keep, valid)?;
    let latent = encoder.encode_tokens(&m.kept, m.kept_valid.as_ref(), mode)?;
    Ok((latent, m))
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

/// Mean over removed patches of the per-patch mean squared error (`mask`: 1 = removed; a
/// batch with none gives 0).
pub fn masked_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let per_patch = (pred - target)?.sqr()?.mean(2)?; // [B, L]
    let count = mask.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    (per_patch * mask)?.sum_all()? / count.max(1.0) as f64
}

/// Undoes [`normalize_patches`] with the statistics of `original` patches.
pub fn denormalize_patches(pred: &Tensor, original: &Tensor) -> Result<Tensor> {
    let (mean, std) = patch_stats(original)?;
    pred.broadcast_mul(&std)?.broadcast_add(&mean)
}

/// Per-sample shuffles derived from `noise` (`[B, L]`): ascending noise is kept.
struct Shuffle {
    ids_keep: Vec<u32>,    // [B, keep]
    ids_restore: Vec<u32>, // [B, L]
    mask: Vec<f32>,        // [B, L]
    keep: usize,
}

fn masking_from_noise(noise: &[Vec<f32>], keep: usize) -> Shuffle {
    let l = noise.first().map_or(0, |r| r.len());
    let mut m = Shuffle {
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

impl<E: PatchEncoder> Mae<E> {
    /// Parameters: the encoder under `E::PREFIX`, then `decoder.*`.
    pub fn new(cfg: &MaeConfig<E::Geometry>, vb: VarBuilder) -> Result<Self> {
        if !(cfg.mask_ratio > 0.0 && cfg.mask_ratio < 1.0) {
            candle_core::bail!("mask_ratio must be in (0, 1), found {}", cfg.mask_ratio);
        }
        let path = E::PREFIX.trim_end_matches('.');
        let encoder = E::build(cfg.geometry, &cfg.encoder, vb.pp(path))?;
        let decoder = MaeDecoder::new(
            cfg.encoder.dim,
            &cfg.decoder,
            encoder.fixed_positions(cfg.decoder.dim, vb.device())?,
            encoder.patch_dim(),
            vb.pp("decoder"),
        )?;
        Ok(Self {
            masker: encoder.masker(cfg.mask_ratio, cfg.masking)?,
            encoder,
            decoder,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &MaeConfig<E::Geometry> {
        &self.cfg
    }

    /// The masker that draws the noise of [`Mae::sample_noise`].
    pub fn masker(&self) -> &GridMasker {
        &self.masker
    }

    /// The decoder's fixed position table `[1, 1 + L, Dd]`.
    pub fn decoder_pos_embed(&self) -> &Tensor {
        self.decoder.pos_embed()
    }

    /// Number of patches an encoder pass keeps.
    pub fn len_keep(&self) -> usize {
        self.masker.len_keep()
    }

    /// Masking noise `[B, L]` for `random_masking`, drawn from the rows' mask streams by the objective's
    /// masker (uniform for random masking of an image grid).
    pub fn sample_noise(&self, draws: &Draws, device: &Device) -> Result<Tensor> {
        self.masker.noise(draws, device)
    }

    /// Keeps the `len_keep` patches with the lowest noise.
    /// `x: [B, L, D]`, `noise: [B, L]` → (`[B, keep, D]`, mask `[B, L]`, ids_restore `[B, L]`).
    pub fn random_masking(&self, x: &Tensor, noise: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        random_masking(x, noise, self.len_keep())
    }

    /// input → latent `[B, 1 + keep, D]` and the masking (padded patches removed first).
    pub fn forward_encoder(
        &self,
        x: &E::Input,
        noise: &Tensor,
        mode: &mut Mode,
    ) -> Result<(Tensor, Masked)> {
        let valid = self.encoder.patch_mask(x)?;
        self.encode_masked(E::values(x), valid.as_ref(), noise, mode)
    }

    /// [`Self::forward_encoder`] with the patches' padding mask `valid: [B, L]` given.
    fn encode_masked(
        &self,
        x: &Tensor,
        valid: Option<&Tensor>,
        noise: &Tensor,
        mode: &mut Mode,
    ) -> Result<(Tensor, Masked)> {
        encode_kept(&self.encoder, x, valid, noise, self.len_keep(), mode)
    }

    /// latent `[B, 1 + keep, D]` → predicted patches `[B, L, P]`; `valid: [B, L]` (1 = the
    /// patch holds input).
    pub fn forward_decoder(
        &self,
        latent: &Tensor,
        ids_restore: &Tensor,
        valid: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        self.decoder.forward(latent, ids_restore, valid, mode)
    }

    /// The reconstruction target `[B, L, P]`: patches, per-patch normalised when
    /// `norm_pix_loss`.
    pub fn target(&self, x: &Tensor) -> Result<Tensor> {
        let target = self.encoder.patchify(x)?;
        if !self.cfg.norm_pix_loss {
            return Ok(target);
        }
        normalize_patches(&target)
    }

    /// Mean over `mask`ed patches (1 = in the loss) of the per-patch mean squared error.
    pub fn forward_loss(&self, x: &Tensor, pred: &Tensor, mask: &Tensor) -> Result<Tensor> {
        masked_mse(pred, &self.target(x)?, mask)
    }

    /// The loss is taken at the removed patches that hold input.
    pub fn forward(&self, x: &E::Input, noise: &Tensor, mode: &mut Mode) -> Result<MaeOutput> {
        let valid = self.encoder.patch_mask(x)?;
        let (latent, m) = self.encode_masked(E::values(x), valid.as_ref(), noise, mode)?;
        let pred = self.forward_decoder(&latent, &m.ids_restore, valid.as_ref(), mode)?;
        let loss = self.forward_loss(E::values(x), &pred, &m.loss_mask)?;
        Ok(MaeOutput {
            loss,
            pred,
            mask: m.mask,
            ids_restore: m.ids_restore,
        })
    }

    /// Predicted patches mapped back to the input's space (undoing the per-patch
    /// normalisation with the original's statistics, as MAE's visualisation does): image
    /// pixels, or normalised log-mel values, `[B, L, P]`.
    pub fn pred_to_pixels(&self, x: &Tensor, pred: &Tensor) -> Result<Tensor> {
        if !self.cfg.norm_pix_loss {
            return Ok(pred.clone());
        }
        denormalize_patches(pred, &self.encoder.patchify(x)?)
    }
}

impl ImageMae {
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
        self.encoder.set_fixed_positions(encoder)?;
        self.decoder.pos_embed = decoder;
        Ok(())
    }
}

/// MAE over images or spectrograms: a batch is the encoder's input.
impl<E: PatchEncoder> Objective for Mae<E> {
    type Batch = E::Input;

    fn encoder_prefix(&self) -> &'static str {
        E::PREFIX
    }

    fn loss(&self, x: &E::Input, draws: &Draws) -> crate::Result<Tensor> {
        let noise = self.sample_noise(draws, E::values(x).device())?;
        Ok(self.forward(x, &noise, &mut Mode::train(*draws))?.loss)
    }

    fn evaluate(&self, x: &E::Input, draws: &Draws) -> crate::Result<Pass> {
        let noise = self.sample_noise(draws, E::values(x).device())?;
        let out = self.forward(x, &noise, &mut Mode::Eval)?;
        let patches = self.pred_to_pixels(E::values(x), &out.pred)?;
        Ok(Pass::reconstructed(out.loss, patches, out.mask))
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

    #[test]
    fn padded_patches_are_removed_first_and_left_out_of_the_loss() -> Result<()> {
        let dev = Device::Cpu;
        // Six patches, the last two padding, which the noise alone would keep first.
        let x = Tensor::arange(0f32, 6.0, &dev)?.reshape((1, 6, 1))?;
        let noise = Tensor::new(&[[0.5f32, 0.4, 0.3, 0.2, 0.1, 0.0]], &dev)?;
        let valid = Tensor::new(&[[1f32, 1., 1., 1., 0., 0.]], &dev)?;
        let v2 = |t: &Tensor| t.squeeze(0)?.flatten_all()?.to_vec1::<f32>();
        let m = padded_masking(&x, &noise, 2, Some(&valid))?;
        assert_eq!(v2(&m.kept)?, [3., 2.]);
        assert_eq!(v2(m.kept_valid.as_ref().unwrap())?, [1., 1.]);
        assert_eq!(v2(&m.mask)?, [1., 1., 0., 0., 1., 1.]);
        assert_eq!(v2(&m.loss_mask)?, [1., 1., 0., 0., 0., 0.]);
        // More kept than real patches: a padded one is kept, and marked.
        let m = padded_masking(&x, &noise, 5, Some(&valid))?;
        assert_eq!(v2(m.kept_valid.as_ref().unwrap())?, [1., 1., 1., 1., 0.]);
        assert_eq!(v2(&m.loss_mask)?, [0.; 6]);
        // Nothing to score: a zero loss, not a NaN.
        let loss = masked_mse(&x, &x.ones_like()?, &m.loss_mask)?;
        assert_eq!(loss.to_scalar::<f32>()?, 0.0);
        // Without padding it is MAE's masking.
        let m = padded_masking(&x, &noise, 2, None)?;
        assert!(m.kept_valid.is_none());
        assert_eq!(v2(&m.kept)?, [5., 4.]);
        assert_eq!(v2(&m.loss_mask)?, v2(&m.mask)?);
        Ok(())
    }
}
