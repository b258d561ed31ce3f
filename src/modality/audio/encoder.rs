//! The spectrogram encoder (Audio-MAE, Huang et al. 2022; AST, Gong et al. 2021): a log-mel
//! spectrogram `[B, n_mels, frames]` cut into non-overlapping frequency × time patches, each
//! embedded linearly (a convolution with stride = kernel), a class token, MAE's fixed 2-D
//! sin-cos positions over the (time, frequency) grid, then the shared backbone. Objectives
//! and heads use it under the prefix `audio.`.
//!
//! Patches are ordered time-major (`index = t * freq_patches + f`), as Audio-MAE orders
//! them (its input is the time × frequency image).
//!
//! A clip shorter than the encoder's window is padded; its [`Spectrograms::frames`] mask
//! says which frames hold it. A time step of patches holding any such frame is a token;
//! the others are padding, which attention does not attend to ([`token_mask`]) and
//! pooling, Audio-MAE's loss and data2vec's targets leave out.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::backbone::{Encoder, EncoderConfig, Linear, Mode};
use crate::modality::image::patch::sincos_grid;

/// Shape of the spectrograms an encoder takes and of its patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectrogramGeometry {
    pub n_mels: usize,
    pub frames: usize,
    /// Mel bands per patch; must divide `n_mels`.
    pub patch_freq: usize,
    /// Frames per patch; must divide `frames`.
    pub patch_time: usize,
}

impl SpectrogramGeometry {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.patch_freq == 0 || !self.n_mels.is_multiple_of(self.patch_freq) {
            return Err(format!(
                "patch_freq {} must divide n_mels {}",
                self.patch_freq, self.n_mels
            ));
        }
        if self.patch_time == 0 || !self.frames.is_multiple_of(self.patch_time) {
            return Err(format!(
                "patch_time {} must divide frames {}",
                self.patch_time, self.frames
            ));
        }
        Ok(())
    }
    /// Patches along frequency.
    pub fn freq_patches(&self) -> usize {
        self.n_mels / self.patch_freq
    }
    /// Patches along time.
    pub fn time_patches(&self) -> usize {
        self.frames / self.patch_time
    }
    pub fn num_patches(&self) -> usize {
        self.freq_patches() * self.time_patches()
    }
    pub fn patch_dim(&self) -> usize {
        self.patch_freq * self.patch_time
    }
}

/// `[B, n_mels, frames]` → patches `[B, L, patch_freq * patch_time]`, time-major; each patch
/// is flattened frequency-major (`[pf, pt]`).
pub fn patchify(x: &Tensor, g: &SpectrogramGeometry) -> Result<Tensor> {
    let (b, f, t) = x.dims3()?;
    if f != g.n_mels || t != g.frames {
        candle_core::bail!(
            "spectrogram: expected [B, {}, {}], found {:?}",
            g.n_mels,
            g.frames,
            x.dims()
        );
    }
    let (gf, gt) = (g.freq_patches(), g.time_patches());
    x.reshape((b, gf, g.patch_freq, gt, g.patch_time))?
        .permute((0, 3, 1, 2, 4))?
        .reshape((b, gt * gf, g.patch_dim()))
}

/// The inverse of [`patchify`]: `[B, L, pf * pt]` → `[B, n_mels, frames]`.
pub fn unpatchify(p: &Tensor, g: &SpectrogramGeometry) -> Result<Tensor> {
    let b = p.dim(0)?;
    let (gf, gt) = (g.freq_patches(), g.time_patches());
    p.reshape((b, gt, gf, g.patch_freq, g.patch_time))?
        .permute((0, 2, 3, 1, 4))?
        .reshape((b, g.n_mels, g.frames))
}

/// Normalised spectrograms and which of their frames hold a clip: an encoder's input.
#[derive(Debug, Clone)]
pub struct Spectrograms {
    /// `[B, n_mels, frames]`.
    pub values: Tensor,
    /// `[B, frames]` (f32), 1 where a frame holds the clip, 0 where it is padding; `None`:
    /// every frame holds it.
    pub frames: Option<Tensor>,
}

impl Spectrograms {
    /// Spectrograms with no padding.
    pub fn full(values: Tensor) -> Self {
        Self {
            values,
            frames: None,
        }
    }
}

/// Which patch tokens hold input, from which frames do: `frames: [B, frames]` →
/// `[B, L]` (f32, 1 = holds input), time-major like the patches. A time step is kept when
/// any of its frames is.
pub fn token_mask(frames: &Tensor, g: &SpectrogramGeometry) -> Result<Tensor> {
    let (b, t) = frames.dims2()?;
    if t != g.frames {
        candle_core::bail!(
            "frame mask: expected [B, {}], found {:?}",
            g.frames,
            frames.dims()
        );
    }
    let (gf, gt) = (g.freq_patches(), g.time_patches());
    frames
        .to_dtype(candle_core::DType::F32)?
        .reshape((b, gt, g.patch_time))?
        .max(2)?
        .unsqueeze(2)?
        .broadcast_as((b, gt, gf))?
        .reshape((b, gt * gf))
}

