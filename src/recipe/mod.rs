//! Recipes: TOML files parsed into typed structs, with model presets, `--set`/`--unset`
//! overrides, and validation that names the file and key of anything wrong — all before
//! a device or a data set is touched.

mod augment;
pub mod head;
mod load;
pub mod memory;
pub mod objective;
pub mod source;
#[cfg(test)]
mod tests;
pub mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use load::closest;
pub use source::{check_paths, DataSource};
pub use types::*;
pub use validate::validate;
pub(crate) use validate::{check, check_masked_grid};

use crate::error::{Error, Result};

/// Model presets shipped with the binary (`models/*.toml`), by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("vit-tiny", include_str!("../../models/vit-tiny.toml")),
    ("vit-mini", include_str!("../../models/vit-mini.toml")),
    ("bert-mini", include_str!("../../models/bert-mini.toml")),
];

/// A recipe as loaded: the typed form plus where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub recipe: Recipe,
    pub file: PathBuf,
}

/// One command-line override.
#[derive(Debug, Clone, PartialEq)]
pub enum Override {
    /// `--set a.b=value` (value parsed as TOML, else taken as a string).
    Set(String, String),
    /// `--unset a.b`.
    Unset(String),
}

impl Override {
    /// Parses the argument of `--set` (`KEY=VALUE`).
    pub fn parse_set(arg: &str) -> Result<Self> {
        match arg.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Override::Set(k.trim().into(), v.into())),
            _ => Err(Error::Usage(format!(
                "--set expects KEY=VALUE (e.g. --set train.steps=100), found `{arg}`"
            ))),
        }
    }
}

/// Reads, overrides, resolves presets, type-checks and validates a recipe file. Data paths
/// are not checked here (see [`check_paths`]).
pub fn load(file: &Path, overrides: &[Override]) -> Result<Loaded> {
    let text = crate::input::read_to_string(file)?;
    load_str(&text, file, overrides)
}

/// [`load`] on text already read; `file` names it in errors.
pub fn load_str(text: &str, file: &Path, overrides: &[Override]) -> Result<Loaded> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| Error::Toml {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    for o in overrides {
        load::apply_override(&mut table, o, file)?;
    }
    load::resolve_preset(&mut table, file)?;
    load::migrate(&mut table, file)?;
    let recipe = load::deserialize(table, file)?;
    validate(&recipe, file)?;
    Ok(Loaded {
        recipe,
        file: file.to_path_buf(),
    })
}

/// The recipe as TOML, as it will run (presets and overrides applied, defaults filled in).
pub fn to_toml(r: &Recipe) -> String {
    toml::to_string_pretty(r).expect("a recipe always serialises")
}
