//! AdamW (Loshchilov & Hutter) with two parameter groups, and global-norm gradient
//! clipping. The update is PyTorch's `torch.optim.AdamW`:
//! `p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
//!  p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
//! Weight decay skips biases, norm weights and learned tokens (anything of rank ≤ 1, or
//! named `*_token` / `*pos_embed*`), as timm and MAE do.

use std::collections::BTreeMap;

use candle_core::{backprop::GradStore, Tensor, Var};
use rayon::prelude::*;

use super::config::OptimizerSection;
use crate::error::{Error, Result};

struct Param {
    name: String,
    var: Var,
    decay: bool,
    /// Multiplies the learning rate (layer-wise decay); 1 by default.
    lr_scale: f64,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    params: Vec<Param>,
    weight_decay: f64,
    betas: [f64; 2],
    eps: f64,
    /// Updates applied so far (Adam's `t`).
    pub steps: usize,
}

/// Whether a parameter gets weight decay.
pub fn decays(name: &str, var: &Var) -> bool {
    var.rank() >= 2 && !name.ends_with("_token") && !name.contains("pos_embed")
}

impl AdamW {
    pub fn new(vars: Vec<(String, Var)>, cfg: &OptimizerSection) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                Ok(Param {
                    decay: decays(&name, &var),
                    lr_scale: 1.0,
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            weight_decay: cfg.weight_decay,
            betas: cfg.betas,
            eps: cfg.eps,
            steps: 0,
        })
    }

    /// Sets each parameter's learning-rate multiplier from its name (PyTorch parameter
    /// groups with `lr_scale`, as BEiT / MAE fine-tuning uses for layer-wise decay). Weight
    /// decay follows the scaled rate, as in those groups.
    pub fn set_lr_scales(&mut self, scale: impl Fn(&str) -> f64) {
        for p in &mut self.params {
            p.lr_scale = scale(&p.name);
        }
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var))
    }

    /// Applies one update from `grads` (one entry per parameter, in `vars()` order; `None`
    /// for a parameter the loss does not reach).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.steps += 1;
        let [b1, b2] = self.betas;
        let t = self.steps as i32;
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        for (p, g) in self.params.iter_mut().zip(grads) {
            let Some(g) = g else { continue };
            let lr = lr * p.lr_scale;
            let step_size = lr / bc1;
            let decay = if p.decay && self.weight_decay > 0.0 {
                Some(1.0 - lr * self.weight_decay)
            } else {
                None
            };
            let c = Consts {
                b1,
                b2,
                decay,
                inv_bc2_sqrt: 1.0 / bc2_sqrt,
                eps: self.eps,
                step_size,
            };
            if !fused_update(p, g, &c)? {
                composed_update(p, g, &c)?;
            }
        }
        Ok(())
    }

    /// Moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("m.{}", p.name), p.m.clone()),
                    (format!("v.{}", p.name), p.v.clone()),
                ]
            })
            .collect()
    }

    /// Restores moments saved by [`AdamW::state`]; every parameter's must be present.
    pub fn load_state(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        steps: usize,
        origin: &std::path::Path,
    ) -> Result<()> {
        for p in &mut self.params {
            for (slot, which) in [(&mut p.m, "m"), (&mut p.v, "v")] {
                let key = format!("{which}.{}", p.name);
                let t = state.get(&key).ok_or_else(|| Error::Checkpoint {
                    path: origin.to_path_buf(),
                    message: format!("missing optimizer state `optim.{key}`"),
                })?;
                if t.dims() != p.var.dims() {
                    return Err(Error::Checkpoint {
                        path: origin.to_path_buf(),
                        message: format!(
                            "optimizer state `optim.{key}`: expected shape {:?}, found {:?}",
                            p.var.dims(),
                            t.dims()
                        ),
                    });
                }
                *slot = t.clone();
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// The scalars of one parameter's update.
struct Consts {
    b1: f64,
    b2: f64,
    /// `1 - lr * weight_decay`, for parameters that decay.
    decay: Option<f64>,
    inv_bc2_sqrt: f64,
    eps: f64,
    step_size: f64,
}

/// The AdamW update of one parameter in one pass over its elements (CPU, f32), or `false`
/// where the composed version must run. It evaluates, element by element and in f32, the
/// very operations the composed version runs as candle ops (`x * s` is candle's
/// `affine(s, 0)`, i.e. `x * s + 0`; `x / s` is `affine(1 / s, 0)`), so both give the same
/// bits.
fn fused_update(p: &mut Param, g: &Tensor, c: &Consts) -> Result<bool> {
    use crate::backbone::storage::{applies, with_f32};
    let w = p.var.as_tensor();
    if ![w, g, &p.m, &p.v].into_iter().all(applies) || g.dims() != w.dims() {
        return Ok(false);
    }
    let f = |x: f64| x as f32;
    let (b1, nb1, b2, nb2) = (f(c.b1), f(1.0 - c.b1), f(c.b2), f(1.0 - c.b2));
    let (inv_bc2, eps, step) = (f(c.inv_bc2_sqrt), f(c.eps), f(c.step_size));
    let decay = c.decay.map(f);
    let n = w.elem_count();
    let (mut nw, mut nm, mut nv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    // Element by element, over chunks on the pool; `d = 1` (times one, plus zero) stands for
    // no decay and changes no bit.
    let update =
        |w: &[f32], g: &[f32], m: &[f32], v: &[f32], out: (&mut [f32], &mut [f32], &mut [f32])| {
            let d = decay.unwrap_or(1.0);
            let (ow, om, ov) = out;
            for (((((ow, om), ov), &w), &g), (&m, &v)) in ow
                .iter_mut()
                .zip(om.iter_mut())
                .zip(ov.iter_mut())
                .zip(w)
                .zip(g)
                .zip(m.iter().zip(v))
            {
                let mi = (m * b1 + 0.0) + (g * nb1 + 0.0);
                let vi = (v * b2 + 0.0) + ((g * g) * nb2 + 0.0);
                let wi = if decay.is_some() { w * d + 0.0 } else { w };
                let denom = (vi.sqrt() * inv_bc2 + 0.0) * 1.0 + eps;
                *ow = wi - ((mi / denom) * step + 0.0);
                *om = mi;
                *ov = vi;
            }
        };
    const CHUNK: usize = 1 << 14;
    with_f32(w, |w| {
        with_f32(g, |g| {
            with_f32(&p.m, |m| {
                with_f32(&p.v, |v| {
                    nw.par_chunks_mut(CHUNK)
                        .zip(nm.par_chunks_mut(CHUNK))
                        .zip(nv.par_chunks_mut(CHUNK))
                        .enumerate()
                        .for_each(|(k, ((ow, om), ov))| {
                            let r = k * CHUNK..(k * CHUNK + ow.len());
                            update(
                                &w[r.clone()],
                                &g[r.clone()],
                                &m[r.clone()],
                                &v[r],
                                (ow, om, ov),
                            )
                        })
                })
            })
        })
    })????;
    let (shape, dev) = (w.shape().clone(), w.device().clone());
    p.m = Tensor::from_vec(nm, shape.clone(), &dev)?;
    p.v = Tensor::from_vec(nv, shape.clone(), &dev)?;
    p.var.set(&Tensor::from_vec(nw, shape, &dev)?)?;
    Ok(true)
}

/// The AdamW update of one parameter from candle ops, on any device.
fn composed_update(p: &mut Param, g: &Tensor, c: &Consts) -> Result<()> {
    p.m = ((&p.m * c.b1)? + (g * (1.0 - c.b1))?)?;
    p.v = ((&p.v * c.b2)? + (g.sqr()? * (1.0 - c.b2))?)?;
    let mut w = p.var.as_tensor().detach();
    if let Some(d) = c.decay {
        w = (w * d)?;
    }
    let denom = ((p.v.sqrt()? * c.inv_bc2_sqrt)? + c.eps)?;
    let update = ((&p.m / denom)? * c.step_size)?;
    p.var.set(&(w - update)?)?;
    Ok(())
}

/// Gradients of `vars` from a backward pass, in order.
pub fn collect_grads<'a>(
    grads: &GradStore,
    vars: impl Iterator<Item = &'a Var>,
) -> Vec<Option<Tensor>> {
    vars.map(|v| grads.get(v.as_tensor()).cloned()).collect()
}

/// Adds `more` into `acc` elementwise (gradient accumulation).
pub fn accumulate(acc: &mut [Option<Tensor>], more: Vec<Option<Tensor>>) -> Result<()> {
    for (a, m) in acc.iter_mut().zip(more) {
        *a = match (a.take(), m) {
            (Some(x), Some(y)) => Some((x + y)?),
            (x, y) => x.or(y),
        };
    }
    Ok(())
}

/// Global L2 norm of all gradients.
pub fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`, eps 1e-6). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::OptimizerKind;
    use candle_core::Device;

    #[test]
    fn matches_pytorch_adamw_two_steps() {
        // torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)
        // with p = [[1., -2.]], grads [[0.5, 0.25]] then [[-1., 2.]].
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[[1f32, -2.0]], &dev).unwrap()).unwrap();
        let cfg = OptimizerSection {
            kind: OptimizerKind::Adamw,
            lr: 0.1,
            weight_decay: 0.5,
            betas: [0.9, 0.999],
            eps: 1e-8,
        };
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], &cfg).unwrap();
        let g1 = Tensor::new(&[[0.5f32, 0.25]], &dev).unwrap();
        opt.step(&[Some(g1)], 0.1).unwrap();
        let p1 = var.as_tensor().to_vec2::<f32>().unwrap();
        // decay: 1*(1-0.05)=0.95, -1.9; Adam step t=1 moves by lr*sign(g) = 0.1.
        assert!(
            (p1[0][0] - 0.85).abs() < 1e-6 && (p1[0][1] + 2.0).abs() < 1e-6,
            "{p1:?}"
        );
        let g2 = Tensor::new(&[[-1f32, 2.0]], &dev).unwrap();
        opt.step(&[Some(g2)], 0.1).unwrap();
        let p2 = var.as_tensor().to_vec2::<f32>().unwrap();
        // Reference from the formula in f64.
        let reference = |p0: f64, ga: f64, gb: f64| {
            let (b1, b2, lr, wd, eps) = (0.9f64, 0.999f64, 0.1, 0.5, 1e-8);
            let mut p = p0 * (1.0 - lr * wd);
            let m = (1.0 - b1) * ga;
            let v = (1.0 - b2) * ga * ga;
            p -= lr / (1.0 - b1) * m / ((v).sqrt() / (1.0 - b2).sqrt() + eps);
            p *= 1.0 - lr * wd;
            let m = b1 * m + (1.0 - b1) * gb;
            let v = b2 * v + (1.0 - b2) * gb * gb;
            p - lr / (1.0 - b1 * b1) * m / (v.sqrt() / (1.0 - b2 * b2).sqrt() + eps)
        };
        assert!(
            (p2[0][0] as f64 - reference(1.0, 0.5, -1.0)).abs() < 1e-5,
            "{p2:?}"
        );
        assert!(
            (p2[0][1] as f64 - reference(-2.0, 0.25, 2.0)).abs() < 1e-5,
            "{p2:?}"
        );
    }

    /// The one-pass CPU update and the candle-op update give the same bits, with and
    /// without weight decay, over several steps.
    #[test]
    fn fused_update_equals_the_composed_update_bitwise() {
        let dev = Device::Cpu;
        for decay in [Some(1.0 - 0.01 * 0.05), None] {
            let w0 = Tensor::randn(0f32, 1.0, (7, 13), &dev).unwrap();
            let param = || Param {
                name: "w".into(),
                var: Var::from_tensor(&w0).unwrap(),
                decay: decay.is_some(),
                lr_scale: 1.0,
                m: w0.zeros_like().unwrap(),
                v: w0.zeros_like().unwrap(),
            };
            let (mut a, mut b) = (param(), param());
            for t in 1..=4 {
                let g = Tensor::randn(0f32, 1.0, (7, 13), &dev).unwrap();
                let c = Consts {
                    b1: 0.9,
                    b2: 0.95,
                    decay,
                    inv_bc2_sqrt: 1.0 / (1.0 - 0.95f64.powi(t)).sqrt(),
                    eps: 1e-8,
                    step_size: 0.01 / (1.0 - 0.9f64.powi(t)),
                };
                assert!(fused_update(&mut a, &g, &c).unwrap());
                composed_update(&mut b, &g, &c).unwrap();
            }
            let bits = |t: &Tensor| -> Vec<u32> {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                v.into_iter().map(f32::to_bits).collect()
            };
            assert_eq!(bits(a.var.as_tensor()), bits(b.var.as_tensor()));
            assert_eq!(bits(&a.m), bits(&b.m));
            assert_eq!(bits(&a.v), bits(&b.v));
        }
    }

    #[test]
    fn no_decay_for_biases_norms_tokens() {
        let dev = Device::Cpu;
        let v2 = Var::zeros((2, 2), candle_core::DType::F32, &dev).unwrap();
        let v1 = Var::zeros(2, candle_core::DType::F32, &dev).unwrap();
        let v3 = Var::zeros((1, 1, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(decays("encoder.layers.0.attn.q.weight", &v2));
        assert!(!decays("encoder.layers.0.attn.q.bias", &v1));
        assert!(!decays("vit.cls_token", &v3));
        assert!(!decays("decoder.mask_token", &v3));
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let dev = Device::Cpu;
        let mut g = vec![Some(Tensor::new(&[3f32, 4.0], &dev).unwrap()), None];
        let before = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-6);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn lr_scales_apply_per_parameter() {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[[1f32]], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[[1f32]], &dev).unwrap()).unwrap();
        let cfg = OptimizerSection {
            kind: OptimizerKind::Adamw,
            lr: 0.1,
            weight_decay: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
        };
        let mut opt =
            AdamW::new(vec![("a".into(), a.clone()), ("b".into(), b.clone())], &cfg).unwrap();
        opt.set_lr_scales(|name| if name == "a" { 1.0 } else { 0.25 });
        let g = Tensor::new(&[[1f32]], &dev).unwrap();
        opt.step(&[Some(g.clone()), Some(g)], 0.1).unwrap();
        // Adam's first step moves by lr * sign(g), scaled per parameter.
        let moved = |v: &Var| 1.0 - v.as_tensor().to_vec2::<f32>().unwrap()[0][0];
        assert!((moved(&a) - 0.1).abs() < 1e-6);
        assert!((moved(&b) - 0.025).abs() < 1e-6);
    }
}
