//! A whole transformer block — both layer norms, the packed q|k|v projection, attention, the
//! output projection, the MLP with exact GELU and both residual sums — as one CPU op with a
//! hand-written backward pass (llm.c's approach: one forward and one backward function per
//! layer, the activations backward needs kept inside the op).
//!
//! Built from the per-layer ops (`linear_op`, `attention_op`, `norm_op`), a block is nine
//! graph nodes on activation-sized tensors, and candle's backward pass gives each of them a
//! zero-filled gradient buffer plus an add on the training thread alone: about a sixth of
//! the MAE training step. Here the block is one node: its parameters enter as one packed
//! vector (concatenated on every forward pass, a copy the size of the weights, not of the
//! activations) and its backward pass runs the same kernels in reverse, spread over the
//! thread pool. The arithmetic is the per-layer ops' own, in the same order, so the result
//! is the same to the bit (a test pins it).
//!
//! # Shapes
//! - `x`: `[B, T, D]`
//! - `params`: `[P]`, the block's parameters flattened and concatenated in this order:
//!   `norm1.{weight,bias}`, `attn.{q,k,v}.weight` (together the `[3D, D]` projection),
//!   `attn.{q,k,v}.bias` when there are any, `attn.o.{weight,bias}`, `norm2.{weight,bias}`,
//!   `mlp.fc1.{weight,bias}`, `mlp.fc2.{weight,bias}`
//! - `bias`: `[B, T]` additive key bias (0 to attend, a large negative for padding)
//! - output: `[B, T, D]`
//!
//! In training, dropout and stochastic depth enter as [`BranchFactors`], drawn as the layers
//! draw them: per element (hidden dropout, [`super::ops::dropout_mask`]) and per example
//! (drop path, [`super::ops::drop_path_keep`]), each multiplying its branch's output before
//! the residual sum, and per attention weight (attention dropout, applied inside the
//! attention kernels).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Tensor};

use super::attention_op::{self, Dims};
use super::buffer::{branch_grad, residual, residual_masked, sum as add};
use super::linear_op::{self, bias_grad};
use super::norm_op;
use super::storage::{cpu_f32, with_f32};

/// What one block computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub dim: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    /// Bias on the query/key/value projections.
    pub qkv_bias: bool,
    pub eps: f32,
    /// Pre-norm (`x + attn(norm1(x))`, ViT) or post-norm (`norm1(x + attn(x))`, BERT).
    pub pre_norm: bool,
}

/// What multiplies each residual branch's output (0 attention, 1 MLP) in training: hidden
/// dropout's per-element factors (`[B·T·D]`) and stochastic depth's per-example ones
/// (`[B]`); `None` where off.
#[derive(Debug, Clone, Default)]
pub struct BranchFactors {
    pub dropout: [Option<Vec<f32>>; 2],
    pub drop_path: [Option<Vec<f32>>; 2],
    /// Attention dropout's factors on the attention probabilities (`[B·H·T·T]`).
    pub attention: Option<Vec<f32>>,
}

impl BranchFactors {
    fn is_off(&self, branch: usize) -> bool {
        self.dropout[branch].is_none() && self.drop_path[branch].is_none()
    }
}

/// Where each parameter lies in the packed vector.
struct Offsets {
    n1w: Range<usize>,
    n1b: Range<usize>,
    wqkv: Range<usize>,
    bqkv: Option<Range<usize>>,
    wo: Range<usize>,
    bo: Range<usize>,
    n2w: Range<usize>,
    n2b: Range<usize>,
    w1: Range<usize>,
    b1: Range<usize>,
    w2: Range<usize>,
    b2: Range<usize>,
    len: usize,
}

