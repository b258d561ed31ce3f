//! Listing data folders, shared by the modalities that read folders of files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Entries of `dir`, sorted by name (bytes), so the order does not depend on the file system.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        out.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}
