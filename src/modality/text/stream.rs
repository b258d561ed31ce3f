//! A training corpus read one document at a time, so that neither tokenizer training nor
//! tokenisation ([`super::shards`]) holds the corpus in memory: at most one plain text file
//! (a document) or one JSON line is read at once.
//!
//! The documents, their order and `limit` are those of [`super::corpus::read_text_dir`],
//! [`super::corpus::read_text_file`] (one document per file) and
//! [`super::corpus::read_jsonl`]; only the order of errors can differ (a JSON-lines file is
//! checked line by line, not for UTF-8 first).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::corpus::{self, Document, JsonlFields, TextSplit};
use super::tokenizer::{TextTokenizer, TokenizerKind};
use crate::{Error, Result};

/// How the files of a corpus hold documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Format {
    /// Plain UTF-8 text, one document per file.
    Text,
    /// JSON lines, one document per line.
    Jsonl { fields: JsonlFields },
}

/// A corpus on disk: its files in reading order, their format and the document limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    pub files: Vec<PathBuf>,
    pub format: Format,
    /// Only the first `limit` documents.
    pub limit: Option<usize>,
}

/// What identifies an input file for the token cache: where it is, its size and when it was
/// last modified (a file rewritten in place gets a new time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// Canonical (absolute, links resolved).
    pub path: PathBuf,
    pub size: u64,
    /// Modification time: seconds and nanoseconds since the Unix epoch.
    pub mtime_s: i64,
    pub mtime_ns: u32,
}

impl FileId {
    pub fn of(path: &Path) -> Result<FileId> {
        let meta = crate::input::check_regular(path)?;
        let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        let modified = meta.modified().map_err(|e| Error::io(path, e))?;
        let (mtime_s, mtime_ns) = match modified.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => (
                -(e.duration().as_secs() as i64),
                e.duration().subsec_nanos(),
            ),
        };
        Ok(FileId {
            path: canonical,
            size: meta.len(),
            mtime_s,
            mtime_ns,
        })
    }
}

impl Corpus {
    /// Plain text: `path` a file, or a folder whose `*.txt` files are read in sorted order
    /// ([`corpus::text_files`]).
    pub fn text(path: &Path, limit: Option<usize>) -> Result<Corpus> {
        let files = if path.is_dir() {
            corpus::text_files(path)?
        } else {
            vec![path.to_path_buf()]
        };
        Ok(Corpus {
            files,
            format: Format::Text,
            limit,
        })
    }

    /// One JSON-lines file.
    pub fn jsonl(path: &Path, fields: JsonlFields, limit: Option<usize>) -> Corpus {
        Corpus {
            files: vec![path.to_path_buf()],
            format: Format::Jsonl { fields },
            limit,
        }
    }

    /// The identity of every file, in reading order (the token cache's key).
    pub fn identity(&self) -> Result<Vec<FileId>> {
        self.files.iter().map(|f| FileId::of(f)).collect()
    }

    /// The documents, one at a time; after an error the iteration ends.
    pub fn documents(&self) -> Documents {
        Documents {
            files: self.files.clone().into_iter(),
            format: self.format.clone(),
            left: self.limit,
            current: None,
            failed: false,
        }
    }

