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
    /// A stream or feed failed (a dump command exited non-zero, standard input broke off,
    /// a listing failed): the backup stops and writes no snapshot.
    #[error("reading {path} failed, so no snapshot was written: {source}")]
    Feed {
        /// The recorded path of the entry being read.
        path: String,
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
    /// A repository location with a scheme holdfast does not know (see [`crate::open::backend`]).
    #[error(
        "repository location {location:?}: unknown scheme; use a directory path, local:PATH or \
         s3:http://HOST:PORT/BUCKET/PREFIX, s3:https://HOST/BUCKET/PREFIX, s3:BUCKET/PREFIX"
    )]
    UnknownScheme {
        /// The location as given.
        location: String,
    },
    /// The S3 backend for a location could not be made: an invalid location, invalid
    /// `HOLDFAST_S3_*` settings, no credentials. The message is the S3 error's own (it
    /// names what to fix); the location is kept for callers.
    #[error("{source}")]
    S3 {
        /// The location as given.
        location: String,
        /// Why.
        #[source]
        source: holdfast_backend_s3::S3Error,
    },
    /// The repository at a location could not be opened: none there
    /// ([`holdfast_repo::Error::RepositoryNotFound`]), a wrong password
    /// ([`holdfast_repo::Error::WrongPassword`]), damage or I/O errors.
    #[error("cannot open repository {location}")]
    Open {
        /// The location as given.
        location: String,
        /// Why.
        #[source]
        source: holdfast_repo::Error,
    },
    /// A password source failed (see [`crate::password`]).
    #[error("{what}")]
    Password {
        /// What failed, naming the file or command.
        what: String,
        /// The underlying I/O error, if any.
        #[source]
        source: Option<std::io::Error>,
    },
}

impl EngineError {
    /// The repository error at the root of this error, if there is one (a missing
    /// repository, a wrong password, damage): callers map these to exit codes or retries.
    pub fn repo_error(&self) -> Option<&holdfast_repo::Error> {
        match self {
            EngineError::Repo(e) | EngineError::Open { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
