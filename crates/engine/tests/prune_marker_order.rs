//! The order of a sweep's deletions (SPEC.md §12.3 sweep step 6): the markers it handled
//! are deleted, and confirmed, before the rescue marker that supersedes them. A batch
//! delete has no order on S3 and may partly fail; with the rescue marker gone first, a
//! surviving old marker would mark the rescued packs again. Observed through a backend that
//! records every deletion.

mod common;

use std::sync::{Arc, Mutex};

use holdfast_engine::prune::{prune, PruneOptions, INDEX_FILE_ENTRIES};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::backend::{Backend, FileKind};
use holdfast_repo::gc::{GcMarker, Role};
use holdfast_repo::repository::Repository;
use holdfast_repo::{Id, Result};

use common::{repo, run_backup};

/// A local backend that records each delete call: its kind and the names it deleted.
#[derive(Debug)]
struct Recording {
    inner: LocalBackend,
    deletes: Mutex<Vec<(FileKind, Vec<Id>)>>,
}

impl Backend for Recording {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        self.inner.list(kind)
    }
    fn list_modified(&self, kind: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>> {
        self.inner.list_modified(kind)
    }
    fn modified(&self, kind: FileKind, id: &Id) -> Result<Option<i64>> {
        self.inner.modified(kind, id)
    }
    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        self.inner.read(kind, id)
    }
    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(kind, id, offset, len)
    }
    fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        self.inner.size(kind, id)
    }
    fn write(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<()> {
        self.inner.write(kind, id, bytes)
    }
    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.deletes.lock().unwrap().push((kind, vec![*id]));
        self.inner.remove(kind, id)
    }
    fn remove_many(&self, kind: FileKind, ids: &[Id]) -> Result<()> {
        if !ids.is_empty() {
            self.deletes.lock().unwrap().push((kind, ids.to_vec()));
        }
        ids.iter().try_for_each(|id| self.inner.remove(kind, id))
    }
}

