//! Picture grids: rows of images written as one PNG (MAE's original / masked /
//! reconstruction figure).

use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Writes `rows` (each `[N, C, H, W]`, pixel values in [0, 1]; C = 1 or 3) as a grid with
/// one row per tensor, each image scaled up `scale`× (nearest) and separated by 2 px gaps.
pub fn save_grid(rows: &[Tensor], scale: usize, path: &Path) -> Result<()> {
    let first = rows
        .first()
        .ok_or_else(|| Error::Usage("save_grid: no rows".into()))?;
    let (n, c, h, w) = first.dims4()?;
    if c != 1 && c != 3 {
        return Err(Error::shape("save_grid channels", "1 or 3", c));
    }
    let gap = 2;
    let (cw, ch) = (w * scale + gap, h * scale + gap);
    let (width, height) = ((n * cw + gap) as u32, (rows.len() * ch + gap) as u32);
    let mut img = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (r, row) in rows.iter().enumerate() {
        if row.dims4()? != (n, c, h, w) {
            return Err(Error::shape(
                "save_grid row",
                format!("{:?}", (n, c, h, w)),
                format!("{:?}", row.dims()),
            ));
        }
        let px: Vec<f32> = row
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        for i in 0..n {
            for y in 0..h * scale {
                for x in 0..w * scale {
                    let at = |ch: usize| {
                        let v = px[((i * c + ch) * h + y / scale) * w + x / scale];
                        (v.clamp(0.0, 1.0) * 255.0).round() as u8
                    };
                    let rgb = if c == 1 {
                        [at(0); 3]
                    } else {
                        [at(0), at(1), at(2)]
                    };
                    img.put_pixel(
                        (gap + i * cw + x) as u32,
                        (gap + r * ch + y) as u32,
                        image::Rgb(rgb),
                    );
                }
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    img.save(path)
        .map_err(|e| Error::data(path, format!("cannot write PNG: {e}")))
}
