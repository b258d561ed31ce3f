//! The pipeline: a recipe run from start to finish — prepare, pretrain, downstream heads,
//! report, summary — written once for every modality, in a run directory that can be
//! resumed at any time with `pretext run RUN_DIR`.
//!
//! A modality's side is a [`Pipeline`] (its data loaded and checked, its model built); the
//! one match in [`prepare`] is where a modality is registered. Image, text, spectrogram
//! audio and waveform audio implement it in `src/modality/{image,text,audio}/run/` (waveform
//! models in `audio/run/waveform/`).

pub mod classify;
pub mod compare;
pub mod dir;
pub mod downstream;
pub mod kept;
pub mod report;
pub mod settings;
pub mod source;

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use serde::Serialize;

use crate::dist::{self, Shard};
use crate::error::{Error, Result};
use crate::modality::{audio, image, text};
use crate::objective::mlm::MlmEval;
use crate::params::ParamStore;
use crate::recipe::{self, Loaded, Modality, Override, Recipe};
use crate::train::{self, checkpoint, TrainTask};
use downstream::{DownstreamResult, DownstreamTask};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Parent of new run directories (default `runs`).
    pub runs_root: Option<PathBuf>,
    /// Exact run directory for a new run (must not exist yet).
    pub out: Option<PathBuf>,
    /// Stop after this step as if interrupted (for tests of resumption).
    pub stop_after: Option<usize>,
    /// Skip the downstream stage.
    pub skip_downstream: bool,
    /// Drives the trainer instead of the training loop (`benches/step.rs`).
    pub driver: Option<train::Driver>,
    /// Recipe keys a resumed run may have changed since its checkpoints were written
    /// (`--allow-changed`; a section allows every key in it).
    pub allow_changed: Vec<String>,
    /// Start pretraining over from step 0 when no checkpoint is left, rewriting the log
    /// (`--restart`).
    pub restart: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub run_dir: PathBuf,
    pub steps: usize,
    pub final_loss: f32,
    /// Throughput and time of the last invocation (a resumed run counts only its part).
    pub samples_per_s: f64,
    pub pretrain_seconds: f64,
    /// Of `pretrain_seconds`, the time training steps waited for data.
    pub data_wait_seconds: f64,
    pub encoder_parameters: usize,
    pub total_parameters: usize,
    /// Text: masked-token loss, perplexity and accuracy on the held-out split after
    /// pretraining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out_mlm: Option<MlmEval>,
    pub downstream: Vec<DownstreamResult>,
    /// Test accuracy by method and label fraction (also written as `report.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_efficiency: Option<report::Report>,
}

/// What every pipeline builds: the device it runs on and the parameters it trains.
pub struct Model {
    pub device: Device,
    /// Every parameter the run trains and checkpoints.
    pub params: ParamStore,
    /// Prefix of the encoder's parameters in `params` (`vit.`, `text.`, `audio.`).
    pub encoder_prefix: &'static str,
}

/// A modality's side of a run, prepared from a recipe: its data loaded and checked, its
/// model built (fresh, or from `model.source`).
pub trait Pipeline {
    /// The device, the parameters and where the encoder's are among them.
    fn model(&self) -> &Model;
    /// Writes what the run directory needs besides the recipe (a tokenizer, the model's
    /// config), before training; `fresh` on a new run, not on a resumed one.
    fn write_run_files(&self, _run_dir: &Path, _fresh: bool) -> Result<()> {
        Ok(())
    }
    /// The pretraining stage, `None` when the recipe pretrains nothing. `log_dir` is where
    /// the stage logs (the run directory; `None` on data-parallel ranks other than 0, which
    /// write nothing); `resume_step` is the step of the checkpoint the run resumes from.
    fn pretrain<'a>(
        &'a self,
        r: &'a Recipe,
        log_dir: Option<&Path>,
        resume_step: Option<usize>,
    ) -> Result<Option<Box<dyn PretrainStage + 'a>>>;
    /// The downstream stage on the labelled splits (the recipe has heads).
    fn downstream<'a>(&'a self, r: &'a Recipe, file: &Path)
        -> Result<Box<dyn DownstreamTask + 'a>>;
    /// A dry run: one batch through the objective, and what each head would read.
    fn dry_run(&self, r: &Recipe) -> Result<String>;
}

