//! Running a recipe: pretraining, then the downstream heads, in a run directory that can
//! be resumed at any time with `pretext run RUN_DIR`.

pub mod audio;
pub mod audio_task;
pub mod dir;
pub mod downstream;
pub mod image_task;
pub mod pretrain;
pub mod report;
pub mod text;
pub mod text_task;
pub mod waveform_task;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::modality::image::dataset::ImageDataset;
use crate::params::ParamStore;
use crate::recipe::{
    self, DataFormat, DataSource, ImageSection, Loaded, Modality, Override, Recipe,
};
use crate::train::{self, checkpoint};
use downstream::DownstreamResult;
use pretrain::{Objective, PretrainTask};

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
    pub held_out_mlm: Option<crate::objective::mlm::MlmEval>,
    pub downstream: Vec<DownstreamResult>,
    /// Test accuracy by method and label fraction (also written as `report.md`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_efficiency: Option<report::Report>,
}

/// Everything a recipe needs, built and checked.
struct Prepared {
    device: Device,
    image: ImageSection,
    train: ImageDataset,
    test: Option<ImageDataset>,
    params: ParamStore,
    objective: Objective,
}

fn load_images(
    src: &DataSource,
    key: &str,
    image: &ImageSection,
    file: &Path,
) -> Result<ImageDataset> {
    let missing = |k: &str| Error::InvalidValue {
        file: file.to_path_buf(),
        key: format!("{key}.{k}"),
        message: "missing".into(),
    };
    let (mut data, origin) = match src.format {
        DataFormat::Idx => {
            let images = src.images.as_deref().ok_or_else(|| missing("images"))?;
            let data = ImageDataset::from_idx(images, src.labels.as_deref())?;
            (data, images)
        }
        DataFormat::Folder => {
            let root = src.root.as_deref().ok_or_else(|| missing("root"))?;
            let data = ImageDataset::from_folder(root, image.channels, image.size)?;
            (data, root)
        }
        DataFormat::Text | DataFormat::Jsonl | DataFormat::Manifest => {
            return Err(Error::InvalidValue {
                file: file.to_path_buf(),
                key: format!("{key}.format"),
                message: "image recipes read format = \"idx\" or \"folder\"".into(),
            })
        }
    };
    if data.size != image.size || data.channels != image.channels {
        return Err(Error::InvalidValue {
            file: file.to_path_buf(),
            key: "data.image".into(),
            message: format!(
                "{} ({key}) holds {}-channel {}x{} images but the recipe says channels = {}, size = {}",
                origin.display(),
                data.channels,
                data.size,
                data.size,
                image.channels,
                image.size
            ),
        });
    }
    if let Some(limit) = src.limit {
        let keep: Vec<usize> = (0..data.len.min(limit)).collect();
        data = data.subset(&keep);
    }
    if data.len == 0 {
        return Err(Error::data(origin, format!("{key} has no examples")));
    }
    Ok(data)
}

fn prepare(r: &Recipe, file: &Path) -> Result<Prepared> {
    recipe::check_paths(r, file)?;
    let image = r.data.image.clone().ok_or_else(|| Error::InvalidValue {
        file: file.to_path_buf(),
        key: "data.image".into(),
        message: "missing".into(),
    })?;
    let train = load_images(&r.data.train, "data.train", &image, file)?;
    let test = r
        .data
        .test
        .as_ref()
        .map(|t| load_images(t, "data.test", &image, file))
        .transpose()?;
    let device = crate::device::open(crate::device::parse(&r.device).map_err(Error::Usage)?)?;
    let params = ParamStore::new(r.seed);
    let objective = Objective::new(r, &image, params.var_builder(&device))?;
    Ok(Prepared {
        device,
        image,
        train,
        test,
        params,
        objective,
    })
}