/// Fixed positions `[1, 1 + L, dim]` (zero row for the class token) over the time × frequency
/// grid, time-major like the patches.
pub fn positions(dim: usize, g: &SpectrogramGeometry, device: &Device) -> Result<Tensor> {
    let mut values = vec![0f32; dim];
    values.extend(sincos_grid(dim, g.time_patches(), g.freq_patches()));
    Tensor::from_vec(values, (1, 1 + g.num_patches(), dim), device)
}

#[derive(Debug, Clone)]
pub struct SpectrogramEncoder {
    /// `[pf * pt] → D`, named `patch_embed`.
    pub patch_embed: Linear,
    pub cls_token: Tensor, // [1, 1, D]
    pub pos_embed: Tensor, // [1, 1 + L, D], fixed
    pub encoder: Encoder,
    pub geometry: SpectrogramGeometry,
}

impl SpectrogramEncoder {
    pub fn new(geometry: SpectrogramGeometry, cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(m) = geometry.validate() {
            candle_core::bail!("spectrogram geometry: {m}");
        }
        if !cfg.dim.is_multiple_of(4) {
            candle_core::bail!(
                "model dim {} must be divisible by 4 (2-D sin-cos positions)",
                cfg.dim
            );
        }
        Ok(Self {
            patch_embed: Linear::new(geometry.patch_dim(), cfg.dim, true, vb.pp("patch_embed"))?,
            cls_token: crate::backbone::cls_token(&vb, cfg.dim)?,
            pos_embed: positions(cfg.dim, &geometry, vb.device())?,
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            geometry,
        })
    }

    pub fn dim(&self) -> usize {
        self.encoder.dim()
    }

    /// Patch tokens with their positions, no class token: `[B, F, T]` → `[B, L, D]`.
    pub fn embed_patches(&self, spec: &Tensor) -> Result<Tensor> {
        let x = self.patch_embed.forward(&patchify(spec, &self.geometry)?)?;
        x.broadcast_add(&self.pos_embed.narrow(1, 1, self.geometry.num_patches())?)
    }

    /// Prepends the class token (with its position) and runs the backbone:
    /// `[B, T, D]` → `[B, 1 + T, D]`. `mask: [B, T]` (1 = a token, 0 = padding) keeps
    /// attention off the padding; the class token is always attended to.
    pub fn encode_tokens(
        &self,
        tokens: &Tensor,
        mask: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1)?)?;
        crate::backbone::encode_with_cls(&self.encoder, &cls, tokens, mask, mode)
    }

    /// The patch tokens' padding mask `[B, L]` of `x`, `None` when it has no padding.
    pub fn patch_mask(&self, x: &Spectrograms) -> Result<Option<Tensor>> {
        x.frames
            .as_ref()
            .map(|f| token_mask(f, &self.geometry))
            .transpose()
    }

    /// All patches visible: hidden states `[B, 1 + L, D]` and the patches' padding mask.
    pub fn forward_masked(
        &self,
        x: &Spectrograms,
        mode: &mut Mode,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mask = self.patch_mask(x)?;
        let h = self.encode_tokens(&self.embed_patches(&x.values)?, mask.as_ref(), mode)?;
        Ok((h, mask))
    }

    /// All patches visible: `[B, F, T]` → hidden states `[B, 1 + L, D]`.
    pub fn forward(&self, x: &Spectrograms, mode: &mut Mode) -> Result<Tensor> {
        Ok(self.forward_masked(x, mode)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_time_major_and_round_trip() {
        let g = SpectrogramGeometry {
            n_mels: 4,
            frames: 6,
            patch_freq: 2,
            patch_time: 3,
        };
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((1, 4, 6))
            .unwrap();
        let p = patchify(&x, &g).unwrap();
        assert_eq!(p.dims(), &[1, 4, 6]);
        let rows: Vec<Vec<f32>> = p.squeeze(0).unwrap().to_vec2().unwrap();
        // Patch 0: mel 0..2, frames 0..3; patch 1: mel 2..4, frames 0..3 (time-major).
        assert_eq!(rows[0], vec![0.0, 1.0, 2.0, 6.0, 7.0, 8.0]);
        assert_eq!(rows[1], vec![12.0, 13.0, 14.0, 18.0, 19.0, 20.0]);
        assert_eq!(rows[2], vec![3.0, 4.0, 5.0, 9.0, 10.0, 11.0]);
        let back = unpatchify(&p, &g).unwrap();
        let d = (back - &x).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }
}
