//! Test vectors for the holdfast repository format, version 1 (SPEC.md §15).
//!
//! Every vector here is built from fixed inputs (a fixed master key, fixed nonces, fixed
//! salts and plaintexts), so its bytes are exact. Each test
//!
//! 1. builds the object from the layout in SPEC.md, with fixed nonces through
//!    `crypto::seal_with_nonce` (the writers in the library draw random nonces),
//! 2. asserts the exact bytes (full hex for short vectors; BLAKE3, length and the first
//!    32 bytes for long ones) — the same values SPEC.md §15 lists,
//! 3. decodes / opens them again with the library's readers, and
//! 4. checks that the library's own writer produces the same object: byte-identical where
//!    no nonce is involved, and otherwise the same length, header bytes and decrypted body.
//!
//! If one of these tests fails, the on-disk format changed. Do not update the constants
//! to make it pass: every existing repository depends on them. Bump the format instead.
//!
//! `cargo test -p holdfast-repo --test vectors -- --ignored --nocapture print_vectors`
//! prints every value (that is how the constants were produced).

use holdfast_repo::blob::{
    blob_ad, open_blob, seal_blob, BlobType, Compression, CompressionLevel, SealedBlob,
};
use holdfast_repo::codec::Writer;
use holdfast_repo::config::Config;
use holdfast_repo::crypto::{self, MasterKey, NONCE_LEN};
use holdfast_repo::envelope::{self, ObjectKind};
use holdfast_repo::index::{IndexFile, IndexPack, MasterIndex};
use holdfast_repo::keyfile::{KdfParams, KeyFile};
use holdfast_repo::pack::{self, PackBuilder, PackEntry, PackHeader, HEADER_AD, TRAILER_LEN};
use holdfast_repo::snapshot::{Snapshot, Summary};
use holdfast_repo::tree::{ContentRef, Node, NodeKind, Tree, Xattr};
use holdfast_repo::Id;

// ---------------------------------------------------------------------------------------
// Fixed inputs (SPEC.md §15.1).
// ---------------------------------------------------------------------------------------

fn master_key() -> MasterKey {
    MasterKey {
        encryption: [0x11; 32],
        blob_id: [0x22; 32],
        chunker: [0x33; 32],
    }
}

const NONCE_BLOB1: [u8; NONCE_LEN] = [0x44; NONCE_LEN];
const NONCE_BLOB2: [u8; NONCE_LEN] = [0x45; NONCE_LEN];
const NONCE_PACK_HEADER: [u8; NONCE_LEN] = [0x46; NONCE_LEN];
const NONCE_INDEX: [u8; NONCE_LEN] = [0x47; NONCE_LEN];
const NONCE_CONFIG: [u8; NONCE_LEN] = [0x48; NONCE_LEN];
const NONCE_KEY: [u8; NONCE_LEN] = [0x49; NONCE_LEN];
const NONCE_SNAPSHOT: [u8; NONCE_LEN] = [0x4a; NONCE_LEN];
const KEY_SALT: [u8; 32] = [0x55; 32];
const PASSWORD: &[u8] = b"correct horse battery staple";
const FAST_KDF: KdfParams = KdfParams {
    m_cost_kib: 8,
    t_cost: 1,
    p_cost: 1,
};
/// 2023-11-14T22:13:20Z in ns.
const T0: i64 = 1_700_000_000_000_000_000;