/// What the training loop trains, with the pipeline's hooks around it.
pub trait PretrainStage: TrainTask {
    /// Before the first step (`resumed`: from a checkpoint).
    fn before_training(&self, _resumed: bool) -> Result<()> {
        Ok(())
    }
    /// Time the training steps waited for data so far.
    fn data_wait(&self) -> Duration {
        Duration::ZERO
    }
    /// Held-out evaluation after the last step (text: masked-token accuracy, perplexity).
    fn held_out(&self) -> Result<Option<MlmEval>> {
        Ok(None)
    }
}

/// Loads and checks a recipe's data and builds its model: the one place a modality is
/// registered. `run_dir` is the run being resumed, whose saved tokenizer or normalisation
/// wins over the recipe's.
fn prepare(r: &Recipe, file: &Path, run_dir: Option<&Path>) -> Result<Box<dyn Pipeline>> {
    recipe::check_paths(r, file)?;
    let mut spec = crate::device::parse(&r.device).map_err(Error::Usage)?;
    // Data parallel on GPUs: one device per rank, the rank's place on its machine.
    if let Some(local) = dist::local_rank().filter(|_| dist::world().size() > 1) {
        if matches!(r.device.as_str(), "auto" | "cuda") && candle_core::utils::cuda_is_available() {
            spec = crate::device::DeviceSpec::Cuda(local);
        }
    }
    let device = crate::device::open(spec)?;
    Ok(match r.data.modality {
        Modality::Image => Box::new(image::run::prepare(r, file, device)?),
        Modality::Text => Box::new(text::run::prepare(r, file, run_dir, device)?),
        Modality::Audio => audio::run::prepare(r, file, run_dir, device)?,
    })
}

/// Validates a recipe through one forward pass of one batch, without training; returns a
/// report of the shapes involved.
pub fn dry_run(loaded: &Loaded) -> Result<String> {
    let mut report = prepare(&loaded.recipe, &loaded.file, None)?.dry_run(&loaded.recipe)?;
    if let Some(e) = recipe::memory::estimate(&loaded.recipe) {
        report.push_str(&format!("\nmemory: {e}\n"));
    }
    Ok(report)
}

/// Starts a new run of a loaded recipe. Data parallel, rank 0 prepares and creates the
/// run directory; the other ranks then prepare from it (its tokenizer, its normalisation),
/// so every rank trains on exactly what rank 0 prepared.
pub fn start(loaded: &Loaded, opts: &RunOptions) -> Result<Summary> {
    let world = dist::world();
    check_world(&*world, &loaded.recipe, &loaded.file)?;
    if world.rank() == 0 {
        // Data and model first: a recipe that cannot run leaves no run directory behind.
        let p = prepare(&loaded.recipe, &loaded.file, None)?;
        // Locked while it is still being staged, so it is never in place unheld.
        let lock = std::cell::OnceCell::new();
        let run_dir = new_run_dir(loaded, opts, |dir| {
            if lock.get().is_none() {
                let _ = lock.set(dir::lock(dir)?);
            }
            p.write_run_files(dir, true)
        })?;
        if world.size() > 1 {
            world.broadcast(0, run_dir.clone().into_os_string().into_encoded_bytes())?;
        }
        return execute(&*p, &loaded.recipe, &run_dir, &loaded.file, opts);
    }
    let run_dir = PathBuf::from(std::ffi::OsString::from_vec(
        world.broadcast(0, Vec::new())?,
    ));
    let p = prepare(&loaded.recipe, &loaded.file, Some(&run_dir))?;
    execute(&*p, &loaded.recipe, &run_dir, &loaded.file, opts)
}

