//! A named, ordered store of trainable parameters with *seeded* initialisation.
//!
//! Candle's `VarMap` initialises from the CPU device's thread RNG, which cannot be seeded,
//! so two runs with the same recipe would start from different weights. `ParamStore` plugs
//! into `VarBuilder` as a backend and draws each parameter from a ChaCha stream keyed by
//! `(seed, parameter name)`: the result depends neither on construction order nor on the
//! thread, and a run is reproducible bit for bit on CPU.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Inner>,
}

struct Inner {
    seed: u64,
    vars: Mutex<BTreeMap<String, Var>>,
    /// Prefixes of parameters the optimizer leaves alone (an EMA teacher's): saved and
    /// restored with the rest, updated by their owner.
    frozen: Mutex<Vec<String>>,
}

/// 64-bit FNV-1a: a stable hash of the parameter name (std's hasher is not stable).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn init_values(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(lo..up) as f32).collect()
    };
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => {
            let d = Normal::new(mean, stdev.max(0.0)).expect("stdev is non-negative");
            (0..n).map(|_| d.sample(rng) as f32).collect()
        }
        Init::Uniform { lo, up } if lo < up => uniform(rng, lo, up),
        Init::Uniform { lo, .. } => vec![lo as f32; n],
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = fan.for_shape(shape);
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                candle_nn::init::NormalOrUniform::Normal => {
                    let d = Normal::new(0.0, std).expect("std is non-negative");
                    (0..n).map(|_| d.sample(rng) as f32).collect()
                }
            }
        }
    }
}

impl ParamStore {
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                seed,
                vars: Mutex::new(BTreeMap::new()),
                frozen: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A `VarBuilder` that creates (or returns) parameters in this store.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        let backend: Box<dyn candle_nn::var_builder::SimpleBackend> = Box::new(self.clone());
        VarBuilder::from_backend(backend, DType::F32, device.clone())
    }

    /// A `VarBuilder` over detached copies of the current values: a model built from it is
    /// frozen and its forward pass records no gradient graph (candle has no no-grad mode),
    /// which is what evaluation and feature extraction want.
    pub fn frozen_var_builder(&self, device: &Device) -> VarBuilder<'static> {
        let tensors = self
            .vars()
            .into_iter()
            .map(|(name, v)| (name, v.as_tensor().detach()))
            .collect();
        VarBuilder::from_tensors(tensors, DType::F32, device)
    }

    /// All parameters, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let vars = self.inner.vars.lock().expect("param store lock");
        vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Marks the parameters named `prefix*` as not trained by the optimizer: they are
    /// checkpointed and restored like every other, and their owner sets them (a data2vec
    /// teacher, an exponential moving average of the student).
    pub fn freeze_prefix(&self, prefix: &str) {
        let mut frozen = self.inner.frozen.lock().expect("param store lock");
        if !frozen.iter().any(|p| p == prefix) {
            frozen.push(prefix.to_string());
        }
    }

    /// The parameters the optimizer trains: all but the frozen ones, sorted by name.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let frozen = self.inner.frozen.lock().expect("param store lock").clone();
        self.vars()
            .into_iter()
            .filter(|(k, _)| !frozen.iter().any(|p| k.starts_with(p.as_str())))
            .collect()
    }

    /// Parameters whose name starts with `prefix`.
    pub fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, Var)> {
        self.vars()
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }

    /// The device the parameters live on (that of the first one; CPU when there are none).
    pub fn device(&self) -> Device {
        self.vars()
            .first()
            .map_or(Device::Cpu, |(_, v)| v.device().clone())
    }

    pub fn num_params(&self) -> usize {
        self.num_params_with_prefix("")
    }

    /// Number of scalar parameters whose name starts with `prefix`.
    pub fn num_params_with_prefix(&self, prefix: &str) -> usize {
        self.vars_with_prefix(prefix)
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Copies the values of `src`'s parameters named `prefix*` into this store's parameters of
    /// the same names (for example a pretrained encoder `vit.*` into a classifier). Each must
    /// exist here with the same shape; returns how many were copied.
    pub fn copy_prefix_from(&self, src: &ParamStore, prefix: &str) -> Result<usize> {
        let ours = self.inner.vars.lock().expect("param store lock");
        let mut copied = 0;
        for (name, v) in src.vars_with_prefix(prefix) {
            let target = ours.get(&name).ok_or_else(|| {
                Error::shape(
                    format!("parameter `{name}`"),
                    "a parameter of that name in the target model",
                    "none",
                )
            })?;
            if target.dims() != v.dims() {
                return Err(Error::shape(
                    format!("parameter `{name}`"),
                    format!("{:?}", target.dims()),
                    format!("{:?}", v.dims()),
                ));
            }
            target.set(&v.as_tensor().detach())?;
            copied += 1;
        }
        Ok(copied)
    }

    /// Writes every parameter (detached) to a safetensors file, atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect();
        crate::tensor_io::write(path, &tensors, Default::default())
    }

    /// Overwrites the parameters named in `tensors` (a model source that covers part of this
    /// model, e.g. an encoder without the MLM head); parameters not named keep their values.
    /// A tensor with no parameter of its name, of another shape or not floating-point is an
    /// error. Returns how many were set.
    pub fn load_partial(
        &self,
        tensors: &BTreeMap<String, Tensor>,
        origin: &std::path::Path,
    ) -> Result<usize> {
        let err = |message: String| Error::Checkpoint {
            path: origin.to_path_buf(),
            message,
        };
        let vars = self.inner.vars.lock().expect("param store lock");
        let mut pairs = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            let var = vars.get(name).ok_or_else(|| {
                err(format!(
                    "unexpected tensor `{name}`: the model has no such parameter"
                ))
            })?;
            if t.dims() != var.dims() {
                return Err(err(format!(
                    "tensor `{name}`: expected shape {:?}, found {:?}",
                    var.dims(),
                    t.dims()
                )));
            }
            if !t.dtype().is_float() {
                return Err(err(format!(
                    "tensor `{name}`: expected a floating-point dtype (f32, f16, bf16, f64), found {:?}",
                    t.dtype()
                )));
            }
            pairs.push((var, t));
        }
        // Nothing is set unless everything checks out.
        for (var, t) in &pairs {
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(pairs.len())
    }

    /// Overwrite parameters with the given tensors. Every stored parameter must be present
    /// with the same shape; unknown names are errors (nothing is silently ignored).
    pub fn load_tensors(
        &self,
        tensors: &BTreeMap<String, Tensor>,
        origin: &std::path::Path,
    ) -> Result<()> {
        if let Some((name, var)) = self
            .vars()
            .into_iter()
            .find(|(name, _)| !tensors.contains_key(name))
        {
            return Err(Error::Checkpoint {
                path: origin.to_path_buf(),
                message: format!("missing tensor `{name}` (shape {:?})", var.dims()),
            });
        }
        self.load_partial(tensors, origin).map(|_| ())
    }

    fn create(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dev: &Device,
    ) -> candle_core::Result<Var> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.inner.seed ^ fnv1a(name));
        let values = init_values(init, &shape, &mut rng);
        Var::from_tensor(&Tensor::from_vec(values, shape, dev)?)
    }
}

