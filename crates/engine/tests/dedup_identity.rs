//! A data chunk whose bytes equal an encoded tree has the same keyed hash as that tree;
//! it must still be stored and restored as data (blobs are identified by type and ID).

mod common;

use holdfast_engine::archiver::{backup, BackupProgress};
use holdfast_engine::backup::Lineage;
use holdfast_engine::restorer::{restore, RestoreProgress};
use holdfast_repo::tree::Tree;

use common::{backup_options, repo, restore_options, restored};

#[test]
fn file_equal_to_an_encoded_tree_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("empty")).unwrap();
    let tree_bytes = Tree::default().encode().unwrap();
    std::fs::write(src.join("looks-like-a-tree"), &tree_bytes).unwrap();
    let opts = backup_options(&src, 1);
    let writer = r.begin_write("h").unwrap();
    let out = backup(
        &writer,
        &opts,
        Lineage::default(),
        &BackupProgress::default(),
    )
    .unwrap();
    drop(writer);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let index = r.load_index().unwrap();
    let target = d.path().join("t");
    let ropts = restore_options(&target);
    restore(
        &r,
        &index,
        &out.snapshot.tree,
        &ropts,
        &RestoreProgress::default(),
    )
    .unwrap();
    let restored = restored(&target, &src);
    assert_eq!(
        std::fs::read(restored.join("looks-like-a-tree")).unwrap(),
        tree_bytes
    );
    assert!(restored.join("empty").is_dir());
}
