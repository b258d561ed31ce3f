//! Scaled dot-product attention over packed `q | k | v` as one CPU op with a hand-written
//! backward pass (llm.c's `attention_forward` / `attention_backward`, on `gemm`).
//!
//! Composed from candle ops, attention is three head-splitting copies, a batched matmul
//! whose every small `T×T` product is itself spread over the thread pool, a scale, a mask
//! add, a softmax, a second batched matmul and a transpose back, with as many backward
//! nodes again. Here each (batch, head) pair is one task on the pool running single-threaded
//! `gemm`s, and the probabilities are kept from forward for backward.
//!
//! # Shapes
//! - `qkv`: `[B, T, 3D]`, the query, key and value projections side by side
//! - `bias`: `[B, T]` additive key bias (0 to attend, a large negative for padding)
//! - output: `[B, T, D]`, heads concatenated as `transpose(1, 2).reshape(B, T, D)` gives

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffer;
use super::gemm::{matmul, Mat, Threads};
use super::math;
use super::storage::{applies, cpu_f32, with_f32};

/// Batch, sequence length, model width and head count of one attention call.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub b: usize,
    pub t: usize,
    pub d: usize,
    pub heads: usize,
}

impl Dims {
    fn hd(&self) -> usize {
        self.d / self.heads
    }

    /// Offset of head `h`'s query (`which = 0`), key (1) or value (2) in batch row `bi`.
    fn qkv_offset(&self, bi: usize, h: usize, which: usize) -> usize {
        bi * self.t * 3 * self.d + which * self.d + h * self.hd()
    }

    fn head<'q>(&self, qkv: &'q [f32], bi: usize, h: usize, which: usize) -> Mat<'q> {
        let start = self.qkv_offset(bi, h, which);
        Mat::strided(&qkv[start..], self.t, self.hd(), 3 * self.d, 1)
    }
}

struct AttentionOp {
    heads: usize,
    /// Whether a backward pass can follow (the input is tracked); if not, nothing is kept.
    keep: bool,
    /// Softmax probabilities `[B, H, T, T]` of the last forward pass, for backward.
    probs: Mutex<Option<Arc<Vec<f32>>>>,
}

impl AttentionOp {
    fn dims(&self, l: &Layout) -> Result<Dims> {
        let &[b, t, d3] = l.dims() else {
            bail!("attention: qkv must be [B, T, 3D], found {:?}", l.dims());
        };
        if d3 % 3 != 0 || (d3 / 3) % self.heads != 0 {
            bail!(
                "attention: qkv width {d3} is not 3 × a multiple of {} heads",
                self.heads
            );
        }
        Ok(Dims {
            b,
            t,
            d: d3 / 3,
            heads: self.heads,
        })
    }

    fn forward(
        &self,
        qkv: &[f32],
        bias: Option<&[f32]>,
        l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(l)?;
        let (probs, out) = forward(qkv, bias, dm, None)?;
        if self.keep {
            if let Ok(mut slot) = self.probs.lock() {
                *slot = Some(Arc::new(probs));
            }
        }
        Ok((CpuStorage::F32(out), (dm.b, dm.t, dm.d).into()))
    }

    fn backward(&self, qkv_t: &Tensor, bias: Option<&Tensor>, grad: &Tensor) -> Result<Tensor> {
        let dm = self.dims(qkv_t.layout())?;
        if dm.b * dm.t * dm.d == 0 {
            return qkv_t.zeros_like();
        }
        let stored = self.probs.lock().ok().and_then(|s| s.clone());
        with_f32(qkv_t, |qkv| {
            let probs = match stored {
                Some(p) => p,
                None => {
                    let bias = bias
                        .map(|b| b.flatten_all()?.to_vec1::<f32>())
                        .transpose()?;
                    Arc::new(forward(qkv, bias.as_deref(), dm, None)?.0)
                }
            };
            with_f32(grad, |g| {
                let dqkv = backward(qkv, &probs, g, dm, None)?;
                Tensor::from_vec(dqkv, qkv_t.shape(), qkv_t.device())
            })?
        })?
    }
}

