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
use holdfast_repo::pack::{self, PackEntry, PackHeader, PackWriter, HEADER_AD, TRAILER_LEN};
use holdfast_repo::snapshot::{Origin, Snapshot, SnapshotExt, Summary};
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
    compress: bool,
    vector: &[u8],
) {
    let real = envelope::seal(key, kind, plaintext, compress);
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
        ext: Default::default(),
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
        generation: 1,
        written_ns: T0,
        features: vec![],
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

const MASTER_KEY_HEX: &str = "111111111111111111111111111111111111111111111111111111111111111122222222222222222222222222222222222222222222222222222222222222223333333333333333333333333333333333333333333333333333333333333333";

const BLOB1_ID: &str = "2a03df3a9f47fa0759916458820af7cbe89430b45a7ffbb1185fd95a96a721dc";
const BLOB1_AD: &str = "686f6c646661737420626c6f622076310000002a03df3a9f47fa0759916458820af7cbe89430b45a7ffbb1185fd95a96a721dc";
const BLOB1_SEALED: &str = "444444444444444444444444444444444444444444444444b77ded7c7e43b31d97e0efbfa85d64d826c1b3ed291b2325ffec75d9422ff963cb49fcca689f1a10620ecfdeeaa0bec8";

const BLOB2_ID: &str = "22b3620e79699de12cc726a8f70740f6d122512ecb26be525c76a468c5abd0a5";
const BLOB2_ZSTD: &str = "28b52ffd60200085000048686f6c64666173742001001454cb11";
const BLOB2_SEALED: &str = "454545454545454545454545454545454545454545454545c50c443173454a034d78085e4bfe01675e7daad3726cedaf36e5fa3eda339b1d61fea3b3441b0ff34980";

const PACK_HEADER_PLAIN: &str = "000200000000002a03df3a9f47fa0759916458820af7cbe89430b45a7ffbb1185fd95a96a721dc4800000020000000000122b3620e79699de12cc726a8f70740f6d122512ecb26be525c76a468c5abd0a54200000020010000";
const PACK_TRAILER: &str = "81000000016866706b";
const PACK_LEN: usize = 276;
/// The pack's name: BLAKE3 of its bytes.
const PACK_ID: &str = "fbc58c01e90da012a75754bec5ae01eac58bb4a7f30e72310c4e5ad265e716e6";
const PACK_HEAD: &str = "444444444444444444444444444444444444444444444444b77ded7c7e43b31d";

const INDEX_PLAIN_LEN: usize = 169;
const INDEX_PLAIN_BLAKE3: &str = "dee41c8e34dd49adee9dda5c47f9473ce68739d693440d76b6ce67401c0f53a8";
const INDEX_PLAIN_HEAD: &str = "0101000000888888888888888888888888888888888888888888888888888888";
const INDEX_ENVELOPE_LEN: usize = 216;
/// The index file's name: BLAKE3 of the envelope.
const INDEX_ENVELOPE_ID: &str = "5e4fb808c0426ae12a39a902b1045500c73c709253daa3960736976ca460c805";
const INDEX_ENVELOPE_HEAD: &str =
    "68666f62010200474747474747474747474747474747474747474747474747fc";

const TREE_LEN: usize = 269;
const TREE_BLAKE3: &str = "51ea1659a922e4bef06ea3991bc47266abc59251194337dd4a0400e4c5608ada";
const TREE_HEAD: &str = "0102000000090068656c6c6f2e74787401a4010000e8030000e8030000050061";
/// The tree's blob ID (keyed BLAKE3 of the encoding).
const TREE_ID: &str = "647ea84bb7b21a945ef37dcbcf5cadb3f730cd9b99358843fc5a57e1d0e85b64";
const EMPTY_TREE: &str = "0100000000";

const SNAPSHOT_LEN: usize = 264;
const SNAPSHOT_BLAKE3: &str = "3ed7d63f799ebee51f025031a19f0e3de272829f81510c8f65514aac2197cd8b";
const SNAPSHOT_HEAD: &str = "0100002a36fe9c9717b0b9ffff0500686f7374310500616c696365e8030000e8";
const SNAPSHOT_ENVELOPE_LEN: usize = 240;
/// The snapshot's ID: BLAKE3 of the (zstd-compressed) envelope.
const SNAPSHOT_ENVELOPE_ID: &str =
    "9c9474510699e27a3fbb7910f31af027794601cf2e23184f95d4d7c1cba853f4";
const SNAPSHOT_ENVELOPE_HEAD: &str =
    "68666f620103014a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a8b";

const CONFIG_PLAIN: &str = "0177777777777777777777777777777777777777777777777777777777777777770000080000001000000080000000000100002a36fe9c9717";
const CONFIG_ENVELOPE: &str = "68666f620101004848484848484848484848484848484848484848484848483bfee44d41dc56bc24525f5be2ae32e997fa41c2999c5f09d2f98ac430df975e1988881082edebca6116a29e38872b789978f26feaa2e25cf35c83bfa936cd0bb887a003cbdf988775";
const CONFIG_ENVELOPE_ID: &str = "061f221fd14be6f0e6c1b9eef95432f9ca7e40fb0f23351b9f6974111467823f";

/// Argon2id(password, salt, m=8 KiB, t=1, p=1) output.
const KEY_WRAP: &str = "14b7f212789f7eca74267907b3fe736c0ef718f080dc8cbf8584ffa12dead16c";
const KEY_FILE_LEN: usize = 208;
const KEY_FILE_ID: &str = "4342d2f185a217c0b6bb18674f2022ceeef9561d9b7fa746502fffbe48d53c17";
const KEY_FILE_HEAD: &str = "68666b7901010800000001000000010000005555555555555555555555555555";

const GEAR_HEAD: [u64; 4] = [
    0x2c93e6bb2671c697,
    0xb737eb10e6733dbf,
    0x0bace03482616785,
    0x644037c6e11d7a6e,
];
/// BLAKE3 of the 256 gear values as little-endian u64 (2048 bytes).
const GEAR_BLAKE3: &str = "76a261f51b588cee18c9c445f008e78bb286e17ecb17abb8f3142348bceac8dc";
const CHUNK_INPUT_BLAKE3: &str = "ec5f6992cfd1fe53cf6418398843c989270d12cebf4b826dc8e3e472c9dc4cdc";
const CHUNKS_DEFAULT: [usize; 6] = [1709898, 2634368, 1108910, 1959775, 891114, 84543];
/// min 64 / avg 256 / max 1024: count, BLAKE3 of the lengths as little-endian u64, first 8.
const CHUNKS_SMALL: (usize, &str, [usize; 8]) = (
    27030,
    "fb5022eeeecb2e85a0550ee78a8d36ad098f2e668697f1d5f4736d6bd5eafed8",
    [280, 64, 778, 536, 525, 322, 321, 331],
);

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
    println!(
        "INDEX_PLAIN {} ({} bytes) blake3 {}",
        hx(&idx),
        idx.len(),
        b3(&idx)
    );
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

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn master_key_and_blob_id() {
    let key = master_key();
    assert_eq!(hx(&key.to_bytes()), MASTER_KEY_HEX);
    let back = MasterKey::from_bytes(&unhex(MASTER_KEY_HEX).try_into().unwrap());
    assert_eq!(back.to_bytes(), key.to_bytes());
    // Blob ID: BLAKE3 keyed with the blob-ID key, over the plaintext.
    assert_eq!(key.blob_id(PLAIN1).to_hex(), BLOB1_ID);
    assert_eq!(
        blake3::keyed_hash(&[0x22; 32], PLAIN1).to_hex().as_str(),
        BLOB1_ID
    );
    assert_eq!(key.blob_id(&plain2()).to_hex(), BLOB2_ID);
}

#[test]
fn sealed_blob_uncompressed() {
    let key = master_key();
    let b = blob1();
    assert!(PLAIN1.len() < 64);
    assert_eq!(
        hx(&blob_ad(BlobType::Data, Compression::None, &b.id)),
        BLOB1_AD
    );
    assert_eq!(hx(&b.bytes), BLOB1_SEALED);
    let stored = unhex(BLOB1_SEALED);
    let id = Id::from_hex(BLOB1_ID).unwrap();
    assert_eq!(
        open_blob(
            &key,
            BlobType::Data,
            Compression::None,
            &id,
            PLAIN1.len() as u32,
            &stored
        )
        .unwrap(),
        PLAIN1
    );
    // The AD binds type, compression and ID.
    assert!(open_blob(
        &key,
        BlobType::Tree,
        Compression::None,
        &id,
        PLAIN1.len() as u32,
        &stored
    )
    .is_err());
    assert!(open_blob(
        &key,
        BlobType::Data,
        Compression::Zstd,
        &id,
        PLAIN1.len() as u32,
        &stored
    )
    .is_err());
    // The library's writer makes the same decision and the same body.
    let real = seal_blob(
        &key,
        BlobType::Data,
        id,
        PLAIN1,
        CompressionLevel::default(),
    )
    .unwrap();
    assert_eq!(real.compression, Compression::None);
    assert_eq!(real.bytes.len(), stored.len());
    assert_eq!(key.open(&unhex(BLOB1_AD), &real.bytes).unwrap(), PLAIN1);
}

#[test]
fn sealed_blob_compressed() {
    let key = master_key();
    let plain = plain2();
    let b = blob2();
    assert_eq!(b.id.to_hex(), BLOB2_ID);
    assert_eq!(hx(&b.bytes), BLOB2_SEALED);
    let id = Id::from_hex(BLOB2_ID).unwrap();
    let ad = blob_ad(BlobType::Data, Compression::Zstd, &id);
    let stored = unhex(BLOB2_SEALED);
    // Decrypts to the zstd frame, which decompresses to the plaintext.
    let body = key.open(&ad, &stored).unwrap();
    assert_eq!(hx(&body), BLOB2_ZSTD);
    assert_eq!(zstd::stream::decode_all(&body[..]).unwrap(), plain);
    assert_eq!(
        open_blob(
            &key,
            BlobType::Data,
            Compression::Zstd,
            &id,
            plain.len() as u32,
            &stored
        )
        .unwrap(),
        plain
    );
    assert!(open_blob(
        &key,
        BlobType::Data,
        Compression::Zstd,
        &id,
        plain.len() as u32 + 1,
        &stored
    )
    .is_err());
    // The library's writer compresses it the same way.
    let real = seal_blob(
        &key,
        BlobType::Data,
        id,
        &plain,
        CompressionLevel::default(),
    )
    .unwrap();
    assert_eq!(real.compression, Compression::Zstd);
    assert_eq!(key.open(&ad, &real.bytes).unwrap(), body);
}

#[test]
fn pack_with_two_data_blobs() {
    let key = master_key();
    let (bytes, header) = pack_vector();
    assert_long("pack", &bytes, PACK_LEN, PACK_ID, PACK_HEAD);
    assert_eq!(hx(&header.encode()), PACK_HEADER_PLAIN);
    assert_eq!(hx(&bytes[bytes.len() - TRAILER_LEN..]), PACK_TRAILER);
    // Layout: blob 1 | blob 2 | sealed header | trailer.
    let (b1, b2) = (unhex(BLOB1_SEALED), unhex(BLOB2_SEALED));
    assert_eq!(bytes[..b1.len()], b1[..]);
    assert_eq!(bytes[b1.len()..b1.len() + b2.len()], b2[..]);
    let data_len = b1.len() + b2.len();
    let sealed_header = &bytes[data_len..bytes.len() - TRAILER_LEN];
    assert_eq!(sealed_header[..NONCE_LEN], NONCE_PACK_HEADER);
    assert_eq!(
        key.open(HEADER_AD, sealed_header).unwrap(),
        unhex(PACK_HEADER_PLAIN)
    );
    // Read back with the library.
    let id = Id::from_hex(PACK_ID).unwrap();
    let read = pack::read_header(&key, &id, &bytes).unwrap();
    assert_eq!(read, header);
    assert_eq!(
        (read.entries[0].offset, read.entries[0].stored_len),
        (0, 72)
    );
    assert_eq!(
        (read.entries[1].offset, read.entries[1].stored_len),
        (72, 66)
    );
    let plains = [PLAIN1.to_vec(), plain2()];
    for (e, p) in read.entries.iter().zip(&plains) {
        let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        assert_eq!(
            &open_blob(&key, e.ty, e.compression, &e.id, e.raw_len, s).unwrap(),
            p
        );
    }
    // PackWriter writes the same pack, apart from the header's nonce.
    let mut writer = PackWriter::new(BlobType::Data, Vec::new());
    for b in [blob1(), blob2()] {
        writer
            .add(b.id, b.ty, b.compression, b.raw_len, &[&b.bytes])
            .unwrap();
    }
    let real = writer.finish(&key).unwrap();
    let real_bytes = &real.sink;
    assert_eq!(real.len, bytes.len() as u64);
    assert_eq!(real.id, Id::of_stored_bytes(real_bytes));
    assert_eq!(real_bytes.len(), bytes.len());
    assert_eq!(real_bytes[..data_len], bytes[..data_len]);
    assert_eq!(
        real_bytes[real_bytes.len() - TRAILER_LEN..],
        bytes[bytes.len() - TRAILER_LEN..]
    );
    assert_eq!(
        key.open(
            HEADER_AD,
            &real_bytes[data_len..real_bytes.len() - TRAILER_LEN]
        )
        .unwrap(),
        unhex(PACK_HEADER_PLAIN)
    );
    assert_eq!(real.header, header);
}

#[test]
fn index_file() {
    let key = master_key();
    let f = index_vector();
    let plain = f.encode();
    assert_long(
        "index plaintext",
        &plain,
        INDEX_PLAIN_LEN,
        INDEX_PLAIN_BLAKE3,
        INDEX_PLAIN_HEAD,
    );
    // Field by field: version, supersedes, packs, entries with explicit offsets.
    let mut w = Writer::new();
    w.u8(1);
    w.u32(1);
    w.raw(&[0x88; 32]);
    w.u32(1);
    w.raw(&unhex(PACK_ID));
    w.u32(2);
    for (id, comp, off, stored, raw) in [
        (BLOB1_ID, 0u8, 0u32, 72u32, PLAIN1.len() as u32),
        (BLOB2_ID, 1, 72, 66, 288),
    ] {
        w.u8(0);
        w.u8(comp);
        w.raw(&unhex(id));
        w.u32(off);
        w.u32(stored);
        w.u32(raw);
    }
    assert_eq!(w.finish(), plain);
    assert_eq!(IndexFile::decode(&plain).unwrap(), f);
    // Envelope (kind 2, uncompressed).
    let env = envelope_fixed(&key, ObjectKind::Index, &plain, false, &NONCE_INDEX);
    assert_long(
        "index envelope",
        &env,
        INDEX_ENVELOPE_LEN,
        INDEX_ENVELOPE_ID,
        INDEX_ENVELOPE_HEAD,
    );
    let name = Id::from_hex(INDEX_ENVELOPE_ID).unwrap();
    assert_eq!(
        envelope::open(&key, ObjectKind::Index, &name, &env).unwrap(),
        plain
    );
    assert!(envelope::open(&key, ObjectKind::Snapshot, &name, &env).is_err());
    check_envelope_writer_matches(&key, ObjectKind::Index, &plain, false, &env);
    // The merged index finds both blobs in the pack.
    let m = MasterIndex::from_files([(name, &f)]);
    let loc = m
        .get(BlobType::Data, &Id::from_hex(BLOB2_ID).unwrap())
        .unwrap();
    assert_eq!(loc.pack.to_hex(), PACK_ID);
    assert_eq!(
        (loc.entry.offset, loc.entry.stored_len, loc.entry.raw_len),
        (72, 66, 288)
    );
}

#[test]
fn tree_with_file_and_symlink() {
    let key = master_key();
    let t = tree_vector();
    let enc = t.encode().unwrap();
    assert_eq!(enc, tree_vector_by_hand());
    assert_long("tree", &enc, TREE_LEN, TREE_BLAKE3, TREE_HEAD);
    assert_eq!(key.blob_id(&enc).to_hex(), TREE_ID);
    assert_eq!(Tree::decode(&enc).unwrap(), t);
    assert_eq!(hx(&Tree::default().encode().unwrap()), EMPTY_TREE);
    assert_eq!(Tree::decode(&unhex(EMPTY_TREE)).unwrap(), Tree::default());
}

#[test]
fn snapshot() {
    let key = master_key();
    let s = snapshot_vector();
    let enc = s.encode();
    assert_long(
        "snapshot",
        &enc,
        SNAPSHOT_LEN,
        SNAPSHOT_BLAKE3,
        SNAPSHOT_HEAD,
    );
    assert_eq!(s.tree.to_hex(), TREE_ID);
    // utc_offset_s = -18000 is the i32 two's complement b0b9ffff at offset 9.
    assert_eq!(hx(&enc[9..13]), "b0b9ffff");
    assert_eq!(Snapshot::decode(&enc).unwrap(), s);
    // Envelope (kind 3, zstd-compressed, as the library writes snapshots).
    let env = envelope_fixed(&key, ObjectKind::Snapshot, &enc, true, &NONCE_SNAPSHOT);
    assert_long(
        "snapshot envelope",
        &env,
        SNAPSHOT_ENVELOPE_LEN,
        SNAPSHOT_ENVELOPE_ID,
        SNAPSHOT_ENVELOPE_HEAD,
    );
    let name = Id::from_hex(SNAPSHOT_ENVELOPE_ID).unwrap();
    assert_eq!(
        envelope::open(&key, ObjectKind::Snapshot, &name, &env).unwrap(),
        enc
    );
    check_envelope_writer_matches(&key, ObjectKind::Snapshot, &enc, true, &env);
}

#[test]
fn config() {
    let key = master_key();
    let c = config_vector();
    let plain = c.encode();
    assert_eq!(hx(&plain), CONFIG_PLAIN);
    assert_eq!(Config::decode(&plain).unwrap(), c);
    // Envelope (kind 1, uncompressed, as `init` writes it).
    let env = envelope_fixed(&key, ObjectKind::Config, &plain, false, &NONCE_CONFIG);
    assert_eq!(hx(&env), CONFIG_ENVELOPE);
    assert_eq!(b3(&env), CONFIG_ENVELOPE_ID);
    let name = Id::from_hex(CONFIG_ENVELOPE_ID).unwrap();
    assert_eq!(
        envelope::open(&key, ObjectKind::Config, &name, &env).unwrap(),
        plain
    );
    check_envelope_writer_matches(&key, ObjectKind::Config, &plain, false, &env);
    // A newer version byte is refused as such, not as corruption.
    let mut newer = env.clone();
    newer[4] = 2;
    assert!(matches!(
        envelope::open(&key, ObjectKind::Config, &name, &newer),
        Err(holdfast_repo::Error::UnsupportedVersion { found: 2, .. })
    ));
}

#[test]
fn key_file() {
    let (bytes, wrap) = key_file_vector();
    assert_eq!(hx(&wrap), KEY_WRAP);
    assert_long("key file", &bytes, KEY_FILE_LEN, KEY_FILE_ID, KEY_FILE_HEAD);
    let kf = KeyFile::decode(&bytes).unwrap();
    assert_eq!(kf.kdf, FAST_KDF);
    assert_eq!(kf.salt, KEY_SALT);
    assert_eq!(
        (kf.created_ns, kf.host.as_str(), kf.user.as_str()),
        (T0, "host1", "alice")
    );
    assert_eq!(
        kf.unlock(PASSWORD).unwrap().unwrap().to_bytes(),
        master_key().to_bytes()
    );
    assert!(kf.unlock(b"wrong").unwrap().is_none());
    // The sealed part starts at offset 72 (AD = bytes 0..72) and holds nonce, 96, tag.
    assert_eq!(bytes.len() - 72, 24 + 96 + 16);
    assert_eq!(bytes[72..96], NONCE_KEY);
    // Changing a KDF parameter in the AD makes the key file fail to open.
    let mut weaker = bytes.clone();
    weaker[6..10].copy_from_slice(&16u32.to_le_bytes());
    let k = KeyFile::decode(&weaker).unwrap();
    assert!(k.unlock(PASSWORD).unwrap().is_none());
    // KeyFile::create writes the same layout (with a random salt and nonce).
    let real = KeyFile::create(&master_key(), PASSWORD, FAST_KDF, T0, "host1", "alice").unwrap();
    assert_eq!(real.encoded().len(), bytes.len());
    assert_eq!(real.encoded()[..18], bytes[..18]);
    assert_eq!(real.encoded()[50..72], bytes[50..72]);
}

#[test]
fn chunker_gear_table_and_boundaries() {
    let g = gear_table(&master_key().chunker);
    assert_eq!(g[..4], GEAR_HEAD);
    let gb: Vec<u8> = g.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(b3(&gb), GEAR_BLAKE3);
    let input = xof_input(CHUNK_INPUT_SEED, CHUNK_INPUT_LEN);
    assert_eq!(b3(&input), CHUNK_INPUT_BLAKE3);
    let lens = chunk_lengths(&input, 512 * 1024, 1024 * 1024, 8 * 1024 * 1024, &g);
    assert_eq!(lens, CHUNKS_DEFAULT);
    let small = chunk_lengths(&input, 64, 256, 1024, &g);
    assert_eq!(small.len(), CHUNKS_SMALL.0);
    assert_eq!(lengths_digest(&small), CHUNKS_SMALL.1);
    assert_eq!(small[..8], CHUNKS_SMALL.2);
    assert!(small[..small.len() - 1]
        .iter()
        .all(|&l| (64..=1024).contains(&l)));
}

// =======================================================================================
// SPEC.md §15.12 – §15.19: gc marker, sessions, subtrees, zero runs, devices, tree pack,
// master-index resolution.
// =======================================================================================

const NONCE_MARKER: [u8; NONCE_LEN] = [0x4b; NONCE_LEN];
const NONCE_SESSION_V1: [u8; NONCE_LEN] = [0x4c; NONCE_LEN];
const NONCE_SESSION_V2: [u8; NONCE_LEN] = [0x4d; NONCE_LEN];
const NONCE_SUBTREE_BLOB: [u8; NONCE_LEN] = [0x4e; NONCE_LEN];
const NONCE_DIR_TREE_BLOB: [u8; NONCE_LEN] = [0x4f; NONCE_LEN];
const NONCE_TREE_PACK_HEADER: [u8; NONCE_LEN] = [0x50; NONCE_LEN];
/// §15.19: index envelopes F1, F2, F3, G, H and gc markers M1, M2.
const NONCE_RES_F1: [u8; NONCE_LEN] = [0x51; NONCE_LEN];
const NONCE_RES_F2: [u8; NONCE_LEN] = [0x52; NONCE_LEN];
const NONCE_RES_F3: [u8; NONCE_LEN] = [0x53; NONCE_LEN];
const NONCE_RES_G: [u8; NONCE_LEN] = [0x54; NONCE_LEN];
const NONCE_RES_H: [u8; NONCE_LEN] = [0x56; NONCE_LEN];
const NONCE_RES_M1: [u8; NONCE_LEN] = [0x57; NONCE_LEN];
const NONCE_RES_M2: [u8; NONCE_LEN] = [0x58; NONCE_LEN];

/// The v1 writer's compression rule for a blob plaintext (SPEC.md §5.2; the probe only
/// applies from 32 KiB on, far above these vectors).
fn blob_compresses(plain: &[u8]) -> bool {
    plain.len() >= 64 && {
        let c = zstd::bulk::compress(plain, 3).unwrap();
        c.len() + plain.len() / 32 < plain.len()
    }
}

/// The envelope writer's rule: zstd only if strictly shorter (SPEC.md §3.2).
fn envelope_compresses(plain: &[u8]) -> bool {
    zstd::bulk::compress(plain, 3).unwrap().len() < plain.len()
}

// --- §15.12 gc marker ------------------------------------------------------------------

fn marker_vector() -> holdfast_repo::gc::GcMarker {
    holdfast_repo::gc::GcMarker {
        mark_ns: T0,
        supersedes: vec![Id([0x99; 32])],
        packs: vec![
            Id::of_stored_bytes(&pack_vector().0),
            tree_pack_vector().0 .1,
        ],
    }
}

// --- §15.13 / §15.14 sessions ----------------------------------------------------------

const SESSION_ID: [u8; 16] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];
const SESSION_PROCESS: &str = "6c1f0a7e-3b2d-4c59-9e81-2f7d4a6b8c90 pid:[4026531836] 1234567";

