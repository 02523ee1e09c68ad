//! The library's one error type. Every variant names what the user has to look at: the file, the tensor,
//! the config key or the input line, so that a message alone is enough to fix the problem.

use std::path::PathBuf;

/// Errors from loading, tokenizing and running BERT models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid JSON: {message}", path.display())]
    Json { path: PathBuf, message: String },
    #[error("{}: `{key}`: {message}", path.display())]
    Config {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("missing weight `{name}` (looked in {source_desc})")]
    MissingWeight { name: String, source_desc: String },
    #[error("weight `{name}` has shape {found:?} but config.json implies {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("model `{model}`: {message}")]
    Hub { model: String, message: String },
    /// A training or evaluation file's content: `line` 0 means the file as a whole.
    #[error("{}{}: {message}", path.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    Data {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("training: {0}")]
    Training(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, key: &str, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Reads a file, naming it in the error.
pub(crate) fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Reads and parses a JSON file, naming the file and the position of a syntax error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = read_to_string(path)?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let message = if field == "." || field.is_empty() {
            inner.to_string()
        } else {
            format!("field `{field}`: {inner}")
        };
        Error::Json {
            path: path.to_path_buf(),
            message,
        }
    })
}