/// Validates a recipe through one forward pass of one batch, without training; returns a
/// report of the shapes involved.
pub fn dry_run(loaded: &Loaded) -> Result<String> {
    match loaded.recipe.data.modality {
        Modality::Text => return text::dry_run(loaded),
        Modality::Audio => return audio::dry_run(loaded),
        Modality::Image => {}
    }
    let r = &loaded.recipe;
    let p = prepare(r, &loaded.file)?;
    let b = r.train.batch_size.min(p.train.len);
    let idx: Vec<usize> = (0..b).collect();
    // The first batch as training makes it (augmented, decoded on the loader's path).
    let task = PretrainTask::new(
        r,
        &p.objective,
        &p.train,
        &p.train,
        &p.image,
        p.device.clone(),
    );
    let values = task.batch_maker().make(&idx, &vec![0; b])?;
    let imgs = p.train.to_tensor(values, b, &p.device)?;
    let mut rng = ChaCha8Rng::seed_from_u64(r.seed);
    let out = p.objective.forward(&imgs, &task.masks, &mut rng, false)?;
    let loss = out.loss.to_scalar::<f32>()?;
    if !loss.is_finite() {
        return Err(Error::NonFinite { step: 0, loss });
    }
    let encoder_params = p.params.num_params_with_prefix("vit.");
    let mut report = format!(
        "recipe `{}` is valid\n  train: {} images{}\n  model: {:?}, {} parameters ({} in the encoder)\n  batch: images {:?} -> {} of {} patches removed ({:?}) -> prediction {:?}\n  initial loss: {loss:.4}\n",
        r.name,
        p.train.len,
        p.test.as_ref().map_or(String::new(), |t| format!(", test: {} images", t.len)),
        r.objective.kind,
        p.params.num_params(),
        encoder_params,
        imgs.dims(),
        task.masks.num_masked,
        p.image.size / p.image.patch * (p.image.size / p.image.patch),
        r.objective.masking,
        out.pixels.dims(),
    );
    for (i, d) in r.downstream.iter().enumerate() {
        let sample = p.train.subset(&idx[..b.min(4)]);
        let f = match d.input {
            recipe::DownstreamInput::Pixels => {
                image_task::pixel_features(&sample, &p.image, &p.device)?
            }
            _ => image_task::features(p.objective.vit(), &sample, &p.image, d.pooling, &p.device)?,
        };
        let on = match d.input {
            recipe::DownstreamInput::Pixels => "pixels".to_string(),
            _ => format!("{:?}-pooled features", d.pooling),
        };
        report.push_str(&format!(
            "  downstream[{i}]: {} on {on} {:?}, label fractions {:?}\n",
            d.label(),
            f.dims(),
            d.label_fractions
        ));
    }
    Ok(report)
}

/// Starts a new run of a loaded recipe.
pub fn start(loaded: &Loaded, opts: &RunOptions) -> Result<Summary> {
    match loaded.recipe.data.modality {
        Modality::Text => return text::start(loaded, opts),
        Modality::Audio => return audio::start(loaded, opts),
        Modality::Image => {}
    }
    // Data and model first: a recipe that cannot run leaves no run directory behind.
    let prepared = prepare(&loaded.recipe, &loaded.file)?;
    let run_dir = new_run_dir(loaded, opts)?;
    execute(prepared, &loaded.recipe, &run_dir, &loaded.file, opts)
}

/// Creates the run directory of a new run and writes the resolved recipe into it.
fn new_run_dir(loaded: &Loaded, opts: &RunOptions) -> Result<PathBuf> {
    let run_dir = match &opts.out {
        Some(out) => {
            std::fs::create_dir(out).map_err(|e| Error::io(out, e))?;
            out.clone()
        }
        None => dir::create(
            opts.runs_root.as_deref().unwrap_or(Path::new("runs")),
            &loaded.recipe.name,
        )?,
    };
    dir::write_recipe(&run_dir, &loaded.recipe, &loaded.file)?;
    eprintln!("run directory: {}", run_dir.display());
    Ok(run_dir)
}

