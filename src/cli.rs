//! Command-line parsing into typed commands, and their execution.

use std::path::PathBuf;

use candle_core::Device;
use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::hf;
use crate::modality::image::dataset::ImageDataset;
use crate::recipe::{self, Override};
use crate::run::{self, dir, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "pretext",
    version,
    about = "Self-supervised masked pretraining on Candle"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a recipe (pretraining, then downstream heads), or resume a run directory.
    Run {
        /// A recipe file, or a run directory to resume from its latest checkpoint.
        target: PathBuf,
        /// Override a recipe key: `--set train.steps=2000` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove a recipe key so its default applies (repeatable).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        /// Parent directory of new runs.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Exact directory for a new run (must not exist).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop after this many steps, as if interrupted (resume later with `pretext run RUN_DIR`).
        #[arg(long, hide = true)]
        stop_after: Option<usize>,
    },
    /// Validate or print recipes.
    Recipe {
        #[command(subcommand)]
        command: RecipeCommand,
    },
    /// List the tensors of a safetensors file, a checkpoint or a run.
    Inspect { path: PathBuf },
    /// Write a model in another format (`--format hf`: Hugging Face transformers).
    ///
    /// `--format hf` writes config.json, model.safetensors and preprocessor_config.json in
    /// the layout `save_pretrained` writes, which `from_pretrained` loads: an MAE run as
    /// ViTMAEForPreTraining, a saved classifier as ViTForImageClassification.
    Export {
        /// A run directory, a checkpoint inside a run, a saved classifier directory, a
        /// Hugging Face directory, or hf:org/name[@rev] (local Hugging Face cache).
        src: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output directory (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a model on a safetensors file of inputs named as in transformers.
    ///
    /// Inputs: pixel_values, optional noise and labels (other tensors are ignored); writes last_hidden_state and, where the model has
    /// them, pooler_output, logits, loss, mask (f32), ids_restore (i64). An MAE given no
    /// noise draws it with seed 0 and writes it as `noise`.
    Forward {
        /// Any model source (see `export`).
        #[arg(long)]
        model: String,
        /// Safetensors file with the inputs.
        #[arg(long)]
        inputs: PathBuf,
        /// Safetensors file for the outputs.
        #[arg(long)]
        out: PathBuf,
    },
    /// Pooled embeddings of image files (one per image).
    Embed {
        /// Any model source (see `export`).
        #[arg(long)]
        model: String,
        /// Image files (PNG, JPEG).
        #[arg(long = "image", value_name = "PATH", required = true, num_args = 1..)]
        images: Vec<PathBuf>,
        /// FILE.safetensors (`embeddings` [N, D], file names in the metadata key `images`)
        /// or FILE.jsonl (`{"image": path, "embedding": [...]}` per line); default: JSON
        /// lines on standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The class token's final hidden state, or the mean of the patch tokens'.
        #[arg(long, value_enum, default_value = "cls")]
        pooling: PoolingArg,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Hugging Face `transformers` (save_pretrained layout).
    Hf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolingArg {
    Cls,
    Mean,
}

#[derive(Subcommand, Debug)]
pub enum RecipeCommand {
    /// Check keys, values, data files and shapes (a dry run of one batch).
    Check {
        file: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Print a recipe.
    Show {
        file: PathBuf,
        /// Print it as it will run: presets, overrides and defaults applied.
        #[arg(long)]
        resolved: bool,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
}

fn overrides(set: &[String], unset: &[String]) -> Result<Vec<Override>> {
    let mut out = set
        .iter()
        .map(|s| Override::parse_set(s))
        .collect::<Result<Vec<_>>>()?;
    out.extend(unset.iter().map(|k| Override::Unset(k.clone())));
    Ok(out)
}

pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            target,
            set,
            unset,
            runs_dir,
            out,
            stop_after,
        } => {
            let o = overrides(&set, &unset)?;
            let opts = RunOptions {
                runs_root: Some(runs_dir),
                out,
                stop_after,
                skip_downstream: false,
            };
            let summary = if target.is_dir() {
                if !dir::is_run_dir(&target) {
                    return Err(Error::Usage(format!(
                        "{} is a directory without {}: give a recipe file or a run directory",
                        target.display(),
                        dir::RECIPE_FILE
                    )));
                }
                run::resume(&target, &o, &opts)?
            } else {
                run::start(&recipe::load(&target, &o)?, &opts)?
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            Ok(())
        }
        Command::Recipe {
            command: RecipeCommand::Check { file, set, unset },
        } => {
            let loaded = recipe::load(&file, &overrides(&set, &unset)?)?;
            print!("{}", run::dry_run(&loaded)?);
            Ok(())
        }
        Command::Recipe {
            command:
                RecipeCommand::Show {
                    file,
                    resolved,
                    set,
                    unset,
                },
        } => {
            if resolved || !set.is_empty() || !unset.is_empty() {
                let loaded = recipe::load(&file, &overrides(&set, &unset)?)?;
                print!("{}", recipe::to_toml(&loaded.recipe));
            } else {
                print!(
                    "{}",
                    std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?
                );
            }
            Ok(())
        }
        Command::Inspect { path } => {
            print!("{}", crate::inspect::report(&path)?);
            Ok(())
        }
        Command::Export { src, format, out } => {
            let ExportFormat::Hf = format;
            let model = hf::source::load(&src, &Device::Cpu)?;
            let files = hf::export::write_hf(&model, &out)?;
            println!(
                "wrote {} ({}) to {}",
                files
                    .iter()
                    .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", "),
                model.spec.hf_class(),
                out.display()
            );
            if let Some(note) = hf::export::notes(&model) {
                eprintln!("note: {note}");
            }
            Ok(())
        }
        Command::Forward { model, inputs, out } => {
            let loaded = hf::source::load(&model, &Device::Cpu)?;
            let m = hf::Model::build(&loaded, &Device::Cpu)?;
            let tensors = crate::tensor_io::read(&inputs, &Device::Cpu)?.tensors;
            let outputs = m.forward(&tensors).map_err(|e| match e {
                Error::Usage(msg) => Error::data(&inputs, msg),
                Error::Candle(c) => Error::data(&inputs, c.to_string()),
                e => e,
            })?;
            let list: Vec<(String, candle_core::Tensor)> = outputs.into_iter().collect();
            crate::tensor_io::write(&out, &list, Default::default())?;
            Ok(())
        }
        Command::Embed {
            model,
            images,
            out,
            pooling,
        } => embed(&model, &images, out.as_deref(), pooling),
    }
}

/// `pretext embed`: decode, batch, encode, pool, write.
fn embed(
    model: &str,
    images: &[PathBuf],
    out: Option<&std::path::Path>,
    pooling: PoolingArg,
) -> Result<()> {
    let dev = Device::Cpu;
    let loaded = hf::source::load(model, &dev)?;
    let m = hf::Model::build(&loaded, &dev)?;
    let pooling = match pooling {
        PoolingArg::Cls => recipe::Pooling::Cls,
        PoolingArg::Mean => recipe::Pooling::Mean,
    };
    let g = loaded.spec.geometry;
    let files = ImageDataset::from_files(images.to_vec(), g.channels, g.size)?;
    let all: Vec<usize> = (0..files.len).collect();
    let mut rows = Vec::with_capacity(images.len());
    for chunk in all.chunks(64) {
        let n = &loaded.normalize;
        let pixels = files.batch(chunk, &n.mean, &n.std, &dev)?;
        rows.extend(m.embed(&pixels, pooling)?.to_vec2::<f32>()?);
    }
    let names: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
    let jsonl = || -> String {
        names
            .iter()
            .zip(&rows)
            .map(|(n, e)| serde_json::json!({"image": n, "embedding": e}).to_string() + "\n")
            .collect()
    };
    match out {
        None => print!("{}", jsonl()),
        Some(path) if path.extension().is_some_and(|e| e == "jsonl") => {
            crate::tensor_io::write_atomic(path, jsonl().as_bytes())?
        }
        Some(path) if path.extension().is_some_and(|e| e == "safetensors") => {
            let d = rows.first().map_or(0, Vec::len);
            let flat: Vec<f32> = rows.concat();
            let t = candle_core::Tensor::from_vec(flat, (rows.len(), d), &dev)?;
            let meta = std::collections::HashMap::from([(
                "images".to_string(),
                serde_json::to_string(&names).unwrap_or_default(),
            )]);
            crate::tensor_io::write(path, &[("embeddings".to_string(), t)], meta)?
        }
        Some(path) => {
            return Err(Error::Usage(format!(
                "--out {}: expected a .safetensors or .jsonl file",
                path.display()
            )))
        }
    }
    Ok(())
}
