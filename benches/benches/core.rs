//! Throughput of the hot paths: chunking, blob IDs, sealing (compress + encrypt), pack
//! building, index lookup and tree encoding. Run with `cargo bench -p holdfast-benches`.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use holdfast_benches::{random_bytes, texty_bytes};
use holdfast_chunker::{Chunker, ChunkerParams, GearTable};
use holdfast_repo::blob::{seal_blob, BlobType, Compression, CompressionLevel, Sealer};
use holdfast_repo::crypto::MasterKey;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::pack::{PackEntry, PackWriter};
use holdfast_repo::tree::{ContentRef, Node, NodeKind, Tree};
use holdfast_repo::Id;

const MIB: usize = 1024 * 1024;

fn chunker(c: &mut Criterion) {
    let data = random_bytes(64 * MIB, 1);
    let ch = Chunker::new(ChunkerParams::DEFAULT, GearTable::from_key(&[7; 32])).unwrap();
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_keyed_64MiB", |b| {
        b.iter(|| {
            let mut s = ch.stream(&data[..]);
            let mut n = 0;
            while let Some(c) = s.next_chunk().unwrap() {
                n += c.len();
            }
            n
        })
    });
    g.finish();
}

fn hashing_and_sealing(c: &mut Criterion) {
    let key = MasterKey::from_bytes(&[9; 96]);
    let mut g = c.benchmark_group("blob");
    for (name, data) in [
        ("random", random_bytes(MIB, 2)),
        ("text", texty_bytes(MIB, 3)),
    ] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_with_input(BenchmarkId::new("blob_id", name), &data, |b, d| {
            b.iter(|| key.blob_id(d))
        });
        let id = key.blob_id(&data);
        // What a sealer thread does per blob: its contexts and buffers are reused.
        let mut sealer = Sealer::new(CompressionLevel(3)).unwrap();
        g.bench_with_input(BenchmarkId::new("seal_zstd3", name), &data, |b, d| {
            b.iter_batched_ref(
                || d.clone(),
                |buf| {
                    sealer
                        .seal(&key, BlobType::Data, id, buf)
                        .unwrap()
                        .stored_len()
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn pack_building(c: &mut Criterion) {
    let key = MasterKey::from_bytes(&[9; 96]);
    let blobs: Vec<_> = (0..16)
        .map(|i| {
            let d = random_bytes(MIB, 100 + i);
            seal_blob(
                &key,
                BlobType::Data,
                key.blob_id(&d),
                &d,
                CompressionLevel(3),
            )
            .unwrap()
        })
        .collect();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(16 * MIB as u64));
    g.sample_size(20);
    g.bench_function("finish_16MiB", |b| {
        b.iter(|| {
            let mut p = PackWriter::new(BlobType::Data, Vec::with_capacity(17 * MIB));
            for s in &blobs {
                p.add(s.id, s.ty, s.compression, s.raw_len, &[&s.bytes])
                    .unwrap();
            }
            p.finish(&key).unwrap()
        })
    });
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    let mut idx = MasterIndex::new();
    let n = 1_000_000u32;
    let mut ids = Vec::with_capacity(n as usize);
    for p in 0..(n / 1000) {
        let entries: Vec<PackEntry> = (0..1000u32)
            .map(|i| {
                let id = Id(*blake3::hash(&(p * 1000 + i).to_le_bytes()).as_bytes());
                ids.push(id);
                PackEntry {
                    id,
                    ty: BlobType::Data,
                    compression: Compression::None,
                    offset: i * 100,
                    stored_len: 100,
                    raw_len: 60,
                }
            })
            .collect();
        idx.add_pack(&Id(*blake3::hash(&p.to_be_bytes()).as_bytes()), &entries);
    }
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("lookup_1M", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            idx.get(BlobType::Data, &ids[i])
        })
    });
    g.finish();
}

fn tree_encoding(c: &mut Criterion) {
    let mut t = Tree::default();
    for i in 0..1000 {
        let mut n = Node::new(format!("file-{i:05}.txt"), NodeKind::File);
        n.size = 12345;
        n.mtime_ns = 1_700_000_000_000_000_000 + i;
        n.content = vec![ContentRef::Blob(Id([i as u8; 32]))];
        t.nodes.push(n);
    }
    let enc = t.encode().unwrap();
    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encode_1000_entries", |b| b.iter(|| t.encode().unwrap()));
    g.bench_function("decode_1000_entries", |b| {
        b.iter(|| Tree::decode(&enc).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    chunker,
    hashing_and_sealing,
    pack_building,
    index_lookup,
    tree_encoding
);
criterion_main!(benches);
