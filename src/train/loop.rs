//! The training loop, read top to bottom: batch → forward → loss → backward → (accumulate)
//! → clip → step → log → checkpoint. It is the same for every objective; a
//! [`TrainTask`] supplies the loss of a micro-batch.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::checkpoint::{self, Checkpoint, TrainingState};
use super::config::TrainSection;
use super::epochs::EpochOrder;
use super::loader::BatchShape;
use super::metrics::MetricsLog;
use super::optim::{self, AdamW};
use super::sampler::{Position, Sampler};
use super::schedule::{self, Schedule};
use crate::backbone::{autocast, Precision};
use crate::dist::{Collective, Shard, Single};
use crate::draws::Draws;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// What the loop trains.
pub trait TrainTask {
    /// Number of training examples the sampler draws from.
    fn num_examples(&self) -> usize;
    /// Runs once before the first step with a copy of the loop's sampler (at its resumed
    /// position), the (global) micro-batch size and this process's shard of it: the `loss`
    /// calls that follow ask, in order, for this shard's rows of the batches this sampler
    /// gives, so a task can prepare them ahead of time.
    fn begin(&self, _sampler: &Sampler, _shape: BatchShape) -> Result<()> {
        Ok(())
    }
    /// The loss on the examples `indices`, whose masks, dropout and augmentation draw from
    /// the rows of `draws`.
    fn loss(&self, indices: &[usize], draws: &Draws) -> Result<Loss>;
    /// Encoder hidden states on the examples `indices` with nothing masked, computed on
    /// detached weights (no gradient graph): the step benchmark's inference pass. `None`
    /// where the task has no such pass.
    fn infer(&self, _params: &ParamStore, _indices: &[usize]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Runs at each checkpoint, just before it is written (e.g. reconstruction pictures), so
    /// that no checkpoint exists without what it comes with.
    fn on_checkpoint(&self, _step: usize, _run_dir: &Path) -> Result<()> {
        Ok(())
    }
    /// Runs once when the trainer is made, after a checkpoint's state is loaded
    /// (`resumed`), on every rank: a task sets up state derived from the parameters (a
    /// data2vec teacher starts as a copy of the student).
    fn start(&self, _resumed: bool) -> Result<()> {
        Ok(())
    }
    /// Runs after each optimizer step, `step` the steps now completed (a data2vec teacher
    /// moves towards the student).
    fn after_step(&self, _step: usize) -> Result<()> {
        Ok(())
    }
}

/// A micro-batch's loss: a mean over `weight` units (examples, or the masked tokens MLM
/// predicts). Ranks of a data-parallel step weigh their losses by it, so N ranks take the
/// step one process takes on the whole batch.
pub struct Loss {
    pub value: Tensor,
    pub weight: f64,
}

impl Loss {
    /// A mean over the examples of a batch of `rows`.
    pub fn per_example(value: Tensor, rows: usize) -> Self {
        Self {
            value,
            weight: rows as f64,
        }
    }
}

pub struct TrainOutcome {
    /// Optimizer steps completed (equal to `train.steps` unless stopped early).
    pub step: usize,
    /// Loss at the last step.
    pub last_loss: f32,
    /// Mean training throughput of this invocation.
    pub samples_per_s: f64,
    pub seconds: f64,
}

#[derive(Serialize)]
struct Record {
    step: usize,
    loss: f32,
    lr: f64,
    grad_norm: f64,
    samples_per_s: f64,
    epoch: usize,
    elapsed_s: f64,
}

/// Measures or drives a run in place of the loop (the step benchmark): called once with
/// the trainer the loop would run, at its resumed position. When it returns the run ends
/// without writing a checkpoint.
pub type DriverFn = dyn for<'t> Fn(&mut Trainer<'t>) -> Result<()> + Send + Sync;

#[derive(Clone)]
pub struct Driver(pub std::sync::Arc<DriverFn>);

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver(..)")
    }
}

/// One optimizer step's numbers.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f64,
}

/// What a use of the loop adds to its `[train]` section. Pretraining takes
/// [`Setup::pretraining`]; fine-tuning and the linear probe draw whole epochs from the
/// loop's RNG, and fine-tuning scales learning rates per layer.
pub struct Setup<'a> {
    /// Seeds the data order and, unless `rng_seed` is set, the loop's RNG.
    pub seed: u64,
    /// The loop RNG's own seed (masking, dropout, epochs drawn from it); `None`: derived
    /// from `seed` as pretraining derives it.
    pub rng_seed: Option<u64>,
    /// `None`: pretraining's seeded sampler over the task's examples.
    pub epochs: Option<EpochOrder>,
    /// A learning-rate multiplier per parameter name (layer-wise decay).
    pub lr_scale: Option<&'a dyn Fn(&str) -> f64>,
    /// Starts each progress line (`fine-tune (pretrained), 10 % of labels: `).
    pub label: String,
    /// The processes training together (data parallel), whose gradients are summed every
    /// step (even a world of one: launched alone under `mpirun`, the all-reduce still runs);
    /// `None`: this one alone, no all-reduce.
    pub world: Option<Arc<dyn Collective>>,
}

