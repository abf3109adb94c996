//! The compact in-memory index: lookups of present and absent blobs, decoding an index
//! file into compact records, and building an index of 1M blobs from decoded files. Run
//! with `cargo bench -p holdfast-benches --bench index`; the 10-million-blob scale check
//! is `benches/bin/index_scale.rs`.

use std::collections::HashSet;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use holdfast_repo::blob::{BlobType, Compression};
use holdfast_repo::index::{IndexBuilder, IndexFile, IndexPack, MasterIndex};
use holdfast_repo::pack::PackEntry;
use holdfast_repo::Id;

const BLOBS: u32 = 1_000_000;
const PER_PACK: u32 = 1000;
const PACKS_PER_FILE: u32 = 5;

fn id(i: u32) -> Id {
    Id(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

/// `BLOBS` entries in files of the small-blob shape (5000 per file).
fn files() -> Vec<(Id, IndexFile)> {
    let per_file = PER_PACK * PACKS_PER_FILE;
    (0..BLOBS / per_file)
        .map(|f| {
            let packs = (0..PACKS_PER_FILE)
                .map(|p| IndexPack {
                    id: Id(*blake3::hash(format!("pack {f} {p}").as_bytes()).as_bytes()),
                    blobs: (0..PER_PACK)
                        .map(|b| PackEntry {
                            id: id(f * per_file + p * PER_PACK + b),
                            ty: BlobType::Data,
                            compression: Compression::Zstd,
                            offset: b * 3000,
                            stored_len: 3000,
                            raw_len: 8000,
                        })
                        .collect(),
                })
                .collect();
            let name = Id(*blake3::hash(format!("file {f}").as_bytes()).as_bytes());
            (
                name,
                IndexFile {
                    supersedes: vec![],
                    packs,
                },
            )
        })
        .collect()
}

fn lookups(c: &mut Criterion) {
    let files = files();
    let index = MasterIndex::from_files(files.iter().map(|(n, f)| (*n, f)));
    assert_eq!(index.len(), BLOBS as usize);
    let present: Vec<Id> = (0..4096u32)
        .map(|i| id(i.wrapping_mul(7919) % BLOBS))
        .collect();
    let absent: Vec<Id> = (0..4096u32).map(|i| id(BLOBS + i)).collect();
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(present.len() as u64));
    g.bench_function("get_present_1M", |b| {
        b.iter(|| {
            present
                .iter()
                .filter_map(|i| index.get(BlobType::Data, i))
                .count()
        })
    });
    g.bench_function("contains_absent_1M", |b| {
        b.iter(|| {
            absent
                .iter()
                .filter(|i| index.contains(BlobType::Data, i))
                .count()
        })
    });
    g.finish();
}

fn loading(c: &mut Criterion) {
    let files = files();
    let plain = files[0].1.encode();
    let none = HashSet::new();
    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(PER_PACK * PACKS_PER_FILE)));
    g.bench_function("decode_compact_5000", |b| {
        let conv = IndexBuilder::new(&none).converter();
        b.iter(|| conv.decode(&plain).unwrap())
    });
    g.bench_function("decode_full_5000", |b| {
        b.iter(|| IndexFile::decode(&plain).unwrap())
    });
    g.throughput(Throughput::Elements(u64::from(BLOBS)));
    g.bench_function("build_1M", |b| {
        b.iter_batched(
            || (),
            |()| MasterIndex::from_files(files.iter().map(|(n, f)| (*n, f))),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, lookups, loading);
criterion_main!(benches);
