//! Patch embedding: the image modality's entry into the shared backbone.
//!
//! A stride-`p` convolution written as patchify + matmul. The weight keeps the convolution's
//! layout `[dim, C, p, p]` (name `patch_embed.proj.weight`, as timm and MAE), so it maps
//! onto Hugging Face ViT's `embeddings.patch_embeddings.projection` unchanged.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

#[derive(Debug, Clone)]
pub struct PatchEmbed {
    weight: Tensor, // [D, C, p, p]
    bias: Tensor,   // [D]
    patch: usize,
    channels: usize,
}

impl PatchEmbed {
    pub fn new(channels: usize, patch: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        // MAE initialises the projection like a linear layer: xavier-uniform on [D, C*p*p].
        let fan = channels * patch * patch;
        let bound = (6.0 / (fan + dim) as f64).sqrt();
        let weight = vb.get_with_hints(
            (dim, channels, patch, patch),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            patch,
            channels,
        })
    }

    /// `[B, C, H, W]` → `[B, L, D]`.
    pub fn forward(&self, imgs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = imgs.dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "patch embedding: expected {} channels, found {c}",
                self.channels
            );
        }
        let p = self.patch;
        if h % p != 0 || w % p != 0 {
            candle_core::bail!("patch embedding: image {h}x{w} not divisible by patch {p}");
        }
        let (gh, gw) = (h / p, w / p);
        // (c, p, q) order to match the convolution weight.
        let patches = imgs
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * gh * gw, c * p * p))?;
        let d = self.weight.dim(0)?;
        let w = self.weight.reshape((d, c * p * p))?;
        crate::backbone::ops::linear(&patches, &w, Some(&self.bias))?.reshape((b, gh * gw, d))
    }
}
