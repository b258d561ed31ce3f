//! The image encoder: patch embedding + class token + 2-D positions, feeding the shared
//! backbone. Objectives (MAE) and downstream heads use it under the prefix `vit.`.
//!
//! Positions are MAE's fixed sin-cos table by default (not a parameter), or a learned
//! parameter `pos_embed` `[1, 1 + L, D]` as in ViT (Dosovitskiy et al. 2020; Hugging Face
//! `ViTEmbeddings.position_embeddings`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::embed::PatchEmbed;
use super::patch::sincos_2d;
use crate::backbone::{Encoder, EncoderConfig, Mode};

/// Geometry of the images an encoder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGeometry {
    /// Side of the (square) input image, in pixels.
    pub size: usize,
    pub channels: usize,
    /// Side of a square patch; must divide `size`.
    pub patch: usize,
}

impl ImageGeometry {
    pub fn grid(&self) -> usize {
        self.size / self.patch
    }
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    pub fn patch_dim(&self) -> usize {
        self.patch * self.patch * self.channels
    }

    /// Positive sizes, a patch that divides the side, and a patch grid whose position
    /// table (`dim` wide) fits the allocation limit; the error names the field.
    pub fn validate(&self, dim: usize) -> std::result::Result<(), (&'static str, String)> {
        if self.channels == 0 {
            return Err(("channels", "must be positive".into()));
        }
        if self.patch == 0 || self.size == 0 || !self.size.is_multiple_of(self.patch) {
            return Err((
                "patch",
                format!(
                    "{} must be positive and divide the image size {}",
                    self.patch, self.size
                ),
            ));
        }
        let tokens = (self.size as u128 / self.patch as u128).pow(2) + 1;
        crate::limits::check(
            4 * tokens * dim as u128,
            "the position table of this patch grid",
        )
        .map_err(|m| ("size", m))
    }
}

/// Fixed (not trained) position embeddings `[1, 1 + L, dim]`, the first row for the class
/// token being zeros, as in MAE.
pub fn sincos_with_cls(dim: usize, grid: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut values = vec![0f32; dim];
    values.extend(sincos_2d(dim, grid));
    Tensor::from_vec(values, (1, 1 + grid * grid, dim), device)
}

/// How an [`ImageEncoder`] gets its position embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// MAE's fixed 2-D sin-cos table with a zero class-token row; not a parameter.
    #[default]
    Sincos,
    /// A trained parameter `pos_embed` `[1, 1 + L, D]` (ViT), initialised N(0, 0.02).
    Learned,
}

#[derive(Debug, Clone)]
pub struct ImageEncoder {
    pub patch_embed: PatchEmbed,
    pub cls_token: Tensor, // [1, 1, D]
    pub pos_embed: Tensor, // [1, 1 + L, D], fixed or learned (see `positions`)
    pub encoder: Encoder,
    pub geometry: ImageGeometry,
    pub positions: Positions,
}

impl ImageEncoder {
    /// An encoder with MAE's fixed sin-cos positions.
    pub fn new(geometry: ImageGeometry, cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_positions(geometry, cfg, Positions::Sincos, vb)
    }

    /// An encoder with the given kind of position embeddings.
    pub fn with_positions(
        geometry: ImageGeometry,
        cfg: &EncoderConfig,
        positions: Positions,
        vb: VarBuilder,
    ) -> Result<Self> {
        if geometry.patch == 0 || !geometry.size.is_multiple_of(geometry.patch) {
            candle_core::bail!(
                "image size {} is not divisible by patch size {}",
                geometry.size,
                geometry.patch
            );
        }
        Ok(Self {
            patch_embed: PatchEmbed::new(
                geometry.channels,
                geometry.patch,
                cfg.dim,
                vb.pp("patch_embed"),
            )?,
            cls_token: crate::backbone::cls_token(&vb, cfg.dim)?,
            pos_embed: match positions {
                Positions::Sincos => sincos_with_cls(cfg.dim, geometry.grid(), vb.device())?,
                Positions::Learned => crate::backbone::learned(
                    &vb,
                    (1, 1 + geometry.num_patches(), cfg.dim),
                    "pos_embed",
                )?,
            },
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            geometry,
            positions,
        })
    }

    /// Replaces the fixed position table (a checkpoint that stores its own, like Hugging
    /// Face ViT-MAE's `position_embeddings`); `table: [1, 1 + L, D]`.
    pub fn set_fixed_positions(&mut self, table: Tensor) -> Result<()> {
        if table.dims() != self.pos_embed.dims() {
            candle_core::bail!(
                "position table: expected shape {:?}, found {:?}",
                self.pos_embed.dims(),
                table.dims()
            );
        }
        self.pos_embed = table;
        Ok(())
    }

    /// Patch tokens with their positions, no class token: `[B, C, H, W]` → `[B, L, D]`.
    pub fn embed_patches(&self, imgs: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = imgs.dims4()?;
        let g = self.geometry;
        if c != g.channels || h != g.size || w != g.size {
            candle_core::bail!(
                "image encoder: expected images [B, {}, {}, {}], found {:?}",
                g.channels,
                g.size,
                g.size,
                imgs.dims()
            );
        }
        let x = self.patch_embed.forward(imgs)?;
        x.broadcast_add(&self.pos_embed.narrow(1, 1, g.num_patches())?)
    }

    /// Prepends the class token (with its position) and runs the backbone:
    /// `[B, T, D]` → `[B, 1 + T, D]`; `mask: [B, T]` (1 = token) keeps attention off padding.
    pub fn encode_tokens(
        &self,
        tokens: &Tensor,
        mask: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let cls = (&self.cls_token + self.pos_embed.narrow(1, 0, 1)?)?;
        crate::backbone::encode_with_cls(&self.encoder, &cls, tokens, mask, mode)
    }

    /// All tokens visible: `[B, C, H, W]` → hidden states `[B, 1 + L, D]`.
    pub fn forward(&self, imgs: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        self.encode_tokens(&self.embed_patches(imgs)?, None, mode)
    }
}
