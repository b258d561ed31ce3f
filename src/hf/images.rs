//! Image files → normalised pixel tensors for a model: decode (the `image` crate: PNG,
//! JPEG), convert to the model's channels (1: luma, 3: RGB), resize to its square input
//! size with bilinear filtering, scale to [0, 1], then `(x - mean) / std` per channel — the
//! steps of `transformers`' `ViTImageProcessor`.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;

use super::spec::Normalize;
use crate::error::{Error, Result};
use crate::modality::image::ImageGeometry;

/// One image as `[C, H, W]` float32.
pub fn load(path: &Path, g: ImageGeometry, norm: &Normalize, device: &Device) -> Result<Tensor> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::data(path, format!("cannot decode image: {e}")))?;
    let s = g.size as u32;
    let (raw, c) = match g.channels {
        1 => (
            image::imageops::resize(&img.to_luma8(), s, s, FilterType::Triangle).into_raw(),
            1,
        ),
        3 => (
            image::imageops::resize(&img.to_rgb8(), s, s, FilterType::Triangle).into_raw(),
            3,
        ),
        n => {
            return Err(Error::data(
                path,
                format!("the model takes {n}-channel images; only 1 (grey) and 3 (RGB) can be made from files"),
            ))
        }
    };
    if norm.mean.len() != c || norm.std.len() != c {
        return Err(Error::Usage(format!(
            "normalisation has {} means and {} stds for a {c}-channel model",
            norm.mean.len(),
            norm.std.len()
        )));
    }
    let n = (s * s) as usize;
    let mut chw = vec![0f32; c * n];
    for (i, px) in raw.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            chw[ch * n + i] = (v as f32 / 255.0 - norm.mean[ch]) / norm.std[ch];
        }
    }
    Ok(Tensor::from_vec(chw, (c, g.size, g.size), device)?)
}
