//! The raw-waveform front end of wav2vec 2.0, HuBERT and data2vec-audio, under pretext's own
//! names, built from a `VarBuilder` (loadable and trainable alike):
//!
//! ```text
//! convs.{i}.conv.{weight,bias}   strided 1-D convolutions over the waveform (bias optional)
//! convs.{i}.norm.{weight,bias}   GroupNorm (one group per channel) on the first conv only, or
//!                                LayerNorm over channels after every conv
//! proj_norm.{weight,bias}        LayerNorm on the conv features (optional for HuBERT)
//! proj.{weight,bias}             conv features → hidden size
//! mask_embed                     the learned vector that replaces masked frames (optional)
//! pos_conv.{weight_g,weight_v,bias}   weight-normalised grouped conv (wav2vec 2.0, HuBERT)
//! pos_conv.{j}.{weight,bias}          a stack of grouped convs (data2vec-audio)
//! embed_norm.{weight,bias}       LayerNorm after adding the positions (post-norm encoders)
//! encoder.*                      the shared transformer ([`crate::backbone::Encoder`]);
//!                                its final `norm` only in the pre-norm (stable) arrangement
//! ```
//!
//! Follows `transformers`' `modeling_wav2vec2.py`, `modeling_hubert.py` and
//! `modeling_data2vec_audio.py` (eval mode; dropout in train mode where they have it).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::backbone::{
    ops, Activation, Encoder, EncoderConfig, LayerNorm, Linear, Mode, NormPosition,
};

/// PyTorch's default eps for the conv stack's GroupNorm / LayerNorm and data2vec-audio's
/// positional LayerNorm (`transformers` does not pass `layer_norm_eps` to them).
pub const TORCH_NORM_EPS: f64 = 1e-5;

/// Normalisation inside the conv feature extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatNorm {
    /// GroupNorm with one group per channel, on the first conv layer only.
    Group,
    /// LayerNorm over channels after every conv layer.
    Layer,
}

/// The relative positional embedding: a convolution over the projected features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PosConv {
    /// One weight-normalised grouped conv (`weight_norm(dim=2)`), same padding (one frame
    /// dropped for an even kernel), then the activation (wav2vec 2.0, HuBERT).
    WeightNorm { kernel: usize, groups: usize },
    /// `layers` grouped convs, each followed by a LayerNorm without affine parameters and the
    /// activation (data2vec-audio).
    Stack {
        layers: usize,
        kernel: usize,
        groups: usize,
    },
}

impl PosConv {
    pub fn kernel(&self) -> usize {
        match *self {
            PosConv::WeightNorm { kernel, .. } | PosConv::Stack { kernel, .. } => kernel,
        }
    }

    pub fn groups(&self) -> usize {
        match *self {
            PosConv::WeightNorm { groups, .. } | PosConv::Stack { groups, .. } => groups,
        }
    }
}

/// Shape and behaviour of the waveform encoder. The hidden size is `encoder.dim`; the
/// arrangement is `encoder.norm`: `Post` puts `embed_norm` before the layers, `Pre` (stable
/// layer norm) has the backbone's final `norm` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveformConfig {
    pub conv_dim: Vec<usize>,
    pub conv_kernel: Vec<usize>,
    pub conv_stride: Vec<usize>,
    pub conv_bias: bool,
    pub feat_extract_norm: FeatNorm,
    pub feat_extract_activation: Activation,
    /// LayerNorm on the conv features before the projection.
    pub feat_proj_layer_norm: bool,
    pub feat_proj_dropout: f64,
    pub pos_conv: PosConv,
    /// eps of the feature-projection LayerNorm, `embed_norm` and the encoder's LayerNorms.
    pub layer_norm_eps: f64,
    /// Has the learned mask vector (`masked_spec_embed`).
    pub mask_embed: bool,
    pub encoder: EncoderConfig,
}

