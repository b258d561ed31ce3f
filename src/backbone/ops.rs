//! Differentiable building blocks.
//!
//! candle-nn 0.11's fused `ops::layer_norm`, `ops::softmax_last_dim` and
//! `LayerNorm::forward` (on contiguous input) have no backward pass: gradients silently
//! stop there. Everything here is composed from ops that do have one, and
//! `tests/gradients.rs` checks that every trainable tensor receives a gradient.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use rand::Rng;

use crate::draws::{Draws, Purpose};

/// Layer normalisation over the last dimension, `y = (x - mean) / sqrt(var + eps) * w + b`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Module for LayerNorm {
    /// Computes in the weight's dtype and returns `x`'s: a bf16 input (mixed precision) is
    /// normalised in fp32, as `torch.autocast` keeps LayerNorm.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != self.weight.dtype() {
            let y = self.forward(&x.to_dtype(self.weight.dtype())?)?;
            return y.to_dtype(x.dtype());
        }
        if let Some(y) = super::norm_op::layer_norm(x, &self.weight, &self.bias, self.eps)? {
            return Ok(y);
        }
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Affine map `x W^T + b` on inputs of any rank; weights stored as `[out, in]` like PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Xavier-uniform weights and zero bias, as MAE and timm initialise transformer layers.
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let bound = (6.0 / (in_dim + out_dim) as f64).sqrt();
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}

/// `x Wᵀ + b` over the last dimension of `x` (any rank), `w: [out, in]`: the fused op on
/// the CPU, composed candle ops elsewhere. Computes in `x`'s dtype: under mixed precision a
/// bf16 input meets a bf16 copy of the fp32 weight, cast inside the graph so that the
/// weight's gradient arrives in fp32.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if x.dtype() != w.dtype() {
        let w = w.to_dtype(x.dtype())?;
        let b = b.map(|b| b.to_dtype(x.dtype())).transpose()?;
        return linear(x, &w, b.as_ref());
    }
    if let Some(y) = super::linear_op::linear(x, w, b)? {
        return Ok(y);
    }
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().unwrap_or(&0);
    let rows: usize = dims[..dims.len().saturating_sub(1)].iter().product();
    let y = x.reshape((rows, in_dim))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = w.dim(0)?;
    }
    y.reshape(out)
}

/// Softmax over the last dimension, numerically stabilised by the row maximum.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if let Some(y) = super::fused::softmax_last_dim(x)? {
        return Ok(y);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Whether a forward pass trains (dropout on) or evaluates. In training, each dropout
/// layer draws from the next of the batch rows' own streams ([`Draws`]), so an example's
/// dropout masks are the same whichever batch, or process, it is computed in.
pub enum Mode {
    Eval,
    /// Evaluation that also records the output of every block an [`Encoder`] runs, in
    /// order (what a data2vec teacher regresses to). Only the blocks of encoder stacks
    /// record: run one stack per pass to read them as that stack's.
    ///
    /// [`Encoder`]: crate::backbone::Encoder
    Layers(Vec<Tensor>),
    Train {
        draws: Draws,
        /// Dropout layers passed so far in this forward pass.
        site: u32,
    },
}

impl Mode {
    /// Training on the batch whose rows draw from `draws`.
    pub fn train(draws: Draws) -> Self {
        Mode::Train { draws, site: 0 }
    }

    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train { .. })
    }
}

/// Inverted dropout: in training, zero each element with probability `p` and scale the
/// rest by `1 / (1 - p)`; identity in evaluation. `x` is batch-major: row `r`'s elements
/// (`x.elem_count() / rows` of them) draw from row `r`'s stream for this dropout layer.
pub fn dropout(x: &Tensor, p: f64, mode: &mut Mode) -> Result<Tensor> {
    let (draws, site) = match mode {
        Mode::Train { draws, site } => {
            *site += 1;
            (*draws, *site - 1)
        }
        Mode::Eval | Mode::Layers(_) => return Ok(x.clone()),
    };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let rows = draws.rows().max(1);
    let n = x.elem_count();
    if !n.is_multiple_of(rows) {
        candle_core::bail!(
            "dropout on a tensor of shape {:?} cannot be split into the batch's {rows} rows",
            x.dims()
        );
    }
    let mask = dropout_mask(rows, n / rows, p, &draws, site);
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}

