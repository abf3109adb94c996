//! Set-up shared by the engine's integration tests: a small local repository and backups
//! into it.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_engine::archiver::{backup, BackupOptions, BackupOutcome, BackupProgress};
use holdfast_engine::filter::PathFilter;
use holdfast_engine::restorer::RestoreOptions;
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::blob::CompressionLevel;
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};
use holdfast_repo::Id;

/// A new repository in `dir` (password "pw", cheap key derivation, the smallest packs).
pub fn repo(dir: &Path) -> Repository {
    let opts = InitOptions {
        chunk: (512 * 1024, 1024 * 1024, 8 * 1024 * 1024),
        pack_size: 1 << 20,
        kdf: KdfParams {
            m_cost_kib: 8,
            t_cost: 1,
            p_cost: 1,
        },
        host: "h".into(),
        user: "u".into(),
        now_ns: 0,
    };
    Repository::init(Arc::new(LocalBackend::new(dir)), b"pw", &opts).unwrap()
}

/// Backup options for `src` on host "h" at `time_ns`.
pub fn backup_options(src: &Path, parent: Option<Id>, time_ns: i64) -> BackupOptions {
    BackupOptions {
        paths: vec![src.to_path_buf()],
        excludes: PathFilter::default(),
        one_file_system: false,
        exclude_caches: false,
        parent,
        force: false,
        host: "h".into(),
        user: "u".into(),
        tags: vec![],
        time_ns,
        utc_offset_s: 0,
        program_version: "test".into(),
        compression: CompressionLevel::default(),
    }
}

/// Backs `src` up as a writer would (marked packs excluded from deduplication).
pub fn run_backup(r: &Repository, src: &Path, parent: Option<Id>, time_ns: i64) -> BackupOutcome {
    let writer = r.begin_write("h").unwrap();
    backup(
        &writer,
        &backup_options(src, parent, time_ns),
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
