//! Linear probe: a logistic-regression layer trained on frozen, standardised features
//! (MAE's probe uses a non-affine BatchNorm before the linear layer; standardising with the
//! training split's statistics is the same map at evaluation time). It is trained by the
//! training loop (AdamW, cosine decay over all steps, whole shuffled epochs) without
//! writing anything: a probe is refit in seconds.

use candle_core::{DType, Module, Tensor, D};

use crate::backbone::ops::cross_entropy;
use crate::backbone::Linear;
use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::params::ParamStore;
use crate::train::config::{
    OptimizerKind, OptimizerSection, ScheduleKind, ScheduleSection, TrainSection,
};
use crate::train::epochs::EpochOrder;
use crate::train::Loss;
use crate::train::{self, Setup, TrainTask};

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

/// The probe's cross-entropy on batches of the standardised features, for the loop.
struct ProbeTask<'a> {
    x: &'a Tensor,
    labels: &'a Tensor,
    linear: &'a Linear,
}

impl TrainTask for ProbeTask<'_> {
    fn num_examples(&self) -> usize {
        self.labels.dim(0).unwrap_or(0)
    }

    fn loss(&self, indices: &[usize], _draws: &Draws) -> Result<Loss> {
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx.as_slice(), self.x.device())?;
        let value = cross_entropy(
            &self.linear.forward(&self.x.index_select(&idx, 0)?)?,
            &self.labels.index_select(&idx, 0)?,
        )?;
        Ok(Loss::per_example(value, indices.len()))
    }
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
        let steps = cfg.epochs * n.div_ceil(cfg.batch_size);
        let section = TrainSection {
            steps,
            batch_size: cfg.batch_size,
            grad_accum: 1,
            optimizer: OptimizerSection {
                kind: OptimizerKind::Adamw,
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                betas: [0.9, 0.999],
                eps: 1e-8,
            },
            schedule: ScheduleSection {
                kind: ScheduleKind::Cosine,
                warmup_steps: 0,
                min_lr: 0.0,
            },
            clip_grad_norm: None,
            checkpoint_every: steps.max(1),
            keep_checkpoints: 1,
            log_every: steps.max(1),
            precision: Default::default(),
        };
        let setup = Setup {
            seed: cfg.seed,
            rng_seed: Some(cfg.seed),
            epochs: Some(EpochOrder::in_place(n)),
            lr_scale: None,
            label: String::new(),
            world: None,
        };
        let task = ProbeTask {
            x: &x,
            labels,
            linear: &linear,
        };
        train::train(&task, &store, &section, setup, None, None, None, None)?;
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
