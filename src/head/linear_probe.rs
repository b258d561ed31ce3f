//! Linear probe: a logistic-regression layer trained on frozen, standardised features
//! (MAE's probe uses a non-affine BatchNorm before the linear layer; standardising with the
//! training split's statistics is the same map at evaluation time).

use candle_core::{DType, Module, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backbone::ops::cross_entropy;
use crate::backbone::Linear;
use crate::error::{Error, Result};
use crate::params::ParamStore;
use crate::train::config::{OptimizerKind, OptimizerSection};
use crate::train::optim::{self, AdamW};

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    pub train_examples: usize,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

pub struct LinearProbe {
    mean: Tensor,
    std: Tensor,
    linear: Linear,
}

/// Fraction of rows whose arg-max logit equals the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let pred = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?;
    let hits = pred
        .eq(&labels.to_dtype(DType::U32)?)?
        .to_dtype(DType::F32)?
        .sum_all()?;
    Ok(hits.to_scalar::<f32>()? as f64 / labels.dim(0)? as f64)
}

impl LinearProbe {
    /// Trains on `features: [N, D]`, `labels: [N]` (u32).
    pub fn fit(
        features: &Tensor,
        labels: &Tensor,
        classes: usize,
        cfg: &ProbeConfig,
    ) -> Result<Self> {
        let (n, d) = features.dims2()?;
        if labels.dims() != [n] {
            return Err(Error::shape(
                "probe labels",
                format!("[{n}]"),
                format!("{:?}", labels.dims()),
            ));
        }
        let mean = features.mean_keepdim(0)?;
        let std = (features.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
        let x = features.broadcast_sub(&mean)?.broadcast_div(&std)?.detach();

        let store = ParamStore::new(cfg.seed);
        let linear = Linear::new(
            d,
            classes,
            true,
            store.var_builder(features.device()).pp("head"),
        )?;
        let opt_cfg = OptimizerSection {
            kind: OptimizerKind::Adamw,
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            betas: [0.9, 0.999],
            eps: 1e-8,
        };
        let mut opt = AdamW::new(store.vars(), &opt_cfg)?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut order: Vec<u32> = (0..n as u32).collect();
        let total = cfg.epochs * n.div_ceil(cfg.batch_size);
        let mut it = 0;
        for _ in 0..cfg.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(cfg.batch_size) {
                let idx = Tensor::new(chunk, features.device())?;
                let loss = cross_entropy(
                    &linear.forward(&x.index_select(&idx, 0)?)?,
                    &labels.index_select(&idx, 0)?,
                )?;
                let grads = loss.backward()?;
                let g = optim::collect_grads(&grads, opt.vars().map(|(_, v)| v));
                // Cosine decay over all iterations.
                let lr =
                    cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * it as f64 / total as f64).cos());
                opt.step(&g, lr)?;
                it += 1;
            }
        }
        Ok(Self { mean, std, linear })
    }

    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        let x = features
            .broadcast_sub(&self.mean)?
            .broadcast_div(&self.std)?;
        Ok(self.linear.forward(&x)?.detach())
    }

    /// Fits on the training features and reports accuracies.
    pub fn evaluate(
        train: (&Tensor, &Tensor),
        test: (&Tensor, &Tensor),
        classes: usize,
        cfg: &ProbeConfig,
    ) -> Result<ProbeResult> {
        let probe = Self::fit(train.0, train.1, classes, cfg)?;
        Ok(ProbeResult {
            train_examples: train.0.dim(0)?,
            train_accuracy: accuracy(&probe.logits(train.0)?, train.1)?,
            test_accuracy: accuracy(&probe.logits(test.0)?, test.1)?,
        })
    }
}