impl WaveformConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.conv_dim.len();
        if n == 0 || self.conv_kernel.len() != n || self.conv_stride.len() != n {
            return Err(format!(
                "conv_dim, conv_kernel and conv_stride must have the same non-zero length, \
                 found {}, {} and {}",
                n,
                self.conv_kernel.len(),
                self.conv_stride.len()
            ));
        }
        if self
            .conv_dim
            .iter()
            .chain(&self.conv_kernel)
            .chain(&self.conv_stride)
            .any(|&x| x == 0)
        {
            return Err("conv sizes, kernels and strides must be positive".into());
        }
        let (k, g) = (self.pos_conv.kernel(), self.pos_conv.groups());
        if k == 0 || g == 0 || !self.encoder.dim.is_multiple_of(g) {
            return Err(format!(
                "the positional conv needs a positive kernel and groups dividing the hidden size \
                 ({}), found kernel {k}, groups {g}",
                self.encoder.dim
            ));
        }
        if let PosConv::Stack { layers: 0, .. } = self.pos_conv {
            return Err("the positional conv stack needs at least one layer".into());
        }
        self.encoder.validate()
    }

    /// Frames the conv stack gives for `samples` input samples (0 when too short).
    pub fn frames(&self, samples: usize) -> usize {
        self.conv_kernel
            .iter()
            .zip(&self.conv_stride)
            .fold(
                samples,
                |l, (&k, &s)| if l < k { 0 } else { (l - k) / s + 1 },
            )
    }
}

/// What [`WaveformEncoder::forward`] returns, named as in `transformers`.
#[derive(Debug, Clone)]
pub struct WaveformOutput {
    /// `[B, T, D]`.
    pub last_hidden_state: Tensor,
    /// `[B, T, C]`: the conv features after the feature projection's LayerNorm (where there
    /// is one), as `Wav2Vec2Model` returns them.
    pub extract_features: Tensor,
    /// `[B, T]` f32, 1 for frames of real samples, when an attention mask was given.
    pub feature_mask: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum ConvNorm {
    None,
    /// Per-channel normalisation over time, `[C]` weight and bias.
    Group {
        weight: Tensor,
        bias: Tensor,
    },
    Layer(LayerNorm),
}

#[derive(Debug, Clone)]
struct ConvLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    norm: ConvNorm,
}

fn conv_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Adds a per-channel bias `[C]` to `x: [B, C, T]`.
fn add_channel_bias(x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => x.broadcast_add(&b.reshape((1, (), 1))?),
        None => Ok(x.clone()),
    }
}

/// Normalises `x: [B, C, T]` over time per channel (GroupNorm with C groups) or over
/// channels per frame (LayerNorm without affine), eps [`TORCH_NORM_EPS`].
fn normalize(x: &Tensor, dim: usize) -> Result<Tensor> {
    let mean = x.mean_keepdim(dim)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(dim)?;
    xc.broadcast_div(&(var + TORCH_NORM_EPS)?.sqrt()?)
}

impl ConvLayer {
    fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let x = x.conv1d(&self.weight, 0, self.stride, 1, 1)?;
        let x = add_channel_bias(&x, self.bias.as_ref())?;
        let x = match &self.norm {
            ConvNorm::None => x,
            ConvNorm::Group { weight, bias } => normalize(&x, 2)?
                .broadcast_mul(&weight.reshape((1, (), 1))?)?
                .broadcast_add(&bias.reshape((1, (), 1))?)?,
            ConvNorm::Layer(ln) => ln.forward(&x.transpose(1, 2)?)?.transpose(1, 2)?,
        };
        act.apply(&x)
    }
}

#[derive(Debug, Clone)]
enum PosEmbed {
    WeightNorm {
        weight_g: Tensor,
        weight_v: Tensor,
        bias: Tensor,
    },
    Stack(Vec<(Tensor, Tensor)>),
}

/// The waveform encoder: conv features → projection → positional conv → transformer.
#[derive(Debug, Clone)]
pub struct WaveformEncoder {
    cfg: WaveformConfig,
    convs: Vec<ConvLayer>,
    proj_norm: Option<LayerNorm>,
    proj: Linear,
    mask_embed: Option<Tensor>,
    pos: PosEmbed,
    embed_norm: Option<LayerNorm>,
    encoder: Encoder,
}