/// Short plaintext (< 64 bytes): always stored uncompressed.
const PLAIN1: &[u8] = b"holdfast v1 vector: 3f9a kQ7 zx!";
/// 288 compressible bytes: stored zstd-compressed.
fn plain2() -> Vec<u8> {
    b"holdfast ".repeat(32)
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

fn hx(b: &[u8]) -> String {
    hex::encode(b)
}

fn b3(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex constant")
}

/// Asserts a long vector by length, BLAKE3 and first 32 bytes.
fn assert_long(what: &str, bytes: &[u8], len: usize, blake3_hex: &str, head_hex: &str) {
    assert_eq!(bytes.len(), len, "{what}: length");
    assert_eq!(&hx(&bytes[..32]), head_hex, "{what}: first 32 bytes");
    assert_eq!(b3(bytes), blake3_hex, "{what}: BLAKE3");
}

/// Seals a blob the way `blob::seal_blob` does, but with a fixed nonce and an explicit
/// compression decision (SPEC.md §5).
fn seal_blob_fixed(
    key: &MasterKey,
    ty: BlobType,
    plaintext: &[u8],
    compress: bool,
    nonce: &[u8; NONCE_LEN],
) -> SealedBlob {
    let id = key.blob_id(plaintext);
    let (compression, body) = if compress {
        (
            Compression::Zstd,
            zstd::bulk::compress(plaintext, 3).unwrap(),
        )
    } else {
        (Compression::None, plaintext.to_vec())
    };
    SealedBlob {
        id,
        ty,
        compression,
        raw_len: plaintext.len() as u32,
        bytes: crypto::seal_with_nonce(
            &key.encryption,
            nonce,
            &blob_ad(ty, compression, &id),
            &body,
        ),
    }
}

/// An envelope with a fixed nonce (SPEC.md §3.4).
fn envelope_fixed(
    key: &MasterKey,
    kind: ObjectKind,
    plaintext: &[u8],
    compress: bool,
    nonce: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let (compression, body) = if compress {
        (
            Compression::Zstd,
            zstd::bulk::compress(plaintext, 3).unwrap(),
        )
    } else {
        (Compression::None, plaintext.to_vec())
    };
    let header = envelope::header(kind, compression);
    let mut out = header.to_vec();
    out.extend_from_slice(&crypto::seal_with_nonce(
        &key.encryption,
        nonce,
        &header,
        &body,
    ));
    out
}

/// Checks that the library's random-nonce envelope writer agrees with a vector: same
/// header (including the compression decision), same length, same plaintext body.
fn check_envelope_writer_matches(
    key: &MasterKey,
    kind: ObjectKind,
    plaintext: &[u8],
    vector: &[u8],
) {
    let real = envelope::seal(key, kind, plaintext, true);
    assert_eq!(
        real[..envelope::HEADER_LEN],
        vector[..envelope::HEADER_LEN],
        "envelope header"
    );
    assert_eq!(real.len(), vector.len(), "envelope length");
    let body_real = key
        .open(&real[..envelope::HEADER_LEN], &real[envelope::HEADER_LEN..])
        .unwrap();
    let body_vec = key
        .open(
            &vector[..envelope::HEADER_LEN],
            &vector[envelope::HEADER_LEN..],
        )
        .unwrap();
    assert_eq!(body_real, body_vec, "envelope body");
}

// ---------------------------------------------------------------------------------------
// Vector builders.
// ---------------------------------------------------------------------------------------

fn blob1() -> SealedBlob {
    seal_blob_fixed(&master_key(), BlobType::Data, PLAIN1, false, &NONCE_BLOB1)
}

fn blob2() -> SealedBlob {
    seal_blob_fixed(&master_key(), BlobType::Data, &plain2(), true, &NONCE_BLOB2)
}

/// The two-blob data pack, built byte by byte from SPEC.md §6.
fn pack_vector() -> (Vec<u8>, PackHeader) {
    let key = master_key();
    let (b1, b2) = (blob1(), blob2());
    let mut bytes = Vec::new();
    let mut entries = Vec::new();
    for b in [&b1, &b2] {
        entries.push(PackEntry {
            id: b.id,
            ty: b.ty,
            compression: b.compression,
            offset: bytes.len() as u32,
            stored_len: b.bytes.len() as u32,
            raw_len: b.raw_len,
        });
        bytes.extend_from_slice(&b.bytes);
    }
    let header = PackHeader {
        pack_type: BlobType::Data,
        entries,
    };
    let sealed = crypto::seal_with_nonce(
        &key.encryption,
        &NONCE_PACK_HEADER,
        HEADER_AD,
        &header.encode(),
    );
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    bytes.push(1);
    bytes.extend_from_slice(b"hfpk");
    (bytes, header)
}

fn index_vector() -> IndexFile {
    let (bytes, header) = pack_vector();
    IndexFile {
        supersedes: vec![Id([0x88; 32])],
        packs: vec![IndexPack {
            id: Id::of_stored_bytes(&bytes),
            blobs: header.entries,
        }],
    }
}

fn tree_vector() -> Tree {
    let key = master_key();
    let mut file = Node::new("hello.txt", NodeKind::File);
    file.mode = 0o644;
    file.uid = 1000;
    file.gid = 1000;
    file.user = "alice".into();
    file.group = "alice".into();
    file.mtime_ns = T0 + 123_456_789;
    file.ctime_ns = T0 + 987_654_321;
    file.size = PLAIN1.len() as u64;
    file.inode = 1234;
    file.device = 0x803;
    file.links = 1;
    file.xattrs = vec![Xattr {
        name: b"user.k".to_vec(),
        value: b"v".to_vec(),
    }];
    file.content = vec![ContentRef::Blob(key.blob_id(PLAIN1))];
    let mut link = Node::new("link", NodeKind::Symlink);
    link.mode = 0o777;
    link.uid = 1000;
    link.gid = 1000;
    link.user = "alice".into();
    link.group = "alice".into();
    link.mtime_ns = T0;
    link.ctime_ns = T0;
    link.link_target = b"hello.txt".to_vec();
    link.size = 9;
    link.inode = 1235;
    link.device = 0x803;
    link.links = 1;
    Tree {
        nodes: vec![file, link],
    }
}

/// The same tree, encoded field by field from SPEC.md §8 (independently of `Tree::encode`).
fn tree_vector_by_hand() -> Vec<u8> {
    let key = master_key();
    let mut w = Writer::new();
    w.u8(1); // tree version
    w.u32(2); // node count
              // "hello.txt"
    w.bytes16(b"hello.txt");
    w.u8(1); // file
    w.u32(0o644);
    w.u32(1000);
    w.u32(1000);
    w.bytes16(b"alice");
    w.bytes16(b"alice");
    w.i64(T0 + 123_456_789);
    w.i64(T0 + 987_654_321);
    w.u64(PLAIN1.len() as u64);
    w.u64(1234);
    w.u64(0x803);
    w.u64(1); // links
    w.u64(0); // rdev
    w.bytes32(b""); // link target
    w.u32(1); // xattr count
    w.bytes16(b"user.k");
    w.bytes32(b"v");
    w.u32(1); // content count
    w.u8(0); // blob
    w.id(&key.blob_id(PLAIN1));
    w.u8(0); // no subtree
             // "link"
    w.bytes16(b"link");
    w.u8(3); // symlink
    w.u32(0o777);
    w.u32(1000);
    w.u32(1000);
    w.bytes16(b"alice");
    w.bytes16(b"alice");
    w.i64(T0);
    w.i64(T0);
    w.u64(9);
    w.u64(1235);
    w.u64(0x803);
    w.u64(1);
    w.u64(0);
    w.bytes32(b"hello.txt");
    w.u32(0);
    w.u32(0);
    w.u8(0);
    w.finish()
}

fn snapshot_vector() -> Snapshot {
    let tree_id = master_key().blob_id(&tree_vector().encode().unwrap());
    Snapshot {
        time_ns: T0,
        utc_offset_s: -18000,
        host: "host1".into(),
        user: "alice".into(),
        uid: 1000,
        gid: 1000,
        paths: vec![b"/home/alice".to_vec()],
        tags: vec!["daily".into(), "test".into()],
        tree: tree_id,
        parent: Some(Id([0x66; 32])),
        program_version: "holdfast 0.1.0".into(),
        summary: Summary {
            files_new: 1,
            files_changed: 2,
            files_unchanged: 3,
            dirs_new: 4,
            dirs_changed: 5,
            dirs_unchanged: 6,
            data_blobs_added: 7,
            tree_blobs_added: 8,
            bytes_read: 9,
            bytes_total: 10,
            bytes_added_raw: 11,
            bytes_added_stored: 12,
            errors: 13,
            duration_ns: 14,
        },
    }
}

fn config_vector() -> Config {
    Config {
        version: 1,
        repo_id: Id([0x77; 32]),
        chunk_min: 512 * 1024,
        chunk_avg: 1024 * 1024,
        chunk_max: 8 * 1024 * 1024,
        pack_size: 16 * 1024 * 1024,
        created_ns: T0,
    }
}

/// The key file, built byte by byte from SPEC.md §4.2; returns (file, wrapping key).
fn key_file_vector() -> (Vec<u8>, [u8; 32]) {
    let wrap = FAST_KDF.derive(PASSWORD, &KEY_SALT).unwrap();
    let mut w = Writer::new();
    w.raw(b"hfky");
    w.u8(1); // version
    w.u8(1); // argon2id v0x13
    w.u32(FAST_KDF.m_cost_kib);
    w.u32(FAST_KDF.t_cost);
    w.u32(FAST_KDF.p_cost);
    w.raw(&KEY_SALT);
    w.i64(T0);
    w.bytes16(b"host1");
    w.bytes16(b"alice");
    let ad = w.buf.clone();
    w.raw(&crypto::seal_with_nonce(
        &wrap,
        &NONCE_KEY,
        &ad,
        &master_key().to_bytes(),
    ));
    (w.finish(), *wrap)
}

// ---------------------------------------------------------------------------------------
// Chunker (SPEC.md §10), reimplemented here from the specification alone.
// ---------------------------------------------------------------------------------------

const GEAR_CONTEXT: &str = "holdfast 2026-11 chunker gear table v1";

/// FastCDC 2020 masks by log2 of the size (indices 5..=25 used).
const MASKS: [u64; 26] = [
    0,
    0,
    0,
    0,
    0,
    0x0000000001804110,
    0x0000000001803110,
    0x0000000018035100,
    0x0000001800035300,
    0x0000019000353000,
    0x0000590003530000,
    0x0000d90003530000,
    0x0000d90103530000,
    0x0000d90303530000,
    0x0000d90313530000,
    0x0000d90f03530000,
    0x0000d90303537000,
    0x0000d90703537000,
    0x0000d90707537000,
    0x0000d91707537000,
    0x0000d91747537000,
    0x0000d91767537000,
    0x0000d93767537000,
    0x0000d93777537000,
    0x0000d93777577000,
    0x0000db3777577000,
];

fn gear_table(chunker_key: &[u8; 32]) -> [u64; 256] {
    let mut h = blake3::Hasher::new_derive_key(GEAR_CONTEXT);
    h.update(chunker_key);
    let mut bytes = [0u8; 2048];
    h.finalize_xof().fill(&mut bytes);
    let mut gear = [0u64; 256];
    for (i, w) in bytes.chunks_exact(8).enumerate() {
        gear[i] = u64::from_le_bytes(w.try_into().unwrap());
    }
    gear
}

/// Length of the first chunk of `data` (which starts at a boundary and holds the rest of
/// the stream): FastCDC 2020 normalized level 1, two bytes per step.
fn cut(data: &[u8], min: usize, avg: usize, max: usize, gear: &[u64; 256]) -> usize {
    let bits = avg.trailing_zeros() as usize;
    let (mask_s, mask_l) = (MASKS[bits + 1], MASKS[bits - 1]);
    let (mask_s_ls, mask_l_ls) = (mask_s << 1, mask_l << 1);
    let mut n = data.len();
    if n <= min {
        return n;
    }
    let mut center = avg;
    if n > max {
        n = max;
    } else if n < center {
        center = n;
    }
    let mut hash: u64 = 0;
    let mut i = min / 2;
    while i < n / 2 {
        let (ms, ms_ls) = if i < center / 2 {
            (mask_s, mask_s_ls)
        } else {
            (mask_l, mask_l_ls)
        };
        let a = 2 * i;
        hash = (hash << 2).wrapping_add(gear[data[a] as usize] << 1);
        if hash & ms_ls == 0 {
            return a;
        }
        hash = hash.wrapping_add(gear[data[a + 1] as usize]);
        if hash & ms == 0 {
            return a + 1;
        }
        i += 1;
    }
    n
}

fn chunk_lengths(data: &[u8], min: usize, avg: usize, max: usize, gear: &[u64; 256]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let len = cut(&data[pos..], min, avg, max, gear);
        out.push(len);
        pos += len;
    }
    out
}

