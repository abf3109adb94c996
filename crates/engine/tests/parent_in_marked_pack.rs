//! A parent snapshot whose trees sit in packs marked for deletion (a prune marked them in
//! the race SPEC.md §12.3 allows: it computed the live set before that snapshot was
//! written) is normal beside a prune: the next backup reads the files again and stores
//! what it needs outside the marked packs, exits cleanly (no source error: exit status 3
//! is for unread files) and says why it read everything.

mod common;

use holdfast_repo::blob::BlobType;
use holdfast_repo::gc::{GcMarker, Role};

use common::{repo, run_backup};

#[test]
fn parent_tree_in_a_marked_pack_is_a_notice_not_an_error() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"hello").unwrap();
    let first = run_backup(&r, &src, None, 1);
    assert!(first.warnings.is_empty() && first.notices.is_empty());
    // Mark every pack holding a tree.
    let index = r.load_index().unwrap();
    let tree_pack = index
        .get(BlobType::Tree, &first.snapshot.tree)
        .unwrap()
        .pack;
    let prune = r.start_session(Role::Prune, "p").unwrap();
    r.save_gc_marker(
        &prune,
        &GcMarker {
            mark_ns: 0,
            supersedes: vec![],
            packs: vec![tree_pack],
        },
    )
    .unwrap();
    drop(prune);

    let second = run_backup(&r, &src, Some(first.id), 2);
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    assert_eq!(second.snapshot.summary.errors, 0);
    assert!(
        second
            .notices
            .iter()
            .any(|n| n.contains("parent tree") && n.contains("reading the files below it again")),
        "{:?}",
        second.notices
    );
    // Its trees were stored again, outside the marked pack.
    let writer = r.begin_write("h").unwrap();
    assert!(writer
        .index()
        .contains(BlobType::Tree, &second.snapshot.tree));
}