/// The run's latest checkpoint, loaded, if it has one.
fn latest_checkpoint(run_dir: &Path, device: &Device) -> Result<Option<checkpoint::Checkpoint>> {
    match checkpoint::latest(&run_dir.join("checkpoints"))? {
        Some(path) => {
            let c = checkpoint::load(&path, device)?;
            eprintln!("resuming from {} (step {})", path.display(), c.state.step);
            Ok(Some(c))
        }
        None => Ok(None),
    }
}

fn write_summary(run_dir: &Path, summary: &Summary) -> Result<()> {
    let json =
        serde_json::to_string_pretty(summary).map_err(|e| Error::data(run_dir, e.to_string()))?;
    crate::tensor_io::write_atomic(&run_dir.join(dir::SUMMARY_FILE), json.as_bytes())
}

/// Resumes (or finishes) the run in `run_dir` from its latest checkpoint. Overrides (for
/// example a larger `train.steps`) are applied to its recipe and saved.
pub fn resume(run_dir: &Path, overrides: &[Override], opts: &RunOptions) -> Result<Summary> {
    let file = run_dir.join(dir::RECIPE_FILE);
    let loaded = recipe::load(&file, overrides)?;
    if !overrides.is_empty() {
        dir::write_recipe(run_dir, &loaded.recipe, &file)?;
    }
    match loaded.recipe.data.modality {
        Modality::Text => return text::resume(&loaded, run_dir, opts),
        Modality::Audio => return audio::resume(&loaded, run_dir, opts),
        Modality::Image => {}
    }
    execute(
        prepare(&loaded.recipe, &file)?,
        &loaded.recipe,
        run_dir,
        &file,
        opts,
    )
}

fn execute(
    p: Prepared,
    r: &Recipe,
    run_dir: &Path,
    file: &Path,
    opts: &RunOptions,
) -> Result<Summary> {
    let ckpt = latest_checkpoint(run_dir, &p.device)?;
    let preview = p.test.as_ref().unwrap_or(&p.train);
    let task = PretrainTask::new(
        r,
        &p.objective,
        &p.train,
        preview,
        &p.image,
        p.device.clone(),
    );
    let started = Instant::now();
    let outcome = train::train(
        &task,
        &p.params,
        &r.train,
        r.seed,
        run_dir,
        ckpt,
        opts.stop_after,
        opts.driver.as_ref(),
    )?;
    let pretrain_seconds = started.elapsed().as_secs_f64();
    let data_wait_seconds = task.data_wait().as_secs_f64();
    drop(task);

    let mut results = Vec::new();
    if outcome.step == r.train.steps && !opts.skip_downstream && !r.downstream.is_empty() {
        let test = p.test.as_ref().ok_or_else(|| Error::InvalidValue {
            file: file.to_path_buf(),
            key: "data.test".into(),
            message: "downstream evaluation needs a test split".into(),
        })?;
        let task = image_task::ImageTask::new(
            &p.train,
            test,
            &p.image,
            p.objective.geometry(),
            p.objective.encoder_config().clone(),
            &p.params,
            r.seed,
            &p.device,
        )?;
        results = downstream::Downstream {
            run_dir,
            task: &task,
            pretrain_steps: outcome.step,
            seed: r.seed,
            device: &p.device,
        }
        .run(&r.downstream)?;
    }
    let label_efficiency = report::write(run_dir, &results)?;
    let summary = Summary {
        name: r.name.clone(),
        run_dir: run_dir.to_path_buf(),
        steps: outcome.step,
        final_loss: outcome.last_loss,
        samples_per_s: outcome.samples_per_s,
        pretrain_seconds,
        data_wait_seconds,
        encoder_parameters: p.params.num_params_with_prefix("vit."),
        total_parameters: p.params.num_params(),
        held_out_mlm: None,
        downstream: results,
        label_efficiency,
    };
    write_summary(run_dir, &summary)?;
    Ok(summary)
}