impl Setup<'_> {
    /// Pretraining: the seeded sampler, no label.
    pub fn pretraining(seed: u64) -> Self {
        Self {
            seed,
            rng_seed: None,
            epochs: None,
            lr_scale: None,
            label: String::new(),
            world: None,
        }
    }
}

/// Where the next batch comes from.
enum Order {
    Seeded(Sampler),
    Epochs(EpochOrder),
}

impl Order {
    fn next_batch(&mut self, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
        match self {
            Order::Seeded(s) => s.next_batch(n),
            Order::Epochs(e) => e.next_batch(n, rng),
        }
    }

    fn epoch(&self) -> usize {
        match self {
            Order::Seeded(s) => s.position().epoch,
            Order::Epochs(e) => e.epoch(),
        }
    }

    fn state(&self) -> (Position, Option<Vec<usize>>) {
        match self {
            Order::Seeded(s) => (s.position(), None),
            Order::Epochs(e) => {
                let (pos, order) = e.state();
                (pos, Some(order))
            }
        }
    }
}

/// The training state the loop advances: optimizer, schedule, data order and RNG over a
/// task. [`Trainer::step`] is one whole optimizer step exactly as `pretext run` takes it.
pub struct Trainer<'a> {
    task: &'a dyn TrainTask,
    params: &'a ParamStore,
    cfg: &'a TrainSection,
    opt: AdamW,
    schedule: Schedule,
    order: Order,
    rng: ChaCha8Rng,
    /// Seeds the examples' own random streams ([`Draws`]).
    draw_seed: u64,
    world: Arc<dyn Collective>,
    /// Whether gradients go through the world's all-reduce.
    reduce: bool,
    label: String,
    /// Optimizer steps completed.
    pub step: usize,
}

impl<'a> Trainer<'a> {
    /// A trainer at step 0 or at the state of `resume`; prepares the task's data loading
    /// from the sampler's position.
    pub fn new(
        task: &'a dyn TrainTask,
        params: &'a ParamStore,
        cfg: &'a TrainSection,
        setup: Setup,
        resume: Option<Checkpoint>,
    ) -> Result<Self> {
        if cfg.precision == Precision::Bf16 && params.device().is_cpu() {
            eprintln!(
                "warning: train.precision = \"bf16\" on the CPU runs on candle's generic bf16 \
                 kernels, about 20x slower than fp32 here; it is meant for GPUs"
            );
        }
        let mut opt = AdamW::new(params.trainable_vars(), &cfg.optimizer)?;
        if let Some(scale) = setup.lr_scale {
            opt.set_lr_scales(scale);
        }
        let schedule = Schedule::new(&cfg.schedule, cfg.optimizer.lr, cfg.steps);
        let rng_seed = setup.rng_seed.unwrap_or(setup.seed ^ 0x6d61_736b);
        let reduce = setup.world.is_some();
        let world = setup.world.unwrap_or_else(|| Arc::new(Single));
        if let Some(why) = Shard::too_small(cfg.batch_size, world.size()) {
            return Err(Error::Usage(format!("train.batch_size = {why}")));
        }
        let resumed = resume.is_some();
        let (step, rng, position, saved_order) = match resume {
            Some(ckpt) => {
                params.load_tensors(&ckpt.model, &ckpt.path)?;
                opt.load_state(&ckpt.optim, ckpt.state.step, &ckpt.path)?;
                let s = ckpt.state;
                if let Some(saved) = s.schedule_steps {
                    if let Some(msg) = schedule::span_change(&schedule, saved, s.step) {
                        eprintln!("{}note: {msg}", setup.label);
                    }
                }
                let order = match (&setup.epochs, s.order) {
                    (Some(_), None) => {
                        return Err(Error::Checkpoint {
                            path: ckpt.path,
                            message: "no data order in the training state: it was written by \
                                      pretraining, not by this head; remove it to start over"
                                .into(),
                        })
                    }
                    (None, Some(_)) => {
                        return Err(Error::Checkpoint {
                            path: ckpt.path,
                            message: "the training state holds a head's data order: it was \
                                      written by fine-tuning, not by pretraining; remove it to \
                                      start over"
                                .into(),
                        })
                    }
                    (_, order) => order,
                };
                (s.step, s.rng, s.data, order)
            }
            None => (
                0,
                ChaCha8Rng::seed_from_u64(rng_seed),
                Position::default(),
                None,
            ),
        };
        let order = match setup.epochs {
            Some(mut epochs) => {
                if let Some(saved) = saved_order {
                    epochs.restore(position, saved)?;
                }
                Order::Epochs(epochs)
            }
            None => {
                let sampler = Sampler::new(task.num_examples(), setup.seed, position);
                task.begin(
                    &sampler,
                    BatchShape {
                        size: cfg.batch_size,
                        shard: Shard::of(&*world),
                    },
                )?;
                Order::Seeded(sampler)
            }
        };
        task.start(resumed)?;
        Ok(Self {
            task,
            params,
            cfg,
            opt,
            schedule,
            order,
            rng,
            draw_seed: rng_seed,
            world,
            reduce,
            label: setup.label,
            step,
        })
    }

