//! A hostile repository cannot make restore write outside the target: trees with `..`,
//! `/`-containing or duplicate names are refused before anything is written, and existing
//! symlinks in the target are replaced, never followed.

mod common;

use std::path::Path;

use common::repo;

use holdfast_engine::restorer::{restore, RestoreOptions, RestoreProgress};
use holdfast_repo::blob::{BlobType, CompressionLevel};
use holdfast_repo::blob_store::BlobStore;
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::{ContentRef, Node, NodeKind, Tree};
use holdfast_repo::Id;

/// Stores raw tree bytes (bypassing the encoder's checks, as an attacker with the key could).
fn store_raw_tree(repo: &Repository, bytes: &[u8]) -> Id {
    let writer = repo.begin_write("h").unwrap();
    let store = BlobStore::new(&writer, CompressionLevel::default());
    let id = store.id_of(bytes);
    store.add(BlobType::Tree, id, bytes).unwrap();
    store.flush().unwrap();
    id
}

fn file_node(name: &str, repo: &Repository, data: &[u8]) -> Node {
    let writer = repo.begin_write("h").unwrap();
    let store = BlobStore::new(&writer, CompressionLevel::default());
    let id = store.id_of(data);
    store.add(BlobType::Data, id, data).unwrap();
    store.flush().unwrap();
    let mut n = Node::new(name, NodeKind::File);
    n.mode = 0o644;
    n.size = data.len() as u64;
    n.content = vec![ContentRef::Blob(id)];
    n
}

fn opts(target: &Path) -> RestoreOptions {
    common::restore_options(target)
}

#[test]
fn dot_dot_and_slash_names_are_refused_and_nothing_escapes() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let target = d.path().join("target");
    for evil in [&b".."[..], b"x/../../escaped", b"/abs"] {
        // Encode a tree with a same-length safe name, then patch the name bytes in.
        let safe: Vec<u8> = vec![b'a'; evil.len()];
        let t = Tree {
            nodes: vec![file_node(
                std::str::from_utf8(&safe).unwrap(),
                &r,
                b"payload",
            )],
        };
        let mut bytes = t.encode().unwrap();
        let pos = bytes
            .windows(safe.len())
            .position(|w| w == &safe[..])
            .unwrap();
        bytes[pos..pos + evil.len()].copy_from_slice(evil);
        let root = store_raw_tree(&r, &bytes);
        let index = r.load_index().unwrap();
        let err = restore(
            &r,
            &index,
            &root,
            &opts(&target),
            &RestoreProgress::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tree"), "{err}");
    }
    assert!(!d.path().join("escaped").exists());
    assert!(!Path::new("/abs").exists());
    // Nothing at all was written into the target either.
    let written: Vec<_> = std::fs::read_dir(&target)
        .map(|r| r.collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "{written:?}");
}

#[test]
fn existing_symlinks_in_the_target_are_replaced_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();
    let target = d.path().join("target");
    std::fs::create_dir(&target).unwrap();
    // The target already holds links pointing outside, where the snapshot has a dir and a file.
    std::os::unix::fs::symlink(&outside, target.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), target.join("victim")).unwrap();

    let inner = Tree {
        nodes: vec![file_node("victim", &r, b"restored")],
    };
    let inner_id = store_raw_tree(&r, &inner.encode().unwrap());
    let mut dir = Node::new("dir", NodeKind::Dir);
    dir.mode = 0o755;
    dir.subtree = Some(inner_id);
    let root = Tree {
        nodes: vec![dir, file_node("victim", &r, b"restored")],
    };
    let root_id = store_raw_tree(&r, &root.encode().unwrap());
    let index = r.load_index().unwrap();
    restore(
        &r,
        &index,
        &root_id,
        &opts(&target),
        &RestoreProgress::default(),
    )
    .unwrap();

    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original");
    assert!(std::fs::symlink_metadata(target.join("dir"))
        .unwrap()
        .is_dir());
    assert!(std::fs::symlink_metadata(target.join("victim"))
        .unwrap()
        .is_file());
    assert_eq!(
        std::fs::read(target.join("dir/victim")).unwrap(),
        b"restored"
    );
    assert_eq!(std::fs::read(target.join("victim")).unwrap(), b"restored");
}

#[test]
fn content_that_does_not_add_up_to_the_size_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let mut n = file_node("f", &r, b"12345");
    n.size = 99;
    let root = store_raw_tree(&r, &Tree { nodes: vec![n] }.encode().unwrap());
    let index = r.load_index().unwrap();
    let err = restore(
        &r,
        &index,
        &root,
        &opts(&d.path().join("t")),
        &RestoreProgress::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("size"), "{err}");
}
