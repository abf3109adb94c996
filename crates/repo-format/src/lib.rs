//! The holdfast repository format and the engine core that reads and writes it.
//!
//! A repository is a set of immutable, content-named files (SPEC.md): packs of encrypted
//! blobs, index files that say which pack holds which blob, snapshots that point at trees,
//! key files that unlock the master key, and one config. This crate encodes and decodes
//! each of them, talks to storage through the [`backend::Backend`] trait, and provides the
//! blob write path ([`blob_store::BlobStore`]).
//!
//! It is not: a filesystem walker or restorer (that is `holdfast-engine`), nor a
//! command-line tool (`holdfast-cli`).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod backend;
pub mod blob;
pub mod blob_store;
pub mod cache;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod envelope;
pub mod error;
pub mod gc;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod pack;
pub mod repository;
pub mod session;
pub mod snapshot;
pub mod tree;
pub mod writer;

pub use error::{Error, Result};
pub use id::Id;
