//! The training loop, read top to bottom: batch → forward → loss → backward → (accumulate)
//! → clip → step → log → checkpoint. It is the same for every objective; a
//! [`TrainTask`] supplies the loss of a micro-batch.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::checkpoint::{self, Checkpoint, TrainingState};
use super::metrics::MetricsLog;
use super::optim::{self, AdamW};
use super::sampler::{Position, Sampler};
use super::schedule::Schedule;
use crate::error::{Error, Result};
use crate::params::ParamStore;
use crate::recipe::TrainSection;

/// What the loop trains.
pub trait TrainTask {
    /// Number of training examples the sampler draws from.
    fn num_examples(&self) -> usize;
    /// Runs once before the first step with a copy of the loop's sampler (at its resumed
    /// position) and the micro-batch size: the `loss` calls that follow ask, in order, for
    /// the batches this sampler gives, so a task can prepare them ahead of time.
    fn begin(&self, _sampler: &Sampler, _batch_size: usize) -> Result<()> {
        Ok(())
    }
    /// Scalar loss on the examples `indices`; `rng` drives masking and dropout.
    fn loss(&self, indices: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor>;
    /// Runs after each checkpoint is written (e.g. reconstruction pictures).
    fn on_checkpoint(&self, _step: usize, _run_dir: &Path) -> Result<()> {
        Ok(())
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

/// Trains the parameters in `params` on `task`, resuming from `resume` if given. Writes
/// `metrics.jsonl` and `checkpoints/` into `run_dir`. `stop_after` ends the run after that
/// step, as an interruption would (used by tests of resumption).
pub fn train(
    task: &dyn TrainTask,
    params: &ParamStore,
    cfg: &TrainSection,
    seed: u64,
    run_dir: &Path,
    resume: Option<Checkpoint>,
    stop_after: Option<usize>,
) -> Result<TrainOutcome> {
    let mut opt = AdamW::new(params.vars(), &cfg.optimizer)?;
    let schedule = Schedule::new(&cfg.schedule, cfg.optimizer.lr, cfg.steps);
    let (mut step, mut rng, position) = match resume {
        Some(ckpt) => {
            params.load_tensors(&ckpt.model, &ckpt.path)?;
            opt.load_state(&ckpt.optim, ckpt.state.step, &ckpt.path)?;
            (ckpt.state.step, ckpt.state.rng, ckpt.state.data)
        }
        None => (
            0,
            ChaCha8Rng::seed_from_u64(seed ^ 0x6d61_736b),
            Position::default(),
        ),
    };
    let mut sampler = Sampler::new(task.num_examples(), seed, position);
    task.begin(&sampler, cfg.batch_size)?;
    let mut metrics = MetricsLog::open(&run_dir.join("metrics.jsonl"), Some(step))?;
    let ckpt_dir = run_dir.join("checkpoints");

    let bar = progress_bar(cfg.steps, step);
    let start = Instant::now();
    let start_step = step;
    let mut window = (Instant::now(), 0usize);
    let mut last_loss = f32::NAN;
    let per_step = cfg.batch_size * cfg.grad_accum;

    while step < cfg.steps {
        let lr = schedule.lr(step);
        let mut grads: Vec<Option<Tensor>> = vec![None; opt.vars().count()];
        let mut loss_sum = 0f32;
        for _ in 0..cfg.grad_accum {
            let indices = sampler.next_batch(cfg.batch_size);
            let loss = task.loss(&indices, &mut rng)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                bar.abandon();
                return Err(Error::NonFinite {
                    step: step + 1,
                    loss: value,
                });
            }
            loss_sum += value;
            let g = (loss / cfg.grad_accum as f64)?.backward()?;
            optim::accumulate(
                &mut grads,
                optim::collect_grads(&g, opt.vars().map(|(_, v)| v)),
            )?;
        }
        let grad_norm = match cfg.clip_grad_norm {
            Some(max) => optim::clip_grad_norm(&mut grads, max)?,
            None => optim::global_norm(&grads)?,
        };
        opt.step(&grads, lr)?;
        step += 1;
        last_loss = loss_sum / cfg.grad_accum as f32;
        window.1 += per_step;

        if step % cfg.log_every == 0 || step == cfg.steps {
            let secs = window.0.elapsed().as_secs_f64().max(1e-9);
            let record = Record {
                step,
                loss: last_loss,
                lr,
                grad_norm,
                samples_per_s: window.1 as f64 / secs,
                epoch: sampler.position().epoch,
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            metrics.log(&record)?;
            let msg = format!(
                "loss {:.4}  lr {:.2e}  {:.0} samples/s",
                record.loss, lr, record.samples_per_s
            );
            if bar.is_hidden() {
                eprintln!("step {step}/{}  {msg}", cfg.steps);
            }
            bar.set_message(msg);
            window = (Instant::now(), 0);
        }
        bar.set_position(step as u64);

        if step % cfg.checkpoint_every == 0 || step == cfg.steps {
            let state = TrainingState {
                step,
                data: sampler.position(),
                rng: rng.clone(),
            };
            let model: Vec<(String, Tensor)> = params
                .vars()
                .into_iter()
                .map(|(n, v)| (n, v.as_tensor().clone()))
                .collect();
            checkpoint::save(
                &ckpt_dir,
                &state,
                &model,
                &opt.state(),
                cfg.keep_checkpoints,
            )?;
            bar.suspend(|| task.on_checkpoint(step, run_dir))?;
        }
        if stop_after == Some(step) {
            break;
        }
    }
    bar.finish();
    let seconds = start.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        step,
        last_loss,
        samples_per_s: ((step - start_step) * per_step) as f64 / seconds.max(1e-9),
        seconds,
    })
}

fn progress_bar(total: usize, at: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
        )
        .expect("valid template"),
    );
    bar.set_position(at as u64);
    bar
}