impl Shape {
    fn offsets(&self) -> Offsets {
        let (d, m) = (self.dim, self.mlp_dim);
        let mut at = 0;
        let mut take = |n: usize| {
            let r = at..at + n;
            at += n;
            r
        };
        let (n1w, n1b, wqkv) = (take(d), take(d), take(3 * d * d));
        let bqkv = self.qkv_bias.then(|| take(3 * d));
        let (wo, bo, n2w, n2b) = (take(d * d), take(d), take(d), take(d));
        let (w1, b1, w2, b2) = (take(m * d), take(m), take(d * m), take(d));
        let len = b2.end;
        Offsets {
            n1w,
            n1b,
            wqkv,
            bqkv,
            wo,
            bo,
            n2w,
            n2b,
            w1,
            b1,
            w2,
            b2,
            len,
        }
    }
}

/// The activations the backward pass reads, kept from forward.
struct Saved {
    /// Input of the q|k|v projection (pre-norm: `norm1(x)`; post-norm: `x` itself, not kept).
    attn_in: Option<Vec<f32>>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    /// Attention output before the output projection.
    ctx: Vec<f32>,
    /// The first residual sum (`x + attn`): pre-norm, the input of norm2; post-norm, of norm1.
    sum1: Vec<f32>,
    stats1: Vec<(f32, f32)>,
    /// The MLP's input (pre-norm: `norm2(sum1)`; post-norm: `norm1(sum1)`).
    mlp_in: Vec<f32>,
    pre: Vec<f32>,
    h: Vec<f32>,
    /// Post-norm: the second residual sum, the input of norm2.
    sum2: Option<Vec<f32>>,
    stats2: Vec<(f32, f32)>,
}

struct BlockOp {
    shape: Shape,
    batch: usize,
    tokens: usize,
    /// Whether a backward pass can follow (an input is tracked); if not, nothing is kept.
    keep: bool,
    saved: Mutex<Option<Arc<Saved>>>,
    /// Dropout and stochastic depth on the two residual branches.
    factors: BranchFactors,
}

impl BlockOp {
    /// `x + (y + bias)`, the branch `y` multiplied by its dropout and drop-path factors.
    fn residual(&self, x: &[f32], y: &[f32], bias: &[f32], branch: usize) -> Vec<f32> {
        let f = &self.factors;
        if f.is_off(branch) {
            return residual(x, y, bias);
        }
        let (mask, keep) = (f.dropout[branch].as_deref(), f.drop_path[branch].as_deref());
        residual_masked(x, y, bias, mask, keep, self.row())
    }

