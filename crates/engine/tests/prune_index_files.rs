//! Prune writes index files of bounded size (so neither it nor any later reader needs the
//! whole index decoded at once), and a repository pruned that way stays whole: check with
//! full data read passes and the remaining snapshot restores byte-identical.

mod common;

use std::collections::HashSet;

use holdfast_engine::checker::{check, CheckOptions, CheckProgress, ReadData};
use holdfast_engine::prune::{prune, PruneOptions};
use holdfast_engine::restorer::{restore, RestoreProgress};
use holdfast_repo::backend::FileKind;
use holdfast_repo::repository::Repository;
use holdfast_repo::Id;
use rand::{RngCore, SeedableRng};

use common::{repo, restore_options, restored, run_backup};

/// Index entries per file prune may write in this test (the real default is 200,000).
const MAX_ENTRIES: usize = 10;

/// `check --read-data` finds nothing wrong.
fn check_reads_everything_cleanly(r: &Repository) {
    let options = CheckOptions {
        read_data: ReadData::All,
        read_threads: 0,
    };
    let report = check(r, &options, &CheckProgress::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
}

fn index_names(r: &Repository) -> HashSet<Id> {
    r.backend()
        .list(FileKind::Index)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

fn prune_now(r: &Repository) -> holdfast_engine::prune::PruneReport {
    let opts = PruneOptions {
        dry_run: false,
        margin_ns: 0,
        max_unused: 0.0,
        host: "h".into(),
        index_file_entries: MAX_ENTRIES,
    };
    prune(r, &opts).unwrap()
}

#[test]
fn prune_writes_small_index_files_and_keeps_the_repository_whole() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut put = |name: String| {
        let mut b = vec![0u8; 20_000];
        rng.fill_bytes(&mut b);
        std::fs::write(src.join(name), b).unwrap();
    };
    for i in 0..200 {
        put(format!("a{i:03}"));
    }
    run_backup(&r, &src, None, 1);
    // Day two: every other file gone, 100 new ones: old packs become partly used.
    for i in (0..200).step_by(2) {
        std::fs::remove_file(src.join(format!("a{i:03}"))).unwrap();
    }
    for i in 0..100 {
        put(format!("b{i:03}"));
    }
    let keep = run_backup(&r, &src, None, 2).snapshot;
    // Forget the first snapshot.
    let (snaps, _) = r.snapshots().unwrap();
    let first = snaps.iter().find(|(_, s)| s.time_ns == 1).unwrap().0;
    r.backend().remove(FileKind::Snapshot, &first).unwrap();

    // Mark and repack, then sweep: both write index files.
    let before = index_names(&r);
    let mark = prune_now(&r);
    assert!(mark.packs_repacked > 0, "{mark:?}");
    assert!(mark.blobs_repacked > MAX_ENTRIES, "{mark:?}");
    let sweep = prune_now(&r);
    assert!(sweep.packs_deleted > 0, "{sweep:?}");
    assert!(sweep.index_files_superseded > 0, "{sweep:?}");
    let after = index_names(&r);
    let written: Vec<Id> = after.difference(&before).copied().collect();
    assert!(
        written.len() >= 3,
        "prune wrote {} index files",
        written.len()
    );
    for id in &written {
        let f = r.load_index_file(id).unwrap();
        let total: usize = f.packs.iter().map(|p| p.blobs.len()).sum();
        let largest = f.packs.iter().map(|p| p.blobs.len()).max().unwrap_or(0);
        assert!(
            total < MAX_ENTRIES + largest,
            "index file {} has {total} entries (largest pack {largest})",
            id.short()
        );
    }

    check_reads_everything_cleanly(&r);
    let index = r.load_index().unwrap();
    let target = d.path().join("t");
    restore(
        &r,
        &index,
        &keep.tree,
        &restore_options(&target),
        &RestoreProgress::default(),
    )
    .unwrap();
    let restored = restored(&target, &src);
    let mut n = 0;
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            std::fs::read(e.path()).unwrap(),
            std::fs::read(restored.join(e.file_name())).unwrap(),
            "{:?}",
            e.file_name()
        );
        n += 1;
    }
    assert_eq!(n, 200);
}

/// Many small index files (one per backup) are merged by prune into one; every snapshot
/// still restores and check passes.
#[test]
fn prune_compacts_many_small_index_files() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut snaps = Vec::new();
    for i in 0..10 {
        std::fs::write(src.join(format!("day{i}")), format!("day {i}\n").repeat(50)).unwrap();
        snaps.push(run_backup(&r, &src, None, i + 1).snapshot);
    }
    let before = index_names(&r);
    assert!(before.len() >= 10, "{} index files", before.len());
    let report = prune(
        &r,
        &PruneOptions {
            dry_run: false,
            margin_ns: 0,
            max_unused: 0.1,
            host: "h".into(),
            index_file_entries: holdfast_engine::prune::INDEX_FILE_ENTRIES,
        },
    )
    .unwrap();
    assert_eq!(report.index_files_compacted, before.len(), "{report:?}");
    let after = index_names(&r);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after.is_disjoint(&before));

    check_reads_everything_cleanly(&r);
    let index = r.load_index().unwrap();
    for (i, s) in snaps.iter().enumerate() {
        let target = d.path().join(format!("t{i}"));
        restore(
            &r,
            &index,
            &s.tree,
            &restore_options(&target),
            &RestoreProgress::default(),
        )
        .unwrap();
        let got = std::fs::read(restored(&target, &src).join(format!("day{i}"))).unwrap();
        assert_eq!(got, format!("day {i}\n").repeat(50).into_bytes());
    }
}
