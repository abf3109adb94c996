//! The holdfast engine: turns filesystem trees into snapshots and back.
//!
//! [`archiver`] walks source paths and writes blobs, trees and a snapshot through the
//! repository's blob store; [`restorer`] reads a snapshot's trees and recreates files,
//! directories, links and metadata under a target directory, never writing outside it.
//! [`fsmeta`] holds the metadata capture and apply code both share.
#![deny(missing_docs)]

pub mod archiver;
pub mod checker;
pub mod error;
pub mod filter;
pub mod fsmeta;
pub mod prune;
pub mod repair;
pub mod restorer;
pub mod retention;
pub mod scanner;
/// Sessions and leases live with the format (SPEC.md §12.2); re-exported for callers.
pub use holdfast_repo::session;

pub use error::{EngineError, Result};