/// Resumes (or finishes) the run in `run_dir` from its latest checkpoint. Overrides (for
/// example a larger `train.steps`) are applied to its recipe and saved. A run another
/// `pretext run` is running is refused before anything is written ([`dir::lock`]).
/// Data parallel, rank 0 checks and updates the run directory first; the other ranks
/// read it once it has.
pub fn resume(run_dir: &Path, overrides: &[Override], opts: &RunOptions) -> Result<Summary> {
    let world = dist::world();
    let file = run_dir.join(dir::RECIPE_FILE);
    if world.rank() == 0 {
        let loaded = recipe::load(&file, overrides)?;
        check_world(&*world, &loaded.recipe, &file)?;
        // Held until the run returns: a second `pretext run` of it is refused.
        let _lock = dir::lock(run_dir)?;
        // Before anything is written: a refused resume leaves the run as it was.
        settings::verify(run_dir, &loaded.recipe, &opts.allow_changed)?;
        dir::remove_stale_temps(run_dir)?;
        if checkpoint::list(&run_dir.join("checkpoints"))?.is_empty() {
            settings::check_fresh_start(run_dir, opts.restart)?;
        }
        if !overrides.is_empty() {
            dir::write_recipe(run_dir, &loaded.recipe, &file)?;
        }
        let p = prepare(&loaded.recipe, &file, Some(run_dir))?;
        p.write_run_files(run_dir, false)?;
        world.barrier()?;
        return execute(&*p, &loaded.recipe, run_dir, &file, opts);
    }
    world.barrier()?;
    let loaded = recipe::load(&file, overrides)?;
    let p = prepare(&loaded.recipe, &file, Some(run_dir))?;
    execute(&*p, &loaded.recipe, run_dir, &file, opts)
}

/// Data parallel, each rank needs at least one example of every batch: checked before
/// anything is written.
fn check_world(world: &dyn dist::Collective, r: &Recipe, file: &Path) -> Result<()> {
    match Shard::too_small(r.train.batch_size, world.size()) {
        Some(why) if r.train.steps > 0 => Err(invalid(file, "train.batch_size", why)),
        _ => Ok(()),
    }
}

