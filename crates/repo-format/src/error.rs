//! The error type of the repository layer.
//!
//! Every error names the object it concerns (its kind and ID or path) and what went wrong,
//! because these messages are read during an incident. Errors are never downgraded here;
//! the binary decides what is fatal, what is a warning and which exit code it maps to.

use crate::codec::DecodeError;
use crate::id::Id;

/// Result alias for the repository layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while reading or writing a repository.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No repository at the given location.
    #[error("no repository at {location}: {}", .detail.as_deref().unwrap_or("run `holdfast init` to create one, or check the -r/HOLDFAST_REPOSITORY value"))]
    RepositoryNotFound {
        /// Where we looked.
        location: String,
        /// The backend's explanation, when it has one beyond "not found" (an S3 bucket that
        /// does not exist).
        detail: Option<String>,
    },
    /// `init` on a location that already holds a repository.
    #[error("a repository already exists at {location}")]
    RepositoryExists {
        /// Where.
        location: String,
    },
    /// No key file opens with the password.
    #[error("wrong password: no key file in the repository opens with it ({tried} tried)")]
    WrongPassword {
        /// How many key files were tried.
        tried: usize,
    },
    /// The repository was written by a newer, unknown format version.
    #[error("{what} uses repository format version {found}, this holdfast reads only version {supported}: upgrade holdfast")]
    UnsupportedVersion {
        /// Which object.
        what: String,
        /// The version found.
        found: u8,
        /// The version this build supports.
        supported: u8,
    },
    /// An object uses a part of the format this build does not implement.
    #[error("{what}: {detail}; this holdfast cannot read it: upgrade holdfast")]
    Newer {
        /// Which object.
        what: String,
        /// What it uses.
        detail: String,
    },
    /// The repository uses a format feature this build does not know and may not ignore
    /// (SPEC.md §13): an incompatible one (nothing may be done) or, when writing, a
    /// read-only compatible one.
    #[error("this repository uses feature `{feature}`, added in holdfast {since}{}: upgrade holdfast", if *.read_only { ", which this holdfast can read but not write" } else { "" })]
    UnknownFeature {
        /// The feature's name.
        feature: String,
        /// The holdfast version that introduced it.
        since: String,
        /// Whether reading is still allowed (a read-only compatible feature).
        read_only: bool,
    },
    /// A write needs a format feature the repository has not turned on.
    #[error("{what} needs the repository feature `{feature}`, which is off: run `holdfast migrate {feature}` first (see `holdfast migrate --list`)")]
    FeatureOff {
        /// The feature.
        feature: &'static str,
        /// What was to be written.
        what: String,
    },
    /// A stored object failed authentication, hashing or decoding.
    #[error("{kind} {name} is corrupt: {detail}")]
    Corrupt {
        /// Object kind (pack, index, snapshot, tree, key, config, blob).
        kind: &'static str,
        /// Object name or ID.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A stored object is missing.
    #[error("{kind} {name} is missing from the repository")]
    Missing {
        /// Object kind.
        kind: &'static str,
        /// Object name or ID.
        name: String,
    },
    /// A blob is referenced but not in the index.
    #[error("blob {0} is not in the index (the data it holds is missing from the repository)")]
    BlobNotIndexed(Id),
    /// A snapshot reference did not match exactly one snapshot.
    #[error("{0}")]
    SnapshotRef(String),
    /// An operation was refused because it would lose access or data.
    #[error("refused: {0}")]
    Refused(String),
    /// An ID argument was not valid hex.
    #[error("invalid ID {0:?}: expected 64 hex digits")]
    InvalidId(String),
    /// A value could not be encoded (too long for its field, say).
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A backend I/O failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (read, write, list, delete).
        op: &'static str,
        /// On which file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A writer's or prune's session lease was lost (SPEC.md §12.2): it was stopped,
    /// suspended or cut off from the storage for so long that a prune elsewhere may have
    /// judged it gone and deleted data it depends on. Nothing that names such data was
    /// kept; running the operation again is safe.
    #[error("the {role}'s session lease was lost: {reason}; nothing it wrote since was kept and no snapshot was saved: run it again")]
    LeaseLost {
        /// backup or prune.
        role: &'static str,
        /// What happened.
        reason: String,
    },
    /// This host's clock differs from the storage server's by more than the format allows
    /// (SPEC.md §12.2), so its session and marker times would mislead other hosts.
    #[error("this host's clock is {offset_s} s off the clock of the storage at {location} (at most {limit_s} s allowed): set the time (NTP) and run again")]
    ClockSkew {
        /// The storage location.
        location: String,
        /// Server clock minus this host's, seconds.
        offset_s: i64,
        /// The limit, seconds.
        limit_s: i64,
    },
    /// The storage refused to delete a file: the credentials may add files but not delete
    /// them (the writer-only credentials of node agents, README "Writer-only credentials for
    /// the agents"). A backup tolerates it for its own session files; prune and forget
    /// cannot work without deleting.
    #[error("the storage refused to delete {path}: {detail}. These credentials may add files but not delete them (writer-only); run prune and forget with credentials that may delete, as the agent's maintenance job does with its own")]
    DeleteDenied {
        /// The file, as the backend names it.
        path: String,
        /// What the storage said.
        detail: String,
    },
    /// Key derivation failed (bad parameters in a key file).
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

impl Error {
    /// Builds a [`Error::Corrupt`] from a decode failure.
    pub fn corrupt(kind: &'static str, name: impl ToString, e: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            kind,
            name: name.to_string(),
            detail: e.to_string(),
        }
    }

    /// Builds a [`Error::Corrupt`] from a [`DecodeError`].
    /// A newer version byte becomes [`Error::UnsupportedVersion`] ("upgrade holdfast"),
    /// anything else [`Error::Corrupt`].
    pub fn decode(kind: &'static str, name: impl ToString, e: DecodeError) -> Error {
        match e {
            DecodeError::Version {
                found, supported, ..
            } if found > supported => Error::UnsupportedVersion {
                what: format!("{kind} {}", name.to_string()),
                found,
                supported,
            },
            DecodeError::Newer(detail) => Error::Newer {
                what: format!("{kind} {}", name.to_string()),
                detail,
            },
            e => Error::corrupt(kind, name, e),
        }
    }

    /// Whether the error is a missing or corrupt object (as opposed to I/O or usage).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::Missing { .. } | Error::BlobNotIndexed(_)
        )
    }
}
