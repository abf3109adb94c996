//! The volume drill: restore a snapshot into a scratch directory and prove that what was
//! written is what the snapshot holds.
//!
//! The proof does not trust the restorer: every restored regular file is read back from
//! the disk and cut into the byte ranges its tree records, in order (each data blob's
//! plaintext length from the index, each run of zeros); each range is hashed with the
//! repository's blob-ID key and compared with the blob ID the tree holds, since a data
//! blob's ID is that keyed hash of its plaintext. No re-chunking is needed. The files and
//! bytes found are compared with the snapshot's summary too.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use holdfast_engine::restorer::{self, RestoreOptions, RestoreProgress};
use holdfast_repo::blob::BlobType;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::{ContentRef, Node, NodeKind};
use holdfast_repo::Id;

use crate::record::{rfc3339, CheckOutcome, DrillRecord, DrillResult, SnapshotRef};
use crate::{DrillError, Result};

/// How many failing files a message names before it only counts the rest.
const NAMED: usize = 10;

/// Where and how to run a volume drill.
#[derive(Debug, Clone, Default)]
pub struct VolumeOptions {
    /// The drill's name (made safe with [`crate::safe_name`]).
    pub name: String,
    /// Directory in which the scratch directory is made (the system's temporary
    /// directory if not given). The scratch directory is removed afterwards.
    pub scratch: Option<PathBuf>,
    /// Keep the scratch directory (its path is the record's target).
    pub keep: bool,
}

/// A regular file of the snapshot: where it is restored and its node.
struct FileToCheck {
    /// Its path inside the snapshot (`/a/b`).
    path: String,
    /// Where it was restored.
    restored: PathBuf,
    node: Node,
}

