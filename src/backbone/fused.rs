//! Fused CPU kernels with hand-written backward passes for the two row-wise operations that
//! dominate a small transformer's elementwise time: layer normalisation (without its affine
//! part) and the last-dimension softmax. Composed from candle ops they cost a dozen
//! temporaries each in both passes; fused, one. Exact GELU is fused too (see `erf`). On other devices, and for other dtypes, the
//! callers fall back to the composed versions (`ops.rs`). Both are checked against the
//! composed ops, values and gradients, in the tests below.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows of a contiguous f32 tensor, or `None` when the fused path does not apply.
fn rows<'a>(s: &'a CpuStorage, l: &Layout) -> Option<(&'a [f32], usize)> {
    let (start, end) = l.contiguous_offsets()?;
    match s {
        CpuStorage::F32(v) => Some((&v[start..end], *l.dims().last()?)),
        _ => None,
    }
}

fn f32_rows(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// Rows of work below this many elements run on one thread.
const PAR_MIN: usize = 1 << 14;

fn for_rows(out: &mut [f32], d: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() < PAR_MIN {
        out.chunks_mut(d).enumerate().for_each(|(i, o)| f(i, o));
    } else {
        out.par_chunks_mut(d).enumerate().for_each(|(i, o)| f(i, o));
    }
}

/// `(x - mean) / sqrt(var + eps)` over the last dimension (biased variance, as PyTorch).
struct Normalize {
    eps: f32,
}

fn mean_rstd(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "pretext-normalize"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, d) = rows(s, l)
            .ok_or_else(|| candle_core::Error::Msg("normalize: needs contiguous f32".into()))?;
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, d, |i, o| {
            let xr = &x[i * d..(i + 1) * d];
            let (mean, rstd) = mean_rstd(xr, self.eps);
            for (o, v) in o.iter_mut().zip(xr) {
                *o = (v - mean) * rstd;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`.
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = arg.dim(candle_core::D::Minus1)?;
        let (x, xhat, g) = (f32_rows(arg)?, f32_rows(res)?, f32_rows(grad)?);
        let mut dx = vec![0f32; x.len()];
        for_rows(&mut dx, d, |i, o| {
            let r = i * d..(i + 1) * d;
            let (_, rstd) = mean_rstd(&x[r.clone()], self.eps);
            let (xh, gr) = (&xhat[r.clone()], &g[r]);
            let mg = gr.iter().sum::<f32>() / d as f32;
            let mgx = gr.iter().zip(xh).map(|(a, b)| a * b).sum::<f32>() / d as f32;
            for ((o, a), b) in o.iter_mut().zip(gr).zip(xh) {
                *o = rstd * (a - mg - b * mgx);
            }
        });
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Softmax over the last dimension.
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "pretext-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, d) = rows(s, l)
            .ok_or_else(|| candle_core::Error::Msg("softmax: needs contiguous f32".into()))?;
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, d, |i, o| {
            let xr = &x[i * d..(i + 1) * d];
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            o.copy_from_slice(xr);
            super::math::exp_shifted(o, max);
            let inv = 1.0 / o.iter().sum::<f32>();
            o.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// `dx = y * (g - sum(g * y))`.
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let d = arg.dim(candle_core::D::Minus1)?;
        let (y, g) = (f32_rows(res)?, f32_rows(grad)?);
        let mut dx = vec![0f32; y.len()];
        for_rows(&mut dx, d, |i, o| {
            let r = i * d..(i + 1) * d;
            let (yr, gr) = (&y[r.clone()], &g[r]);
            let dot = yr.iter().zip(gr).map(|(a, b)| a * b).sum::<f32>();
            for ((o, a), b) in o.iter_mut().zip(yr).zip(gr) {
                *o = a * (b - dot);
            }
        });
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Exact GELU, `x * Φ(x)` with `Φ(x) = (1 + erf(x / √2)) / 2`.
struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "pretext-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, _) = rows(s, l)
            .ok_or_else(|| candle_core::Error::Msg("gelu: needs contiguous f32".into()))?;
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, 4096, |i, o| {
            super::math::gelu(&x[i * 4096..(i * 4096 + o.len())], o)
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// `dx = g * (Φ(x) + x φ(x))`.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (x, g) = (f32_rows(arg)?, f32_rows(grad)?);
        let mut dx = vec![0f32; x.len()];
        for_rows(&mut dx, 4096, |i, o| {
            let r = i * 4096..(i * 4096 + o.len());
            super::math::gelu_grad(&x[r.clone()], &g[r], o)
        });
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Fused exact GELU, or `None` where only candle's `gelu_erf` applies.
pub fn gelu_erf(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    x.contiguous()?.apply_op1(GeluErf).map(Some)
}

use super::storage::applies;

/// Fused normalisation, or `None` where only the composed version applies.
pub fn normalize(x: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    x.contiguous()?
        .apply_op1(Normalize { eps: eps as f32 })
        .map(Some)
}

/// Fused softmax over the last dimension, or `None` where only the composed one applies.
pub fn softmax_last_dim(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    x.contiguous()?.apply_op1(Softmax).map(Some)
}

/// Sum over rows: `[N, D]` (row-major) → `[D]`. candle's own reduction over leading dims
/// takes a divide per element; this is the bias gradient of every linear layer.
fn row_sum(g: &[f32], d: usize) -> Vec<f32> {
    let mut acc = vec![0f32; d];
    for row in g.chunks_exact(d) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    acc
}

/// `x * w + b` with `w`, `b` of shape `[D]` broadcast over the rows of `x` (`[.., D]`): the
/// affine part of layer norm, and (with `w = 1`) a linear layer's bias.
struct RowAffine;

fn vec_of(s: &CpuStorage, l: &Layout, what: &str) -> Result<Vec<f32>> {
    rows(s, l).map(|(v, _)| v.to_vec()).ok_or_else(|| {
        candle_core::Error::Msg(format!("row affine: {what} must be contiguous f32"))
    })
}

impl candle_core::CustomOp3 for RowAffine {
    fn name(&self) -> &'static str {
        "pretext-row-affine"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, d) = rows(sx, lx)
            .ok_or_else(|| candle_core::Error::Msg("row affine: needs contiguous f32".into()))?;
        let (w, b) = (vec_of(sw, lw, "weight")?, vec_of(sb, lb, "bias")?);
        if w.len() != d || b.len() != d {
            candle_core::bail!(
                "row affine: rows of {d}, weight {}, bias {}",
                w.len(),
                b.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, d, |i, o| {
            let xr = &x[i * d..(i + 1) * d];
            for (((o, v), w), b) in o.iter_mut().zip(xr).zip(&w).zip(&b) {
                *o = v * w + b;
            }
        });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    /// `dx = g * w`, `dw = Σ_rows g * x`, `db = Σ_rows g`.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let (xv, g, wv) = (f32_rows(x)?, f32_rows(grad)?, f32_rows(w)?);
        let db = row_sum(&g, d);
        let gx: Vec<f32> = g.iter().zip(&xv).map(|(g, x)| g * x).collect();
        let dw = row_sum(&gx, d);
        let mut dx = vec![0f32; g.len()];
        for_rows(&mut dx, d, |i, o| {
            for ((o, g), w) in o.iter_mut().zip(&g[i * d..(i + 1) * d]).zip(&wv) {
                *o = g * w;
            }
        });
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, w.shape(), dev)?),
        ))
    }
}

/// A bias added to the rows of `x`: `x + b`, backward `(g, Σ_rows g)`.
struct RowBias;

impl candle_core::CustomOp2 for RowBias {
    fn name(&self) -> &'static str {
        "pretext-row-bias"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, d) = rows(sx, lx)
            .ok_or_else(|| candle_core::Error::Msg("row bias: needs contiguous f32".into()))?;
        let b = vec_of(sb, lb, "bias")?;
        if b.len() != d {
            candle_core::bail!("row bias: rows of {d}, bias {}", b.len());
        }
        let mut out = vec![0f32; x.len()];
        for_rows(&mut out, d, |i, o| {
            for ((o, v), b) in o.iter_mut().zip(&x[i * d..(i + 1) * d]).zip(&b) {
                *o = v + b;
            }
        });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = row_sum(&f32_rows(grad)?, b.elem_count());
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}

fn rank1_applies(x: &Tensor, v: &Tensor) -> bool {
    applies(x) && applies(v) && v.rank() == 1 && x.dims().last() == Some(&v.elem_count())
}

/// Fused `x * w + b` over rows, or `None` where only the composed version applies.
pub fn row_affine(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if !(rank1_applies(x, w) && rank1_applies(x, b)) {
        return Ok(None);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, RowAffine)
        .map(Some)
}

/// Fused `x + b` over rows, or `None` where only the composed version applies.
pub fn row_bias(x: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if !rank1_applies(x, b) {
        return Ok(None);
    }
    x.contiguous()?
        .apply_op2(&b.contiguous()?, RowBias)
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn composed_normalize(x: &Tensor, eps: f64) -> Tensor {
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let xc = x.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        xc.broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap()
    }

    fn composed_softmax(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(D::Minus1).unwrap().detach();
        let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Values and gradients (through a loss with non-uniform weights) match the composed op.
    fn check(fused: impl Fn(&Tensor) -> Tensor, composed: impl Fn(&Tensor) -> Tensor, rows: usize) {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&(Tensor::randn(0f32, 2.0, (rows, 24), &dev).unwrap() + 0.5).unwrap())
                .unwrap();
        let w = Tensor::randn(0f32, 1.0, (rows, 24), &dev).unwrap();
        let (yf, yc) = (fused(x.as_tensor()), composed(x.as_tensor()));
        assert!(max_abs_diff(&yf, &yc) < 1e-5);
        let gf = (&yf * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&yc * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gc) = (
            gf.get(x.as_tensor()).unwrap(),
            gc.get(x.as_tensor()).unwrap(),
        );
        assert!(
            max_abs_diff(gf, gc) < 1e-4,
            "gradient differs by {}",
            max_abs_diff(gf, gc)
        );
    }

    #[test]
    fn fused_normalize_matches_composed() {
        for rows in [3, 2000] {
            check(
                |x| normalize(x, 1e-6).unwrap().unwrap(),
                |x| composed_normalize(x, 1e-6),
                rows,
            );
        }
    }

    #[test]
    fn fused_gelu_matches_candle() {
        for rows in [3, 2000] {
            check(
                |x| gelu_erf(x).unwrap().unwrap(),
                |x| x.gelu_erf().unwrap(),
                rows,
            );
        }
    }

    #[test]
    fn fused_softmax_matches_composed() {
        for rows in [3, 2000] {
            check(
                |x| softmax_last_dim(x).unwrap().unwrap(),
                composed_softmax,
                rows,
            );
        }
    }

    #[test]
    fn row_affine_and_bias_match_composed_ops_with_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 8), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, 8, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 8, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, 5, 8), &dev).unwrap();
        let fused = row_affine(x.as_tensor(), w.as_tensor(), b.as_tensor())
            .unwrap()
            .unwrap();
        let composed = x
            .as_tensor()
            .broadcast_mul(w.as_tensor())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        assert!(max_abs_diff(&fused, &composed) < 1e-6);
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (composed * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            let (a, c) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            assert!(max_abs_diff(a, c) < 1e-5, "{a} vs {c}");
        }

        let fused = row_bias(x.as_tensor(), b.as_tensor()).unwrap().unwrap();
        let composed = x.as_tensor().broadcast_add(b.as_tensor()).unwrap();
        assert!(max_abs_diff(&fused, &composed) < 1e-6);
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gc = (composed * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &b] {
            let (a, c) = (
                gf.get(v.as_tensor()).unwrap(),
                gc.get(v.as_tensor()).unwrap(),
            );
            assert!(max_abs_diff(a, c) < 1e-5, "{a} vs {c}");
        }
    }
}
