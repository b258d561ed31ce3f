//! The shared transformer encoder.
//!
//! It maps embeddings `[batch, tokens, dim]` (plus an optional padding mask `[batch, tokens]`,
//! 1 = attend, 0 = padding) to hidden states of the same shape. It knows nothing of images,
//! text, audio or Hugging Face names: modalities build the embeddings, objectives and heads
//! read the hidden states, and `src/hf/` maps checkpoint names onto the names used here:
//!
//! ```text
//! layers.{i}.norm1  layers.{i}.attn.{q,k,v,o}  layers.{i}.norm2  layers.{i}.mlp.{fc1,fc2}  norm
//! ```
//! Pre-norm (ViT, MAE): `x = x + attn(norm1(x)); x = x + mlp(norm2(x))`, final `norm`.
//! Post-norm (BERT): `x = norm1(x + attn(x)); x = norm2(x + mlp(x))`, no final norm.

pub mod attention_op;
mod block_op;
mod buffer;
pub mod classifier;
#[cfg(test)]
mod drop_path_tests;
pub mod fused;
pub mod gemm;
pub mod linear_op;
mod loss_op;
mod math;
pub mod norm_op;
#[cfg(test)]
pub(crate) mod op_tests;
pub mod ops;
pub mod pool;
pub mod precision;
pub mod storage;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use classifier::{Classifier, PooledEncoder};
pub use ops::{LayerNorm, Linear, Mode};
pub use pool::{masked_mean, pool, Pooler, Pooling, Tokens};
pub use precision::{autocast, Precision};
pub use storage::set_fused_cpu_ops;

/// A learned embedding (class token, learned positions), initialised N(0, 0.02) as ViT,
/// BERT and Audio-MAE do.
pub fn learned(
    vb: &VarBuilder,
    shape: impl Into<candle_core::Shape>,
    name: &str,
) -> Result<Tensor> {
    let init = candle_nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    };
    vb.get_with_hints(shape, name, init)
}

/// A learned class token `[1, 1, dim]`.
pub fn cls_token(vb: &VarBuilder, dim: usize) -> Result<Tensor> {
    learned(vb, (1, 1, dim), "cls_token")
}

/// A padding mask over tokens `[B, T]` (1 = token, 0 = padding) with an attended class
/// token in front: `[B, 1 + T]` (f32).
pub fn with_cls(mask: &Tensor) -> Result<Tensor> {
    let b = mask.dim(0)?;
    let one = Tensor::ones((b, 1), DType::F32, mask.device())?;
    Tensor::cat(&[&one, &mask.to_dtype(DType::F32)?], 1)
}

/// Prepends `cls` (`[1, 1, D]`, the class token with its position) to `tokens` `[B, T, D]`
/// and runs `encoder`: `[B, 1 + T, D]`. `mask: [B, T]` (1 = token, 0 = padding) keeps
/// attention off padding; the class token is always attended to.
pub fn encode_with_cls(
    encoder: &Encoder,
    cls: &Tensor,
    tokens: &Tensor,
    mask: Option<&Tensor>,
    mode: &mut Mode,
) -> Result<Tensor> {
    let (b, _, d) = tokens.dims3()?;
    let x = Tensor::cat(&[&cls.broadcast_as((b, 1, d))?, tokens], 1)?;
    let mask = mask.map(with_cls).transpose()?;
    encoder.forward(&x, mask.as_ref(), mode)
}

