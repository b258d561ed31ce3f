//! A linear layer `y = x Wᵀ + b` as one CPU op with a hand-written backward pass.
//!
//! Composed from candle ops a linear layer is a transpose, a reshape, a matmul and a bias
//! add, and its backward a dozen more nodes (two matmuls on transposed copies, a transpose
//! back, a reduction for the bias, and a zeros + add in the gradient store for each). Here
//! forward is one `gemm` into a buffer pre-filled with the bias, and backward two `gemm`s
//! (`dx = g W`, `dW = gᵀ x`) plus a column sum (`db`). On other devices and dtypes
//! [`linear`] returns `None` and the caller composes the layer from candle ops.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffer;
use super::gemm::{product, Mat, Threads};
use super::math;
use super::storage::{applies, cpu_f32, with_f32};

/// `x [N, in]`, `w [out, in]`, optional `b [out]` → `[N, out]`: the product, then the bias
/// added to each element (`Σ x w + b`, the order the fused block keeps when it adds the bias
/// in a later pass of its own, so both are the same to the bit).
pub(super) fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, out_dim: usize) -> Result<Vec<f32>> {
    let mut y = product_t(x, w, out_dim)?;
    if let Some(b) = b {
        add_bias(&mut y, b);
    }
    Ok(y)
}

/// `x Wᵀ` without the bias, for a caller that adds it in a pass it makes anyway.
pub(super) fn product_t(x: &[f32], w: &[f32], out_dim: usize) -> Result<Vec<f32>> {
    let in_dim = w.len() / out_dim.max(1);
    let n = x.len() / in_dim.max(1);
    product(
        Mat::rows(x, n, in_dim),
        Mat::rows(w, out_dim, in_dim).t(),
        Threads::Pool,
    )
}

/// Whole rows of `d` elements, about `CHUNK` elements per task.
fn row_chunk(d: usize) -> usize {
    d.max(1) * (CHUNK / d.max(1)).max(1)
}

/// `y[r, j] += b[j]` over rows of `b.len()`, spread over the pool.
pub(super) fn add_bias(y: &mut [f32], b: &[f32]) {
    let d = b.len();
    if d == 0 {
        return;
    }
    y.par_chunks_mut(row_chunk(d))
        .for_each(|c| add_bias_rows(c, b));
}

/// `c[r, j] += b[j]` over the whole rows of `c`.
fn add_bias_rows(c: &mut [f32], b: &[f32]) {
    for row in c.chunks_exact_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
    }
}

/// `pre += b` (rows of `b.len()`) and then `gelu(pre)`, in one pass over the pool.
pub(super) fn gelu_biased(pre: &mut [f32], b: &[f32]) -> Vec<f32> {
    let d = b.len();
    if d == 0 {
        return gelu(pre);
    }
    // `math::gelu` writes every element of each chunk.
    let mut y = buffer::for_overwrite(pre.len());
    let chunk = row_chunk(d);
    y.par_chunks_mut(chunk)
        .zip(pre.par_chunks_mut(chunk))
        .for_each(|(y, p)| {
            add_bias_rows(p, b);
            math::gelu(p, y)
        });
    y
}

/// `(dx, dW, db)` from the upstream gradient `g [N, out]`.
fn backward(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    with_f32(grad, |g| backward_from(x, w, g, with_bias))?
}

fn backward_from(
    x: &Tensor,
    w: &Tensor,
    g: &[f32],
    with_bias: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (out_dim, in_dim) = w.dims2()?;
    let n = x.dim(0)?;
    let dev = x.device();
    let (dx, dw) = with_f32(x, |xv| {
        with_f32(w, |wv| backward_slices(xv, wv, g, out_dim))
    })???;
    let db = with_bias.then(|| bias_grad(g, out_dim));
    Ok((
        Tensor::from_vec(dx, (n, in_dim), dev)?,
        Tensor::from_vec(dw, (out_dim, in_dim), dev)?,
        db.map(|db| Tensor::from_vec(db, out_dim, dev))
            .transpose()?,
    ))
}

