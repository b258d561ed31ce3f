//! Audio data set listings: class folders (`root/<label>/*.wav`) or CSV manifests with
//! `path`, `label` and `split` columns. Only the listing is built here; clips are read when
//! needed ([`super::resample::load_clip`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::modality::files::sorted_entries;

/// One clip of a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioItem {
    pub path: PathBuf,
    pub label: Option<String>,
    pub split: Option<String>,
}

fn is_wav(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
}

/// Lists `root/<label>/*.wav`, sorted by label then file name; labels are the directory
/// names; other files (and deeper directories) are ignored. Errs, naming `root`, when it is
/// not a directory or holds no `.wav` in a label directory.
pub fn scan_folder(root: &Path) -> Result<Vec<AudioItem>> {
    if !root.is_dir() {
        return Err(Error::data(root, "is not a directory"));
    }
    let mut items = Vec::new();
    for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let Some(label) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Err(Error::data(&dir, "directory name is not valid UTF-8"));
        };
        for path in sorted_entries(&dir)?.into_iter().filter(|p| is_wav(p)) {
            items.push(AudioItem {
                path,
                label: Some(label.clone()),
                split: None,
            });
        }
    }
    if items.is_empty() {
        return Err(Error::data(
            root,
            "no .wav files in label directories (expected root/<label>/*.wav)",
        ));
    }
    Ok(items)
}

/// Reads a CSV manifest whose header has a `path` column and optionally `label` and `split`
/// (any order, other columns ignored). Relative paths resolve against the manifest's
/// directory; empty `label` / `split` cells read as `None`. Errors name the manifest, the
/// line and the column.
pub fn read_manifest(csv: &Path) -> Result<Vec<AudioItem>> {
    let file = crate::input::open(csv)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let err = |e: csv::Error| {
        let line = e
            .position()
            .map(|p| format!("line {}: ", p.line()))
            .unwrap_or_default();
        Error::data(csv, format!("{line}invalid CSV: {e}"))
    };
    let headers = reader.headers().map_err(err)?.clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(path_col) = col("path") else {
        return Err(Error::data(
            csv,
            format!(
                "line 1: header has no `path` column (found: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let (label_col, split_col) = (col("label"), col("split"));
    let base = csv.parent().unwrap_or(Path::new(""));
    let mut items = Vec::new();
    for record in reader.records() {
        let record = record.map_err(err)?;
        let line = record.position().map_or(0, |p| p.line());
        let path = record.get(path_col).unwrap_or("");
        if path.is_empty() {
            return Err(Error::data(
                csv,
                format!("line {line}, column `path`: empty path"),
            ));
        }
        let cell = |c: Option<usize>| {
            c.and_then(|c| record.get(c))
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let path = Path::new(path);
        items.push(AudioItem {
            path: if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            },
            label: cell(label_col),
            split: cell(split_col),
        });
    }
    if items.is_empty() {
        return Err(Error::data(csv, "manifest lists no clips"));
    }
    Ok(items)
}

/// Sorted distinct labels of `items` (unlabelled items are skipped).
pub fn class_names(items: &[AudioItem]) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> =
        items.iter().filter_map(|i| i.label.as_deref()).collect();
    set.into_iter().map(str::to_owned).collect()
}
