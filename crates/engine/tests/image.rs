//! Image sources and changed-extent backups (SPEC.md §10.4): a read around the changed
//! extents gives exactly the content refs of a full read of the new image, restores to its
//! bytes, and falls back to a full read (with a notice) when the base cannot be used.

use std::path::Path;
use std::sync::Arc;

use holdfast_chunker::{Chunker, ChunkerParams, GearTable};
use holdfast_engine::archiver::{backup, BackupOutcome, BackupProgress};
use holdfast_engine::backup::{BackupRequest, Lineage, ParentChoice, Source};
use holdfast_engine::image::{write_into, Extent, ImageBase};
use holdfast_engine::restorer::{dump, lookup};
use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::keyfile::KdfParams;
use holdfast_repo::repository::{InitOptions, Repository};
use holdfast_repo::tree::{ContentRef, Node};
use holdfast_repo::Id;
use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};

const MIN: u32 = 4 * 1024;
const AVG: u32 = 16 * 1024;
const MAX: u32 = 64 * 1024;
const RECORDED: &str = "/vol/disk";

/// A repository with small chunks, so that small images have many of them.
fn small_chunk_repo(dir: &Path) -> Repository {
    let opts = InitOptions {
        chunk: (MIN, AVG, MAX),
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

fn image_backup(r: &Repository, src: Source, time_ns: i64) -> BackupOutcome {
    let req = BackupRequest {
        host: "h".into(),
        user: "u".into(),
        time_ns,
        utc_offset_s: 0,
        program_version: "test".into(),
        parent: ParentChoice::None,
        ..BackupRequest::new(vec![src])
    };
    let writer = r.begin_write("h").unwrap();
    let out = backup(
        &writer,
        &req,
        Lineage::default(),
        &BackupProgress::default(),
    )
    .unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    out
}

fn node_of(r: &Repository, out: &BackupOutcome, path: &str) -> Node {
    let index = r.load_index().unwrap();
    lookup(r, &index, &out.snapshot.tree, path.as_bytes())
        .unwrap()
        .expect("recorded")
}

fn dumped(r: &Repository, node: &Node) -> Vec<u8> {
    let index = r.load_index().unwrap();
    let mut v = Vec::new();
    dump(r, &index, node, &mut v).unwrap();
    v
}

/// A full read of `img`, then a changed-extent read after `change` rewrote parts of it
/// (the extents given are `extents`). Returns the full read's and the incremental's
/// outcomes with the node of each, and a full read of the new image.
struct Pair {
    incremental: BackupOutcome,
    incremental_node: Node,
    full_node: Node,
}

fn backup_pair(dir: &Path, old: &[u8], new: &[u8], extents: Vec<Extent>) -> (Repository, Pair) {
    let r = small_chunk_repo(&dir.join("repo"));
    let img = dir.join("img");
    std::fs::write(&img, old).unwrap();
    let base = image_backup(&r, Source::image(&img, RECORDED), 1);
    std::fs::write(&img, new).unwrap();
    let incremental = image_backup(
        &r,
        Source::image(&img, RECORDED).changed_since(ImageBase {
            snapshot: base.id,
            extents,
        }),
        2,
    );
    let full = image_backup(&r, Source::image(&img, RECORDED), 3);
    let pair = Pair {
        incremental_node: node_of(&r, &incremental, RECORDED),
        full_node: node_of(&r, &full, RECORDED),
        incremental,
    };
    (r, pair)
}

fn random_bytes(rng: &mut impl RngCore, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

/// FastCDC as configured here decides a cut at position `p` from the bytes between the
/// chunk's start and `p` (inclusive) alone: chunking from any cut gives the same later
/// cuts, and bytes after a cut do not move it. This is what lets a changed-extent read
/// restart at a base boundary and resynchronise on one.
#[test]
fn chunk_boundaries_depend_only_on_bytes_from_the_chunk_start() {
    let chunker = Chunker::new(
        ChunkerParams {
            min: MIN,
            avg: AVG,
            max: MAX,
        },
        GearTable::from_key(&[7; 32]),
    )
    .unwrap();
    let cuts = |data: &[u8]| -> Vec<usize> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < data.len() {
            at += chunker.find_cut(&data[at..], true).unwrap();
            v.push(at);
        }
        v
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut data = random_bytes(&mut rng, 2 << 20);
    data[300_000..700_000].fill(0); // a zero run: cuts at max or on the zero grid
    let all = cuts(&data);
    assert!(all.len() > 40, "{}", all.len());
    for (i, &b) in all.iter().enumerate().take(all.len() - 1) {
        // From a cut: the same cuts after it.
        let later: Vec<usize> = cuts(&data[b..]).iter().map(|c| c + b).collect();
        assert_eq!(later, all[i + 1..], "restarting at {b}");
        // Changing every byte after a cut keeps it and all before it.
        let mut changed = data.clone();
        for x in &mut changed[b + 1..] {
            *x ^= 0x5a;
        }
        let c2 = cuts(&changed);
        assert_eq!(c2[..=i], all[..=i], "bytes after {b} moved an earlier cut");
    }
}

#[test]
fn changed_extents_read_little_and_equal_a_full_read() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut old = random_bytes(&mut rng, 16 << 20);
    old[4 << 20..9 << 20].fill(0); // never written
    let mut new = old.clone();
    // Three rewrites: one in data, one inside the zero area, one at the very end.
    let writes = [
        (1_000_000usize, 4096usize),
        (6 << 20, 65536),
        ((16 << 20) - 100, 100),
    ];
    for &(o, l) in &writes {
        rng.fill_bytes(&mut new[o..o + l]);
    }
    let extents: Vec<Extent> = writes
        .iter()
        .rev() // any order
        .map(|&(o, l)| Extent::new(o as u64, l as u64))
        .chain([Extent::new(1_002_000, 10)]) // overlapping
        .collect();
    let (r, p) = backup_pair(d.path(), &old, &new, extents);
    assert!(
        p.incremental.notices.is_empty(),
        "{:?}",
        p.incremental.notices
    );
    assert_eq!(p.incremental_node.content, p.full_node.content);
    assert_eq!(p.incremental_node.size, new.len() as u64);
    assert!(dumped(&r, &p.incremental_node) == new, "restore differs");
    let read = p.incremental.snapshot.summary.bytes_read;
    assert!(
        read < 2 << 20,
        "read {read} bytes of 16 MiB for 3 small changes"
    );
    assert!(read >= 4096 + 65536 + 100, "read {read}");
}

#[test]
fn no_extents_reads_nothing_and_reuses_everything() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let old = random_bytes(&mut rng, 3 << 20);
    let (r, p) = backup_pair(d.path(), &old, &old, vec![]);
    assert_eq!(p.incremental.snapshot.summary.bytes_read, 0);
    assert_eq!(p.incremental_node.content, p.full_node.content);
    assert!(dumped(&r, &p.incremental_node) == old);
}

#[test]
fn unusable_bases_fall_back_to_a_full_read_with_a_notice() {
    let d = tempfile::tempdir().unwrap();
    let r = small_chunk_repo(&d.path().join("repo"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let img = d.path().join("img");
    let old = random_bytes(&mut rng, 1 << 20);
    std::fs::write(&img, &old).unwrap();
    let base = image_backup(&r, Source::image(&img, RECORDED), 1);
    // A base of another size: the extents (none here) would claim nothing changed.
    let mut grown = old.clone();
    grown.extend_from_slice(&random_bytes(&mut rng, 1000));
    std::fs::write(&img, &grown).unwrap();
    let cases: Vec<(Id, &str, &str)> = vec![
        (base.id, RECORDED, "bytes"),
        (base.id, "/vol/other", "not in the snapshot"),
        (Id([9; 32]), RECORDED, "snapshot"),
    ];
    for (snap, recorded, why) in cases {
        let out = image_backup(
            &r,
            Source::image(&img, recorded).changed_since(ImageBase {
                snapshot: snap,
                extents: vec![],
            }),
            2,
        );
        assert_eq!(out.notices.len(), 1, "{:?}", out.notices);
        assert!(
            out.notices[0].contains("reading the whole image") && out.notices[0].contains(why),
            "{:?}",
            out.notices
        );
        assert_eq!(out.snapshot.summary.bytes_read, grown.len() as u64);
        assert!(dumped(&r, &node_of(&r, &out, recorded)) == grown);
    }
}

#[test]
fn image_of_a_regular_file_keeps_its_metadata_and_directories_above_are_synthetic() {
    let d = tempfile::tempdir().unwrap();
    let r = small_chunk_repo(&d.path().join("repo"));
    let img = d.path().join("img");
    std::fs::write(&img, vec![1u8; 100_000]).unwrap();
    let out = image_backup(&r, Source::image(&img, "/a/b/disk.img"), 5);
    let n = node_of(&r, &out, "/a/b/disk.img");
    let meta = std::fs::metadata(&img).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(n.size, 100_000);
    assert_eq!(n.mode, meta.mode() & 0o7777);
    assert_eq!(n.mtime_ns, meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
    let a = node_of(&r, &out, "/a");
    assert_eq!((a.mode, a.mtime_ns), (0o755, n.mtime_ns));
    assert_eq!(out.snapshot.paths, vec![b"/a/b/disk.img".to_vec()]);
    // A directory is not an image.
    let req = BackupRequest::new(vec![Source::image(d.path(), "/x")]);
    let writer = r.begin_write("h").unwrap();
    let out = backup(
        &writer,
        &req,
        Lineage::default(),
        &BackupProgress::default(),
    )
    .unwrap();
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(out.warnings[0].contains("not a block device or regular file"));
}

#[test]
fn write_into_overwrites_a_file_in_place_and_punches_holes() {
    let d = tempfile::tempdir().unwrap();
    let r = small_chunk_repo(&d.path().join("repo"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut data = random_bytes(&mut rng, 8 << 20);
    data[1 << 20..7 << 20].fill(0);
    let img = d.path().join("img");
    std::fs::write(&img, &data).unwrap();
    let out = image_backup(&r, Source::image(&img, RECORDED), 1);
    let node = node_of(&r, &out, RECORDED);
    assert!(node
        .content
        .iter()
        .any(|c| matches!(c, ContentRef::Zeros(n) if *n >= 5 << 20)));
    // A target full of other bytes, longer than the image.
    let target = d.path().join("target");
    std::fs::write(&target, vec![0xffu8; 9 << 20]).unwrap();
    let index = r.load_index().unwrap();
    let rep = write_into(&r, &index, &node, &target).unwrap();
    assert!(!rep.block_device);
    assert_eq!(rep.data_bytes + rep.zeroed_bytes, data.len() as u64);
    assert!(std::fs::read(&target).unwrap() == data, "target differs");
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&target).unwrap().blocks() * 512;
    assert!(
        blocks < 3 << 20,
        "zero runs were not punched: {blocks} bytes allocated"
    );
}

/// A generated case: the old image, the writes, extra extents that changed nothing, and a
/// seed for the new bytes.
type Case = (Vec<u8>, Vec<(usize, usize, u8)>, Vec<(usize, usize)>, u64);

/// An image and the writes made to it since: each write `(offset, len, kind)` with kind
/// 0 random bytes, 1 zeros, 2 the bytes already there (a change list may over-report).
fn image_and_writes() -> impl Strategy<Value = Case> {
    (1usize..700_000, any::<u64>()).prop_flat_map(|(size, seed)| {
        let write = (0..size, 1usize..200_000, 0u8..3);
        let extra = (0..size + 1000, 0usize..50_000);
        (
            Just(size),
            prop::collection::vec(write, 0..6),
            prop::collection::vec(extra, 0..3),
            Just(seed),
        )
            .prop_map(|(size, writes, extra, seed)| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                // Segments of random data, zeros and a repeated pattern.
                let mut img = Vec::with_capacity(size);
                while img.len() < size {
                    let n = rng.gen_range(1..150_000).min(size - img.len());
                    match rng.gen_range(0..3) {
                        0 => img.extend(random_bytes(&mut rng, n)),
                        1 => img.extend(std::iter::repeat_n(0u8, n)),
                        _ => img.extend((0..n).map(|i| (i % 251) as u8)),
                    }
                }
                (img, writes, extra, seed)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// Random images, random writes, the written ranges (plus some that did not change,
    /// out of order) as extents: the incremental restores to the new image and has the
    /// content refs a full read gives, so it deduplicates exactly like one.
    #[test]
    fn changed_extent_reads_equal_full_reads((old, writes, extra, seed) in image_and_writes()) {
        let d = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabc);
        let mut new = old.clone();
        let mut extents = Vec::new();
        for &(o, l, kind) in &writes {
            let end = (o + l).min(new.len());
            match kind {
                0 => rng.fill_bytes(&mut new[o..end]),
                1 => new[o..end].fill(0),
                _ => {}
            }
            extents.push(Extent::new(o as u64, l as u64)); // may reach past the end
        }
        extents.extend(extra.iter().map(|&(o, l)| Extent::new(o as u64, l as u64)));
        extents.reverse();
        let (r, p) = backup_pair(d.path(), &old, &new, extents);
        prop_assert!(p.incremental.notices.is_empty(), "{:?}", p.incremental.notices);
        prop_assert!(dumped(&r, &p.incremental_node) == new, "restore differs from the new image");
        prop_assert_eq!(&p.incremental_node.content, &p.full_node.content);
        prop_assert_eq!(p.incremental_node.size, new.len() as u64);
    }
}