/// `(dx, dW) = (g W, gᵀ x)` for `x [N, in]`, `w [out, in]`, `g [N, out]`.
pub(super) fn backward_slices(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    out_dim: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let in_dim = w.len() / out_dim.max(1);
    let n = g.len() / out_dim.max(1);
    let gm = Mat::rows(g, n, out_dim);
    let dx = product(gm, Mat::rows(w, out_dim, in_dim), Threads::Pool)?;
    let dw = product(gm.t(), Mat::rows(x, n, in_dim), Threads::Pool)?;
    Ok((dx, dw))
}

/// `db = Σ_rows g` for `g [N, out]`, each column summed in row order (the same sums
/// whatever the thread count) by tasks over column ranges.
pub(super) fn bias_grad(g: &[f32], out_dim: usize) -> Vec<f32> {
    const COLS: usize = 64;
    let mut acc = vec![0f32; out_dim];
    if out_dim == 0 {
        return acc;
    }
    let sum_cols = |first: usize, acc: &mut [f32]| {
        for row in g.chunks_exact(out_dim) {
            for (a, v) in acc.iter_mut().zip(&row[first..]) {
                *a += v;
            }
        }
    };
    if g.len() < 1 << 15 {
        sum_cols(0, &mut acc);
    } else {
        acc.par_chunks_mut(COLS)
            .enumerate()
            .for_each(|(i, a)| sum_cols(i * COLS, a));
    }
    acc
}

/// Elements per task when an elementwise pass is spread over the pool.
const CHUNK: usize = 1 << 14;

/// Exact GELU of every element, spread over the pool.
pub(super) fn gelu(pre: &[f32]) -> Vec<f32> {
    // `math::gelu` writes every element of each chunk.
    let mut y = buffer::for_overwrite(pre.len());
    y.par_chunks_mut(CHUNK)
        .zip(pre.par_chunks(CHUNK))
        .for_each(|(y, p)| math::gelu(p, y));
    y
}

