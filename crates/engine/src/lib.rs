//! The holdfast engine: turns filesystem trees into snapshots and back.
//!
//! [`archiver`] walks source paths and writes blobs, trees and a snapshot through the
//! repository's blob store; [`restorer`] reads a snapshot's trees and recreates files,
//! directories, links and metadata under a target directory, never writing outside it.
//! [`fsmeta`] holds the metadata capture and apply code both share. [`feed`] is the
//! source that is not a filesystem (standard input, a [`command`]'s output, objects, bucket
//! keys).
//!
//! The operations a program runs on a repository (the `holdfast` command and the
//! Kubernetes agent both call these; results are `Serialize` structs):
//! * [`mod@open`]: a repository by its location, with its cache; [`password`]: a password
//!   from a file, a command or the environment;
//! * [`backup::run`]: a backup job (write session, parent choice, walk, snapshot), with
//!   sources that may be recorded under another path than the one they are read from;
//! * [`forget`]: retention policies and forgetting by ID; [`prune::prune`];
//!   [`checker::check`]; [`restorer::restore_snapshot`]; [`listing`]: snapshot lists and
//!   statistics; [`diff::diff`]: what changed between two snapshots;
//! * [`migrate`]: format features, turned on by a new config generation (`migrate`).
//!
//! Every call blocks its thread (S3 requests included); async callers call through
//! `tokio::task::spawn_blocking`.
#![deny(missing_docs)]

pub mod archiver;
pub mod backup;
pub mod checker;
pub mod command;
pub mod copy;
pub mod diff;
pub mod error;
pub mod feed;
pub mod filter;
pub mod forget;
pub mod fsmeta;
pub mod highwater;
pub mod image;
pub mod listing;
pub mod migrate;
pub mod open;
pub mod password;
pub mod prune;
pub mod repair;
pub mod restorer;
pub mod retention;
pub mod scanner;
#[cfg(test)]
mod testing;
/// Sessions and leases live with the format (SPEC.md §12.2); re-exported for callers.
pub use holdfast_repo::session;

pub use error::{EngineError, Result};
pub use open::{open, open_uncached, CacheChoice, OpenOptions};
