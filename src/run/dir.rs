//! Run directories: `recipe.toml` (resolved), `metrics.jsonl`, `checkpoints/`,
//! `pictures/`, `summary.json`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::recipe::{self, Recipe};

pub const RECIPE_FILE: &str = "recipe.toml";
pub const SUMMARY_FILE: &str = "summary.json";

/// Whether `path` is a run directory (holds a resolved recipe).
pub fn is_run_dir(path: &Path) -> bool {
    path.is_dir() && path.join(RECIPE_FILE).is_file()
}

/// A new run directory under `root` named after the recipe; `-2`, `-3`, … are appended
/// when the name is taken, so an earlier run is never overwritten.
pub fn create(root: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    for n in 1.. {
        let dir = if n == 1 {
            root.join(name)
        } else {
            root.join(format!("{name}-{n}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    unreachable!("the loop returns or errors")
}

/// Writes the resolved recipe into the run directory.
pub fn write_recipe(dir: &Path, r: &Recipe, source: &Path) -> Result<()> {
    let text = format!(
        "# Resolved recipe, as it runs. Made from {}.\n# Resume or finish this run with:  pretext run {}\n\n{}",
        source.display(),
        dir.display(),
        recipe::to_toml(r)
    );
    crate::tensor_io::write_atomic(&dir.join(RECIPE_FILE), text.as_bytes())
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|e| Error::data(path, e.to_string()))?;
    crate::tensor_io::write_atomic(path, json.as_bytes())
}
