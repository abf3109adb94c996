//! S3 buckets as holdfast snapshots: [`BucketFeed`] backs a bucket (or a prefix of it) up
//! through the engine's feeds, one file per object; [`restore`] puts a snapshot's files
//! back into a bucket.
//!
//! * **Paths.** An object `KEY` below the backed-up prefix is the file `KEY` below the
//!   recorded path ([`recorded_path`]: `/buckets/BUCKET[/PREFIX]`), its pieces escaped
//!   where a snapshot cannot hold them (see [`names`] and SPEC.md, "Bucket snapshots").
//! * **Order and memory.** Objects are listed level by level in tree order, holding a
//!   bounded number of entries per open level whatever the bucket's size (see
//!   [`listing`]).
//! * **Incremental.** A file's modification time is the object's LastModified, its size
//!   the listed size, and the attribute `user.s3.etag` its ETag: an object with the same
//!   three as in the parent snapshot is not downloaded. Its content type, cache and
//!   encoding headers and user metadata (`user.s3.obj.*`) come with the download and are
//!   kept from the parent when it is not downloaded.
//! * **Downloads** stream: a GET's body is read as it comes; a body cut off is resumed with
//!   a ranged GET from the offset reached, conditional on the same ETag, a few times.
//! * **Restore** uploads each file as one PutObject, or a multipart upload above
//!   [`PART_SIZE`], with the recorded headers and metadata.

#![warn(missing_docs)]

pub mod listing;
pub mod names;
mod restore;
mod s3;

pub use restore::{restore, RestoreProgress, RestoreReport};
pub use s3::{Bucket, BucketFeed};

/// Objects up to this size are uploaded in one request; larger ones in parts of this size.
pub const PART_SIZE: u64 = 16 * 1024 * 1024;

/// The attribute holding an object's ETag (compared with the parent's).
pub const XATTR_ETAG: &str = "user.s3.etag";
/// The attribute holding an object's key (relative to the backed-up prefix) when its path
/// had to be escaped: informational, for files restored into a directory.
pub const XATTR_KEY: &str = "user.s3.key";
/// The prefix of the attributes that come with an object's content: `content-type`,
/// `cache-control`, `content-encoding`, `content-disposition`, `content-language`, and
/// `meta.NAME` for each user metadata entry.
pub const XATTR_OBJ: &str = "user.s3.obj.";

/// Where a backup of `bucket` (below `prefix`, "" for all of it) is recorded.
pub fn recorded_path(bucket: &str, prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("/buckets/{bucket}")
    } else {
        format!("/buckets/{bucket}/{prefix}")
    }
}

/// What went wrong with a bucket, naming the object or prefix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    /// The bucket's client could not be made (bad location, no credentials, ...).
    #[error("{0}")]
    Client(#[from] holdfast_backend_s3::S3Error),
    /// A listing request failed.
    #[error("listing {prefix:?} failed: {why}")]
    Listing {
        /// The prefix listed.
        prefix: String,
        /// What failed.
        why: String,
    },
    /// A key that cannot be recorded.
    #[error("the key {key:?} cannot be backed up: {why}")]
    UnsupportedKey {
        /// The key.
        key: String,
        /// Why not.
        why: &'static str,
    },
    /// A download failed (after its retries).
    #[error("downloading {key:?} failed at byte {offset}: {why}")]
    Download {
        /// The object.
        key: String,
        /// Bytes read before the failure.
        offset: u64,
        /// What failed.
        why: String,
    },
    /// An upload failed.
    #[error("uploading {key:?} failed: {why}")]
    Upload {
        /// The object.
        key: String,
        /// What failed.
        why: String,
    },
    /// A recorded name that no key gives (not made by this crate's escaping).
    #[error("{path}: not a name a bucket backup records, so it has no key")]
    NotAKey {
        /// The path in the snapshot.
        path: String,
    },
    /// Reading the snapshot failed.
    #[error(transparent)]
    Engine(#[from] holdfast_engine::EngineError),
    /// Reading the repository failed.
    #[error(transparent)]
    Repo(#[from] holdfast_repo::Error),
}

impl BucketError {
    /// As an I/O error (for the engine's feed interface).
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}