/// Version 1 session plaintext, built field by field (the library writes only version 2).
fn session_v1_bytes() -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1); // version
    w.raw(&SESSION_ID);
    w.u8(1); // role: writer
    w.bytes16(b"host1");
    w.u32(4242);
    w.i64(T0);
    w.i64(T0 + 300_000_000_000);
    w.finish()
}

fn session_v2() -> holdfast_repo::gc::Session {
    holdfast_repo::gc::Session {
        session_id: SESSION_ID,
        role: holdfast_repo::gc::Role::Prune,
        host: "host1".into(),
        pid: 4243,
        start_ns: T0,
        heartbeat_ns: T0 + 600_000_000_000,
        process: SESSION_PROCESS.into(),
    }
}

// --- §15.15 directory with a subtree ---------------------------------------------------

/// The listing of directory `docs`: one file.
fn subtree_vector() -> Tree {
    let key = master_key();
    let mut f = Node::new("readme.txt", NodeKind::File);
    f.mode = 0o644;
    f.uid = 1000;
    f.gid = 1000;
    f.user = "alice".into();
    f.group = "alice".into();
    f.mtime_ns = T0;
    f.ctime_ns = T0;
    f.size = PLAIN1.len() as u64;
    f.inode = 2001;
    f.device = 0x803;
    f.links = 1;
    f.content = vec![ContentRef::Blob(key.blob_id(PLAIN1))];
    Tree { nodes: vec![f] }
}