/// The factors inverted dropout at rate `p` multiplies `rows × per_row` elements by: 0
/// where row `r`'s stream for dropout layer `site` drops one (every one at `p ≥ 1`),
/// `1 / (1 - p)` elsewhere ([`dropout`]'s draws, which the fused CPU block takes as they
/// are).
pub fn dropout_mask(rows: usize, per_row: usize, p: f64, draws: &Draws, site: u32) -> Vec<f32> {
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut mask: Vec<f32> = Vec::with_capacity(rows * per_row);
    for r in 0..rows {
        let mut rng = draws.rng(r, Purpose::Dropout(site));
        mask.extend((0..per_row).map(|_| if rng.gen::<f64>() < p { 0.0 } else { scale }));
    }
    mask
}

/// Stochastic depth (Huang et al. 2016; timm's `drop_path`): in training, each example's
/// residual branch `x` (`[B, …]`, batch-major) is dropped whole with probability `p` and kept
/// scaled by `1 / (1 - p)` otherwise; identity in evaluation. Row `r` draws from its
/// stream for `branch`.
pub fn drop_path(x: &Tensor, p: f64, branch: u32, mode: &Mode) -> Result<Tensor> {
    let Mode::Train { draws, .. } = mode else {
        return Ok(x.clone());
    };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let rows = x.dim(0)?;
    if rows != draws.rows() {
        candle_core::bail!(
            "drop path on a tensor of shape {:?}: the batch has {} rows",
            x.dims(),
            draws.rows()
        );
    }
    let keep = drop_path_keep(rows, p, branch, draws);
    let mut shape = vec![1; x.rank()];
    shape[0] = rows;
    let keep = Tensor::from_vec(keep, shape, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&keep)
}

/// Each row's factor on residual branch `branch` under stochastic depth at rate `p`: 0 when
/// the row's stream drops it, `1 / (1 - p)` otherwise ([`drop_path`]'s draws, which the
/// fused CPU block takes as they are).
pub fn drop_path_keep(rows: usize, p: f64, branch: u32, draws: &Draws) -> Vec<f32> {
    let scale = if p >= 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
    (0..rows)
        .map(|r| {
            let mut rng = draws.rng(r, Purpose::DropPath(branch));
            if rng.gen::<f64>() < p {
                0.0
            } else {
                scale as f32
            }
        })
        .collect()
}

/// Cross-entropy from logits `[N, C]` and integer targets `[N]` (u32), mean over rows.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy_smoothed(logits, targets, 0.0)
}

/// Cross-entropy against targets smoothed towards uniform by `smoothing` (PyTorch's
/// `F.cross_entropy(..., label_smoothing=smoothing)`): `(1-ε)·nll + ε·mean_c(-log p_c)`.
pub fn cross_entropy_smoothed(logits: &Tensor, targets: &Tensor, smoothing: f64) -> Result<Tensor> {
    match super::loss_op::cross_entropy(logits, targets, smoothing)? {
        Some(loss) => Ok(loss),
        None => cross_entropy_composed(logits, targets, smoothing),
    }
}

/// [`cross_entropy_smoothed`] from candle ops: other devices and dtypes, and the reference
/// the fused op is tested against.
pub(super) fn cross_entropy_composed(
    logits: &Tensor,
    targets: &Tensor,
    smoothing: f64,
) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probs = shifted.broadcast_sub(&lse)?;
    let picked = log_probs.gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    let nll = picked.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = log_probs.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}
