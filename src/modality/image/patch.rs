//! Patches, the image modality's tokens.
//!
//! Orders follow MAE's `models_mae.py` (and HF `ViTMAEForPreTraining`): `patchify` lays each
//! patch out as `(p, q, c)`, row-major over the patch grid.

use candle_core::{Result, Tensor};

/// `[B, C, H, W]` → `[B, L, p*p*C]` with `L = (H/p)*(W/p)`, patch pixels in `(p, q, c)` order.
pub fn patchify(imgs: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w) = imgs.dims4()?;
    if h % p != 0 || w % p != 0 {
        candle_core::bail!("patchify: image size {h}x{w} is not divisible by patch size {p}");
    }
    let (gh, gw) = (h / p, w / p);
    imgs.reshape((b, c, gh, p, gw, p))?
        .permute((0, 2, 4, 3, 5, 1))? // b, gh, gw, p, q, c
        .reshape((b, gh * gw, p * p * c))
}

/// Inverse of [`patchify`] for square grids: `[B, L, p*p*C]` → `[B, C, H, W]`.
pub fn unpatchify(x: &Tensor, p: usize, channels: usize) -> Result<Tensor> {
    let (b, l, _) = x.dims3()?;
    let g = (l as f64).sqrt().round() as usize;
    if g * g != l {
        candle_core::bail!("unpatchify: {l} patches do not form a square grid");
    }
    x.reshape((b, g, g, p, p, channels))?
        .permute((0, 5, 1, 3, 2, 4))? // b, c, gh, p, gw, q
        .reshape((b, channels, g * p, g * p))
}

/// 2-D sine-cosine position embeddings `[grid*grid, dim]` (MAE's
/// `get_2d_sincos_pos_embed`, without the class-token row): the first half of each row
/// encodes the column index, the second half the row index.
pub fn sincos_2d(dim: usize, grid: usize) -> Vec<f32> {
    sincos_grid(dim, grid, grid)
}

/// 2-D sine-cosine position embeddings `[rows*cols, dim]` for a `rows × cols` grid in
/// row-major order (the square case is [`sincos_2d`]).
pub fn sincos_grid(dim: usize, rows: usize, cols: usize) -> Vec<f32> {
    assert!(
        dim.is_multiple_of(4),
        "sincos embedding dim must be divisible by 4"
    );
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut out = Vec::with_capacity(rows * cols * dim);
    for row in 0..rows {
        for col in 0..cols {
            // MAE builds meshgrid(w, h) and uses grid[0] (= column) for the first half.
            for pos in [col as f64, row as f64] {
                out.extend(omega.iter().map(|o| (pos * o).sin() as f32));
                out.extend(omega.iter().map(|o| (pos * o).cos() as f32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn patchify_round_trips() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 8.0 * 8.0, &dev)
            .unwrap()
            .reshape((2, 3, 8, 8))
            .unwrap();
        let p = patchify(&x, 4).unwrap();
        assert_eq!(p.dims(), &[2, 4, 48]);
        // First patch, first pixel, channels interleaved last: (0,0,c) = c*64.
        let first: Vec<f32> = p.get(0).unwrap().get(0).unwrap().to_vec1().unwrap();
        assert_eq!(&first[..3], &[0.0, 64.0, 128.0]);
        // Second patch starts at column 4 of row 0.
        let second: Vec<f32> = p.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
        assert_eq!(second[0], 4.0);
        let back = unpatchify(&p, 4, 3).unwrap();
        let diff = (back - &x).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn sincos_matches_mae_first_rows() {
        let e = sincos_2d(8, 2);
        // position (row 0, col 1): first half encodes col = 1 -> sin(1), sin(1e-2*1)...
        let row1 = &e[8..16];
        assert!((row1[0] - 1f32.sin()).abs() < 1e-6);
        assert!((row1[1] - 0.01f32.sin()).abs() < 1e-6);
        assert!((row1[2] - 1f32.cos()).abs() < 1e-6);
        assert!((row1[4] - 0.0).abs() < 1e-6); // row index 0 -> sin(0)
        assert!((row1[6] - 1.0).abs() < 1e-6);
    }
}