/// A tree with one directory node `docs` whose subtree is [`subtree_vector`].
fn dir_tree_vector() -> Tree {
    let key = master_key();
    let sub = key.blob_id(&subtree_vector().encode().unwrap());
    let mut d = Node::new("docs", NodeKind::Dir);
    d.mode = 0o755;
    d.uid = 1000;
    d.gid = 1000;
    d.user = "alice".into();
    d.group = "alice".into();
    d.mtime_ns = T0;
    d.ctime_ns = T0;
    d.inode = 2000;
    d.device = 0x803;
    d.links = 2;
    d.subtree = Some(sub);
    Tree { nodes: vec![d] }
}

// --- §15.16 zero runs ------------------------------------------------------------------

fn zero_run_tree_vector() -> Tree {
    let key = master_key();
    let mut s = Node::new("sparse.img", NodeKind::File);
    s.mode = 0o600;
    s.uid = 1000;
    s.gid = 1000;
    s.user = "alice".into();
    s.group = "alice".into();
    s.mtime_ns = T0;
    s.ctime_ns = T0;
    s.size = 4096 + PLAIN1.len() as u64 + 1_048_576;
    s.inode = 3001;
    s.device = 0x803;
    s.links = 1;
    s.content = vec![
        ContentRef::Zeros(4096),
        ContentRef::Blob(key.blob_id(PLAIN1)),
        ContentRef::Zeros(1_048_576),
    ];
    let mut z = Node::new("zeros.bin", NodeKind::File);
    z.mode = 0o600;
    z.uid = 1000;
    z.gid = 1000;
    z.user = "alice".into();
    z.group = "alice".into();
    z.mtime_ns = T0;
    z.ctime_ns = T0;
    z.size = 65_536;
    z.inode = 3002;
    z.device = 0x803;
    z.links = 1;
    z.content = vec![ContentRef::Zeros(65_536)];
    Tree { nodes: vec![s, z] }
}

