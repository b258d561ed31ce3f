//! Reading text documents: a plain text file, a folder of text files, or JSON lines.
//!
//! - Plain text: one document per file (`TextSplit::File`) or one per paragraph, paragraphs
//!   being separated by blank lines (`TextSplit::Paragraph`).
//! - Folder: every `*.txt` file below it, recursively, in sorted path order (hidden files and
//!   folders, and files with other extensions, are skipped, so a README or metadata next to
//!   the texts does not become training data). A folder with no `*.txt` file is an error.
//! - JSON lines: one object per line with a text field and an optional label field (names
//!   configurable; defaults `text` and `label`; a label may be a string or an integer). Blank
//!   lines are skipped. A line that is not JSON, not an object, or lacks the text field is an
//!   error naming the file and the line number.
//!
//! Input must be UTF-8 (a leading byte-order mark is dropped); otherwise the error names the
//! file and the byte offset of the first invalid byte. Empty documents (only whitespace) are
//! skipped. Labels are numbered in the sorted order of their names, as image folders are.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where a document came from. `line` is 1-based: the JSONL line, or the first line of a
/// paragraph; `None` for a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub line: Option<usize>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// One document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    pub label: Option<String>,
    pub origin: Origin,
}

impl AsRef<str> for Document {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

/// How a plain text file becomes documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextSplit {
    /// The whole file is one document.
    #[default]
    File,
    /// Each run of non-blank lines is one document.
    Paragraph,
}

/// Field names of a JSON-lines file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonlFields {
    /// The text field (default `text`); required on every line.
    pub text: String,
    /// The label field (default `label`); optional.
    pub label: String,
}

impl Default for JsonlFields {
    fn default() -> Self {
        JsonlFields {
            text: "text".into(),
            label: "label".into(),
        }
    }
}

/// Reads a file as UTF-8; the error gives the byte offset of the first invalid byte.
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = crate::input::read(path)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        not_utf8(path, e.as_bytes()[at], at as u64, line)
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// The error for a file that is not UTF-8: the first invalid byte, its offset and line.
pub fn not_utf8(path: &Path, byte: u8, offset: u64, line: usize) -> Error {
    Error::data(
        path,
        format!(
            "not UTF-8: invalid byte 0x{byte:02x} at byte offset {offset} (line {line}); \
             convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ),
    )
}

/// Documents of one plain text file.
pub fn read_text_file(path: impl AsRef<Path>, split: TextSplit) -> Result<Vec<Document>> {
    let path = path.as_ref();
    let text = read_utf8(path)?;
    let doc = |text: String, line: Option<usize>| Document {
        text,
        label: None,
        origin: Origin {
            path: path.to_path_buf(),
            line,
        },
    };
    Ok(match split {
        TextSplit::File => {
            if text.trim().is_empty() {
                vec![]
            } else {
                vec![doc(text.trim_end().to_string(), None)]
            }
        }
        TextSplit::Paragraph => {
            let mut docs = Vec::new();
            let mut current: Vec<&str> = Vec::new();
            let mut start = 0;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    if !current.is_empty() {
                        docs.push(doc(current.join("\n"), Some(start + 1)));
                        current.clear();
                    }
                } else {
                    if current.is_empty() {
                        start = i;
                    }
                    current.push(line.trim_end());
                }
            }
            if !current.is_empty() {
                docs.push(doc(current.join("\n"), Some(start + 1)));
            }
            docs
        }
    })
}

/// The `*.txt` files below `dir`, recursively, sorted by path; hidden entries skipped.
pub fn text_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let hidden = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    };
    let txt = |p: &Path| p.extension().is_some_and(|e| e == "txt");
    // Follows symlinks, so a folder of links (as fetch-data makes) works.
    let out = crate::modality::files::files_under(dir, &hidden, &txt)?;
    if out.is_empty() {
        return Err(Error::data(
            dir,
            "no *.txt file in this folder (searched recursively)",
        ));
    }
    Ok(out)
}

/// Documents of every `*.txt` file below `dir` (see `text_files`).
pub fn read_text_dir(dir: impl AsRef<Path>, split: TextSplit) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for file in text_files(dir)? {
        docs.extend(read_text_file(&file, split)?);
    }
    Ok(docs)
}

/// Documents of a JSON-lines file.
pub fn read_jsonl(path: impl AsRef<Path>, fields: &JsonlFields) -> Result<Vec<Document>> {
    let path = path.as_ref();
    let text = read_utf8(path)?;
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        docs.extend(jsonl_document(path, i + 1, line, fields)?);
    }
    Ok(docs)
}

/// The document on line `n` (1-based) of a JSON-lines file; `None` for a blank line or an
/// empty text.
pub fn jsonl_document(
    path: &Path,
    n: usize,
    line: &str,
    fields: &JsonlFields,
) -> Result<Option<Document>> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let at = |msg: String| Error::data(path, format!("line {n}: {msg}"));
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| at("expected a JSON object".into()))?;
    let text = match obj.get(&fields.text) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(at(format!(
                "`{}` must be a string, found {other}",
                fields.text
            )))
        }
        None => return Err(at(format!("no `{}` field", fields.text))),
    };
    let label = match obj.get(&fields.label) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(x)) if x.is_i64() || x.is_u64() => Some(x.to_string()),
        Some(other) => {
            return Err(at(format!(
                "`{}` must be a string or an integer, found {other}",
                fields.label
            )))
        }
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(Document {
        text,
        label,
        origin: Origin {
            path: path.to_path_buf(),
            line: Some(n),
        },
    }))
}

/// The label names of a labelled set, sorted and deduplicated: class `i` is `names[i]`.
/// Every document must have a label.
pub fn class_names(docs: &[Document]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for d in docs {
        match &d.label {
            Some(l) => names.push(l.clone()),
            None => {
                return Err(Error::data(
                    &d.origin.path,
                    format!("{}: no label", d.origin),
                ))
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Class index of every document under `names` (from `class_names` of the training set); a
/// label not among them is an error naming the document.
pub fn label_indices(docs: &[Document], names: &[String]) -> Result<Vec<usize>> {
    docs.iter()
        .map(|d| {
            let label = d
                .label
                .as_ref()
                .ok_or_else(|| Error::data(&d.origin.path, format!("{}: no label", d.origin)))?;
            names.iter().position(|n| n == label).ok_or_else(|| {
                Error::data(
                    &d.origin.path,
                    format!(
                        "{}: label `{label}` is not one of the training classes ({})",
                        d.origin,
                        names.join(", ")
                    ),
                )
            })
        })
        .collect()
}