/// Where LayerNorm sits relative to the residual connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormPosition {
    /// Normalise the input of each sub-layer (ViT, MAE); a final norm follows the stack.
    Pre,
    /// Normalise after each residual sum (BERT); no final norm.
    Post,
}

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Exact GELU, `x * Φ(x)` (PyTorch `nn.GELU()`, HF `"gelu"`).
    Gelu,
    /// Tanh approximation (PyTorch `GELU(approximate="tanh")`, HF `"gelu_new"`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => match fused::gelu_erf(x)? {
                Some(y) => Ok(y),
                None => x.gelu_erf(),
            },
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// Shape and behaviour of a transformer encoder stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Hidden size (width of every token).
    pub dim: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads; must divide `dim`.
    pub heads: usize,
    /// Hidden size of the MLP.
    pub mlp_dim: usize,
    pub norm: NormPosition,
    pub activation: Activation,
    pub norm_eps: f64,
    /// Bias on the query/key/value projections.
    pub qkv_bias: bool,
    /// Dropout after the attention output and MLP projections.
    pub dropout: f64,
    /// Dropout on the attention probabilities.
    pub attention_dropout: f64,
    /// Stochastic depth: the rate of the last block's residual branches, rising linearly
    /// from 0 at the first block (timm's `drop_path_rate`). Training only; 0 = off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drop_path: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl EncoderConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.check().map_err(|(_, m)| m)
    }

    /// [`EncoderConfig::validate`], naming the field at fault (`dim`, `depth`, `heads`,
    /// `mlp_dim`, `norm_eps`, `dropout`, `attention_dropout`) so a config file's reader can
    /// report its own key.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.dim == 0 || self.depth == 0 || self.heads == 0 || self.mlp_dim == 0 {
            let zero = [
                ("dim", self.dim),
                ("depth", self.depth),
                ("heads", self.heads),
                ("mlp_dim", self.mlp_dim),
            ]
            .into_iter()
            .find(|f| f.1 == 0)
            .map_or("dim", |f| f.0);
            return Err((
                zero,
                "dim, depth, heads and mlp_dim must all be positive".into(),
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err((
                "norm_eps",
                format!(
                    "the layer-norm epsilon must be a positive number, found {}",
                    self.norm_eps
                ),
            ));
        }
        // The largest of depth and width is named: it is what makes the weights absurd.
        let key = match self.depth > self.dim.max(self.mlp_dim) {
            true => "depth",
            false if self.mlp_dim > self.dim => "mlp_dim",
            false => "dim",
        };
        crate::limits::check(self.num_params().saturating_mul(4), "the encoder's weights")
            .map_err(|m| (key, m))?;
        if !self.dim.is_multiple_of(self.heads) {
            return Err((
                "heads",
                format!(
                    "dim ({}) must be divisible by heads ({})",
                    self.dim, self.heads
                ),
            ));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err((name, format!("{name} must be in [0, 1), found {p}")));
            }
        }
        Ok(())
    }
}

impl EncoderConfig {
    /// Parameters of the block stack and its final norm, computed in floating point and
    /// saturating at `u128::MAX`: sizes read from files cannot overflow it.
    pub fn num_params(&self) -> u128 {
        let (d, m) = (self.dim as f64, self.mlp_dim as f64);
        let layer = 4.0 * d * d + 4.0 * d + 2.0 * d * m + m + d + 4.0 * d;
        (self.depth as f64 * layer + 2.0 * d) as u128
    }

    /// Bytes of activations one training example of `tokens` tokens keeps for backward
    /// (an upper estimate: inputs of every matrix product, attention probabilities, norms),
    /// saturating like [`EncoderConfig::num_params`].
    pub fn activation_bytes(&self, tokens: u128) -> u128 {
        let (d, m, h, t) = (
            self.dim as f64,
            self.mlp_dim as f64,
            self.heads as f64,
            tokens as f64,
        );
        (4.0 * self.depth as f64 * t * (8.0 * d + 2.0 * m + h * t)) as u128
    }
}

/// Multi-head self-attention.
#[derive(Debug, Clone)]
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    attention_dropout: f64,
    dropout: f64,
}

impl Attention {
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q: Linear::new(cfg.dim, cfg.dim, cfg.qkv_bias, vb.pp("q"))?,
            k: Linear::new(cfg.dim, cfg.dim, cfg.qkv_bias, vb.pp("k"))?,
            v: Linear::new(cfg.dim, cfg.dim, cfg.qkv_bias, vb.pp("v"))?,
            o: Linear::new(cfg.dim, cfg.dim, true, vb.pp("o"))?,
            heads: cfg.heads,
            attention_dropout: cfg.attention_dropout,
            dropout: cfg.dropout,
        })
    }

    /// `x: [B, T, D]`, `bias: [B, 1, 1, T]` fp32 additive key mask (0 or a large negative).
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>, mode: &mut Mode) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        if self.attention_dropout == 0.0 || !mode.is_train() {
            if let Some(ctx) = self.fused(x, bias)? {
                return ops::dropout(&self.o.forward(&ctx)?, self.dropout, mode);
            }
        }
        let hd = d / self.heads;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, t, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?)?; // [B, H, T, hd]
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?; // [B, H, T, T]
                                                                         // The mask and the softmax in fp32 (a bf16 score under mixed precision is widened).
        let scores = scores.to_dtype(DType::F32)?;
        let scores = match bias {
            Some(bias) => scores.broadcast_add(bias)?,
            None => scores,
        };
        let probs = ops::softmax_last_dim(&scores)?.to_dtype(x.dtype())?;
        let probs = ops::dropout(&probs, self.attention_dropout, mode)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        ops::dropout(&self.o.forward(&ctx)?, self.dropout, mode)
    }

    /// The CPU path: one projection to packed `q | k | v` and one attention op
    /// (`attention_op.rs`); `None` where that op does not apply.
    fn fused(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
        if !storage::applies(x) {
            return Ok(None);
        }
        let (b, t, _) = x.dims3()?;
        let w = Tensor::cat(&[self.q.weight(), self.k.weight(), self.v.weight()], 0)?;
        let bias_qkv = match (self.q.bias(), self.k.bias(), self.v.bias()) {
            (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
            _ => None,
        };
        let Some(qkv) = linear_op::linear(x, &w, bias_qkv.as_ref())? else {
            return Ok(None);
        };
        let key_bias = bias.map(|m| m.reshape((b, t))).transpose()?;
        attention_op::attention(&qkv, self.heads, key_bias.as_ref())
    }
}