/// GELU's backward, `g (Φ(x) + x φ(x))` at the pre-activations `pre`.
pub(super) fn gelu_grad(pre: &[f32], g: &[f32]) -> Vec<f32> {
    // `math::gelu_grad` writes every element of each chunk.
    let mut d = buffer::for_overwrite(g.len());
    d.par_chunks_mut(CHUNK)
        .zip(pre.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
        .for_each(|(d, (p, g))| math::gelu_grad(p, g, d));
    d
}

/// `gelu(x Wᵀ + b)` (exact GELU) as one op: the pre-activation is kept inside the op for
/// backward instead of being a graph node of its own, which saves the largest tensor of a
/// transformer block (`[N, mlp_dim]`) a pass and a gradient buffer in each direction.
struct LinearGeluOp {
    /// Whether a backward pass can follow (an input is tracked); if not, nothing is kept.
    keep: bool,
    pre: Mutex<Option<Arc<Vec<f32>>>>,
}

impl CustomOp3 for LinearGeluOp {
    fn name(&self) -> &'static str {
        "pretext-linear-gelu"
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
        let x = cpu_f32(sx, lx, "linear input")?;
        let (w, b) = (cpu_f32(sw, lw, "weight")?, cpu_f32(sb, lb, "bias")?);
        let (n, out) = (lx.dims()[0], lw.dims()[0]);
        let mut pre = product_t(x, w, out)?;
        let y = gelu_biased(&mut pre, b);
        if self.keep {
            if let Ok(mut slot) = self.pre.lock() {
                *slot = Some(Arc::new(pre));
            }
        }
        Ok((CpuStorage::F32(y), (n, out).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stored = self.pre.lock().ok().and_then(|s| s.clone());
        let pre = match stored {
            Some(p) => p,
            None => {
                let y = x.matmul(&w.t()?)?.broadcast_add(b)?;
                Arc::new(y.flatten_all()?.to_vec1::<f32>()?)
            }
        };
        let (dx, dw, db) = with_f32(grad, |g| backward_from(x, w, &gelu_grad(&pre, g), true))??;
        Ok((Some(dx), Some(dw), db))
    }
}

/// `gelu(x Wᵀ + b)` over the last dimension of `x`, or `None` where only the composed layer
/// applies.
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    let op = LinearGeluOp {
        keep: x.track_op() || w.track_op() || b.track_op(),
        pre: Mutex::new(None),
    };
    apply(x, w, Some(b), |x2, w, b| match b {
        Some(b) => x2.apply_op3(w, b, op),
        None => unreachable!("linear_gelu always has a bias"),
    })
}

struct LinearOp;

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "pretext-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (cpu_f32(sx, lx, "linear input")?, cpu_f32(sw, lw, "weight")?);
        let (n, out) = (lx.dims()[0], lw.dims()[0]);
        Ok((CpuStorage::F32(forward(x, w, None, out)?), (n, out).into()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = backward(x, w, grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "pretext-linear-bias"
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
        let x = cpu_f32(sx, lx, "linear input")?;
        let (w, b) = (cpu_f32(sw, lw, "weight")?, cpu_f32(sb, lb, "bias")?);
        let (n, out) = (lx.dims()[0], lw.dims()[0]);
        Ok((
            CpuStorage::F32(forward(x, w, Some(b), out)?),
            (n, out).into(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = backward(x, w, grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

/// `x Wᵀ + b` over the last dimension of `x` (any rank), or `None` where only the composed
/// layer applies (not CPU, not f32).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    apply(x, w, b, |x2, w, b| match b {
        Some(b) => x2.apply_op3(w, b, LinearOp),
        None => x2.apply_op2(w, LinearOp),
    })
}

/// Checks shapes, flattens `x` to `[rows, in]`, runs `op` and restores the leading shape.
fn apply(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    op: impl FnOnce(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    if !applies(x) || !applies(w) || !b.is_none_or(applies) {
        return Ok(None);
    }
    let (out_dim, in_dim) = w.dims2()?;
    let dims = x.dims().to_vec();
    if dims.last() != Some(&in_dim) {
        candle_core::bail!("linear: input {dims:?} does not end in the weight's {in_dim} inputs");
    }
    if let Some(b) = b {
        if b.dims() != [out_dim] {
            candle_core::bail!("linear: bias {:?} for {out_dim} outputs", b.dims());
        }
    }
    let rows = x.elem_count() / in_dim.max(1);
    let x2 = x.contiguous()?.reshape((rows, in_dim))?;
    let b = b.map(Tensor::contiguous).transpose()?;
    let y = op(&x2, &w.contiguous()?, b.as_ref())?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = out_dim;
    }
    y.reshape(out).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::op_tests::assert_same_with_gradients;
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn values_and_gradients_match_candle_matmul() {
        let dev = Device::Cpu;
        for bias in [true, false] {
            let x = Var::randn(0f32, 1.0, (3, 7, 24), &dev).unwrap();
            let w = Var::randn(0f32, 0.3, (40, 24), &dev).unwrap();
            let b = Var::randn(0f32, 1.0, 40, &dev).unwrap();
            let bt = bias.then(|| b.as_tensor());
            let fused = linear(x.as_tensor(), w.as_tensor(), bt).unwrap().unwrap();
            let mut composed = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
            let mut vars = vec![&x, &w];
            if bias {
                composed = composed.broadcast_add(b.as_tensor()).unwrap();
                vars.push(&b);
            }
            assert_eq!(fused.dims(), [3, 7, 40]);
            assert_same_with_gradients(&fused, &composed, &vars, 1e-5, 1e-4);
        }
    }

    #[test]
    fn linear_gelu_matches_linear_then_gelu_with_gradients() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (2, 9, 16), &dev).unwrap();
        let w = Var::randn(0f32, 0.4, (48, 16), &dev).unwrap();
        let b = Var::randn(0f32, 1.0, 48, &dev).unwrap();
        let fused = linear_gelu(x.as_tensor(), w.as_tensor(), b.as_tensor())
            .unwrap()
            .unwrap();
        let composed = x
            .as_tensor()
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
            .gelu_erf()
            .unwrap();
        assert_same_with_gradients(&fused, &composed, &[&x, &w, &b], 1e-5, 1e-4);
    }

    #[test]
    fn mismatched_shapes_are_errors_not_panics() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, None).is_err());
        let w = Tensor::zeros((3, 5), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, Some(&b)).is_err());
    }
}
