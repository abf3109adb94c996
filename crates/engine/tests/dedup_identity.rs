//! A data chunk whose bytes equal an encoded tree has the same keyed hash as that tree;
//! it must still be stored and restored as data (blobs are identified by type and ID).

use std::path::Path;
use std::sync::Arc;

use holdfast_engine::archiver::{backup, BackupOptions, BackupProgress};
use holdfast_engine::filter::PathFilter;
use holdfast_engine::restorer::{restore, RestoreOptions, RestoreProgress};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::blob::CompressionLevel;
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};
use holdfast_repo::tree::Tree;

fn repo(dir: &Path) -> Repository {
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

#[test]
fn file_equal_to_an_encoded_tree_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let r = repo(&d.path().join("repo"));
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("empty")).unwrap();
    let tree_bytes = Tree::default().encode().unwrap();
    std::fs::write(src.join("looks-like-a-tree"), &tree_bytes).unwrap();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        excludes: PathFilter::default(),
        one_file_system: false,
        parent: None,
        force: false,
        host: "h".into(),
        user: "u".into(),
        tags: vec![],
        time_ns: 1,
        utc_offset_s: 0,
        program_version: "test".into(),
        compression: CompressionLevel::default(),
    };
    let index = r.load_index().unwrap();
    let out = backup(&r, &index, &opts, &BackupProgress::default(), None).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let index = r.load_index().unwrap();
    let target = d.path().join("t");
    let ropts = RestoreOptions {
        target: target.clone(),
        subpath: None,
        includes: PathFilter::default(),
        excludes: PathFilter::default(),
        owners: false,
    };
    restore(
        &r,
        &index,
        &out.snapshot.tree,
        &ropts,
        &RestoreProgress::default(),
    )
    .unwrap();
    let restored = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(restored.join("looks-like-a-tree")).unwrap(),
        tree_bytes
    );
    assert!(restored.join("empty").is_dir());
}