/// `len` bytes of BLAKE3 XOF output of the unkeyed hash of `seed`.
fn xof_input(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

fn lengths_digest(lens: &[usize]) -> String {
    let mut h = blake3::Hasher::new();
    for l in lens {
        h.update(&(*l as u64).to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}

const CHUNK_INPUT_SEED: &[u8] = b"holdfast chunker test vector input";
const CHUNK_INPUT_LEN: usize = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Pinned values (SPEC.md §15).
// ---------------------------------------------------------------------------------------

const MASTER_KEY_HEX: &str = "TODO";
const BLOB1_ID: &str = "TODO";
const BLOB1_AD: &str = "TODO";
const BLOB1_SEALED: &str = "TODO";
const BLOB2_ID: &str = "TODO";
const BLOB2_ZSTD: &str = "TODO";
const BLOB2_SEALED: &str = "TODO";
const PACK_HEADER_PLAIN: &str = "TODO";
const PACK_TRAILER: &str = "TODO";
const PACK_LEN: usize = 0;
const PACK_ID: &str = "TODO";
const PACK_HEAD: &str = "TODO";
const INDEX_PLAIN: &str = "TODO";
const INDEX_ENVELOPE: &str = "TODO";
const TREE_LEN: usize = 0;
const TREE_BLAKE3: &str = "TODO";
const TREE_HEAD: &str = "TODO";
const TREE_ID: &str = "TODO";
const SNAPSHOT_LEN: usize = 0;
const SNAPSHOT_BLAKE3: &str = "TODO";
const SNAPSHOT_HEAD: &str = "TODO";
const SNAPSHOT_ENVELOPE: &str = "TODO";
const CONFIG_PLAIN: &str = "TODO";
const CONFIG_ENVELOPE: &str = "TODO";
const KEY_WRAP: &str = "TODO";
const KEY_FILE_LEN: usize = 0;
const KEY_FILE_ID: &str = "TODO";
const KEY_FILE_HEAD: &str = "TODO";
const GEAR_HEAD: [u64; 4] = [0; 4];
const GEAR_BLAKE3: &str = "TODO";
const CHUNK_INPUT_BLAKE3: &str = "TODO";
const CHUNKS_DEFAULT: &[usize] = &[];
const CHUNKS_SMALL: (usize, &str) = (0, "TODO");

#[test]
#[ignore = "prints the vectors; run with --ignored --nocapture"]
fn print_vectors() {
    let key = master_key();
    println!("MASTER_KEY_HEX {}", hx(&key.to_bytes()));
    let b1 = blob1();
    println!("BLOB1_ID {}", b1.id);
    println!("BLOB1_AD {}", hx(&blob_ad(b1.ty, b1.compression, &b1.id)));
    println!("BLOB1_SEALED {} ({} bytes)", hx(&b1.bytes), b1.bytes.len());
    let b2 = blob2();
    println!("BLOB2_ID {}", b2.id);
    println!(
        "BLOB2_ZSTD {}",
        hx(&zstd::bulk::compress(&plain2(), 3).unwrap())
    );
    println!("BLOB2_SEALED {} ({} bytes)", hx(&b2.bytes), b2.bytes.len());
    let (p, h) = pack_vector();
    println!("PACK_HEADER_PLAIN {}", hx(&h.encode()));
    println!("PACK_TRAILER {}", hx(&p[p.len() - TRAILER_LEN..]));
    println!("PACK_LEN {}", p.len());
    println!("PACK_ID {}", b3(&p));
    println!("PACK_HEAD {}", hx(&p[..32]));
    println!("PACK_FULL {}", hx(&p));
    let idx = index_vector().encode();
    println!("INDEX_PLAIN {} ({} bytes)", hx(&idx), idx.len());
    let env = envelope_fixed(&key, ObjectKind::Index, &idx, false, &NONCE_INDEX);
    println!(
        "INDEX_ENVELOPE {} ({} bytes) name {}",
        hx(&env),
        env.len(),
        b3(&env)
    );
    println!(
        "  index zstd {:?}",
        zstd::bulk::compress(&idx, 3).unwrap().len()
    );
    let t = tree_vector().encode().unwrap();
    println!("TREE_LEN {}", t.len());
    println!("TREE_BLAKE3 {}", b3(&t));
    println!("TREE_HEAD {}", hx(&t[..32]));
    println!("TREE_ID {}", key.blob_id(&t));
    println!("TREE_FULL {}", hx(&t));
    let s = snapshot_vector().encode();
    println!("SNAPSHOT_LEN {}", s.len());
    println!("SNAPSHOT_BLAKE3 {}", b3(&s));
    println!("SNAPSHOT_HEAD {}", hx(&s[..32]));
    println!("SNAPSHOT_FULL {}", hx(&s));
    println!(
        "  snapshot zstd {:?}",
        zstd::bulk::compress(&s, 3).unwrap().len()
    );
    let senv = envelope_fixed(&key, ObjectKind::Snapshot, &s, true, &NONCE_SNAPSHOT);
    println!(
        "SNAPSHOT_ENVELOPE {} ({} bytes) name {}",
        hx(&senv),
        senv.len(),
        b3(&senv)
    );
    let c = config_vector().encode();
    println!("CONFIG_PLAIN {} ({} bytes)", hx(&c), c.len());
    let cenv = envelope_fixed(&key, ObjectKind::Config, &c, false, &NONCE_CONFIG);
    println!(
        "CONFIG_ENVELOPE {} ({} bytes) name {}",
        hx(&cenv),
        cenv.len(),
        b3(&cenv)
    );
    let (kf, wrap) = key_file_vector();
    println!("KEY_WRAP {}", hx(&wrap));
    println!("KEY_FILE_LEN {}", kf.len());
    println!("KEY_FILE_ID {}", b3(&kf));
    println!("KEY_FILE_HEAD {}", hx(&kf[..32]));
    println!("KEY_FILE_FULL {}", hx(&kf));
    let g = gear_table(&key.chunker);
    println!(
        "GEAR_HEAD {:#018x} {:#018x} {:#018x} {:#018x}",
        g[0], g[1], g[2], g[3]
    );
    let gb: Vec<u8> = g.iter().flat_map(|v| v.to_le_bytes()).collect();
    println!("GEAR_BLAKE3 {}", b3(&gb));
    let input = xof_input(CHUNK_INPUT_SEED, CHUNK_INPUT_LEN);
    println!("CHUNK_INPUT_BLAKE3 {}", b3(&input));
    println!(
        "CHUNKS_DEFAULT {:?}",
        chunk_lengths(&input, 512 * 1024, 1024 * 1024, 8 * 1024 * 1024, &g)
    );
    let small = chunk_lengths(&input, 64, 256, 1024, &g);
    println!(
        "CHUNKS_SMALL {} {} first {:?}",
        small.len(),
        lengths_digest(&small),
        &small[..8]
    );
}
