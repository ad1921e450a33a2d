//! Errors of the pipeline library, each naming the file, flag or step it is about.

use polars::prelude::PolarsError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Lake(#[from] lake::LakeError),
    #[error("invalid {flag} {value:?}: {reason}")]
    Flag { flag: &'static str, value: String, reason: String },
    #[error("hits file {path} cannot be read: {reason}")]
    BadHitsFile { path: String, reason: String },
    #[error("polars failed while {step}: {source}")]
    Polars {
        step: String,
        #[source]
        source: PolarsError,
    },
    #[error("object store error at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl PipelineError {
    pub(crate) fn polars(step: impl Into<String>) -> impl FnOnce(PolarsError) -> PipelineError {
        let step = step.into();
        move |source| PipelineError::Polars { step, source }
    }
    pub(crate) fn store(path: impl ToString) -> impl FnOnce(object_store::Error) -> PipelineError {
        let path = path.to_string();
        move |source| PipelineError::Store { path, source }
    }
    pub(crate) fn io(path: impl ToString) -> impl FnOnce(std::io::Error) -> PipelineError {
        let path = path.to_string();
        move |source| PipelineError::Io { path, source }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