    pub fn task(&self) -> &'a dyn TrainTask {
        self.task
    }

    /// The task's inference pass (see [`TrainTask::infer`]) on the current weights.
    pub fn infer(&self, indices: &[usize]) -> Result<Option<Tensor>> {
        self.task.infer(self.params, indices)
    }

    /// Examples consumed by one optimizer step (`batch_size × grad_accum`).
    pub fn samples_per_step(&self) -> usize {
        self.cfg.batch_size * self.cfg.grad_accum
    }

    /// One optimizer step: for each micro-batch, batch → forward → loss → backward →
    /// accumulate; then (data parallel) the sum of every rank's gradients; then clip →
    /// AdamW. A non-finite loss is an error naming the step.
    ///
    /// Each rank takes its [`Shard`] of every global micro-batch, its rows drawing from
    /// the streams of their sample index in the global batch. A rank's loss is weighted by
    /// its share of the batch's loss units before the backward pass, so the summed
    /// gradients are those of the whole batch's loss, as one process computes them.
    pub fn step(&mut self) -> Result<StepStats> {
        let cfg = self.cfg;
        let lr = self.schedule.lr(self.step);
        let shard = Shard::of(&*self.world);
        let mut grads: Vec<Option<Tensor>> = vec![None; self.opt.vars().count()];
        let mut loss_sum = 0f64;
        for micro in 0..cfg.grad_accum {
            let global = self.order.next_batch(cfg.batch_size, &mut self.rng);
            let rows = shard.rows(global.len());
            let draws = Draws::new(
                self.draw_seed,
                self.step as u64,
                (micro * cfg.batch_size + rows.start) as u64,
                rows.len(),
            );
            let loss = autocast(cfg.precision, || {
                self.task.loss(&global[rows.clone()], &draws)
            })?;
            let value = loss.value.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    step: self.step + 1,
                    loss: value,
                });
            }
            // This micro-batch's loss units over every rank, and its loss as their mean.
            let mut sums = [loss.weight, value as f64 * loss.weight];
            self.world.all_reduce_sum(&mut sums)?;
            loss_sum += sums[1] / sums[0].max(f64::MIN_POSITIVE);
            let scale = loss.weight / sums[0].max(f64::MIN_POSITIVE) / cfg.grad_accum as f64;
            let scaled = if scale != 1.0 {
                (loss.value * scale)?
            } else {
                loss.value
            };
            let g = scaled.backward()?;
            optim::accumulate(
                &mut grads,
                optim::collect_grads(&g, self.opt.vars().map(|(_, v)| v)),
            )?;
        }
        if self.reduce {
            grads = self.sum_over_ranks(grads)?;
        }
        let grad_norm = match cfg.clip_grad_norm {
            Some(max) => optim::clip_grad_norm(&mut grads, max)?,
            None => optim::global_norm(&grads)?,
        };
        self.opt.step(&grads, lr)?;
        self.step += 1;
        self.task.after_step(self.step)?;
        Ok(StepStats {
            loss: (loss_sum / cfg.grad_accum as f64) as f32,
            lr,
            grad_norm,
        })
    }

    /// Every rank's gradients summed, in one all-reduce; a parameter without a gradient
    /// on this rank takes part as zeros, so every rank reduces the same buffers.
    fn sum_over_ranks(&self, grads: Vec<Option<Tensor>>) -> Result<Vec<Option<Tensor>>> {
        let all: Vec<Tensor> = grads
            .into_iter()
            .zip(self.opt.vars())
            .map(|(g, (_, v))| match g {
                Some(g) => Ok(g),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(self
            .world
            .all_reduce_tensors(&all)?
            .into_iter()
            .map(Some)
            .collect())
    }

    /// Writes a full-state checkpoint into `dir`, keeping the configured number.
    fn checkpoint(&self, dir: &Path) -> Result<std::path::PathBuf> {
        let (data, order) = self.order.state();
        let state = TrainingState {
            step: self.step,
            data,
            rng: self.rng.clone(),
            order,
            schedule_steps: Some(self.schedule.total_steps),
        };
        let model: Vec<(String, Tensor)> = self
            .params
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        checkpoint::save(
            dir,
            &state,
            &model,
            &self.opt.state(),
            self.cfg.keep_checkpoints,
        )
    }
}

/// Trains the parameters in `params` on `task` as `setup` says, resuming from `resume` if
/// given. With a `run_dir`, writes `metrics.jsonl` and `checkpoints/` there and shows
/// progress; without one (the linear probe, refit in seconds) it trains silently.
/// `stop_after` ends the run after that step, as an interruption would (used by tests of
/// resumption); a `driver` takes the trainer instead of the loop (the step benchmark).
#[allow(clippy::too_many_arguments)]
pub fn train(
    task: &dyn TrainTask,
    params: &ParamStore,
    cfg: &TrainSection,
    setup: Setup,
    run_dir: Option<&Path>,
    resume: Option<Checkpoint>,
    stop_after: Option<usize>,
    driver: Option<&Driver>,
) -> Result<TrainOutcome> {
    let mut trainer = Trainer::new(task, params, cfg, setup, resume)?;
    let start = Instant::now();
    let start_step = trainer.step;
    let per_step = trainer.samples_per_step();
    let outcome = |trainer: &Trainer, last_loss: f32| {
        let seconds = start.elapsed().as_secs_f64();
        TrainOutcome {
            step: trainer.step,
            last_loss,
            samples_per_s: ((trainer.step - start_step) * per_step) as f64 / seconds.max(1e-9),
            seconds,
        }
    };
    if let Some(driver) = driver {
        (driver.0)(&mut trainer)?;
        return Ok(outcome(&trainer, f32::NAN));
    }
    let mut metrics = match run_dir {
        Some(dir) => Some(MetricsLog::open(
            &dir.join("metrics.jsonl"),
            Some(trainer.step),
        )?),
        None => None,
    };
    let bar = match run_dir {
        Some(_) => progress_bar(cfg.steps, trainer.step, &trainer.label),
        None => ProgressBar::hidden(),
    };
    let mut window = (Instant::now(), 0usize);
    let mut last_loss = f32::NAN;

    while trainer.step < cfg.steps {
        let stats = match trainer.step() {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        let step = trainer.step;
        last_loss = stats.loss;
        window.1 += per_step;
        let last = step == cfg.steps;

        if let Some(metrics) = metrics
            .as_mut()
            .filter(|_| step % cfg.log_every == 0 || last)
        {
            let secs = window.0.elapsed().as_secs_f64().max(1e-9);
            let record = Record {
                step,
                loss: last_loss,
                lr: stats.lr,
                grad_norm: stats.grad_norm,
                samples_per_s: window.1 as f64 / secs,
                epoch: trainer.order.epoch(),
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            metrics.log(&record)?;
            let msg = format!(
                "loss {:.4}  lr {:.2e}  {:.0} samples/s",
                record.loss, stats.lr, record.samples_per_s
            );
            if bar.is_hidden() {
                eprintln!("{}step {step}/{}  {msg}", trainer.label, cfg.steps);
            }
            bar.set_message(msg);
            window = (Instant::now(), 0);
        }
        bar.set_position(step as u64);

        if let Some(dir) = run_dir.filter(|_| step % cfg.checkpoint_every == 0 || last) {
            // What a checkpoint comes with (pictures, held-out evaluation) first: a run
            // killed in between resumes from the checkpoint before, and draws them again.
            bar.suspend(|| task.on_checkpoint(step, dir))?;
            super::metrics::draw(dir)?;
            trainer.checkpoint(&dir.join("checkpoints"))?;
        }
        if stop_after == Some(step) {
            break;
        }
    }
    bar.finish();
    Ok(outcome(&trainer, last_loss))
}

fn progress_bar(total: usize, at: usize, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix}{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar.set_position(at as u64);
    bar
}
