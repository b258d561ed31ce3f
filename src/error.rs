//! The library's error type. Every variant says what was wrong and where (file, key,
//! tensor name, step), so the CLI can print it as is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: invalid TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },

    #[error("{}: unknown key `{key}`{}{}", file.display(), within.as_ref().map(|w| format!(" for {w}")).unwrap_or_default(), suggestion_text(suggestion, valid))]
    UnknownKey {
        file: PathBuf,
        key: String,
        /// The variant the key was read under, e.g. `format = "folder"`.
        within: Option<String>,
        suggestion: Option<String>,
        valid: Vec<String>,
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

    #[error("{0}")]
    Candle(candle_core::Error),
}

fn suggestion_text(suggestion: &Option<String>, valid: &[String]) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None if !valid.is_empty() => format!("; valid keys here: {}", valid.join(", ")),
        None => String::new(),
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
