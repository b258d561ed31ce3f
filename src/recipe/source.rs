//! Data sources: where a split's examples are and in which format. Each format is a
//! variant with only its own keys (`format = "idx"` takes `images` and `labels`, a folder
//! only `root`, …), so a key of another format is an unknown-key error naming the valid
//! ones.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Recipe;
use crate::error::{Error, Result};

/// One split's examples. Relative paths are relative to the directory `pretext` runs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataSource {
    /// MNIST-style IDX files, optionally gzip-compressed.
    Idx {
        /// The image file.
        images: PathBuf,
        /// The label file (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        labels: Option<PathBuf>,
        /// Use only the first N examples.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// A directory: images as `root/<class>/*.png|jpg|jpeg` (classes numbered in sorted
    /// order; images directly in `root` are unlabelled; any size and channel count,
    /// converted to `data.image.channels` and resized, bilinear, to `data.image.size`), or
    /// audio as `root/<label>/*.wav`.
    Folder {
        root: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Plain UTF-8 text: one file, or every file under a folder (sorted).
    Text {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// JSON lines with a text field and an optional label field.
    Jsonl {
        path: PathBuf,
        /// The field holding the text (default `text`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text_field: Option<String>,
        /// The field holding the label (default `label`; absent from a line = unlabelled).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label_field: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Audio: a CSV file with a header naming `path` and optionally `label` and `split`
    /// columns (paths relative to the manifest's directory).
    Manifest {
        path: PathBuf,
        /// Keep only the rows whose `split` column equals this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
}

impl DataSource {
    /// The `format` key's value.
    pub fn format(&self) -> &'static str {
        match self {
            DataSource::Idx { .. } => "idx",
            DataSource::Folder { .. } => "folder",
            DataSource::Text { .. } => "text",
            DataSource::Jsonl { .. } => "jsonl",
            DataSource::Manifest { .. } => "manifest",
        }
    }

    /// Use only the first N examples.
    pub fn limit(&self) -> Option<usize> {
        match self {
            DataSource::Idx { limit, .. }
            | DataSource::Folder { limit, .. }
            | DataSource::Text { limit, .. }
            | DataSource::Jsonl { limit, .. }
            | DataSource::Manifest { limit, .. } => *limit,
        }
    }

    /// Whether the source can give labels (an IDX label file, or a folder's class
    /// directories — known only once it is read).
    pub fn may_have_labels(&self) -> bool {
        match self {
            DataSource::Idx { labels, .. } => labels.is_some(),
            DataSource::Folder { .. } | DataSource::Jsonl { .. } | DataSource::Manifest { .. } => {
                true
            }
            DataSource::Text { .. } => false,
        }
    }

    /// The files and folders the source names, with their keys.
    pub fn paths(&self) -> Vec<(&'static str, &Path)> {
        match self {
            DataSource::Idx { images, labels, .. } => {
                let mut p = vec![("images", images.as_path())];
                if let Some(l) = labels {
                    p.push(("labels", l.as_path()));
                }
                p
            }
            DataSource::Folder { root, .. } => vec![("root", root.as_path())],
            DataSource::Text { path, .. }
            | DataSource::Jsonl { path, .. }
            | DataSource::Manifest { path, .. } => vec![("path", path.as_path())],
        }
    }
}

/// The data sources a recipe names, with their keys.
pub fn sources(r: &Recipe) -> Vec<(&'static str, &DataSource)> {
    let mut sources = vec![("data.train", &r.data.train)];
    if let Some(t) = &r.data.test {
        sources.push(("data.test", t));
    }
    if let Some(l) = &r.data.labelled {
        sources.push(("data.labelled.train", &l.train));
        sources.push(("data.labelled.test", &l.test));
    }
    sources
}

/// Every data file the recipe names exists (and a local `model.source`).
pub fn check_paths(r: &Recipe, file: &Path) -> Result<()> {
    let missing = |key: String, path: &Path| Error::MissingFile {
        file: file.to_path_buf(),
        key,
        path: path.to_path_buf(),
    };
    if let Some(src) = r.model.source.as_deref().filter(|s| !s.starts_with("hf:")) {
        if !Path::new(src).exists() {
            return Err(missing("model.source".into(), Path::new(src)));
        }
    }
    if let Some(p) = r
        .data
        .text
        .as_ref()
        .and_then(|t| t.tokenizer.as_ref())
        .and_then(|t| t.file.as_ref())
    {
        if !p.exists() {
            return Err(missing("data.text.tokenizer.file".into(), p));
        }
    }
    for (key, src) in sources(r) {
        for (k, p) in src.paths() {
            if !p.exists() {
                return Err(missing(format!("{key}.{k}"), p));
            }
            // A folder is walked; anything else is read, and must be a plain file.
            if !p.is_dir() {
                crate::input::regular_file(p).map_err(|m| Error::InvalidValue {
                    file: file.to_path_buf(),
                    key: format!("{key}.{k}"),
                    message: format!("{} {m}", p.display()),
                })?;
            }
        }
    }
    Ok(())
}

/// Where a source of an unsupported format is named: the error for its `format` key.
pub fn wrong_format(file: &Path, key: &str, src: &DataSource, wanted: &str) -> Error {
    Error::InvalidValue {
        file: file.to_path_buf(),
        key: format!("{key}.format"),
        message: format!("`{}` is not read here: {wanted}", src.format()),
    }
}
