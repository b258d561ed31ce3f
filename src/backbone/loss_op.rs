//! Cross-entropy from logits as one CPU op with a hand-written backward pass.
//!
//! Composed from candle ops (`ops::cross_entropy_smoothed`), the loss over `[N, C]` logits
//! makes eight passes over the logits forward (max, shift, exp, sum, log, subtract, gather,
//! mean) and as many backward, each with a fresh `[N, C]` buffer and candle's zero-filled
//! gradient plus an add, all on one thread: with an 8,000-token vocabulary they were a
//! seventh of the MLM training step. Here forward reads the logits once per row (max, then
//! the shifted exponentials' sum) and keeps each row's log-sum-exp; backward writes
//! `g/N (softmax - target)` in one pass over the pool.
//!
//! With label smoothing `ε` the target is `(1-ε)·onehot + ε/C`, PyTorch's
//! `F.cross_entropy(..., label_smoothing=ε)`.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffer;
use super::math;
use super::storage::{applies, cpu_f32, with_f32};

/// Rows per task.
const ROWS_PER_TASK: usize = 16;

struct CrossEntropyOp {
    smoothing: f32,
    /// Each row's log-sum-exp and the targets, kept by forward for backward.
    saved: Mutex<Option<Saved>>,
}

struct Saved {
    lse: Vec<f32>,
    targets: Vec<usize>,
}

/// Each row's `(log-sum-exp, mean of its logits)`.
fn row_stats(x: &[f32], c: usize) -> Vec<(f32, f32)> {
    let mut stats = vec![(0f32, 0f32); x.len() / c];
    stats
        .par_chunks_mut(ROWS_PER_TASK)
        .zip(x.par_chunks(c * ROWS_PER_TASK))
        .for_each(|(st, x)| {
            let mut e = vec![0f32; c];
            for (s, row) in st.iter_mut().zip(x.chunks_exact(c)) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                e.copy_from_slice(row);
                math::exp_shifted(&mut e, max);
                let lse = max + e.iter().sum::<f32>().ln();
                *s = (lse, row.iter().sum::<f32>() / c as f32);
            }
        });
    stats
}

/// The targets as row indices below `c`, or an error naming the first that is not.
fn targets(s: &CpuStorage, l: &Layout, n: usize, c: usize) -> Result<Vec<usize>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("cross-entropy: the targets must be contiguous");
    };
    let t: Vec<usize> = match s {
        CpuStorage::U32(v) => v[start..end].iter().map(|&t| t as usize).collect(),
        _ => bail!("cross-entropy: the targets must be u32 class indices"),
    };
    if t.len() != n {
        bail!("cross-entropy: {n} rows of logits but {} targets", t.len());
    }
    if let Some((i, &bad)) = t.iter().enumerate().find(|(_, &t)| t >= c) {
        bail!("cross-entropy: target {bad} at row {i} is not one of the {c} classes");
    }
    Ok(t)
}