// --- §15.17 device nodes ---------------------------------------------------------------

fn device_tree_vector() -> Tree {
    let mut c = Node::new("null", NodeKind::CharDevice);
    c.mode = 0o666;
    c.user = "root".into();
    c.group = "root".into();
    c.mtime_ns = T0;
    c.ctime_ns = T0;
    c.inode = 4;
    c.device = 5;
    c.links = 1;
    c.rdev = 0x103; // major 1, minor 3
    let mut b = Node::new("sda", NodeKind::BlockDevice);
    b.mode = 0o660;
    b.gid = 6;
    b.user = "root".into();
    b.group = "disk".into();
    b.mtime_ns = T0;
    b.ctime_ns = T0;
    b.inode = 200;
    b.device = 5;
    b.links = 1;
    b.rdev = 0x800; // major 8, minor 0
    Tree { nodes: vec![c, b] }
}

// --- §15.18 tree pack ------------------------------------------------------------------

/// The two tree blobs of §15.15, subtree first (as writers store them), sealed with fixed
/// nonces.
fn tree_blobs() -> [SealedBlob; 2] {
    let key = master_key();
    let sub = subtree_vector().encode().unwrap();
    let dir = dir_tree_vector().encode().unwrap();
    [
        seal_blob_fixed(
            &key,
            BlobType::Tree,
            &sub,
            blob_compresses(&sub),
            &NONCE_SUBTREE_BLOB,
        ),
        seal_blob_fixed(
            &key,
            BlobType::Tree,
            &dir,
            blob_compresses(&dir),
            &NONCE_DIR_TREE_BLOB,
        ),
    ]
}

/// ((pack bytes, pack ID), header).
fn tree_pack_vector() -> ((Vec<u8>, Id), PackHeader) {
    let key = master_key();
    let mut bytes = Vec::new();
    let mut entries = Vec::new();
    for b in tree_blobs() {
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
        pack_type: BlobType::Tree,
        entries,
    };
    let sealed = crypto::seal_with_nonce(
        &key.encryption,
        &NONCE_TREE_PACK_HEADER,
        HEADER_AD,
        &header.encode(),
    );
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    bytes.push(1);
    bytes.extend_from_slice(b"hfpk");
    let id = Id::of_stored_bytes(&bytes);
    ((bytes, id), header)
}

// --- §15.19 master-index resolution ----------------------------------------------------

/// A stand-in pack file: the stored bytes are the ASCII string `pack <label>` (not a valid
/// pack; only its existence in `data/` matters to index resolution).
fn res_pack(label: char) -> Id {
    Id::of_stored_bytes(format!("pack {label}").as_bytes())
}

/// An index entry of §15.19: blob ID 32 × `b`, uncompressed, stored 100, raw 60.
fn res_entry(ty: BlobType, b: u8, offset: u32) -> PackEntry {
    PackEntry {
        id: Id([b; 32]),
        ty,
        compression: Compression::None,
        offset,
        stored_len: 100,
        raw_len: 60,
    }
}

fn res_index_pack(label: char, blobs: &[(BlobType, u8, u32)]) -> IndexPack {
    IndexPack {
        id: res_pack(label),
        blobs: blobs.iter().map(|&(t, b, o)| res_entry(t, b, o)).collect(),
    }
}

