//! The `[data.image]` section of a recipe and the checks of an image recipe: geometry,
//! normalisation, the source formats and objectives images take.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::objective::masking::Masking;
use crate::recipe::memory::Footprint;
use crate::recipe::source::{sources, DataSource};
use crate::recipe::{check, ModalityRecipe, ObjectiveKind, Recipe};

/// Images pretrain with MAE, SimMIM or data2vec.
pub const RECIPE: ModalityRecipe = ModalityRecipe {
    name: "image",
    objectives: &[
        ObjectiveKind::Mae,
        ObjectiveKind::Simmim,
        ObjectiveKind::Data2vec,
    ],
    validate,
    footprint,
};

fn footprint(r: &Recipe) -> Option<Footprint> {
    let img = r.data.image.as_ref()?;
    let (size, channels, patch) = (img.size as f64, img.channels as f64, img.patch as f64);
    let grid = size / patch.max(1.0);
    let d = r.model.dim as f64;
    Some(Footprint {
        tokens: (grid * grid + 1.0) as u128,
        tokens_key: "data.image.size",
        input_values: (size * size * channels) as u128,
        patch_values: (patch * patch * channels) as u128,
        embed_params: (patch * patch * channels * d + d + 2.0 * d) as u128,
        embed_key: "data.image.size",
        output_values: 0,
    })
}

/// The geometry and normalisation of image inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Side of the square input, in pixels (must equal the data's for IDX).
    pub size: usize,
    pub channels: usize,
    /// Patch side; must divide `size`.
    pub patch: usize,
    /// Per-channel normalisation applied after scaling pixels to [0, 1].
    #[serde(default = "half")]
    pub mean: Vec<f32>,
    #[serde(default = "half")]
    pub std: Vec<f32>,
}

fn half() -> Vec<f32> {
    vec![0.5]
}

/// Image recipes: geometry, normalisation, MAE or SimMIM with image masking.
pub fn validate(r: &Recipe, file: &Path) -> Result<()> {
    let img = r.data.image.as_ref().ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.image".into(),
        message: "required when data.modality = \"image\" (e.g. image = { size = 28, channels = 1, patch = 4 })".into(),
    })?;
    for (_, src) in sources(r) {
        check(
            !matches!(src, DataSource::Folder { .. }) || img.channels == 1 || img.channels == 3,
            file,
            "data.image.channels",
            || {
                format!(
                    "image folders give 1 (luma) or 3 (RGB) channels, found {}",
                    img.channels
                )
            },
        )?;
    }
    check(
        img.patch > 0 && img.size % img.patch == 0,
        file,
        "data.image.patch",
        || format!("patch {} must divide size {}", img.patch, img.size),
    )?;
    check(img.channels > 0, file, "data.image.channels", || {
        "must be positive".into()
    })?;
    check(
        img.mean.len() == img.channels,
        file,
        "data.image.mean",
        || {
            format!(
                "needs one value per channel ({}), found {}",
                img.channels,
                img.mean.len()
            )
        },
    )?;
    check(
        img.std.len() == img.channels && img.std.iter().all(|s| *s > 0.0 && s.is_finite()),
        file,
        "data.image.std",
        || format!("needs {} positive, finite values", img.channels),
    )?;
    check(
        img.mean.iter().all(|m| m.is_finite()),
        file,
        "data.image.mean",
        || "must be finite numbers".into(),
    )?;
    let grid = img.size / img.patch;
    crate::recipe::check_masked_grid(r, grid.saturating_mul(grid), file)?;
    check(r.model.dim.is_multiple_of(4), file, "model.dim", || {
        format!(
            "{} must be divisible by 4 (2-D sin-cos positions)",
            r.model.dim
        )
    })?;
    // A missing [objective] is reported by `validate`.
    let Some(o) = &r.objective else {
        return Ok(());
    };
    check(
        matches!(o.masking(), Masking::Random | Masking::Block),
        file,
        "objective.masking",
        || "images use `random` or `block` masking (time / frequency masking is for audio)".into(),
    )?;
    Ok(())
}