impl WaveformEncoder {
    pub fn new(cfg: &WaveformConfig, vb: VarBuilder) -> Result<Self> {
        if let Err(msg) = cfg.validate() {
            candle_core::bail!("invalid waveform config: {msg}");
        }
        let d = cfg.encoder.dim;
        let mut convs = Vec::with_capacity(cfg.conv_dim.len());
        let mut c_in = 1;
        for (i, ((&c, &k), &s)) in cfg
            .conv_dim
            .iter()
            .zip(&cfg.conv_kernel)
            .zip(&cfg.conv_stride)
            .enumerate()
        {
            let vb = vb.pp(format!("convs.{i}"));
            let fan_in = c_in * k;
            let weight = vb.get_with_hints(
                (c, c_in, k),
                "conv.weight",
                Init::Kaiming {
                    dist: candle_nn::init::NormalOrUniform::Normal,
                    fan: candle_nn::init::FanInOut::FanIn,
                    non_linearity: candle_nn::init::NonLinearity::ReLU,
                },
            )?;
            let bias = if cfg.conv_bias {
                Some(vb.get_with_hints(c, "conv.bias", conv_init(fan_in))?)
            } else {
                None
            };
            let norm = match cfg.feat_extract_norm {
                FeatNorm::Group if i == 0 => ConvNorm::Group {
                    weight: vb.get_with_hints(c, "norm.weight", Init::Const(1.0))?,
                    bias: vb.get_with_hints(c, "norm.bias", Init::Const(0.0))?,
                },
                FeatNorm::Group => ConvNorm::None,
                FeatNorm::Layer => {
                    ConvNorm::Layer(LayerNorm::new(c, TORCH_NORM_EPS, vb.pp("norm"))?)
                }
            };
            convs.push(ConvLayer {
                weight,
                bias,
                stride: s,
                norm,
            });
            c_in = c;
        }
        let c = c_in;
        let proj_norm = if cfg.feat_proj_layer_norm {
            Some(LayerNorm::new(c, cfg.layer_norm_eps, vb.pp("proj_norm"))?)
        } else {
            None
        };
        let proj = Linear::new(c, d, true, vb.pp("proj"))?;
        let mask_embed = if cfg.mask_embed {
            Some(vb.get_with_hints(d, "mask_embed", Init::Uniform { lo: 0.0, up: 1.0 })?)
        } else {
            None
        };
        let (k, g) = (cfg.pos_conv.kernel(), cfg.pos_conv.groups());
        let fan_in = d / g * k;
        let pos = match cfg.pos_conv {
            PosConv::WeightNorm { .. } => {
                let vb = vb.pp("pos_conv");
                let std = (4.0 / (k * d) as f64).sqrt();
                PosEmbed::WeightNorm {
                    weight_v: vb.get_with_hints(
                        (d, d / g, k),
                        "weight_v",
                        Init::Randn {
                            mean: 0.0,
                            stdev: std,
                        },
                    )?,
                    weight_g: vb.get_with_hints((1, 1, k), "weight_g", Init::Const(1.0))?,
                    bias: vb.get_with_hints(d, "bias", Init::Const(0.0))?,
                }
            }
            PosConv::Stack { layers, .. } => PosEmbed::Stack(
                (0..layers)
                    .map(|j| {
                        let vb = vb.pp(format!("pos_conv.{j}"));
                        Ok((
                            vb.get_with_hints((d, d / g, k), "weight", conv_init(fan_in))?,
                            vb.get_with_hints(d, "bias", conv_init(fan_in))?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let embed_norm = match cfg.encoder.norm {
            NormPosition::Post => Some(LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("embed_norm"))?),
            NormPosition::Pre => None,
        };
        let encoder = Encoder::new(&cfg.encoder, vb.pp("encoder"))?;
        Ok(Self {
            cfg: cfg.clone(),
            convs,
            proj_norm,
            proj,
            mask_embed,
            pos,
            embed_norm,
            encoder,
        })
    }

    pub fn config(&self) -> &WaveformConfig {
        &self.cfg
    }

    /// The learned mask vector `[D]`, when the model has one.
    pub fn mask_embed(&self) -> Option<&Tensor> {
        self.mask_embed.as_ref()
    }

    /// Frames the conv stack gives for each input length (in samples).
    pub fn output_lengths(&self, input_lengths: &[usize]) -> Vec<usize> {
        input_lengths.iter().map(|&l| self.cfg.frames(l)).collect()
    }

    /// The frame-level mask `[B, frames]` (f32, 1 = real) for a sample-level attention mask
    /// `[B, S]` (any dtype, nonzero = real), as `_get_feature_vector_attention_mask`.
    pub fn feature_mask(&self, attention_mask: &Tensor, frames: usize) -> Result<Tensor> {
        let (b, _) = attention_mask.dims2()?;
        let lengths: Vec<f32> = attention_mask
            .to_dtype(DType::F32)?
            .ne(0f32)?
            .to_dtype(DType::F32)?
            .sum(1)?
            .to_vec1()?;
        let lengths: Vec<usize> = lengths.iter().map(|&l| l as usize).collect();
        let out = self.output_lengths(&lengths);
        let mut mask = vec![0f32; b * frames];
        for (i, &n) in out.iter().enumerate() {
            for m in mask.iter_mut().skip(i * frames).take(n.min(frames)) {
                *m = 1.0;
            }
        }
        Tensor::from_vec(mask, (b, frames), attention_mask.device())
    }

    /// Conv features `[B, T, C]` of `input_values: [B, S]`.
    pub fn conv_features(&self, input_values: &Tensor) -> Result<Tensor> {
        let (_, s) = input_values.dims2()?;
        if self.cfg.frames(s) == 0 {
            candle_core::bail!(
                "input_values: {s} samples are too few for the conv stack (kernels {:?}, strides {:?})",
                self.cfg.conv_kernel,
                self.cfg.conv_stride
            );
        }
        let mut x = input_values.to_dtype(DType::F32)?.unsqueeze(1)?;
        for layer in &self.convs {
            x = layer.forward(&x, self.cfg.feat_extract_activation)?;
        }
        x.transpose(1, 2)
    }

    /// The positional embedding of `h: [B, T, D]`.
    pub fn positions(&self, h: &Tensor) -> Result<Tensor> {
        let (k, g) = (self.cfg.pos_conv.kernel(), self.cfg.pos_conv.groups());
        let act = self.cfg.feat_extract_activation;
        let drop_last = |y: Tensor| -> Result<Tensor> {
            if k % 2 == 0 {
                let t = y.dim(2)?;
                y.narrow(2, 0, t - 1)
            } else {
                Ok(y)
            }
        };
        let mut x = h.transpose(1, 2)?.contiguous()?;
        match &self.pos {
            PosEmbed::WeightNorm {
                weight_g,
                weight_v,
                bias,
            } => {
                // weight_norm(dim=2): w = g * v / ||v||, the norm over all dims but the kernel's.
                let norm = weight_v.sqr()?.sum_keepdim(0)?.sum_keepdim(1)?.sqrt()?;
                let w = weight_v.broadcast_mul(&weight_g.broadcast_div(&norm)?)?;
                let y = x.conv1d(&w, k / 2, 1, 1, g)?;
                let y = drop_last(add_channel_bias(&y, Some(bias))?)?;
                x = act.apply(&y)?;
            }
            PosEmbed::Stack(layers) => {
                for (w, b) in layers {
                    let y = x.conv1d(w, k / 2, 1, 1, g)?;
                    let y = drop_last(add_channel_bias(&y, Some(b))?)?;
                    x = act.apply(&normalize(&y, 1)?)?;
                }
            }
        }
        x.transpose(1, 2)
    }

    /// # Shapes
    /// - `input_values`: `[B, S]` raw (normalised) samples
    /// - `attention_mask`: `[B, S]`, nonzero for real samples (any dtype)
    pub fn forward(
        &self,
        input_values: &Tensor,
        attention_mask: Option<&Tensor>,
        mode: &mut Mode,
    ) -> Result<WaveformOutput> {
        let (b, s) = input_values.dims2()?;
        if let Some(m) = attention_mask {
            if m.dims() != [b, s] {
                candle_core::bail!(
                    "attention_mask: expected shape [{b}, {s}] like input_values, found {:?}",
                    m.dims()
                );
            }
        }
        let feats = self.conv_features(input_values)?;
        let t = feats.dim(1)?;
        let feature_mask = attention_mask
            .map(|m| self.feature_mask(m, t))
            .transpose()?;
        let extract = match &self.proj_norm {
            Some(ln) => ln.forward(&feats)?,
            None => feats,
        };
        let h = self.proj.forward(&extract)?;
        let mut h = ops::dropout(&h, self.cfg.feat_proj_dropout, mode)?;
        if let Some(m) = &feature_mask {
            // transformers zeroes the padded frames before the positional conv.
            h = h.broadcast_mul(&m.unsqueeze(D::Minus1)?)?;
        }
        let h = (&h + self.positions(&h)?)?;
        let h = match &self.embed_norm {
            Some(ln) => ln.forward(&h)?,
            None => h,
        };
        let h = ops::dropout(&h, self.cfg.encoder.dropout, mode)?;
        let h = self.encoder.forward(&h, feature_mask.as_ref(), mode)?;
        Ok(WaveformOutput {
            last_hidden_state: h,
            extract_features: extract,
            feature_mask,
        })
    }
}

/// `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm` on one input: `(x - mean) /
/// sqrt(var + 1e-7)`.
pub fn zero_mean_unit_var(x: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let scale = 1.0 / (var + 1e-7).sqrt();
    for v in x.iter_mut() {
        *v = ((*v as f64 - mean) * scale) as f32;
    }
}
