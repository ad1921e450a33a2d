//! Errors of the lake crate, each carrying the path or value it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("invalid lake URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("object store error at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed {file}, line {line}: {reason}")]
    Registry {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("gave up updating {path} after {attempts} concurrent-update conflicts")]
    Contention { path: String, attempts: u32 },
}

impl LakeError {
    pub(crate) fn store(path: impl ToString, source: object_store::Error) -> Self {
        LakeError::Store {
            path: path.to_string(),
            source,
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LakeError::Io {
            path: path.into(),
            source,
        }
    }
}