fn dims(l: &Layout) -> Result<(usize, usize)> {
    match l.dims() {
        &[n, c] if c > 0 => Ok((n, c)),
        d => bail!("cross-entropy: logits must be [N, C] with C > 0, found {d:?}"),
    }
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "pretext-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        st: &CpuStorage,
        lt: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c) = dims(l)?;
        let x = cpu_f32(s, l, "cross-entropy logits")?;
        let t = targets(st, lt, n, c)?;
        let eps = self.smoothing;
        let stats = row_stats(x, c);
        let total: f64 = stats
            .iter()
            .zip(x.chunks_exact(c))
            .zip(&t)
            .map(|((&(lse, mean), row), &t)| {
                // -log p_t = lse - x_t; mean over classes of -log p_c = lse - mean(x).
                let nll = lse - row[t];
                ((1.0 - eps) * nll + eps * (lse - mean)) as f64
            })
            .sum();
        if let Ok(mut slot) = self.saved.lock() {
            let lse = stats.iter().map(|s| s.0).collect();
            *slot = Some(Saved { lse, targets: t });
        }
        let loss = if n == 0 {
            f32::NAN
        } else {
            (total / n as f64) as f32
        };
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        tgt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c) = logits.dims2()?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()? / n.max(1) as f32;
        let saved = self.saved.lock().ok().and_then(|mut s| s.take());
        let Saved { lse, targets: t } = match saved {
            Some(s) => s,
            None => {
                let (tstore, tl) = tgt.storage_and_layout();
                let t = match &*tstore {
                    candle_core::Storage::Cpu(s) => targets(s, tl, n, c)?,
                    _ => bail!("cross-entropy: targets on another device than the logits"),
                };
                let lse = with_f32(logits, |x| row_stats(x, c).iter().map(|s| s.0).collect())?;
                Saved { lse, targets: t }
            }
        };
        let eps = self.smoothing;
        let off = eps / c as f32;
        let dx = with_f32(logits, |x| {
            // Every row is written in full below.
            let mut dx = buffer::for_overwrite(x.len());
            dx.par_chunks_mut(c * ROWS_PER_TASK)
                .zip(x.par_chunks(c * ROWS_PER_TASK))
                .enumerate()
                .for_each(|(k, (d, x))| {
                    for (r, (dr, xr)) in d.chunks_exact_mut(c).zip(x.chunks_exact(c)).enumerate() {
                        let i = k * ROWS_PER_TASK + r;
                        dr.copy_from_slice(xr);
                        math::exp_shifted(dr, lse[i]);
                        dr.iter_mut().for_each(|p| *p = g * (*p - off));
                        dr[t[i]] -= g * (1.0 - eps);
                    }
                });
            dx
        })?;
        Ok((Some(Tensor::from_vec(dx, (n, c), logits.device())?), None))
    }
}

/// The mean (label-smoothed) cross-entropy of `logits [N, C]` against class indices
/// `targets [N]`, as one op; `None` where it does not apply (not f32 on the CPU, or no
/// rows), and the caller composes it from candle ops.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Option<Tensor>> {
    if !applies(logits) || logits.rank() != 2 || logits.dim(0)? == 0 {
        return Ok(None);
    }
    let op = CrossEntropyOp {
        smoothing: smoothing as f32,
        saved: Mutex::new(None),
    };
    logits
        .contiguous()?
        .apply_op2(&targets.to_dtype(DType::U32)?.contiguous()?, op)
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::op_tests::assert_same_with_gradients;
    use super::super::ops::cross_entropy_composed;
    use candle_core::{Device, Tensor, Var};

    /// The op equals the composed loss in value and gradient, with and without label
    /// smoothing, on rows wide enough to be split over the pool and with large logits.
    #[test]
    fn fused_cross_entropy_matches_the_composed_ops() {
        let dev = Device::Cpu;
        for (n, c, scale, eps) in [(37, 8000, 4.0, 0.0), (5, 3, 30.0, 0.1), (1, 1, 1.0, 0.0)] {
            let x = Var::randn(0f32, scale, (n, c), &dev).unwrap();
            let t: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % c as u32).collect();
            let t = Tensor::from_vec(t, n, &dev).unwrap();
            let fused = super::cross_entropy(x.as_tensor(), &t, eps)
                .unwrap()
                .unwrap();
            let composed = cross_entropy_composed(x.as_tensor(), &t, eps).unwrap();
            let scale = composed.abs().unwrap().to_scalar::<f32>().unwrap().max(1.0);
            // Gradients are about 0.1-1 in size; the inputs are random on every run, and
            // 1e-6 was once exceeded (1.6e-6, f32 rounding of a 3-class softmax).
            assert_same_with_gradients(&fused, &composed, &[&x], 2e-6 * scale, 1e-5);
        }
    }

    #[test]
    fn a_target_outside_the_classes_is_an_error_naming_it() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 4), candle_core::DType::F32, &dev).unwrap();
        let t = Tensor::new(&[1u32, 4], &dev).unwrap();
        let err = super::cross_entropy(&x, &t, 0.0).unwrap_err().to_string();
        assert!(err.contains("target 4 at row 1"), "{err}");
        let short = Tensor::new(&[1u32], &dev).unwrap();
        let err = super::cross_entropy(&x, &short, 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 rows of logits but 1 targets"), "{err}");
    }
}