/// Probabilities `[B, H, T, T]` and the output `[B, T, D]` from packed `qkv [B, T, 3D]`,
/// an optional key bias `[B, T]` and optional dropout factors on the probabilities
/// (`[B, H, T, T]`, [`super::ops::dropout_mask`]'s; the probabilities returned are those
/// before dropout, which the backward pass needs).
pub(super) fn forward(
    qkv: &[f32],
    bias: Option<&[f32]>,
    dm: Dims,
    drop: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (t, hd) = (dm.t, dm.hd());
    if dm.b * t * dm.d == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let scale = 1.0 / (hd as f32).sqrt();
    // Both are written in full below (gemm without accumulation writes every element of its
    // destination view; the heads' views of an `out` row tile it).
    let mut probs = buffer::for_overwrite(dm.b * dm.heads * t * t);
    let mut out = buffer::for_overwrite(dm.b * t * dm.d);
    probs
        .par_chunks_mut(dm.heads * t * t)
        .zip(out.par_chunks_mut(t * dm.d))
        .enumerate()
        .try_for_each(|(bi, (pb, ob))| -> Result<()> {
            let key_bias = bias.map(|bias| &bias[bi * t..(bi + 1) * t]);
            let mut dropped = vec![0f32; if drop.is_some() { t * t } else { 0 }];
            for (h, p) in pb.chunks_exact_mut(t * t).enumerate() {
                let (q, k, v) = (
                    dm.head(qkv, bi, h, 0),
                    dm.head(qkv, bi, h, 1),
                    dm.head(qkv, bi, h, 2),
                );
                matmul(p, t, q, k.t(), false, Threads::One)?;
                for row in p.chunks_exact_mut(t) {
                    match key_bias {
                        Some(kb) => row
                            .iter_mut()
                            .zip(kb)
                            .for_each(|(s, b)| *s = *s * scale + b),
                        None => row.iter_mut().for_each(|s| *s *= scale),
                    }
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    math::exp_shifted(row, max);
                    let inv = 1.0 / row.iter().sum::<f32>();
                    row.iter_mut().for_each(|s| *s *= inv);
                }
                // Head h's context into columns h·hd.. of the [T, D] rows.
                let weights = match drop {
                    Some(m) => {
                        let m = &m[(bi * dm.heads + h) * t * t..][..t * t];
                        times(&mut dropped, p, m)
                    }
                    None => &p[..],
                };
                matmul(
                    &mut ob[h * hd..],
                    dm.d,
                    Mat::rows(weights, t, t),
                    v,
                    false,
                    Threads::One,
                )?;
            }
            Ok(())
        })?;
    Ok((probs, out))
}

/// `out = p ⊙ m`: attention weights after dropout.
fn times<'o>(out: &'o mut [f32], p: &[f32], m: &[f32]) -> &'o [f32] {
    for ((o, pv), mv) in out.iter_mut().zip(p).zip(m) {
        *o = pv * mv;
    }
    out
}

/// `dqkv [B, T, 3D]` from the upstream gradient `g [B, T, D]`, the forward pass's
/// probabilities (before dropout) and its dropout factors.
pub(super) fn backward(
    qkv: &[f32],
    probs: &[f32],
    g: &[f32],
    dm: Dims,
    drop: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let (t, hd) = (dm.t, dm.hd());
    if dm.b * t * dm.d == 0 {
        return Ok(vec![0f32; dm.b * t * 3 * dm.d]);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    // Written in full below: per batch element and head, gemm writes dq, dk and dv into
    // their [T, hd] views of the [T, 3D] rows, and the views tile the rows.
    let mut dqkv = buffer::for_overwrite(dm.b * t * 3 * dm.d);
    dqkv.par_chunks_mut(t * 3 * dm.d)
        .enumerate()
        .try_for_each(|(bi, ob)| -> Result<()> {
            let mut ds = vec![0f32; t * t];
            let mut dropped = vec![0f32; if drop.is_some() { t * t } else { 0 }];
            for h in 0..dm.heads {
                let i = bi * dm.heads + h;
                let p = Mat::rows(&probs[i * t * t..][..t * t], t, t);
                let mask = drop.map(|m| &m[i * t * t..][..t * t]);
                // The weights the context was made with: the probabilities after dropout.
                let weights = match mask {
                    Some(m) => Mat::rows(times(&mut dropped, p.data, m), t, t),
                    None => p,
                };
                let dctx = Mat::strided(&g[bi * t * dm.d + h * hd..], t, hd, dm.d, 1);
                let (q, k, v) = (
                    dm.head(qkv, bi, h, 0),
                    dm.head(qkv, bi, h, 1),
                    dm.head(qkv, bi, h, 2),
                );
                let rs = 3 * dm.d;
                matmul(
                    &mut ob[2 * dm.d + h * hd..],
                    rs,
                    weights.t(),
                    dctx,
                    false,
                    Threads::One,
                )?;
                matmul(&mut ds, t, dctx, v.t(), false, Threads::One)?;
                if let Some(m) = mask {
                    ds.iter_mut().zip(m).for_each(|(x, mv)| *x *= mv);
                }
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), times the score scale.
                for (dr, pr) in ds.chunks_exact_mut(t).zip(p.data.chunks_exact(t)) {
                    let dot: f32 = dr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    for (x, pv) in dr.iter_mut().zip(pr) {
                        *x = pv * (*x - dot) * scale;
                    }
                }
                let dsm = Mat::rows(&ds, t, t);
                matmul(&mut ob[h * hd..], rs, dsm, k, false, Threads::One)?;
                matmul(
                    &mut ob[dm.d + h * hd..],
                    rs,
                    dsm.t(),
                    q,
                    false,
                    Threads::One,
                )?;
            }
            Ok(())
        })?;
    Ok(dqkv)
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "pretext-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward(cpu_f32(s, l, "attention qkv")?, None, l)
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        self.backward(qkv, None, grad).map(Some)
    }
}

