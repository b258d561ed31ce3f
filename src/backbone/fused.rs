//! Fused CPU kernels with hand-written backward passes for the last-dimension softmax (the
//! attention fallback with dropout, and any other softmax) and exact GELU where it is not
//! fused into its linear layer. Composed from candle ops they cost several temporaries each
//! in both passes; fused, one. The linear layer, attention and layer norm have ops of their
//! own (`linear_op.rs`, `attention_op.rs`, `norm_op.rs`). On other devices and dtypes the
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
    // Rows of width 0 (an empty sequence) have nothing to compute.
    if d == 0 || out.is_empty() {
        return;
    }
    if out.len() < PAR_MIN {
        out.chunks_mut(d).enumerate().for_each(|(i, o)| f(i, o));
    } else {
        out.par_chunks_mut(d).enumerate().for_each(|(i, o)| f(i, o));
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

/// Fused softmax over the last dimension, or `None` where only the composed one applies.
pub fn softmax_last_dim(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) {
        return Ok(None);
    }
    x.contiguous()?.apply_op1(Softmax).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::op_tests::assert_same_with_gradients;
    use super::*;
    use candle_core::{Device, Var, D};

    fn composed_softmax(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(D::Minus1).unwrap().detach();
        let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
        e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
    }

    /// Values and gradients (through a loss with non-uniform weights) match the composed op.
    fn check(fused: impl Fn(&Tensor) -> Tensor, composed: impl Fn(&Tensor) -> Tensor, rows: usize) {
        let dev = Device::Cpu;
        let x =
            Var::from_tensor(&(Tensor::randn(0f32, 2.0, (rows, 24), &dev).unwrap() + 0.5).unwrap())
                .unwrap();
        let (yf, yc) = (fused(x.as_tensor()), composed(x.as_tensor()));
        assert_same_with_gradients(&yf, &yc, &[&x], 1e-5, 1e-4);
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

    /// Empty sequences (zero-width rows, or no rows) are empty outputs, not panics.
    #[test]
    fn empty_inputs_give_empty_outputs() {
        let dev = Device::Cpu;
        for shape in [(3, 0), (0, 5)] {
            let x = Tensor::zeros(shape, candle_core::DType::F32, &dev).unwrap();
            assert_eq!(softmax_last_dim(&x).unwrap().unwrap().dims(), x.dims());
            assert_eq!(gelu_erf(&x).unwrap().unwrap().dims(), x.dims());
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
}
