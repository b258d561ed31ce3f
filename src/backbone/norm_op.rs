//! Layer normalisation with its affine part, `y = (x - mean) / sqrt(var + eps) * w + b`, as
//! one CPU op with a hand-written backward pass (llm.c's `layernorm_forward` /
//! `layernorm_backward`). The per-row mean and reciprocal standard deviation are kept from
//! forward; backward is one pass over the rows giving `dx`, with per-task partial sums for
//! `dw = Σ g x̂` and `db = Σ g`.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffer;
use super::storage::{applies, cpu_f32, with_f32};

/// Rows per task on the pool.
const ROWS_PER_TASK: usize = 64;

/// `(mean, rstd)` per row.
type RowStats = Arc<Vec<(f32, f32)>>;

struct LayerNormOp {
    eps: f32,
    /// Whether a backward pass can follow (an input is tracked); if not, nothing is kept.
    keep: bool,
    /// The row statistics of the last forward pass.
    stats: Mutex<Option<RowStats>>,
}

fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "pretext-layer-norm"
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
        let x = cpu_f32(sx, lx, "layer norm input")?;
        let (w, b) = (cpu_f32(sw, lw, "weight")?, cpu_f32(sb, lb, "bias")?);
        let d = w.len();
        if d == 0 || b.len() != d || x.len() % d != 0 {
            bail!(
                "layer norm: rows of {d} for weight {}, bias {}, input {:?}",
                w.len(),
                b.len(),
                lx.dims()
            );
        }
        let (y, stats) = forward(x, w, b, self.eps);
        if self.keep {
            if let Ok(mut slot) = self.stats.lock() {
                *slot = Some(Arc::new(stats));
            }
        }
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    /// With `x̂ = (x - mean) rstd` and `gw = g w`:
    /// `dx = rstd (gw - mean(gw) - x̂ mean(gw x̂))`, `dw = Σ_rows g x̂`, `db = Σ_rows g`.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let stored = self.stats.lock().ok().and_then(|s| s.clone());
        let (dx, dw, db) = with_f32(x, |xv| {
            let stats = match stored {
                Some(s) => s,
                None => Arc::new(xv.chunks_exact(d).map(|r| row_stats(r, self.eps)).collect()),
            };
            with_f32(w, |wv| with_f32(grad, |g| backward(xv, wv, g, &stats)))
        })???;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dw, w.shape(), dev)?),
            Some(Tensor::from_vec(db, w.shape(), dev)?),
        ))
    }
}

/// `y = (x - mean) rstd w + b` over rows of `w.len()`, with each row's `(mean, rstd)`.
pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> (Vec<f32>, Vec<(f32, f32)>) {
    let d = w.len();
    let rows = x.len() / d.max(1);
    let mut stats = vec![(0f32, 0f32); rows];
    if d == 0 {
        return (vec![0f32; x.len()], stats);
    }
    // Every row of `y` is written below.
    let mut y = buffer::for_overwrite(x.len());
    y.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(stats.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|((y, st), x)| {
            for ((yr, s), xr) in y.chunks_exact_mut(d).zip(st).zip(x.chunks_exact(d)) {
                let (mean, rstd) = row_stats(xr, eps);
                *s = (mean, rstd);
                for (((o, v), w), b) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                    *o = (v - mean) * rstd * w + b;
                }
            }
        });
    (y, stats)
}

/// `(dx, dw, db)` from the upstream gradient `g` and the forward pass's row statistics:
/// with `x̂ = (x - mean) rstd` and `gw = g w`,
/// `dx = rstd (gw - mean(gw) - x̂ mean(gw x̂))`, `dw = Σ_rows g x̂`, `db = Σ_rows g`.
pub(super) fn backward(
    xv: &[f32],
    wv: &[f32],
    g: &[f32],
    stats: &[(f32, f32)],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = wv.len();
    if d == 0 {
        return (vec![0f32; xv.len()], Vec::new(), Vec::new());
    }
    // Every row of `dx` is written below.
    let mut dx = buffer::for_overwrite(xv.len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(d * ROWS_PER_TASK)
        .zip(xv.par_chunks(d * ROWS_PER_TASK))
        .zip(g.par_chunks(d * ROWS_PER_TASK))
        .zip(stats.par_chunks(ROWS_PER_TASK))
        .map(|(((dx, x), g), st)| {
            let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
            for (((dxr, xr), gr), &(mean, rstd)) in dx
                .chunks_exact_mut(d)
                .zip(x.chunks_exact(d))
                .zip(g.chunks_exact(d))
                .zip(st)
            {
                let (mut mg, mut mgx) = (0f32, 0f32);
                for (((xv, gv), wv), (dw, db)) in xr
                    .iter()
                    .zip(gr)
                    .zip(wv)
                    .zip(dw.iter_mut().zip(db.iter_mut()))
                {
                    let xh = (xv - mean) * rstd;
                    let gw = gv * wv;
                    mg += gw;
                    mgx += gw * xh;
                    *dw += gv * xh;
                    *db += gv;
                }
                let (mg, mgx) = (mg / d as f32, mgx / d as f32);
                for (((o, xv), gv), wv) in dxr.iter_mut().zip(xr).zip(gr).zip(wv) {
                    let xh = (xv - mean) * rstd;
                    *o = rstd * (gv * wv - mg - xh * mgx);
                }
            }
            (dw, db)
        })
        .collect();
    let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
    for (pw, pb) in partials {
        dw.iter_mut().zip(pw).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
    }
    (dx, dw, db)
}

/// Layer norm over the last dimension with weight and bias `[D]`, or `None` where only the
/// composed version applies (not CPU, not f32).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !applies(x) || !applies(w) || !applies(b) {
        return Ok(None);
    }
    let d = w.elem_count();
    if w.rank() != 1 || b.dims() != w.dims() || x.dims().last() != Some(&d) {
        bail!(
            "layer norm: input {:?}, weight {:?} and bias {:?} do not agree",
            x.dims(),
            w.dims(),
            b.dims()
        );
    }
    let op = LayerNormOp {
        eps: eps as f32,
        keep: x.track_op() || w.track_op() || b.track_op(),
        stats: Mutex::new(None),
    };
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, op)
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::op_tests::assert_same_with_gradients;
    use super::*;
    use candle_core::{Device, Var, D};

    #[test]
    fn values_and_gradients_match_the_composed_layer_norm() {
        let dev = Device::Cpu;
        // 200 rows: several tasks on the pool, and a last one that is short.
        let x =
            Var::from_tensor(&(Tensor::randn(0f32, 2.0, (200, 24), &dev).unwrap() + 0.5).unwrap())
                .unwrap();
        let w = Var::randn(1f32, 0.3, 24, &dev).unwrap();
        let b = Var::randn(0f32, 0.3, 24, &dev).unwrap();
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-6)
            .unwrap()
            .unwrap();
        let xt = x.as_tensor();
        let mean = xt.mean_keepdim(D::Minus1).unwrap();
        let xc = xt.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let composed = xc
            .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(w.as_tensor())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        assert_same_with_gradients(&fused, &composed, &[&x, &w, &b], 1e-5, 1e-3);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 5), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::ones(4, candle_core::DType::F32, &dev).unwrap();
        assert!(layer_norm(&x, &w, &w, 1e-5).is_err());
    }
}
