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
    /// Another prune holds the repository's prune session (SPEC.md §12.3).
    #[error("another prune is running (host {host}, pid {pid}): try again when it has finished")]
    PruneRunning {
        /// Its host.
        host: String,
        /// Its process ID.
        pid: u32,
    },
    /// Packs that snapshots need do not exist: prune deletes nothing until this is repaired.
    #[error("refusing to prune: {} packs that snapshots need are missing ({blobs} blobs, first {}); nothing was deleted. Run `holdfast check` to see the affected snapshots, then `holdfast repair index` and `holdfast repair snapshots`", packs.len(), packs.first().map(|p| p.to_string()).unwrap_or_default())]
    MissingPacks {
        /// The missing packs.
        packs: Vec<holdfast_repo::Id>,
        /// How many needed blobs only they held.
        blobs: usize,
    },
    /// A pattern or argument was not valid.
    #[error("{0}")]
    Usage(String),
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
