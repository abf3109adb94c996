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