    /// The gradient at branch `branch`'s output from the gradient `g` at its residual sum.
    fn to_branch<'g>(&self, g: &'g [f32], branch: usize) -> Cow<'g, [f32]> {
        let f = &self.factors;
        if f.is_off(branch) {
            return Cow::Borrowed(g);
        }
        let (mask, keep) = (f.dropout[branch].as_deref(), f.drop_path[branch].as_deref());
        Cow::Owned(branch_grad(g, mask, keep, self.row()))
    }

    /// Elements per example.
    fn row(&self) -> usize {
        self.tokens * self.shape.dim
    }

    fn dims(&self) -> Dims {
        Dims {
            b: self.batch,
            t: self.tokens,
            d: self.shape.dim,
            heads: self.shape.heads,
        }
    }

    fn check(&self, lx: &Layout, lp: &Layout, lb: Option<&Layout>) -> Result<()> {
        let (b, t, d) = (self.batch, self.tokens, self.shape.dim);
        if lx.dims() != [b, t, d] {
            bail!(
                "transformer block: input must be [{b}, {t}, {d}], found {:?}",
                lx.dims()
            );
        }
        let len = self.shape.offsets().len;
        if lp.dims() != [len] {
            bail!(
                "transformer block: {len} packed parameters expected, found {:?}",
                lp.dims()
            );
        }
        if let Some(lb) = lb {
            if lb.dims() != [b, t] {
                bail!(
                    "transformer block: key bias must be [{b}, {t}], found {:?}",
                    lb.dims()
                );
            }
        }
        Ok(())
    }

    /// The block's output and what backward needs.
    fn run(&self, x: &[f32], p: &[f32], bias: Option<&[f32]>) -> Result<(Vec<f32>, Saved)> {
        let s = self.shape;
        let o = s.offsets();
        let (d, eps) = (s.dim, s.eps);
        let bqkv = o.bqkv.clone().map(|r| &p[r]);
        // The output projections' biases are added in the residual sums that follow, and
        // fc1's in the GELU pass: the same arithmetic as a separate bias pass, one pass fewer.
        let (bo, b1, b2) = (&p[o.bo.clone()], &p[o.b1.clone()], &p[o.b2.clone()]);
        let attention = |attn_in: &[f32]| -> Result<_> {
            let qkv = linear_op::forward(attn_in, &p[o.wqkv.clone()], bqkv, 3 * d)?;
            let drop = self.factors.attention.as_deref();
            let (probs, ctx) = attention_op::forward(&qkv, bias, self.dims(), drop)?;
            let out = linear_op::product_t(&ctx, &p[o.wo.clone()], d)?;
            Ok((qkv, probs, ctx, out))
        };
        let mlp = |mlp_in: &[f32]| -> Result<_> {
            let mut pre = linear_op::product_t(mlp_in, &p[o.w1.clone()], s.mlp_dim)?;
            let h = linear_op::gelu_biased(&mut pre, b1);
            let out = linear_op::product_t(&h, &p[o.w2.clone()], d)?;
            Ok((pre, h, out))
        };
        if s.pre_norm {
            let (a, stats1) = norm_op::forward(x, &p[o.n1w.clone()], &p[o.n1b.clone()], eps);
            let (qkv, probs, ctx, attn) = attention(&a)?;
            let sum1 = self.residual(x, &attn, bo, 0);
            let (m, stats2) = norm_op::forward(&sum1, &p[o.n2w.clone()], &p[o.n2b.clone()], eps);
            let (pre, h, f) = mlp(&m)?;
            let y = self.residual(&sum1, &f, b2, 1);
            let saved = Saved {
                attn_in: Some(a),
                qkv,
                probs,
                ctx,
                sum1,
                stats1,
                mlp_in: m,
                pre,
                h,
                sum2: None,
                stats2,
            };
            Ok((y, saved))
        } else {
            let (qkv, probs, ctx, attn) = attention(x)?;
            let sum1 = self.residual(x, &attn, bo, 0);
            let (r1, stats1) = norm_op::forward(&sum1, &p[o.n1w.clone()], &p[o.n1b.clone()], eps);
            let (pre, h, f) = mlp(&r1)?;
            let sum2 = self.residual(&r1, &f, b2, 1);
            let (y, stats2) = norm_op::forward(&sum2, &p[o.n2w.clone()], &p[o.n2b.clone()], eps);
            let saved = Saved {
                attn_in: None,
                qkv,
                probs,
                ctx,
                sum1,
                stats1,
                mlp_in: r1,
                pre,
                h,
                sum2: Some(sum2),
                stats2,
            };
            Ok((y, saved))
        }
    }

    /// `(dx, dparams)` from the upstream gradient `g`.
    fn backward(
        &self,
        x: &[f32],
        p: &[f32],
        g: &[f32],
        sv: &Saved,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let s = self.shape;
        let o = s.offsets();
        let d = s.dim;
        let mut dp = vec![0f32; o.len];
        let mut put = |r: &Range<usize>, v: &[f32]| dp[r.clone()].copy_from_slice(v);

        // The MLP, from the gradient at its output (`dout`) to the gradient at its input.
        let mut mlp_back = |dout: &[f32]| -> Result<Vec<f32>> {
            let (dh, dw2) = linear_op::backward_slices(&sv.h, &p[o.w2.clone()], dout, d)?;
            put(&o.w2, &dw2);
            put(&o.b2, &bias_grad(dout, d));
            let dpre = linear_op::gelu_grad(&sv.pre, &dh);
            let (din, dw1) =
                linear_op::backward_slices(&sv.mlp_in, &p[o.w1.clone()], &dpre, s.mlp_dim)?;
            put(&o.w1, &dw1);
            put(&o.b1, &bias_grad(&dpre, s.mlp_dim));
            Ok(din)
        };
        let mut grads = Vec::new();
        let dsum1 = if s.pre_norm {
            // y = sum1 + mlp(norm2(sum1))
            let dm = mlp_back(&self.to_branch(g, 1))?;
            let (dn, dn2w, dn2b) = norm_op::backward(&sv.sum1, &p[o.n2w.clone()], &dm, &sv.stats2);
            grads.push((o.n2w.clone(), dn2w));
            grads.push((o.n2b.clone(), dn2b));
            add(g, &dn)
        } else {
            // y = norm2(sum2), sum2 = r1 + mlp(r1), r1 = norm1(sum1)
            let sum2 = sv.sum2.as_deref().unwrap_or_default();
            let (dsum2, dn2w, dn2b) = norm_op::backward(sum2, &p[o.n2w.clone()], g, &sv.stats2);
            grads.push((o.n2w.clone(), dn2w));
            grads.push((o.n2b.clone(), dn2b));
            let dr1_mlp = mlp_back(&self.to_branch(&dsum2, 1))?;
            let dr1 = add(&dsum2, &dr1_mlp);
            let (ds, dn1w, dn1b) = norm_op::backward(&sv.sum1, &p[o.n1w.clone()], &dr1, &sv.stats1);
            grads.push((o.n1w.clone(), dn1w));
            grads.push((o.n1b.clone(), dn1b));
            ds
        };
        // sum1 = x + attn(attn_in): the attention, from dsum1 to the gradient at attn_in.
        let dattn = self.to_branch(&dsum1, 0);
        let (dctx, dwo) = linear_op::backward_slices(&sv.ctx, &p[o.wo.clone()], &dattn, d)?;
        grads.push((o.wo.clone(), dwo));
        grads.push((o.bo.clone(), bias_grad(&dattn, d)));
        let drop = self.factors.attention.as_deref();
        let dqkv = attention_op::backward(&sv.qkv, &sv.probs, &dctx, self.dims(), drop)?;
        let attn_in = sv.attn_in.as_deref().unwrap_or(x);
        let (dattn_in, dwqkv) =
            linear_op::backward_slices(attn_in, &p[o.wqkv.clone()], &dqkv, 3 * d)?;
        grads.push((o.wqkv.clone(), dwqkv));
        if let Some(r) = &o.bqkv {
            grads.push((r.clone(), bias_grad(&dqkv, 3 * d)));
        }
        let dx = if s.pre_norm {
            let (dn, dn1w, dn1b) = norm_op::backward(x, &p[o.n1w.clone()], &dattn_in, &sv.stats1);
            grads.push((o.n1w.clone(), dn1w));
            grads.push((o.n1b.clone(), dn1b));
            add(&dsum1, &dn)
        } else {
            add(&dsum1, &dattn_in)
        };
        for (r, v) in &grads {
            put(r, v);
        }
        Ok((dx, dp))
    }

    fn forward(
        &self,
        x: &[f32],
        p: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, candle_core::Shape)> {
        let (y, saved) = self.run(x, p, bias)?;
        if self.keep {
            if let Ok(mut slot) = self.saved.lock() {
                *slot = Some(Arc::new(saved));
            }
        }
        Ok((
            CpuStorage::F32(y),
            (self.batch, self.tokens, self.shape.dim).into(),
        ))
    }

    fn bwd_tensors(
        &self,
        x: &Tensor,
        p: &Tensor,
        bias: Option<&Tensor>,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let stored = self.saved.lock().ok().and_then(|s| s.clone());
        let (dx, dp) = with_f32(x, |xv| {
            with_f32(p, |pv| {
                let saved = match stored {
                    Some(s) => s,
                    None => {
                        let bias = bias
                            .map(|b| b.flatten_all()?.to_vec1::<f32>())
                            .transpose()?;
                        Arc::new(self.run(xv, pv, bias.as_deref())?.1)
                    }
                };
                with_f32(grad, |g| self.backward(xv, pv, g, &saved))?
            })?
        })??;
        Ok((
            Tensor::from_vec(dx, x.shape(), x.device())?,
            Tensor::from_vec(dp, p.shape(), p.device())?,
        ))
    }
}