impl candle_nn::var_builder::SimpleBackend for ParamStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self.inner.vars.lock().expect("param store lock");
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "parameter `{name}` requested with shape {s:?} but exists with {:?}",
                    v.shape()
                );
            }
            return v.as_tensor().to_dtype(dtype);
        }
        let var = self.create(s, name, h, dev)?;
        let t = var.as_tensor().to_dtype(dtype)?;
        vars.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let vars = self.inner.vars.lock().expect("param store lock");
        match vars.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("no parameter named `{name}`"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner
            .vars
            .lock()
            .expect("param store lock")
            .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_in_any_order() {
        let dev = Device::Cpu;
        let a = ParamStore::new(7);
        let b = ParamStore::new(7);
        let va = a.var_builder(&dev);
        let vb = b.var_builder(&dev);
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let x1 = va.get_with_hints((3, 4), "x", init).unwrap();
        let y1 = va.get_with_hints(5, "y", init).unwrap();
        let y2 = vb.get_with_hints(5, "y", init).unwrap();
        let x2 = vb.get_with_hints((3, 4), "x", init).unwrap();
        assert_eq!(x1.to_vec2::<f32>().unwrap(), x2.to_vec2::<f32>().unwrap());
        assert_eq!(y1.to_vec1::<f32>().unwrap(), y2.to_vec1::<f32>().unwrap());
        let c = ParamStore::new(8);
        let x3 = c
            .var_builder(&dev)
            .get_with_hints((3, 4), "x", init)
            .unwrap();
        assert_ne!(x1.to_vec2::<f32>().unwrap(), x3.to_vec2::<f32>().unwrap());
        let std = x1.flatten_all().unwrap().sqr().unwrap().mean_all().unwrap();
        assert!(std.to_scalar::<f32>().unwrap() > 0.0);
    }

    #[test]
    fn loading_names_the_tensor_on_missing_shape_and_dtype_errors() {
        let dev = Device::Cpu;
        let store = ParamStore::new(0);
        store
            .var_builder(&dev)
            .get_with_hints((2, 3), "w", Init::Const(0.0))
            .unwrap();
        let origin = std::path::Path::new("ckpt.safetensors");
        let load = |t: Option<Tensor>| {
            let map: BTreeMap<String, Tensor> =
                t.map(|t| ("w".to_string(), t)).into_iter().collect();
            store.load_tensors(&map, origin).unwrap_err().to_string()
        };
        let e = load(None);
        assert!(
            e.contains("missing tensor `w`") && e.contains("[2, 3]"),
            "{e}"
        );
        let e = load(Some(Tensor::zeros((3, 2), DType::F32, &dev).unwrap()));
        assert!(
            e.contains("`w`") && e.contains("expected shape [2, 3], found [3, 2]"),
            "{e}"
        );
        let e = load(Some(Tensor::zeros((2, 3), DType::U8, &dev).unwrap()));
        assert!(e.contains("`w`") && e.contains("found U8"), "{e}");
        assert!(e.contains("ckpt.safetensors"), "{e}");
        store
            .load_tensors(
                &[(
                    "w".to_string(),
                    Tensor::ones((2, 3), DType::F64, &dev).unwrap(),
                )]
                .into(),
                origin,
            )
            .unwrap();
    }
}
