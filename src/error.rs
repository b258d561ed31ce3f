//! The library's error type. Every variant says what was wrong and where (file, key,
//! tensor name, step), so the CLI can print it as is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}{}", path.display(), io_hint(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },

    #[error("{}: unknown key `{key}`{help}", file.display())]
    UnknownKey {
        file: PathBuf,
        key: String,
        help: Box<KeyHelp>,
    },

    #[error("{}: `{key}`: {message}", file.display())]
    InvalidValue {
        file: PathBuf,
        key: String,
        message: String,
    },

    #[error("{}: `{key}` names {}, which does not exist", file.display(), path.display())]
    MissingFile {
        file: PathBuf,
        key: String,
        path: PathBuf,
    },

    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },

    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        what: String,
        expected: String,
        found: String,
    },

    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },

    #[error("training stopped at step {step}: the loss is {loss} (non-finite); lower the learning rate or enable clip_grad_norm")]
    NonFinite { step: usize, loss: f32 },

    #[error("{0}")]
    Usage(String),

    /// A model on the Hugging Face hub (`model` is `hf:org/name@rev`) that could not be
    /// fetched.
    #[error("{model}: {message}")]
    Hub { model: String, message: String },

    #[error("{0}")]
    Candle(candle_core::Error),
}

/// What an unknown-key error says besides the key.
#[derive(Debug)]
pub struct KeyHelp {
    /// The variant the key was read under, e.g. `format = "folder"`.
    pub within: Option<String>,
    /// The closest valid key, in full.
    pub suggestion: Option<String>,
    /// The valid keys at that place.
    pub valid: Vec<String>,
}

impl std::fmt::Display for KeyHelp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(w) = &self.within {
            write!(f, " for {w}")?;
        }
        match &self.suggestion {
            Some(s) => write!(f, "; did you mean `{s}`?"),
            None if !self.valid.is_empty() => {
                write!(f, "; valid keys here: {}", self.valid.join(", "))
            }
            None => Ok(()),
        }
    }
}

impl From<candle_core::Error> for Error {
    /// Drops candle's captured backtrace (shown when RUST_BACKTRACE is set): users get the
    /// message, not a stack dump.
    fn from(e: candle_core::Error) -> Self {
        let mut e = e;
        while let candle_core::Error::WithBacktrace { inner, .. } = e {
            e = *inner;
        }
        Error::Candle(e)
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn shape(what: impl Into<String>, expected: impl ToString, found: impl ToString) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

/// What to do about an I/O error, where there is something to say.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            "; free some space and try again (an interrupted run resumes from its last \
             checkpoint with `pretext run RUN_DIR`)"
        }
        _ => "",
    }
}