/// Every regular file below tree `tree`, whose path inside the snapshot is `prefix`,
/// restored under `dir`.
fn collect_files(
    repo: &Repository,
    index: &MasterIndex,
    tree: &Id,
    prefix: &str,
    dir: &Path,
    out: &mut Vec<FileToCheck>,
) -> Result<()> {
    let t = repo.load_tree(index, tree)?;
    for node in t.nodes {
        let name = String::from_utf8_lossy(&node.name).into_owned();
        let path = format!("{prefix}/{name}");
        let restored = dir.join(std::ffi::OsStr::from_bytes(&node.name));
        match node.kind {
            NodeKind::Dir => {
                if let Some(sub) = node.subtree {
                    collect_files(repo, index, &sub, &path, &restored, out)?;
                }
            }
            NodeKind::File => out.push(FileToCheck {
                path,
                restored,
                node,
            }),
            _ => {}
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, or as many as there are.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Checks one restored file against its tree entry; `Err` says what does not match.
fn verify_file(repo: &Repository, index: &MasterIndex, f: &FileToCheck) -> Result<(), String> {
    let file = File::open(&f.restored).map_err(|e| format!("cannot be opened: {e}"))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut at = 0u64;
    let mut buf = Vec::new();
    for c in &f.node.content {
        match c {
            ContentRef::Blob(id) => {
                let len = index
                    .get(BlobType::Data, id)
                    .map(|l| l.entry.raw_len as usize)
                    .ok_or_else(|| format!("blob {} is not in the index", id.short()))?;
                buf.resize(len, 0);
                let got = read_full(&mut r, &mut buf).map_err(|e| format!("read failed: {e}"))?;
                if got < len {
                    return Err(format!(
                        "is shorter than the snapshot's {} bytes ({} bytes)",
                        f.node.size,
                        at + got as u64
                    ));
                }
                if repo.key().blob_id(&buf) != *id {
                    return Err(format!(
                        "bytes {at}..{} do not hash to blob {}",
                        at + len as u64,
                        id.short()
                    ));
                }
                at += len as u64;
            }
            ContentRef::Zeros(n) => {
                let mut left = *n;
                while left > 0 {
                    let k = left.min(1 << 20) as usize;
                    buf.resize(k, 0);
                    let got = read_full(&mut r, &mut buf[..k])
                        .map_err(|e| format!("read failed: {e}"))?;
                    if got < k {
                        return Err(format!(
                            "is shorter than the snapshot's {} bytes ({} bytes)",
                            f.node.size,
                            at + got as u64
                        ));
                    }
                    if let Some(i) = buf[..k].iter().position(|&b| b != 0) {
                        return Err(format!("byte {} should be zero", at + i as u64));
                    }
                    at += k as u64;
                    left -= k as u64;
                }
            }
        }
    }
    let mut one = [0u8; 1];
    if read_full(&mut r, &mut one).map_err(|e| format!("read failed: {e}"))? > 0 {
        return Err(format!(
            "is longer than the snapshot's {} bytes",
            f.node.size
        ));
    }
    Ok(())
}

/// For a file that does not match after a failed restore: whether its data can be read
/// from the repository at all (`Some(why)` when a blob of it cannot: the damage is there,
/// not a restore that stopped before reaching it).
fn unreadable_blob(repo: &Repository, index: &MasterIndex, node: &Node) -> Option<String> {
    node.content.iter().find_map(|c| match c {
        ContentRef::Blob(id) => repo.read_blob(index, BlobType::Data, id).err().map(|e| {
            format!(
                "its blob {} cannot be read from the repository: {e}",
                id.short()
            )
        }),
        ContentRef::Zeros(_) => None,
    })
}

/// Removes a restored tree. A snapshot may hold read-only directories, restored read-only,
/// which a process without root cannot empty: on failure, every directory is made
/// writable by its owner and the removal tried again.
fn remove_scratch(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn open_up(dir: &Path) {
        if let Ok(m) = std::fs::symlink_metadata(dir) {
            if m.is_dir() {
                let mode = m.permissions().mode() | 0o700;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
                for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    if std::fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    open_up(dir);
    std::fs::remove_dir_all(dir)
}

/// `a (why); b (why); and 3 more` of failing files.
fn name_files(bad: &[(String, String)]) -> String {
    let mut s = bad
        .iter()
        .take(NAMED)
        .map(|(p, why)| format!("{p} {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    if bad.len() > NAMED {
        s.push_str(&format!("; and {} more", bad.len() - NAMED));
    }
    s
}

/// Runs the volume drill on snapshot `id` and returns its record (not yet stored: see
/// [`crate::record::store`]). A restore or verification failure is a failed drill, not an
/// error; errors are what keeps the drill from running (no scratch directory, an
/// unreadable snapshot tree).
pub fn run(
    repo: &Repository,
    id: Id,
    snap: &Snapshot,
    opts: &VolumeOptions,
) -> Result<DrillRecord> {
    let started_ns = holdfast_engine::backup::now_ns();
    let started = Instant::now();
    let scratch = crate::scratch_dir(opts.scratch.as_deref(), "holdfast-drill-")?;
    let target = scratch.path().to_path_buf();
    let mut rec = DrillRecord {
        kind: "volume".into(),
        name: crate::safe_name(&opts.name),
        started: rfc3339(started_ns),
        duration_s: 0.0,
        snapshot: SnapshotRef::of(&id, snap),
        target: target.display().to_string(),
        checks: Vec::new(),
        files_restored: 0,
        bytes_restored: 0,
        restore_s: 0.0,
        bytes_per_s: 0.0,
        result: DrillResult::Fail,
        failure: None,
        program_version: holdfast_engine::backup::program_version(),
    };

    // The restore, timed: the RTO figure.
    let ropts = RestoreOptions {
        target: target.clone(),
        subpath: None,
        includes: Default::default(),
        excludes: Default::default(),
        owners: holdfast_engine::fsmeta::is_root(),
    };
    let t0 = Instant::now();
    let restored = restorer::restore_snapshot(repo, id, snap, &ropts, &RestoreProgress::default());
    rec.restore_s = t0.elapsed().as_secs_f64();
    let restore_failed = match &restored {
        Ok(r) => {
            rec.files_restored = r.summary.files;
            rec.bytes_restored = r.summary.bytes;
            rec.bytes_per_s = r.summary.bytes as f64 / rec.restore_s.max(1e-9);
            let complete = r.is_complete();
            rec.checks.push(CheckOutcome {
                name: "restore".into(),
                passed: complete,
                detail: if complete {
                    format!(
                        "{} files, {} bytes in {:.3} s",
                        r.summary.files, r.summary.bytes, rec.restore_s
                    )
                } else {
                    format!("incomplete: {}", r.summary.warnings.join("; "))
                },
            });
            false
        }
        Err(e) => {
            rec.checks.push(CheckOutcome {
                name: "restore".into(),
                passed: false,
                detail: format!("failed: {e}"),
            });
            true
        }
    };

    // Every file re-read and re-hashed, whatever the restore said: after a failed restore
    // this names the files whose data is damaged.
    let index = repo.load_index()?;
    let mut files = Vec::new();
    collect_files(repo, &index, &snap.tree, "", &target, &mut files)?;
    let mut bad = Vec::new();
    let mut bytes = 0u64;
    for f in &files {
        bytes += f.node.size;
        if let Err(why) = verify_file(repo, &index, f) {
            let why = if restore_failed {
                match unreadable_blob(repo, &index, &f.node) {
                    Some(damage) => format!("is damaged: {damage}"),
                    // Not damaged: the restore stopped before writing it; not named.
                    None => continue,
                }
            } else {
                why
            };
            bad.push((f.path.clone(), why));
        }
    }
    rec.checks.push(CheckOutcome {
        name: "content".into(),
        passed: bad.is_empty() && !restore_failed,
        detail: if bad.is_empty() && !restore_failed {
            format!(
                "{} files, {bytes} bytes re-read and matched against their blob IDs",
                files.len()
            )
        } else if bad.is_empty() {
            "not verified: the restore failed, and every blob can still be read (see the \
             restore check)"
                .into()
        } else {
            format!(
                "{} of {} files do not match the snapshot: {}",
                bad.len(),
                files.len(),
                name_files(&bad)
            )
        },
    });

    // The snapshot's own counts.
    let s = &snap.summary;
    let want_files = s.files_new + s.files_changed + s.files_unchanged;
    let counts_ok = want_files == files.len() as u64 && s.bytes_total == bytes;
    rec.checks.push(CheckOutcome {
        name: "counts".into(),
        passed: counts_ok,
        detail: format!(
            "the trees hold {} files and {bytes} bytes; the snapshot's summary says {want_files} \
             files and {} bytes",
            files.len(),
            s.bytes_total
        ),
    });

    rec.conclude();
    if restore_failed && !bad.is_empty() {
        // Which files the damage touches says more than which blob stopped the restore:
        // lead with them.
        let (restore, content) = (&rec.checks[0], &rec.checks[1]);
        rec.failure = Some(format!(
            "{}: {} (the restore stopped: {})",
            content.name, content.detail, restore.detail
        ));
    }
    if opts.keep {
        let kept = scratch.keep();
        rec.target = kept.display().to_string();
    } else {
        let dir = scratch.keep();
        remove_scratch(&dir).map_err(|source| DrillError::Io {
            what: "remove the scratch directory",
            path: dir,
            source,
        })?;
    }
    rec.duration_s = started.elapsed().as_secs_f64();
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn scratch_with_read_only_directories_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("scratch");
        std::fs::create_dir_all(dir.join("ro/sub")).unwrap();
        std::fs::write(dir.join("ro/sub/f"), b"x").unwrap();
        for d in ["ro/sub", "ro"] {
            std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_scratch(&dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn failing_files_are_named_up_to_a_limit() {
        let bad: Vec<(String, String)> = (0..12)
            .map(|i| (format!("/f{i}"), "differs".to_string()))
            .collect();
        let s = name_files(&bad);
        assert!(s.starts_with("/f0 differs; /f1 differs"), "{s}");
        assert!(s.ends_with("; and 2 more"), "{s}");
    }
}
