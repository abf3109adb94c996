//! Errors of the backup and restore engine.

use std::path::PathBuf;

use crate::fsmeta::FsError;

/// What stopped a backup or restore.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The repository failed (I/O, corruption, missing objects).
    #[error(transparent)]
    Repo(#[from] holdfast_repo::Error),
    /// A filesystem operation on the restore target failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A source path given on the command line could not be read.
    #[error("cannot back up {path}: {source}")]
    Source {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing a dumped file to its output failed.
    #[error("writing the output failed: {0}")]
    Output(#[source] std::io::Error),
    /// A pattern or argument was not valid.
    #[error("{0}")]
    Usage(String),
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