/// Two-layer feed-forward network.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
    dropout: f64,
}

impl Mlp {
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(cfg.dim, cfg.mlp_dim, true, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.mlp_dim, cfg.dim, true, vb.pp("fc2"))?,
            activation: cfg.activation,
            dropout: cfg.dropout,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let fused = match (self.activation, self.fc1.bias()) {
            (Activation::Gelu, Some(b)) => linear_op::linear_gelu(x, self.fc1.weight(), b)?,
            _ => None,
        };
        let h = match fused {
            Some(h) => h,
            None => self.activation.apply(&self.fc1.forward(x)?)?,
        };
        ops::dropout(&self.fc2.forward(&h)?, self.dropout, mode)
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    position: NormPosition,
    /// Stochastic depth of this block's two residual branches.
    drop_path: f64,
    /// Index of the block in its stack (its branches' random streams).
    index: u32,
}

impl Block {
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(cfg.dim, cfg.norm_eps, vb.pp("norm1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            norm2: LayerNorm::new(cfg.dim, cfg.norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            position: cfg.norm,
            drop_path: 0.0,
            index: 0,
        })
    }

    /// Block `index` of its stack, whose residual branches are dropped at rate `rate` in
    /// training.
    pub fn with_drop_path(mut self, index: usize, rate: f64) -> Self {
        self.index = index as u32;
        self.drop_path = rate;
        self
    }

    /// Residual branch `branch` (0 attention, 1 MLP) of this block under stochastic depth.
    fn branch(&self, y: Tensor, branch: u32, mode: &Mode) -> Result<Tensor> {
        ops::drop_path(&y, self.drop_path, 2 * self.index + branch, mode)
    }

    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>, mode: &mut Mode) -> Result<Tensor> {
        match self.fused(x, bias, mode)? {
            Some(y) => Ok(y),
            None => self.layers(x, bias, mode),
        }
    }

    /// The block layer by layer (each layer a fused op of its own on the CPU).
    fn layers(&self, x: &Tensor, bias: Option<&Tensor>, mode: &mut Mode) -> Result<Tensor> {
        match self.position {
            NormPosition::Pre => {
                let a = self.attn.forward(&self.norm1.forward(x)?, bias, mode)?;
                let x = (x + self.branch(a, 0, mode)?)?;
                let m = self.mlp.forward(&self.norm2.forward(&x)?, mode)?;
                &x + self.branch(m, 1, mode)?
            }
            NormPosition::Post => {
                let a = self.attn.forward(x, bias, mode)?;
                let x = self.norm1.forward(&(x + self.branch(a, 0, mode)?)?)?;
                let m = self.mlp.forward(&x, mode)?;
                self.norm2.forward(&(&x + self.branch(m, 1, mode)?)?)
            }
        }
    }
}

