//! Command-line parsing into typed commands, and their execution.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
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
    }
}