/// The index files and markers of §15.19 as (label, envelope bytes), in the order given
/// there (F1, F2, F3, G, H; M1, M2).
/// Stored files by label: (label, bytes).
type Labelled = Vec<(&'static str, Vec<u8>)>;

fn resolution_files() -> (Labelled, Labelled) {
    use holdfast_repo::gc::GcMarker;
    let key = master_key();
    let d = BlobType::Data;
    let idx =
        |f: &IndexFile, nonce| envelope_fixed(&key, ObjectKind::Index, &f.encode(), false, nonce);
    let f1 = IndexFile {
        supersedes: vec![],
        packs: vec![res_index_pack('A', &[(d, 0xd1, 0), (d, 0xd2, 100)])],
    };
    let f1e = idx(&f1, &NONCE_RES_F1);
    let f2 = IndexFile {
        supersedes: vec![Id::of_stored_bytes(&f1e)],
        packs: vec![res_index_pack(
            'A',
            &[(d, 0xd1, 0), (d, 0xd2, 100), (d, 0xd3, 200)],
        )],
    };
    let f2e = idx(&f2, &NONCE_RES_F2);
    let f3 = IndexFile {
        supersedes: vec![Id::of_stored_bytes(&f2e), Id::of_stored_bytes(&f1e)],
        packs: vec![res_index_pack('A', &[(d, 0xd1, 0), (d, 0xd3, 200)])],
    };
    let f3e = idx(&f3, &NONCE_RES_F3);
    let g = IndexFile {
        supersedes: vec![],
        packs: vec![
            res_index_pack('M', &[(d, 0xd4, 0), (d, 0xd5, 100), (d, 0xd9, 200)]),
            res_index_pack('B', &[(d, 0xd4, 0), (d, 0xd6, 100)]),
            res_index_pack('K', &[(d, 0xd7, 0), (d, 0xd8, 100)]),
            res_index_pack('D', &[(d, 0xd6, 0), (d, 0xda, 100), (d, 0xda, 200)]),
        ],
    };
    let ge = idx(&g, &NONCE_RES_G);
    let h = IndexFile {
        supersedes: vec![],
        packs: vec![
            res_index_pack('X', &[(d, 0xd5, 0), (d, 0xd7, 100)]),
            res_index_pack('C', &[(d, 0xd1, 0), (d, 0xd6, 100)]),
            res_index_pack('T', &[(BlobType::Tree, 0xd6, 0)]),
        ],
    };
    let he = idx(&h, &NONCE_RES_H);
    let m1 = GcMarker {
        mark_ns: T0,
        supersedes: vec![],
        packs: vec![res_pack('K'), res_pack('X')],
    };
    let m1e = envelope_fixed(
        &key,
        ObjectKind::GcMarker,
        &m1.encode(),
        false,
        &NONCE_RES_M1,
    );
    let m2 = GcMarker {
        mark_ns: T0,
        supersedes: vec![Id::of_stored_bytes(&m1e)],
        packs: vec![res_pack('K')],
    };
    let m2e = envelope_fixed(
        &key,
        ObjectKind::GcMarker,
        &m2.encode(),
        false,
        &NONCE_RES_M2,
    );
    (
        vec![("F1", f1e), ("F2", f2e), ("F3", f3e), ("G", ge), ("H", he)],
        vec![("M1", m1e), ("M2", m2e)],
    )
}

#[test]
#[ignore = "prints the vectors of §15.12-§15.19; run with --ignored --nocapture"]
fn print_new_vectors() {
    let key = master_key();
    let m = marker_vector().encode();
    println!("MARKER_PLAIN {} ({} bytes)", hx(&m), m.len());
    println!("  marker compresses: {}", envelope_compresses(&m));
    let me = envelope_fixed(
        &key,
        ObjectKind::GcMarker,
        &m,
        envelope_compresses(&m),
        &NONCE_MARKER,
    );
    println!(
        "MARKER_ENV len {} b3 {} head {}",
        me.len(),
        b3(&me),
        hx(&me[..32])
    );
    let s1 = session_v1_bytes();
    println!("SESSION_V1_PLAIN {} ({} bytes)", hx(&s1), s1.len());
    let s1e = envelope_fixed(&key, ObjectKind::Session, &s1, false, &NONCE_SESSION_V1);
    println!(
        "SESSION_V1_ENV {} ({} bytes) name {}",
        hx(&s1e),
        s1e.len(),
        b3(&s1e)
    );
    let s2 = session_v2().encode().unwrap();
    println!("SESSION_V2_PLAIN {} ({} bytes)", hx(&s2), s2.len());
    let s2e = envelope_fixed(&key, ObjectKind::Session, &s2, false, &NONCE_SESSION_V2);
    println!(
        "SESSION_V2_ENV len {} b3 {} head {}",
        s2e.len(),
        b3(&s2e),
        hx(&s2e[..32])
    );
    for (name, t) in [
        ("SUBTREE", subtree_vector()),
        ("DIR_TREE", dir_tree_vector()),
        ("ZERO_TREE", zero_run_tree_vector()),
        ("DEVICE_TREE", device_tree_vector()),
    ] {
        let e = t.encode().unwrap();
        println!(
            "{name} len {} b3 {} head {} id {} compresses {}\n  full {}",
            e.len(),
            b3(&e),
            hx(&e[..32]),
            key.blob_id(&e),
            blob_compresses(&e),
            hx(&e)
        );
    }
    for b in tree_blobs() {
        println!(
            "TREE_BLOB {:?} len {} b3 {} head {}",
            b.compression,
            b.bytes.len(),
            b3(&b.bytes),
            hx(&b.bytes[..32])
        );
    }
    let ((p, pid), h) = tree_pack_vector();
    println!(
        "TREE_PACK_HEADER_PLAIN {} ({} bytes)",
        hx(&h.encode()),
        h.encode().len()
    );
    println!(
        "TREE_PACK len {} id {} head {} trailer {}",
        p.len(),
        pid,
        hx(&p[..32]),
        hx(&p[p.len() - 9..])
    );
    for c in ['A', 'B', 'C', 'D', 'K', 'M', 'T', 'X'] {
        println!("RES_PACK {c} {}", res_pack(c));
    }
    let (files, markers) = resolution_files();
    for (l, e) in files.iter().chain(markers.iter()) {
        println!("RES_FILE {l} {} len {}", b3(e), e.len());
    }
}

/// A repository in `dir` with the fixed master key: the key file of §15.10 and the config
/// of §15.9, opened with the password of §15.10.
fn fixed_key_repository(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<holdfast_repo::backend::local::LocalBackend>,
    holdfast_repo::repository::Repository,
) {
    use holdfast_repo::backend::{local::LocalBackend, Backend, FileKind};
    let backend = std::sync::Arc::new(LocalBackend::new(dir));
    backend.create().unwrap();
    let (kf, _) = key_file_vector();
    backend
        .write(FileKind::Key, &Id::of_stored_bytes(&kf), &kf)
        .unwrap();
    let cfg = envelope_fixed(
        &master_key(),
        ObjectKind::Config,
        &config_vector().encode(),
        false,
        &NONCE_CONFIG,
    );
    backend
        .write(FileKind::Config, &Id::of_stored_bytes(&cfg), &cfg)
        .unwrap();
    let repo = holdfast_repo::repository::Repository::open(backend.clone(), PASSWORD).unwrap();
    assert_eq!(repo.key().to_bytes(), master_key().to_bytes());
    (backend, repo)
}

/// Writes the files of §15.19 into a fixed-key repository: every pack but M, the five
/// index files and the two markers.
fn resolution_repository(dir: &std::path::Path) -> holdfast_repo::repository::Repository {
    use holdfast_repo::backend::{Backend, FileKind};
    let (backend, repo) = fixed_key_repository(dir);
    for c in ['A', 'B', 'C', 'D', 'K', 'T', 'X'] {
        let bytes = format!("pack {c}");
        backend
            .write(FileKind::Pack, &res_pack(c), bytes.as_bytes())
            .unwrap();
    }
    let (files, markers) = resolution_files();
    for (_, e) in &files {
        backend
            .write(FileKind::Index, &Id::of_stored_bytes(e), e)
            .unwrap();
    }
    for (_, e) in &markers {
        backend
            .write(FileKind::GcMarker, &Id::of_stored_bytes(e), e)
            .unwrap();
    }
    repo
}

/// §15.19: per blob (type, ID byte), where it resolves: (first claim, reader, writer),
/// each as (pack, offset) or `None` for absent.
type Resolution = (BlobType, u8, [Option<(char, u32)>; 3]);
const RESOLUTION: [Resolution; 12] = [
    (
        BlobType::Data,
        0xd1,
        [Some(('C', 0)), Some(('C', 0)), Some(('C', 0))],
    ),
    (BlobType::Data, 0xd2, [None, None, None]),
    (
        BlobType::Data,
        0xd3,
        [Some(('A', 200)), Some(('A', 200)), Some(('A', 200))],
    ),
    (
        BlobType::Data,
        0xd4,
        [Some(('B', 0)), Some(('B', 0)), Some(('B', 0))],
    ),
    (
        BlobType::Data,
        0xd5,
        [Some(('X', 0)), Some(('X', 0)), Some(('X', 0))],
    ),
    (
        BlobType::Data,
        0xd6,
        [Some(('B', 100)), Some(('B', 100)), Some(('B', 100))],
    ),
    (
        BlobType::Tree,
        0xd6,
        [Some(('T', 0)), Some(('T', 0)), Some(('T', 0))],
    ),
    (
        BlobType::Data,
        0xd7,
        [Some(('X', 100)), Some(('X', 100)), Some(('X', 100))],
    ),
    (
        BlobType::Data,
        0xd8,
        [Some(('K', 100)), Some(('K', 100)), None],
    ),
    (BlobType::Data, 0xd9, [Some(('M', 200)), None, None]),
    (
        BlobType::Data,
        0xda,
        [Some(('D', 100)), Some(('D', 100)), Some(('D', 100))],
    ),
    (BlobType::Tree, 0xd1, [None, None, None]),
];

fn resolved(index: &MasterIndex, ty: BlobType, b: u8) -> Option<(Id, u32)> {
    index
        .get(ty, &Id([b; 32]))
        .map(|l| (l.pack, l.entry.offset))
}

fn expected(e: Option<(char, u32)>) -> Option<(Id, u32)> {
    e.map(|(c, o)| (res_pack(c), o))
}

#[test]
fn master_index_resolution() {
    use std::collections::HashSet;
    let dir = tempfile::tempdir().unwrap();
    let repo = resolution_repository(dir.path());
    let (files, markers) = resolution_files();
    let name = |l: &str| {
        let all = files.iter().chain(markers.iter());
        let (_, e) = all.clone().find(|(x, _)| *x == l).unwrap();
        Id::of_stored_bytes(e)
    };
    // The names pinned in SPEC.md, and the order they give: G < H < F3.
    for (c, hex) in RESOLUTION_PACKS {
        assert_eq!(res_pack(c).to_hex(), hex, "pack {c}");
    }
    for (l, hex) in RESOLUTION_NAMES {
        assert_eq!(name(l).to_hex(), hex, "name of {l}");
    }
    assert!(name("G") < name("H") && name("H") < name("F3"));
    // Markers: M1 is superseded, so only K is marked.
    let gc = repo.gc_markers().unwrap();
    assert_eq!(gc.marked, HashSet::from([res_pack('K')]));
    assert_eq!(gc.superseded, HashSet::from([name("M1")]));
    // First claim: what prune resolves with marked and missing packs as last resort.
    let last = HashSet::from([res_pack('K'), res_pack('M')]);
    let survey = repo.survey_index(&last).unwrap();
    let reader = repo.load_index().unwrap();
    let writer = repo.begin_write("host1").unwrap();
    for (ty, b, [first, read, write]) in RESOLUTION {
        let what = format!("{} {b:02x}", ty.name());
        assert_eq!(
            resolved(&survey.index, ty, b),
            expected(first),
            "first claim of {what}"
        );
        assert_eq!(
            resolved(writer.index(), ty, b),
            expected(write),
            "writer: {what}"
        );
        if (ty, b) != (BlobType::Data, 0xd7) {
            assert_eq!(resolved(&reader, ty, b), expected(read), "reader: {what}");
        }
    }
    // The same through the index builder, given the current files in name order and the
    // writer's exclusions.
    let mut decoded: Vec<(Id, IndexFile)> = files
        .iter()
        .map(|(_, e)| {
            let n = Id::of_stored_bytes(e);
            let plain = envelope::open(&master_key(), ObjectKind::Index, &n, e).unwrap();
            (n, IndexFile::decode(&plain).unwrap())
        })
        .collect();
    decoded.sort_by_key(|(n, _)| *n);
    let m = MasterIndex::from_files_excluding(decoded.iter().map(|(n, f)| (*n, f)), &last);
    for (ty, b, [_, _, write]) in RESOLUTION {
        assert_eq!(resolved(&m, ty, b), expected(write), "from_files: {}", b);
    }
}

/// SPEC.md §7.2 and §12.3: readers locate a blob at its first claim, which puts claims in
/// marked packs last, so blob d7 (in marked pack K, listed first, and in unmarked pack X)
/// resolves to X, for `Repository::load_index` as for prune and writers.
#[test]
fn reader_prefers_unmarked_copies() {
    let dir = tempfile::tempdir().unwrap();
    let repo = resolution_repository(dir.path());
    let reader = repo.load_index().unwrap();
    assert_eq!(
        resolved(&reader, BlobType::Data, 0xd7),
        expected(Some(('X', 100)))
    );
}

/// §15.19: the names of the index files and markers.
const RESOLUTION_NAMES: [(&str, &str); 7] = [
    (
        "F1",
        "4330016cb4ebbef62c79f8e7d728eca4709a46b23ed351a5f9bcebdbf7e4d79d",
    ),
    (
        "F2",
        "dc447b847462acbc43ea18183ef519324572c5557fc5594cc0fba2c5140ca09e",
    ),
    (
        "F3",
        "d7888703b521854e90de62dd4640f07a39953cfd5dbe4404a4a482c3f2ceaa2f",
    ),
    (
        "G",
        "479515f5929fb87d04305f0e464e168080bf03713338b4ef9e4d990bccba10cd",
    ),
    (
        "H",
        "9be3cc3a35300ceeb76c9bd76a0a36ca27cb5df3301be6f5f8bcfff23c93e8fd",
    ),
    (
        "M1",
        "ae4d7d648312714ad9e456eef43326a047be5552cb7edad3ecbe4250c41c270d",
    ),
    (
        "M2",
        "3e0b1a528997f9dd571b76c1c7205aa76669b6a9bd920145c2291f1fd412ccaf",
    ),
];
/// §15.19: the stand-in packs' names (BLAKE3 of `pack <label>`).
const RESOLUTION_PACKS: [(char, &str); 8] = [
    (
        'A',
        "a304c2ed399d4c20853fd19dfc0638ff30abcaaa2536eb43b01ba8548038c21c",
    ),
    (
        'B',
        "0ee754f49c2614f2c89f4665780ce806c2fe474885f31ebbedcad499629366ea",
    ),
    (
        'C',
        "25bc81f63d31706ad7b8182852b8d6548646fbff712fb6bbc329ec9107f76a00",
    ),
    (
        'D',
        "2469735791667f6cb58371e24c823ca58e75e8dc3c9da537b9933d8f0f4be292",
    ),
    (
        'K',
        "53a11f26d3a4b552bb286e03d8f560c0e9cc233e3279516f181032d2c687d5f3",
    ),
    (
        'M',
        "c3d67807081263ae6394e3a3cf1171c6f273a64960c6db335ef608a4ba897156",
    ),
    (
        'T',
        "8ded3899b6cd575882335454d260da02a8f094634b82d5e81f0b7552879f3989",
    ),
    (
        'X',
        "875a09b075ada4121171f74c3f66ab3e60c57a17bf7cc7e861f12e107d365bb5",
    ),
];

// --- Pinned values of §15.12 – §15.18 ---------------------------------------------------

const MARKER_PLAIN: &str = "0100002a36fe9c971701000000999999999999999999999999999999999999999999999999999999999999999902000000fbc58c01e90da012a75754bec5ae01eac58bb4a7f30e72310c4e5ad265e716e6a52ab44e9eaf33eea930f4b705dcc67be53de5ec5b64e88cc01c7bcafa1df414";
const MARKER_ENVELOPE_LEN: usize = 145;
const MARKER_ENVELOPE_ID: &str = "d6e7a500a894ed94abe2c0938747955c312ea4357d07464502e4e3073cd6f536";
const MARKER_ENVELOPE_HEAD: &str =
    "68666f620104014b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b0a";

const SESSION_V1_PLAIN: &str =
    "01000102030405060708090a0b0c0d0e0f010500686f7374319210000000002a36fe9c971700b88e0f449d9717";
const SESSION_V1_ENVELOPE: &str = "68666f620105004c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4cca55b9648032480dd9295fd5d388f7157251275035d4d7b55d04f1dc09fe8086d04d4c37e2d76c3957152074c7130303b7a9763651b62bd9f4b7ba986b";
const SESSION_V1_ENVELOPE_ID: &str =
    "b39286878b6d1f7516f7aa7657fb897716b6e31fff7538dce088ad8602e1f6a1";
const SESSION_V2_PLAIN: &str = "02000102030405060708090a0b0c0d0e0f020500686f7374319310000000002a36fe9c97170070f3e8899d97173d0036633166306137652d336232642d346335392d396538312d326637643461366238633930207069643a5b343032363533313833365d2031323334353637";
const SESSION_V2_ENVELOPE_LEN: usize = 155;
const SESSION_V2_ENVELOPE_ID: &str =
    "0820b680d5506fbd126a46a8b66ecb75953aed11acc2a3fd40d6ea233324bc42";
const SESSION_V2_ENVELOPE_HEAD: &str =
    "68666f620105004d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d34";

const SUBTREE_LEN: usize = 146;
const SUBTREE_BLAKE3: &str = "9fea81eabb1861b752f0c52835fc69ae62e9c1cf59e5e2c2f39db0c270464775";
const SUBTREE_HEAD: &str = "01010000000a00726561646d652e74787401a4010000e8030000e80300000500";
const SUBTREE_ID: &str = "6085a967852c8cc720222142c3b4a087ea68480840060f2cf6503983448674e8";
const DIR_TREE_LEN: usize = 139;
const DIR_TREE_BLAKE3: &str = "900de6cdf6f50ed737d4aaf96e5edefc9ea16e2236e90a647db02b0a72a4ff29";
const DIR_TREE_HEAD: &str = "01010000000400646f637302ed010000e8030000e80300000500616c69636505";
const DIR_TREE_ID: &str = "42318a12dc14fd49efd4c7c86d0a749f3842eeac568a736f07af309826a8cae0";

const ZERO_TREE_LEN: usize = 280;
const ZERO_TREE_BLAKE3: &str = "3b7a0dd4a9e253e9b01e81c87f3ac32ef59faf433356574456b368f4c0fb4c0d";
const ZERO_TREE_HEAD: &str = "01020000000a007370617273652e696d670180010000e8030000e80300000500";
const ZERO_TREE_ID: &str = "9508f59fd2f1d141c59270f7f25d107ee700e4ab69729a252a96ea1db425c5af";
/// The content refs of `sparse.img`: count 3, zeros 4096, blob ID(P1), zeros 1 MiB.
const ZERO_TREE_SPARSE_CONTENT: &str = "03000000010010000000000000002a03df3a9f47fa0759916458820af7cbe89430b45a7ffbb1185fd95a96a721dc010000100000000000";
/// The content refs of `zeros.bin`: count 1, zeros 65536.
const ZERO_TREE_ZEROS_CONTENT: &str = "01000000010000010000000000";

const DEVICE_TREE_LEN: usize = 204;
const DEVICE_TREE_BLAKE3: &str = "78b0dc373b7213962631dd64a0ba6f40bffadc7dec049261c83691f7ba022497";
const DEVICE_TREE_HEAD: &str = "010200000004006e756c6c05b601000000000000000000000400726f6f740400";
const DEVICE_TREE_ID: &str = "17dedee0d83cb2ea82a275b4d045561f98a5401f64698c5c29b0003428499164";

const TREE_BLOB_SUB: (usize, &str, &str) = (
    153,
    "d1bc76a97b6616d15647de2b755a8504a218900e559d2bbafb5432af23fdc85e",
    "4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e72dcb6a902bf6712",
);
const TREE_BLOB_DIR: (usize, &str, &str) = (
    142,
    "ce98ee4c4e38a2e6d21754f6712017e6f7e712a22f07aed3e010615f8a9b7307",
    "4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f5a15f706efb5f119",
);
const TREE_PACK_HEADER_PLAIN: &str = "010200000001016085a967852c8cc720222142c3b4a087ea68480840060f2cf6503983448674e89900000092000000010142318a12dc14fd49efd4c7c86d0a749f3842eeac568a736f07af309826a8cae08e0000008b000000";
const TREE_PACK_LEN: usize = 433;
const TREE_PACK_ID: &str = "a52ab44e9eaf33eea930f4b705dcc67be53de5ec5b64e88cc01c7bcafa1df414";
const TREE_PACK_HEAD: &str = "4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e72dcb6a902bf6712";
const TREE_PACK_TRAILER: &str = "81000000016866706b";

/// SPEC.md, to check that every value pinned for §15.12 on appears in it verbatim.
const SPEC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../SPEC.md"));

fn assert_in_spec(values: &[&str]) {
    for v in values {
        assert!(SPEC.contains(v), "SPEC.md §15 does not list {v}");
    }
}

#[test]
fn gc_marker() {
    use holdfast_repo::gc::GcMarker;
    let key = master_key();
    let m = marker_vector();
    let plain = m.encode();
    assert_eq!(hx(&plain), MARKER_PLAIN);
    // Field by field (SPEC.md §12.3).
    let mut w = Writer::new();
    w.u8(1);
    w.i64(T0);
    w.u32(1);
    w.raw(&[0x99; 32]);
    w.u32(2);
    w.raw(&unhex(PACK_ID));
    w.raw(&unhex(TREE_PACK_ID));
    assert_eq!(w.finish(), plain);
    assert_eq!(GcMarker::decode(&plain).unwrap(), m);
    // Envelope kind 4, zstd (shorter than the plaintext, so the writer compresses it).
    assert!(envelope_compresses(&plain));
    assert_eq!(zstd::bulk::compress(&plain, 3).unwrap().len(), 98);
    let env = envelope_fixed(&key, ObjectKind::GcMarker, &plain, true, &NONCE_MARKER);
    assert_long(
        "marker envelope",
        &env,
        MARKER_ENVELOPE_LEN,
        MARKER_ENVELOPE_ID,
        MARKER_ENVELOPE_HEAD,
    );
    let name = Id::from_hex(MARKER_ENVELOPE_ID).unwrap();
    assert_eq!(
        envelope::open(&key, ObjectKind::GcMarker, &name, &env).unwrap(),
        plain
    );
    check_envelope_writer_matches(&key, ObjectKind::GcMarker, &plain, true, &env);
    assert_in_spec(&[MARKER_PLAIN, MARKER_ENVELOPE_ID, MARKER_ENVELOPE_HEAD]);
}

#[test]
fn session_version_1() {
    use holdfast_repo::gc::{Role, Session};
    let key = master_key();
    let plain = session_v1_bytes();
    assert_eq!(hx(&plain), SESSION_V1_PLAIN);
    let s = Session::decode(&plain).unwrap();
    assert_eq!(
        s,
        Session {
            session_id: SESSION_ID,
            role: Role::Writer,
            host: "host1".into(),
            pid: 4242,
            start_ns: T0,
            heartbeat_ns: T0 + 300_000_000_000,
            process: String::new(),
        }
    );
    // Writers write version 2 only: the same session re-encodes as version 2 with an empty
    // process (two more bytes).
    let v2 = s.encode().unwrap();
    assert_eq!(v2[0], 2);
    assert_eq!(v2[1..plain.len()], plain[1..]);
    assert_eq!(hx(&v2[plain.len()..]), "0000");
    // Envelope kind 5, uncompressed (as sessions are written).
    let env = envelope_fixed(&key, ObjectKind::Session, &plain, false, &NONCE_SESSION_V1);
    assert_eq!(hx(&env), SESSION_V1_ENVELOPE);
    assert_eq!(b3(&env), SESSION_V1_ENVELOPE_ID);
    let name = Id::from_hex(SESSION_V1_ENVELOPE_ID).unwrap();
    assert_eq!(
        envelope::open(&key, ObjectKind::Session, &name, &env).unwrap(),
        plain
    );
    assert!(envelope::open(&key, ObjectKind::GcMarker, &name, &env).is_err());
    assert_in_spec(&[
        SESSION_V1_PLAIN,
        SESSION_V1_ENVELOPE,
        SESSION_V1_ENVELOPE_ID,
    ]);
}

#[test]
fn session_version_2() {
    use holdfast_repo::gc::Session;
    let key = master_key();
    let s = session_v2();
    let plain = s.encode().unwrap();
    assert_eq!(hx(&plain), SESSION_V2_PLAIN);
    let mut w = Writer::new();
    w.u8(2);
    w.raw(&SESSION_ID);
    w.u8(2); // prune
    w.bytes16(b"host1");
    w.u32(4243);
    w.i64(T0);
    w.i64(T0 + 600_000_000_000);
    w.bytes16(SESSION_PROCESS.as_bytes());
    assert_eq!(w.finish(), plain);
    assert_eq!(Session::decode(&plain).unwrap(), s);
    let env = envelope_fixed(&key, ObjectKind::Session, &plain, false, &NONCE_SESSION_V2);
    assert_long(
        "session v2 envelope",
        &env,
        SESSION_V2_ENVELOPE_LEN,
        SESSION_V2_ENVELOPE_ID,
        SESSION_V2_ENVELOPE_HEAD,
    );
    let name = Id::from_hex(SESSION_V2_ENVELOPE_ID).unwrap();
    assert_eq!(
        envelope::open(&key, ObjectKind::Session, &name, &env).unwrap(),
        plain
    );
    check_envelope_writer_matches(&key, ObjectKind::Session, &plain, false, &env);
    assert_in_spec(&[
        SESSION_V2_PLAIN,
        SESSION_V2_ENVELOPE_ID,
        SESSION_V2_ENVELOPE_HEAD,
    ]);
}

#[test]
fn directory_with_subtree() {
    let key = master_key();
    let sub = subtree_vector().encode().unwrap();
    assert_long("subtree", &sub, SUBTREE_LEN, SUBTREE_BLAKE3, SUBTREE_HEAD);
    assert_eq!(key.blob_id(&sub).to_hex(), SUBTREE_ID);
    let dir = dir_tree_vector().encode().unwrap();
    assert_long(
        "dir tree",
        &dir,
        DIR_TREE_LEN,
        DIR_TREE_BLAKE3,
        DIR_TREE_HEAD,
    );
    assert_eq!(key.blob_id(&dir).to_hex(), DIR_TREE_ID);
    // The directory node ends with flag 1 and the subtree's blob ID; the file node with
    // flag 0 after its one content ref.
    assert_eq!(hx(&dir[dir.len() - 33..]), format!("01{SUBTREE_ID}"));
    assert_eq!(
        hx(&sub[sub.len() - 38..]),
        format!("0100000000{BLOB1_ID}00")
    );
    let t = Tree::decode(&dir).unwrap();
    assert_eq!(t, dir_tree_vector());
    assert_eq!(t.nodes[0].subtree.unwrap().to_hex(), SUBTREE_ID);
    assert_eq!(Tree::decode(&sub).unwrap(), subtree_vector());
    assert_in_spec(&[
        SUBTREE_BLAKE3,
        SUBTREE_HEAD,
        SUBTREE_ID,
        DIR_TREE_BLAKE3,
        DIR_TREE_HEAD,
        DIR_TREE_ID,
    ]);
}

#[test]
fn zero_runs() {
    let key = master_key();
    let t = zero_run_tree_vector();
    let enc = t.encode().unwrap();
    assert_long(
        "zero-run tree",
        &enc,
        ZERO_TREE_LEN,
        ZERO_TREE_BLAKE3,
        ZERO_TREE_HEAD,
    );
    assert_eq!(key.blob_id(&enc).to_hex(), ZERO_TREE_ID);
    let h = hx(&enc);
    assert_eq!(h.matches(ZERO_TREE_SPARSE_CONTENT).count(), 1);
    assert_eq!(h.matches(ZERO_TREE_ZEROS_CONTENT).count(), 1);
    let back = Tree::decode(&enc).unwrap();
    assert_eq!(back, t);
    // The refs add up to the size.
    for n in &back.nodes {
        let total: u64 = n
            .content
            .iter()
            .map(|c| match c {
                ContentRef::Zeros(z) => *z,
                ContentRef::Blob(id) => {
                    assert_eq!(id.to_hex(), BLOB1_ID);
                    PLAIN1.len() as u64
                }
            })
            .sum();
        assert_eq!(total, n.size);
    }
    assert_in_spec(&[
        ZERO_TREE_BLAKE3,
        ZERO_TREE_HEAD,
        ZERO_TREE_ID,
        ZERO_TREE_SPARSE_CONTENT,
        ZERO_TREE_ZEROS_CONTENT,
    ]);
}

#[test]
fn device_nodes() {
    let key = master_key();
    let t = device_tree_vector();
    let enc = t.encode().unwrap();
    assert_long(
        "device tree",
        &enc,
        DEVICE_TREE_LEN,
        DEVICE_TREE_BLAKE3,
        DEVICE_TREE_HEAD,
    );
    assert_eq!(key.blob_id(&enc).to_hex(), DEVICE_TREE_ID);
    // rdev is the 8 bytes before the 4-byte link-target length, xattr and content counts
    // and the subtree flag at the end of each node (13 bytes).
    let sda_start = enc.windows(5).position(|w| w == b"\x03\x00sda").unwrap();
    assert_eq!(hx(&enc[sda_start - 21..sda_start - 13]), "0301000000000000");
    assert_eq!(hx(&enc[enc.len() - 21..enc.len() - 13]), "0008000000000000");
    let back = Tree::decode(&enc).unwrap();
    assert_eq!(back, t);
    assert_eq!(
        (back.nodes[0].kind, back.nodes[0].rdev),
        (NodeKind::CharDevice, 0x103)
    );
    assert_eq!(
        (back.nodes[1].kind, back.nodes[1].rdev),
        (NodeKind::BlockDevice, 0x800)
    );
    assert_in_spec(&[DEVICE_TREE_BLAKE3, DEVICE_TREE_HEAD, DEVICE_TREE_ID]);
}

#[test]
fn tree_pack() {
    let key = master_key();
    let blobs = tree_blobs();
    for (b, (len, hash, head)) in blobs.iter().zip([TREE_BLOB_SUB, TREE_BLOB_DIR]) {
        assert_eq!(b.compression, Compression::Zstd);
        assert_long("tree blob", &b.bytes, len, hash, head);
        // The library's writer makes the same compression decision.
        let plain = open_blob(&key, b.ty, b.compression, &b.id, b.raw_len, &b.bytes).unwrap();
        let real = seal_blob(
            &key,
            BlobType::Tree,
            b.id,
            &plain,
            CompressionLevel::default(),
        )
        .unwrap();
        assert_eq!((real.compression, real.bytes.len()), (b.compression, len));
    }
    let ((bytes, id), header) = tree_pack_vector();
    assert_long(
        "tree pack",
        &bytes,
        TREE_PACK_LEN,
        TREE_PACK_ID,
        TREE_PACK_HEAD,
    );
    assert_eq!(id.to_hex(), TREE_PACK_ID);
    assert_eq!(hx(&header.encode()), TREE_PACK_HEADER_PLAIN);
    assert_eq!(hx(&bytes[bytes.len() - TRAILER_LEN..]), TREE_PACK_TRAILER);
    let read = pack::read_header(&key, &id, &bytes).unwrap();
    assert_eq!(read, header);
    assert_eq!(read.pack_type, BlobType::Tree);
    assert_eq!(
        read.entries
            .iter()
            .map(|e| (e.offset, e.stored_len, e.raw_len))
            .collect::<Vec<_>>(),
        [(0, 153, 146), (153, 142, 139)]
    );
    for (e, want) in read
        .entries
        .iter()
        .zip([subtree_vector(), dir_tree_vector()])
    {
        let s = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        let plain = open_blob(&key, e.ty, e.compression, &e.id, e.raw_len, s).unwrap();
        assert_eq!(Tree::decode(&plain).unwrap(), want);
    }
    // PackWriter writes the same pack apart from the header's nonce; a data blob is refused.
    let mut writer = PackWriter::new(BlobType::Tree, Vec::new());
    for b in tree_blobs() {
        writer
            .add(b.id, b.ty, b.compression, b.raw_len, &[&b.bytes])
            .unwrap();
    }
    let b1 = blob1();
    assert!(writer
        .add(b1.id, b1.ty, b1.compression, b1.raw_len, &[&b1.bytes])
        .is_err());
    let real = writer.finish(&key).unwrap();
    let data_len = 153 + 142;
    assert_eq!(real.sink.len(), bytes.len());
    assert_eq!(real.sink[..data_len], bytes[..data_len]);
    assert_eq!(
        real.sink[bytes.len() - TRAILER_LEN..],
        bytes[bytes.len() - TRAILER_LEN..]
    );
    assert_eq!(real.header, header);
    assert_in_spec(&[
        TREE_BLOB_SUB.1,
        TREE_BLOB_DIR.1,
        TREE_PACK_HEADER_PLAIN,
        TREE_PACK_ID,
        TREE_PACK_HEAD,
    ]);
}

/// §15.21: the snapshot of §15.8 with a host sequence number and an origin is version 2:
/// the same fields after a version byte of 2, then the extension list.
const SNAPSHOT_V2_EXT: &str = "02000000\
0100080000000700000000000000\
020040000000\
7777777777777777777777777777777777777777777777777777777777777777\
8888888888888888888888888888888888888888888888888888888888888888";

#[test]
fn snapshot_version_2() {
    let mut s = snapshot_vector();
    let v1 = s.encode();
    assert_eq!(v1[0], 1, "no extensions: version 1");
    s.ext = SnapshotExt {
        host_seq: Some(7),
        origin: Some(Origin {
            repo_id: Id([0x77; 32]),
            snapshot: Id([0x88; 32]),
        }),
        unknown: vec![],
    };
    let v2 = s.encode();
    let mut want = v1.clone();
    want[0] = 2;
    want.extend(unhex(SNAPSHOT_V2_EXT));
    assert_eq!(hx(&v2), hx(&want));
    assert_eq!(v2.len(), SNAPSHOT_LEN + 88);
    assert_eq!(Snapshot::decode(&v2).unwrap(), s);
    assert_in_spec(&[SNAPSHOT_V2_EXT]);
}

/// §15.22: the config of §15.9 migrated to `snapshot-v2` at T0 + 1: version 2, generation
/// 2, with `session-v2` (which every version-2 config records) and `snapshot-v2`.
const CONFIG_V2_PLAIN: &str = "0277777777777777777777777777777777777777777777777777777777777777770000080000001000000080000000000100002a36fe9c9717020000000000000001002a36fe9c9717020000000a0073657373696f6e2d7632010500302e312e3001002a36fe9c97170b00736e617073686f742d7632030500302e322e3001002a36fe9c9717";
const NONCE_CONFIG_V2: [u8; NONCE_LEN] = [0x59; NONCE_LEN];
const CONFIG_V2_ENVELOPE: &str = "68666f62010100595959595959595959595959595959595959595959595959003db6beebb13e07af8f934a2cecadadd5c81b58d7fdec5814f11bdea955442d6163835ce080132a725124ed42bc27230fffa7eb8015a4ef4a5b5118360447ac22d11bcc767792300003d0adacbfad0bf04b1dbb48e5dd06dcee4794a659b9c74fd1f63270d6dd900d0cf0015ba2d592e13ee04d4b9501319487f2e94976d0ce28551ffd4fb180f919390f2938e5382d50e7635de8e3";
const CONFIG_V2_ENVELOPE_ID: &str =
    "d46dd6c250a3e70c632813ccb311ca3cf4f457d9df581d06277c1ea1275d5713";

#[test]
fn config_version_2() {
    use holdfast_repo::config::{ConfigFile, ConfigSet, SNAPSHOT_V2};
    let key = master_key();
    let v1 = config_vector();
    let c = v1.with_feature(SNAPSHOT_V2, T0 + 1);
    let plain = c.encode();
    assert_eq!(hx(&plain), CONFIG_V2_PLAIN);
    assert_eq!(plain.len(), 134);
    assert_eq!(Config::decode(&plain).unwrap(), c);
    let env = envelope_fixed(&key, ObjectKind::Config, &plain, false, &NONCE_CONFIG_V2);
    assert_eq!(hx(&env), CONFIG_V2_ENVELOPE, "name {}", b3(&env));
    assert_eq!(b3(&env), CONFIG_V2_ENVELOPE_ID);
    check_envelope_writer_matches(&key, ObjectKind::Config, &plain, false, &env);
    // Beside the version-1 config of §15.9 (generation 1), it is the current one.
    let set = ConfigSet::select(vec![
        ConfigFile {
            id: Id::from_hex(CONFIG_V2_ENVELOPE_ID).unwrap(),
            config: c.clone(),
            landed_ns: None,
        },
        ConfigFile {
            id: Id::from_hex(CONFIG_ENVELOPE_ID).unwrap(),
            config: v1,
            landed_ns: None,
        },
    ])
    .unwrap();
    assert_eq!(set.current().config, c);
    assert_in_spec(&[CONFIG_V2_PLAIN, CONFIG_V2_ENVELOPE, CONFIG_V2_ENVELOPE_ID]);
}