impl Block {
    /// The CPU path: the whole block as one op (`block_op.rs`) on its parameters packed in
    /// the op's order, dropout and stochastic depth included; `None` where that op does not
    /// apply (another device or dtype, an activation other than exact GELU, no tokens).
    fn fused(&self, x: &Tensor, bias: Option<&Tensor>, mode: &mut Mode) -> Result<Option<Tensor>> {
        if !storage::applies(x) || self.mlp.activation != Activation::Gelu {
            return Ok(None);
        }
        let (b, t, d) = x.dims3()?;
        if b * t == 0 {
            return Ok(None);
        }
        let (a, m) = (&self.attn, &self.mlp);
        let qkv_bias = match (a.q.bias(), a.k.bias(), a.v.bias()) {
            (Some(q), Some(k), Some(v)) => Some([q, k, v]),
            (None, None, None) => None,
            _ => return Ok(None),
        };
        let (Some(bo), Some(b1), Some(b2)) = (a.o.bias(), m.fc1.bias(), m.fc2.bias()) else {
            return Ok(None);
        };
        let mut parts = vec![
            self.norm1.weight(),
            self.norm1.bias(),
            a.q.weight(),
            a.k.weight(),
            a.v.weight(),
        ];
        parts.extend(qkv_bias.iter().flatten());
        parts.extend([
            a.o.weight(),
            bo,
            self.norm2.weight(),
            self.norm2.bias(),
            m.fc1.weight(),
            b1,
            m.fc2.weight(),
            b2,
        ]);
        if !parts.iter().all(|p| storage::applies(p)) {
            return Ok(None);
        }
        let flat = parts
            .iter()
            .map(|p| p.flatten_all())
            .collect::<Result<Vec<_>>>()?;
        let packed = Tensor::cat(&flat, 0)?;
        let shape = block_op::Shape {
            dim: a.o.weight().dim(0)?,
            heads: a.heads,
            mlp_dim: m.fc1.weight().dim(0)?,
            qkv_bias: qkv_bias.is_some(),
            eps: self.norm1.eps() as f32,
            pre_norm: self.position == NormPosition::Pre,
        };
        let key_bias = bias.map(|m| m.reshape((b, t))).transpose()?;
        let factors = self.branch_factors((b, t, d), mode)?;
        block_op::block(x, &packed, key_bias.as_ref(), shape, factors).map(Some)
    }
}

/// A stack of blocks, with a final LayerNorm in the pre-norm arrangement.
#[derive(Debug, Clone)]
pub struct Encoder {
    layers: Vec<Block>,
    norm: Option<LayerNorm>,
    dim: usize,
}

impl Encoder {
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(msg) = cfg.validate() {
            candle_core::bail!("invalid encoder config: {msg}");
        }
        // timm's `linspace(0, drop_path, depth)`.
        let rate = |i: usize| match cfg.depth {
            0 | 1 => 0.0,
            d => cfg.drop_path * i as f64 / (d - 1) as f64,
        };
        let layers = (0..cfg.depth)
            .map(|i| {
                Block::new(cfg, vb.pp(format!("layers.{i}"))).map(|b| b.with_drop_path(i, rate(i)))
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = match cfg.norm {
            NormPosition::Pre => Some(LayerNorm::new(cfg.dim, cfg.norm_eps, vb.pp("norm"))?),
            NormPosition::Post => None,
        };
        Ok(Self {
            layers,
            norm,
            dim: cfg.dim,
        })
    }

    /// # Shapes
    /// - `x`: `[B, T, dim]` embeddings
    /// - `padding_mask`: `[B, T]`, 1 where a token is real, 0 where it is padding
    /// - returns `[B, T, dim]` in `x`'s dtype
    ///
    /// Inside [`precision::autocast`] with bf16 the blocks compute in bf16 (see
    /// `precision.rs`); the final norm and the result are in `x`'s dtype.
    pub fn forward(
        &self,
        x: &Tensor,
        padding_mask: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        if d != self.dim {
            candle_core::bail!(
                "encoder input: expected last dimension {}, found {d}",
                self.dim
            );
        }
        let bias = match padding_mask {
            Some(m) => {
                if m.dims() != [b, t] {
                    candle_core::bail!(
                        "padding mask: expected shape [{b}, {t}], found {:?}",
                        m.dims()
                    );
                }
                // (1 - mask) * most-negative-finite, like HF's extended attention mask.
                let m = m.to_dtype(DType::F32)?;
                // Kept in fp32: attention adds it to fp32 scores (f32::MIN is -inf in bf16).
                let bias = ((1.0 - m)? * f32::MIN as f64)?;
                Some(bias.reshape((b, 1, 1, t))?)
            }
            None => None,
        };
        let compute = match precision::current() {
            Precision::Bf16 if x.dtype() == DType::F32 => DType::BF16,
            _ => x.dtype(),
        };
        let mut h = x.to_dtype(compute)?;
        for layer in &self.layers {
            h = layer.forward(&h, bias.as_ref(), mode)?;
            if let Mode::Layers(outputs) = mode {
                outputs.push(h.to_dtype(x.dtype())?);
            }
        }
        let h = h.to_dtype(x.dtype())?;
        match &self.norm {
            Some(norm) => norm.forward(&h),
            None => Ok(h),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}
