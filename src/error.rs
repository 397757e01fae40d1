//! The library's one error type. Every variant keeps the context a user needs to act:
//! the file, the line, the tensor or key, what was expected and what was found.
//! The CLI (`main.rs`, `cli/`) wraps these in `anyhow` and prints them on one line.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its content is not what it should be (corrupt GGUF, bad config.json, ...).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// A line-oriented data file (jsonl, recipe yaml) has a bad record.
    #[error("{}:{line}: {msg}", path.display())]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },

    /// A recipe is invalid; `msg` already names the key path and location.
    #[error("{msg}")]
    Recipe { msg: String },

    /// The model uses something ft does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A tensor is missing or has the wrong shape/type.
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },

    /// An argument or request value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),

    /// Tokenizer construction or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Chat template compilation or rendering failed.
    #[error("chat template: {0}")]
    Template(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Json(#[from] serde_json::Error),

    /// Adds what was being done to an inner error, keeping the source chain.
    #[error("{ctx}: {source}")]
    Context {
        ctx: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn format(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn data(path: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.as_ref().to_path_buf(),
            line,
            msg: msg.into(),
        }
    }

    pub fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn context(self, ctx: impl Into<String>) -> Self {
        Error::Context {
            ctx: ctx.into(),
            source: Box::new(self),
        }
    }
}

/// `.ctx("loading x")` on any library result.
pub trait ResultExt<T> {
    fn ctx(self, ctx: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx(self, ctx: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into().context(ctx()))
    }
}