impl CustomOp2 for AttentionOp {
    fn name(&self) -> &'static str {
        "pretext-attention-masked"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(l)?;
        if lb.dims() != [dm.b, dm.t] {
            bail!(
                "attention: key bias must be [{}, {}], found {:?}",
                dm.b,
                dm.t,
                lb.dims()
            );
        }
        self.forward(
            cpu_f32(s, l, "attention qkv")?,
            Some(cpu_f32(sb, lb, "attention bias")?),
            l,
        )
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(self.backward(qkv, Some(bias), grad)?), None))
    }
}

/// Multi-head attention on packed projections, or `None` where only the composed version
/// applies (not CPU, not f32).
pub fn attention(qkv: &Tensor, heads: usize, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !applies(qkv) || !bias.is_none_or(applies) {
        return Ok(None);
    }
    let op = AttentionOp {
        heads,
        keep: qkv.track_op(),
        probs: Mutex::new(None),
    };
    let qkv = qkv.contiguous()?;
    match bias {
        Some(b) => qkv.apply_op2(&b.detach().contiguous()?, op).map(Some),
        None => qkv.apply_op1(op).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::super::op_tests::assert_same_with_gradients;
    use super::*;
    use candle_core::{Device, Var, D};

    /// The textbook computation from candle ops.
    fn composed(qkv: &Tensor, heads: usize, bias: Option<&Tensor>) -> Tensor {
        let (b, t, d3) = qkv.dims3().unwrap();
        let d = d3 / 3;
        let hd = d / heads;
        let part = |i: usize| {
            qkv.narrow(2, i * d, d)
                .unwrap()
                .reshape((b, t, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let mut s = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (hd as f64).sqrt())).unwrap();
        if let Some(bias) = bias {
            s = s
                .broadcast_add(&bias.reshape((b, 1, 1, t)).unwrap())
                .unwrap();
        }
        let max = s.max_keepdim(D::Minus1).unwrap().detach();
        let e = s.broadcast_sub(&max).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, d))
            .unwrap()
    }

    #[test]
    fn values_and_gradients_match_composed_attention() {
        let dev = Device::Cpu;
        let (b, t, d, heads) = (3, 11, 24, 4);
        let qkv = Var::randn(0f32, 1.0, (b, t, 3 * d), &dev).unwrap();
        // The last 4 keys of the second row are padding.
        let mut mask = vec![0f32; b * t];
        mask[t + t - 4..2 * t].fill(f32::MIN);
        let bias = Tensor::from_vec(mask, (b, t), &dev).unwrap();
        for bias in [None, Some(&bias)] {
            let f = attention(qkv.as_tensor(), heads, bias).unwrap().unwrap();
            let c = composed(qkv.as_tensor(), heads, bias);
            assert_same_with_gradients(&f, &c, &[&qkv], 1e-5, 1e-4);
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((2, 5, 30), candle_core::DType::F32, &dev).unwrap();
        assert!(attention(&qkv, 4, None).is_err());
        let qkv = Tensor::zeros((2, 5, 24), candle_core::DType::F32, &dev).unwrap();
        let bias = Tensor::zeros((2, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(attention(&qkv, 2, Some(&bias)).is_err());
    }
}
