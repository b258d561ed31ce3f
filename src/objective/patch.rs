//! An encoder over a grid of patches: what a patch-reconstruction objective (MAE, over
//! images or spectrograms) needs of a modality. The modality's encoder cuts its input into
//! patches and embeds them; the objective chooses which tokens the backbone sees, and
//! reconstructs the patches of the input.
//!
//! Implemented here for the image encoder (ViT, `vit.`) and the spectrogram encoder
//! (Audio-MAE, `audio.`): `modality` knows nothing of objectives, so the impls live on this
//! side.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::masking::{GridMasker, Masking};
use crate::backbone::{EncoderConfig, Mode};
use crate::modality::audio::encoder::{self as spectrogram, SpectrogramEncoder};
use crate::modality::audio::encoder::{SpectrogramGeometry, Spectrograms};
use crate::modality::image::encoder::sincos_with_cls;
use crate::modality::image::{patch, ImageEncoder, ImageGeometry};

/// An encoder whose input is a grid of `L` patches of `P` values each.
///
/// # Shapes
/// input `x` (`[B, C, H, W]` images, `[B, F, T]` spectrograms) → `embed_patches`
/// `[B, L, D]` → (the objective keeps `T` of them) → `encode_tokens` `[B, 1 + T, D]`;
/// `patchify(x)` `[B, L, P]`, in the same patch order as the tokens.
pub trait PatchEncoder: Sized {
    /// What the encoder is built for: input and patch sizes.
    type Geometry: Copy + std::fmt::Debug + PartialEq;
    /// A batch of inputs: an image tensor, or spectrograms with their padding.
    type Input;
    /// The prefix of its parameters (`vit.`, `audio.`): the attribute a task wrapper holds
    /// it under, so checkpoints, Hugging Face tables and heads find it there.
    const PREFIX: &'static str;

    /// A fresh encoder (or one loaded, from a loading `VarBuilder`) under `vb`.
    fn build(geometry: Self::Geometry, cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self>;
    fn geometry(&self) -> Self::Geometry;
    /// `L`, patches per input.
    fn num_patches(&self) -> usize;
    /// `P`, values per patch.
    fn patch_dim(&self) -> usize;
    /// The input tensor of a batch (`[B, C, H, W]`, `[B, F, T]`).
    fn values(x: &Self::Input) -> &Tensor;
    /// Which patches of `x` hold input, `[B, L]` (1 = holds input), or `None` when all do.
    fn patch_mask(&self, x: &Self::Input) -> Result<Option<Tensor>>;
    /// Patch tokens with their positions, no class token: `x` → `[B, L, D]`.
    fn embed_patches(&self, x: &Tensor) -> Result<Tensor>;
    /// Prepends the class token (with its position) and runs the backbone:
    /// `[B, T, D]` → `[B, 1 + T, D]`; `mask: [B, T]` keeps attention off padded tokens.
    fn encode_tokens(
        &self,
        tokens: &Tensor,
        mask: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<Tensor>;
    /// The input as patches `[B, L, P]`, the reconstruction target.
    fn patchify(&self, x: &Tensor) -> Result<Tensor>;
    /// Fixed sin-cos positions of width `dim` over the grid, `[1, 1 + L, dim]` (a zero row
    /// for the class token): the MAE decoder's table.
    fn fixed_positions(&self, dim: usize, device: &Device) -> Result<Tensor>;
    /// The masker of this grid: which masking kinds it takes, and how they draw.
    fn masker(&self, ratio: f64, kind: Masking) -> Result<GridMasker>;
}

/// The methods both encoders have under the same names, and their geometry's sizes.
macro_rules! delegate_to_inherent {
    ($encoder:ty, $geometry:ty) => {
        type Geometry = $geometry;

        fn build(geometry: $geometry, cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
            <$encoder>::new(geometry, cfg, vb)
        }
        fn geometry(&self) -> $geometry {
            self.geometry
        }
        fn num_patches(&self) -> usize {
            self.geometry.num_patches()
        }
        fn patch_dim(&self) -> usize {
            self.geometry.patch_dim()
        }
        fn embed_patches(&self, x: &Tensor) -> Result<Tensor> {
            <$encoder>::embed_patches(self, x)
        }
        fn encode_tokens(
            &self,
            tokens: &Tensor,
            mask: Option<&Tensor>,
            mode: &mut Mode,
        ) -> Result<Tensor> {
            <$encoder>::encode_tokens(self, tokens, mask, mode)
        }
    };
}

impl PatchEncoder for ImageEncoder {
    const PREFIX: &'static str = "vit.";
    delegate_to_inherent!(ImageEncoder, ImageGeometry);
    type Input = Tensor;

    fn values(x: &Tensor) -> &Tensor {
        x
    }
    /// Images have no padding.
    fn patch_mask(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        patch::patchify(x, self.geometry.patch)
    }
    fn fixed_positions(&self, dim: usize, device: &Device) -> Result<Tensor> {
        sincos_with_cls(dim, self.geometry.grid(), device)
    }
    fn masker(&self, ratio: f64, kind: Masking) -> Result<GridMasker> {
        GridMasker::image(self.geometry.grid(), ratio, kind)
    }
}

impl PatchEncoder for SpectrogramEncoder {
    const PREFIX: &'static str = "audio.";
    delegate_to_inherent!(SpectrogramEncoder, SpectrogramGeometry);
    type Input = Spectrograms;

    fn values(x: &Spectrograms) -> &Tensor {
        &x.values
    }
    fn patch_mask(&self, x: &Spectrograms) -> Result<Option<Tensor>> {
        SpectrogramEncoder::patch_mask(self, x)
    }
    /// Time-major patches, each frequency-major (see [`spectrogram::patchify`]).
    fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        spectrogram::patchify(x, &self.geometry)
    }
    /// Over the time × frequency grid.
    fn fixed_positions(&self, dim: usize, device: &Device) -> Result<Tensor> {
        spectrogram::positions(dim, &self.geometry, device)
    }
    /// Rows are time steps, columns frequency bands.
    fn masker(&self, ratio: f64, kind: Masking) -> Result<GridMasker> {
        let g = &self.geometry;
        GridMasker::spectrogram(g.time_patches(), g.freq_patches(), ratio, kind)
    }
}