impl CustomOp2 for BlockOp {
    fn name(&self) -> &'static str {
        "pretext-block"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
    ) -> Result<(CpuStorage, candle_core::Shape)> {
        self.check(lx, lp, None)?;
        self.forward(
            cpu_f32(sx, lx, "block input")?,
            cpu_f32(sp, lp, "block parameters")?,
            None,
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dp) = self.bwd_tensors(x, p, None, grad)?;
        Ok((Some(dx), Some(dp)))
    }
}

impl CustomOp3 for BlockOp {
    fn name(&self) -> &'static str {
        "pretext-block-masked"
    }

    #[allow(clippy::too_many_arguments)]
    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, candle_core::Shape)> {
        self.check(lx, lp, Some(lb))?;
        self.forward(
            cpu_f32(sx, lx, "block input")?,
            cpu_f32(sp, lp, "block parameters")?,
            Some(cpu_f32(sb, lb, "block key bias")?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dp) = self.bwd_tensors(x, p, Some(bias), grad)?;
        Ok((Some(dx), Some(dp), None))
    }
}

/// The block on `x [B, T, D]` with packed `params`, an optional key bias `[B, T]` and the
/// branches' training factors. The caller checks that the fused path applies (CPU, f32,
/// exact GELU).
pub fn block(
    x: &Tensor,
    params: &Tensor,
    bias: Option<&Tensor>,
    shape: Shape,
    factors: BranchFactors,
) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if factors.drop_path.iter().flatten().any(|k| k.len() != b) {
        bail!("transformer block: drop-path factors must have {b} rows");
    }
    if factors
        .dropout
        .iter()
        .flatten()
        .any(|m| m.len() != b * t * d)
    {
        bail!(
            "transformer block: dropout factors must have {} elements",
            b * t * d
        );
    }
    let probs = b * shape.heads * t * t;
    if factors.attention.as_ref().is_some_and(|m| m.len() != probs) {
        bail!("transformer block: attention dropout factors must have {probs} elements");
    }
    let op = BlockOp {
        shape,
        batch: b,
        tokens: t,
        keep: x.track_op() || params.track_op(),
        saved: Mutex::new(None),
        factors,
    };
    let x = x.contiguous()?;
    let params = params.contiguous()?;
    match bias {
        Some(bias) => x.apply_op3(&params, &bias.detach().contiguous()?, op),
        None => x.apply_op2(&params, op),
    }
}