    /// Trains a tokenizer on the documents as they are read (see [`TextTokenizer::train`]);
    /// also returns how many documents it saw. The trainer counts words, so the result is
    /// the same as training on all the documents held in memory.
    pub fn train_tokenizer(
        &self,
        kind: TokenizerKind,
        vocab_size: usize,
        lowercase: bool,
    ) -> Result<(TextTokenizer, usize)> {
        let error = Arc::new(Mutex::new(None));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let texts = TrainingTexts {
            docs: self.documents(),
            error: error.clone(),
            count: count.clone(),
        };
        let trained = TextTokenizer::train(kind, vocab_size, lowercase, texts);
        // A read error ends the texts early; it, not the training's result, is the news.
        if let Some(e) = error.lock().ok().and_then(|mut e| e.take()) {
            return Err(e);
        }
        Ok((trained?, count.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

/// The documents of a [`Corpus`], read lazily.
pub struct Documents {
    files: std::vec::IntoIter<PathBuf>,
    format: Format,
    left: Option<usize>,
    current: Option<FileDocs>,
    failed: bool,
}

enum FileDocs {
    /// The (at most one) document of a plain text file.
    Text(std::vec::IntoIter<Document>),
    Jsonl(JsonlReader),
}

impl Iterator for FileDocs {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        match self {
            FileDocs::Text(docs) => docs.next().map(Ok),
            FileDocs::Jsonl(r) => r.next(),
        }
    }
}

impl Documents {
    fn open(&self, path: &Path) -> Result<FileDocs> {
        Ok(match &self.format {
            Format::Text => {
                FileDocs::Text(corpus::read_text_file(path, TextSplit::File)?.into_iter())
            }
            Format::Jsonl { fields } => FileDocs::Jsonl(JsonlReader::open(path, fields.clone())?),
        })
    }
}

impl Iterator for Documents {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        if self.failed || self.left == Some(0) {
            return None;
        }
        loop {
            if let Some(doc) = self.current.as_mut().and_then(|c| c.next()) {
                match &doc {
                    Ok(_) => self.left = self.left.map(|l| l - 1),
                    Err(_) => self.failed = true,
                }
                return Some(doc);
            }
            let file = self.files.next()?;
            match self.open(&file) {
                Ok(docs) => self.current = Some(docs),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A JSON-lines file read line by line (the documents of [`corpus::read_jsonl`]).
struct JsonlReader {
    path: PathBuf,
    reader: std::io::BufReader<std::fs::File>,
    fields: JsonlFields,
    /// Lines read so far (the 1-based number of the last one).
    line: usize,
    /// Byte offset of the next line.
    offset: u64,
    buf: Vec<u8>,
}

impl JsonlReader {
    fn open(path: &Path, fields: JsonlFields) -> Result<JsonlReader> {
        Ok(JsonlReader {
            path: path.to_path_buf(),
            reader: std::io::BufReader::new(crate::input::open(path)?),
            fields,
            line: 0,
            offset: 0,
            buf: Vec::new(),
        })
    }

    /// Reads the next line into `buf`, its ending dropped; `None` at the end of the file,
    /// else how many bytes of byte-order mark it starts with (3 or 0).
    fn next_line(&mut self) -> Result<Option<usize>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        self.offset += n as u64;
        // As `str::lines`: a `\n` or `\r\n` ending is not part of the line.
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        let bom = self.line == 1 && self.buf.starts_with(b"\xef\xbb\xbf");
        Ok(Some(if bom { 3 } else { 0 }))
    }
}

impl Iterator for JsonlReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Result<Document>> {
        loop {
            let start = self.offset;
            let bom = match self.next_line() {
                Ok(Some(bom)) => bom,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let text = match std::str::from_utf8(&self.buf[bom..]) {
                Ok(text) => text,
                Err(e) => {
                    let at = bom + e.valid_up_to();
                    let byte = self.buf[at];
                    let offset = start + at as u64;
                    return Some(Err(corpus::not_utf8(&self.path, byte, offset, self.line)));
                }
            };
            match corpus::jsonl_document(&self.path, self.line, text, &self.fields) {
                Ok(None) => continue,
                other => return other.transpose(),
            }
        }
    }
}

/// The texts the tokenizer trainer reads; a read error is kept for the caller and ends them.
struct TrainingTexts {
    docs: Documents,
    error: Arc<Mutex<Option<Error>>>,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Iterator for TrainingTexts {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        match self.docs.next()? {
            Ok(doc) => {
                self.count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(doc.text)
            }
            Err(e) => {
                if let Ok(mut slot) = self.error.lock() {
                    slot.get_or_insert(e);
                }
                None
            }
        }
    }
}
