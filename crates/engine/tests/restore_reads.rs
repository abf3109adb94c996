//! Restore reads each pack once, in spans, not blob by blob: counted through a backend
//! that records every ranged read. Identical files (one blob written to several places)
//! and sparse content restore byte-identical.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use holdfast_engine::restorer::{dump, lookup, restore, RestoreProgress};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::backend::{Backend, FileKind};
use holdfast_repo::blob::BlobType;
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::ContentRef;
use holdfast_repo::{Id, Result};
use rand::{RngCore, SeedableRng};

use common::{repo, restore_options, restored, run_backup};

/// A local backend that records the ranged reads of packs.
#[derive(Debug)]
struct Counting {
    inner: LocalBackend,
    pack_reads: Mutex<Vec<Id>>,
}

impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        self.inner.list(kind)
    }
    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        self.inner.read(kind, id)
    }
    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u64) -> Result<Vec<u8>> {
        if kind == FileKind::Pack {
            self.pack_reads.lock().unwrap().push(*id);
        }
        self.inner.read_range(kind, id, offset, len)
    }
    fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        self.inner.size(kind, id)
    }
    fn write(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<()> {
        self.inner.write(kind, id, bytes)
    }
    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.inner.remove(kind, id)
    }
}

/// The repository at `dir`, opened through a [`Counting`] backend.
fn counting_repo(dir: &std::path::Path) -> (Arc<Counting>, Repository) {
    let counting = Arc::new(Counting {
        inner: LocalBackend::new(dir),
        pack_reads: Mutex::new(Vec::new()),
    });
    let r = Repository::open(counting.clone(), b"pw").unwrap();
    (counting, r)
}

/// A sparse file: "head", a hole, "tail" at `tail_at`.
fn write_sparse(path: &std::path::Path, tail_at: u64) {
    let f = std::fs::File::create(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"head", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tail", tail_at).unwrap();
}

#[test]
fn restore_reads_each_pack_once() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("repo");
    let r = repo(&dir);
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("same")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for i in 0..300 {
        let mut b = vec![0u8; 20_000];
        rng.fill_bytes(&mut b);
        std::fs::write(src.join(format!("f{i:03}")), b).unwrap();
    }
    // Identical files: one blob, several places.
    for i in 0..5 {
        std::fs::write(
            src.join(format!("same/{i}")),
            b"the same bytes\n".repeat(100),
        )
        .unwrap();
    }
    // A sparse file: data, a hole, data.
    write_sparse(&src.join("sparse"), 64 << 20);
    let snap = run_backup(&r, &src, None, 1).snapshot;

    let (counting, r) = counting_repo(&dir);
    let index = r.load_index().unwrap();
    // The data packs this snapshot's files use.
    let tree = r.load_tree(&index, &snap.tree).unwrap();
    let mut data_packs = HashSet::new();
    let mut todo = vec![tree];
    while let Some(t) = todo.pop() {
        for n in t.nodes {
            for c in &n.content {
                if let ContentRef::Blob(id) = c {
                    data_packs.insert(index.get(BlobType::Data, id).unwrap().pack);
                }
            }
            if let Some(s) = n.subtree {
                todo.push(r.load_tree(&index, &s).unwrap());
            }
        }
    }
    assert!(data_packs.len() >= 5, "{} data packs", data_packs.len());
    counting.pack_reads.lock().unwrap().clear();

    let target = d.path().join("t");
    restore(
        &r,
        &index,
        &snap.tree,
        &restore_options(&target),
        &RestoreProgress::default(),
    )
    .unwrap();
    let mut reads: HashMap<Id, usize> = HashMap::new();
    for p in counting.pack_reads.lock().unwrap().iter() {
        if data_packs.contains(p) {
            *reads.entry(*p).or_default() += 1;
        }
    }
    // Packs of 1 MiB: one span each.
    assert_eq!(reads.len(), data_packs.len());
    assert!(
        reads.values().all(|n| *n == 1),
        "data pack reads: {:?}",
        reads.values().collect::<Vec<_>>()
    );

    let out = restored(&target, &src);
    for e in walkdir(&src) {
        let rel = e.strip_prefix(&src).unwrap();
        assert_eq!(
            std::fs::read(&e).unwrap(),
            std::fs::read(out.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
    // The hole stayed a hole.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(out.join("sparse")).unwrap();
    assert_eq!(m.len(), (64 << 20) + 4);
    assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
}

/// Every file below `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `dump` writes a file's exact bytes in order (data, holes, a large file of many chunks
/// read window by window in parallel), reading each blob once.
#[test]
fn dump_writes_content_in_order() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("repo");
    let r = repo(&dir);
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    // Far more than one dump window, in chunks of about 1 MiB.
    let mut big = vec![0u8; 70 << 20];
    rng.fill_bytes(&mut big);
    std::fs::write(src.join("big"), &big).unwrap();
    write_sparse(&src.join("sparse"), 9 << 20);
    let snap = run_backup(&r, &src, None, 1).snapshot;

    let (counting, r) = counting_repo(&dir);
    let index = r.load_index().unwrap();
    for name in ["big", "sparse"] {
        let path = src.join(name);
        let node = lookup(&r, &index, &snap.tree, path.as_os_str().as_encoded_bytes())
            .unwrap()
            .unwrap();
        let blobs = node
            .content
            .iter()
            .filter(|c| matches!(c, ContentRef::Blob(_)))
            .count();
        counting.pack_reads.lock().unwrap().clear();
        let mut out = Vec::new();
        let n = dump(&r, &index, &node, &mut out).unwrap();
        let want = std::fs::read(&path).unwrap();
        assert_eq!(n, want.len() as u64, "{name}");
        assert!(out == want, "{name}: dumped bytes differ");
        assert_eq!(
            counting.pack_reads.lock().unwrap().len(),
            blobs,
            "{name}: one read per blob"
        );
    }
}