impl super::Block {
    /// In training, what multiplies the attention probabilities and each residual branch:
    /// the draws the layers' dropout and drop path make for a batch of `b` examples of `t`
    /// tokens, `d` wide. The layers pass two dropout layers, three with attention dropout,
    /// and `mode`'s site moves on as they move it.
    pub(super) fn branch_factors(
        &self,
        (b, t, d): (usize, usize, usize),
        mode: &mut super::Mode,
    ) -> Result<BranchFactors> {
        let super::Mode::Train { draws, site } = mode else {
            return Ok(Default::default());
        };
        if draws.rows() != b {
            candle_core::bail!(
                "a block on a batch of {b}: the batch has {} rows of draws",
                draws.rows()
            );
        }
        let dropout = |p: f64, per_row: usize, at: u32| {
            (p > 0.0).then(|| super::ops::dropout_mask(b, per_row, p, draws, at))
        };
        let attention = dropout(self.attn.attention_dropout, self.attn.heads * t * t, *site);
        let hidden = *site + attention.is_some() as u32;
        let rate = self.drop_path;
        let keep = |branch| {
            (rate > 0.0)
                .then(|| super::ops::drop_path_keep(b, rate, 2 * self.index + branch, draws))
        };
        let factors = BranchFactors {
            dropout: [
                dropout(self.attn.dropout, t * d, hidden),
                dropout(self.mlp.dropout, t * d, hidden + 1),
            ],
            drop_path: [keep(0), keep(1)],
            attention,
        };
        *site = hidden + 2;
        Ok(factors)
    }
}

#[cfg(test)]
#[path = "block_op_tests.rs"]
mod tests;