/// Backs up a small tree and deletes its snapshot file: every pack is garbage. Returns them.
fn garbage_packs(r: &Repository, dir: &std::path::Path, src: &std::path::Path) -> Vec<Id> {
    std::fs::create_dir_all(src).unwrap();
    std::fs::write(src.join("g"), vec![3u8; 300_000]).unwrap();
    let gone = run_backup(r, src, None, 1);
    std::fs::remove_file(dir.join(FileKind::Snapshot.path(&gone.id))).unwrap();
    r.backend()
        .list(FileKind::Pack)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn options() -> PruneOptions {
    PruneOptions {
        dry_run: false,
        margin_ns: 0,
        max_unused: 0.05,
        host: "pruner".into(),
        index_file_entries: INDEX_FILE_ENTRIES,
    }
}

#[test]
fn rescue_marker_is_deleted_after_the_markers_it_supersedes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("repo");
    let r = repo(&dir);
    let (keep, gone) = (d.path().join("keep"), d.path().join("gone"));
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::write(keep.join("k"), vec![7u8; 300_000]).unwrap();
    std::fs::write(gone.join("g"), vec![9u8; 300_000]).unwrap();
    let kept = run_backup(&r, &keep, None, 1);
    let forgotten = run_backup(&r, &gone, None, 2);
    // Forget both, keeping the first snapshot's file aside; mark their packs.
    let snap = |id: &Id| dir.join(FileKind::Snapshot.path(id));
    let saved = std::fs::read(snap(&kept.id)).unwrap();
    std::fs::remove_file(snap(&kept.id)).unwrap();
    std::fs::remove_file(snap(&forgotten.id)).unwrap();
    let first = prune(&r, &options()).unwrap();
    assert!(first.packs_marked >= 2, "{first:?}");
    // The first snapshot comes back (a backup that was running at the mark and finished):
    // its packs must be rescued, the others deleted.
    std::fs::write(snap(&kept.id), saved).unwrap();
    let markers_before: Vec<Id> = r
        .backend()
        .list(FileKind::GcMarker)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    drop(r);

    let rec = Arc::new(Recording {
        inner: LocalBackend::new(&dir),
        deletes: Mutex::new(Vec::new()),
    });
    let r = Repository::open(rec.clone(), b"pw").unwrap();
    let sweep = prune(&r, &options()).unwrap();
    assert!(sweep.packs_rescued >= 1, "{sweep:?}");
    assert!(sweep.packs_deleted >= 1, "{sweep:?}");
    let deletes = rec.deletes.lock().unwrap().clone();
    let marker_calls: Vec<&Vec<Id>> = deletes
        .iter()
        .filter(|(k, _)| *k == FileKind::GcMarker)
        .map(|(_, ids)| ids)
        .collect();
    let old_at = marker_calls
        .iter()
        .position(|ids| ids.iter().any(|id| markers_before.contains(id)))
        .expect("the swept markers were deleted");
    let rescue_at = marker_calls
        .iter()
        .position(|ids| ids.iter().any(|id| !markers_before.contains(id)))
        .expect("the rescue marker was deleted");
    assert!(
        old_at < rescue_at,
        "the rescue marker went before (or with) the markers it supersedes: {marker_calls:?}"
    );
    assert!(
        marker_calls[rescue_at]
            .iter()
            .all(|id| !markers_before.contains(id)),
        "the rescue marker was deleted in one batch with an old marker: {marker_calls:?}"
    );
    // And the data the returned snapshot needs is all there.
    let opts = holdfast_engine::checker::CheckOptions {
        read_data: holdfast_engine::checker::ReadData::All,
        read_threads: 0,
    };
    let report = holdfast_engine::checker::check(&r, &opts, &Default::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
}

/// A marker left behind by a prune that stopped before its step 6, superseded by a rescue
/// marker that is swept now: the old one goes first (SPEC.md §7.2), or it would come back
/// to life when its superseder is gone, with its old time, marking the rescued packs again.
#[test]
fn leftover_superseded_marker_is_deleted_before_its_superseder() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("repo");
    let r = repo(&dir);
    let packs = garbage_packs(&r, &dir, &d.path().join("src"));
    let session = r.start_session(Role::Prune, "p").unwrap();
    let old = r
        .save_gc_marker(
            &session,
            &GcMarker {
                mark_ns: 1,
                supersedes: vec![],
                packs: packs.clone(),
            },
        )
        .unwrap();
    let rescue = r
        .save_gc_marker(
            &session,
            &GcMarker {
                mark_ns: 1,
                supersedes: vec![old],
                packs,
            },
        )
        .unwrap();
    drop(session);
    drop(r);
    let rec = Arc::new(Recording {
        inner: LocalBackend::new(&dir),
        deletes: Mutex::new(Vec::new()),
    });
    let r = Repository::open(rec.clone(), b"pw").unwrap();
    let sweep = prune(&r, &options()).unwrap();
    assert!(sweep.packs_deleted >= 1, "{sweep:?}");
    let deletes = rec.deletes.lock().unwrap().clone();
    let at = |m: &Id| {
        deletes
            .iter()
            .position(|(k, ids)| *k == FileKind::GcMarker && ids.contains(m))
            .unwrap_or_else(|| panic!("marker {m} was not deleted: {deletes:?}"))
    };
    assert!(
        at(&old) < at(&rescue),
        "the superseding marker went before (or with) the one it supersedes: {deletes:?}"
    );
}

/// A marker whose write landed long after the time written in it (the prune was stopped
/// between reading its clock and the write): writers that started meanwhile could not see
/// it, so the sweep waits for them, counting from the landing (SPEC.md §12.3 step 1).
#[test]
fn sweep_waits_for_writers_that_started_before_a_late_marker_landed() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("repo");
    let r = repo(&dir);
    let packs = garbage_packs(&r, &dir, &d.path().join("src"));
    // A backup that started during the prune's stop, before the marker landed.
    let writer = r.begin_write("w").unwrap();
    let two_hours_ago = holdfast_engine::session::now_ns() - 7200 * 1_000_000_000;
    let session = r.start_session(Role::Prune, "p").unwrap();
    r.save_gc_marker(
        &session,
        &GcMarker {
            mark_ns: two_hours_ago,
            supersedes: vec![],
            packs,
        },
    )
    .unwrap();
    drop(session);
    let held = prune(&r, &options()).unwrap();
    assert_eq!(held.packs_deleted, 0, "{held:?}");
    assert_eq!(held.sweep_postponed.len(), 1, "{held:?}");
    drop(writer);
    let swept = prune(&r, &options()).unwrap();
    assert!(swept.packs_deleted >= 1, "{swept:?}");
}