/// Creates the run directory of a new run, complete with its resolved recipe, or nothing.
fn new_run_dir(
    loaded: &Loaded,
    opts: &RunOptions,
    fill: impl Fn(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = opts.runs_root.as_deref().unwrap_or(Path::new("runs"));
    let target = match &opts.out {
        Some(out) => dir::Target::Exactly(out),
        None => dir::Target::Numbered(root, &loaded.recipe.name),
    };
    let run_dir = dir::create(target, &loaded.recipe, &loaded.file, fill)?;
    eprintln!("run directory: {}", run_dir.display());
    Ok(run_dir)
}

/// The run's latest checkpoint, loaded, if it has one.
/// What pretraining did in this invocation.
struct Pretrained {
    step: usize,
    last_loss: f32,
    samples_per_s: f64,
    data_wait: Duration,
    held_out: Option<MlmEval>,
}

/// Pretraining (resumed from the latest checkpoint), when the recipe has steps to take.
fn pretrain(p: &dyn Pipeline, r: &Recipe, run_dir: &Path, opts: &RunOptions) -> Result<Pretrained> {
    let none = Pretrained {
        step: 0,
        last_loss: f32::NAN,
        samples_per_s: 0.0,
        data_wait: Duration::ZERO,
        held_out: None,
    };
    if r.train.steps == 0 {
        return Ok(none);
    }
    let world = dist::world();
    let writer = world.rank() == 0;
    let ckpt = resume_checkpoint(&*world, run_dir, &p.model().device)?;
    if writer {
        if ckpt.is_none() {
            settings::check_fresh_start(run_dir, opts.restart)?;
        }
        settings::record(run_dir, r)?;
    }
    let resume_step = ckpt.as_ref().map(|c| c.state.step);
    let log_dir = writer.then_some(run_dir);
    let Some(stage) = p.pretrain(r, log_dir, resume_step)? else {
        return Ok(none);
    };
    if writer {
        stage.before_training(resume_step.is_some())?;
    }
    let mut setup = train::Setup::pretraining(r.seed);
    if dist::launched_size().is_some() {
        eprintln!(
            "data parallel: rank {} of {} ({}), {} of each batch of {}",
            world.rank(),
            world.size(),
            world.engine(),
            Shard::of(&*world).rows(r.train.batch_size).len(),
            r.train.batch_size
        );
        setup.world = Some(world.clone());
    }
    let outcome = train::train(
        &*stage,
        &p.model().params,
        &r.train,
        setup,
        log_dir,
        ckpt,
        opts.stop_after,
        opts.driver.as_ref(),
    )?;
    let held_out = if writer && outcome.step == r.train.steps {
        stage.held_out()?
    } else {
        None
    };
    Ok(Pretrained {
        step: outcome.step,
        last_loss: outcome.last_loss,
        samples_per_s: outcome.samples_per_s,
        data_wait: stage.data_wait(),
        held_out,
    })
}

/// The checkpoint pretraining resumes from. Rank 0 picks it (setting aside one that does
/// not load) and tells the other ranks which, so every rank starts from the same one.
fn resume_checkpoint(
    world: &dyn dist::Collective,
    run_dir: &Path,
    device: &Device,
) -> Result<Option<checkpoint::Checkpoint>> {
    let dir = run_dir.join("checkpoints");
    if world.size() == 1 {
        return checkpoint::resume_from(&dir, device);
    }
    if world.rank() == 0 {
        let ckpt = checkpoint::resume_from(&dir, device)?;
        let path = ckpt.as_ref().map(|c| c.path.clone().into_os_string());
        world.broadcast(0, path.unwrap_or_default().into_encoded_bytes())?;
        return Ok(ckpt);
    }
    let path = world.broadcast(0, Vec::new())?;
    if path.is_empty() {
        return Ok(None);
    }
    checkpoint::load(&PathBuf::from(std::ffi::OsString::from_vec(path)), device).map(Some)
}

/// Pretraining, then (once it is complete) the downstream heads, the report and
/// `summary.json`. Data parallel, ranks other than 0 stop after pretraining: they write
/// nothing, and the heads run on rank 0.
fn execute(
    p: &dyn Pipeline,
    r: &Recipe,
    run_dir: &Path,
    file: &Path,
    opts: &RunOptions,
) -> Result<Summary> {
    let started = Instant::now();
    let done = pretrain(p, r, run_dir, opts)?;
    let pretrain_seconds = started.elapsed().as_secs_f64();

    let writer = dist::is_writer();
    let mut results = Vec::new();
    if writer && done.step == r.train.steps && !opts.skip_downstream && !r.downstream.is_empty() {
        let task = p.downstream(r, file)?;
        results = downstream::Downstream {
            run_dir,
            task: &*task,
            pretrain_steps: done.step,
            data: serde_json::to_value(&r.data).map_err(|e| Error::InvalidValue {
                file: file.to_path_buf(),
                key: "data".into(),
                message: format!("cannot serialise the section: {e}"),
            })?,
            seed: r.seed,
            device: &p.model().device,
        }
        .run(&r.downstream)?;
    }
    let label_efficiency = match writer {
        true => report::write(run_dir, &results)?,
        false => None,
    };
    let summary = Summary {
        name: r.name.clone(),
        run_dir: run_dir.to_path_buf(),
        steps: done.step,
        final_loss: done.last_loss,
        samples_per_s: done.samples_per_s,
        pretrain_seconds,
        data_wait_seconds: done.data_wait.as_secs_f64(),
        encoder_parameters: p
            .model()
            .params
            .num_params_with_prefix(p.model().encoder_prefix),
        total_parameters: p.model().params.num_params(),
        held_out_mlm: done.held_out,
        downstream: results,
        label_efficiency,
    };
    if writer {
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::data(run_dir, e.to_string()))?;
        crate::tensor_io::write_atomic(&run_dir.join(dir::SUMMARY_FILE), json.as_bytes())?;
    }
    Ok(summary)
}

/// The error for a missing or wrong recipe value.
pub(crate) fn invalid(file: &Path, key: &str, message: impl Into<String>) -> Error {
    Error::InvalidValue {
        file: file.to_path_buf(),
        key: key.into(),
        message: message.into(),
    }
}
