//! Set-up shared by the engine's integration tests: a small local repository and backups
//! into it.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use holdfast_engine::archiver::{backup, BackupOutcome, BackupProgress};
use holdfast_engine::backup::{BackupRequest, Lineage, ParentChoice, Source};
use holdfast_engine::filter::PathFilter;
use holdfast_engine::restorer::RestoreOptions;
use holdfast_repo::repository::Repository;
use holdfast_repo::Id;

// A new repository in a directory: shared with the unit tests.
#[path = "../../src/testing.rs"]
mod testing;
pub use testing::repo;

/// A backup request for `src` on host "h" at `time_ns`.
pub fn backup_options(src: &Path, time_ns: i64) -> BackupRequest {
    BackupRequest {
        host: "h".into(),
        user: "u".into(),
        time_ns,
        utc_offset_s: 0,
        program_version: "test".into(),
        parent: ParentChoice::None,
        ..BackupRequest::new(vec![Source::new(src)])
    }
}

/// Backs `src` up as a writer would (marked packs excluded from deduplication), compared
/// with `parent`.
pub fn run_backup(r: &Repository, src: &Path, parent: Option<Id>, time_ns: i64) -> BackupOutcome {
    let writer = r.begin_write("h").unwrap();
    backup(
        &writer,
        &backup_options(src, time_ns),
        Lineage::from_parent(parent),
        &BackupProgress::default(),
    )
    .unwrap()
}

/// Restore options: everything into `target`.
pub fn restore_options(target: &Path) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        subpath: None,
        includes: PathFilter::default(),
        excludes: PathFilter::default(),
        owners: false,
    }
}

/// Where a restore into `target` puts the absolute source path `src`.
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}
