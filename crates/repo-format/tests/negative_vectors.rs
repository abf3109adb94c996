//! Negative test vectors for the holdfast repository format, version 1 (SPEC.md §15.20).
//!
//! For every rule by which SPEC.md §2–§12 says a decoder MUST reject its input, one input
//! that breaks it (and, where a bound has an edge, the accepted input just inside it),
//! with the error class the decoder must return: **corrupt** or **unsupported version**.
//! The reference implementation's finer reason (truncated, trailing bytes, the invalid
//! field) is checked too.
//!
//! Every input is built here from the positive vectors of §15 or the small bases of §15.20
//! with fixed nonces, so its bytes are exact; `spec_lists_every_negative_vector` checks that
//! SPEC.md lists each one, row for row, as `print_negative_vectors` prints them:
//! `cargo test -p holdfast-repo --test negative_vectors -- --ignored --nocapture print_negative_vectors`.

use std::sync::Arc;

use holdfast_repo::backend::local::LocalBackend;
use holdfast_repo::backend::{Backend, FileKind};
use holdfast_repo::blob::{blob_ad, open_blob, BlobType, Compression};
use holdfast_repo::codec::{DecodeError, Writer};
use holdfast_repo::config::Config;
use holdfast_repo::crypto::{self, MasterKey, NONCE_LEN};
use holdfast_repo::envelope::{self, ObjectKind};
use holdfast_repo::gc::{GcMarker, Session};
use holdfast_repo::index::IndexFile;
use holdfast_repo::keyfile::{KdfParams, KeyFile};
use holdfast_repo::pack::{self, PackHeader, HEADER_AD};
use holdfast_repo::repository::{read_checked, Repository};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::Tree;
use holdfast_repo::{Error, Id};

// ---------------------------------------------------------------------------------------
// Fixed inputs (SPEC.md §15.1) and the positive vectors the negative ones derive from.
// ---------------------------------------------------------------------------------------

fn master_key() -> MasterKey {
    MasterKey {
        encryption: [0x11; 32],
        blob_id: [0x22; 32],
        chunker: [0x33; 32],
    }
}

const T0: i64 = 1_700_000_000_000_000_000;
const PLAIN1: &[u8] = b"holdfast v1 vector: 3f9a kQ7 zx!";
const PASSWORD: &[u8] = b"correct horse battery staple";
const NONCE_ENVELOPE_NOT_ZSTD: [u8; NONCE_LEN] = [0x5a; NONCE_LEN];
const NONCE_BLOB_WRONG_ID: [u8; NONCE_LEN] = [0x5b; NONCE_LEN];
const NONCE_BLOB_NOT_ZSTD: [u8; NONCE_LEN] = [0x5c; NONCE_LEN];
const NONCE_PACK_HEADER_RESEALED: [u8; NONCE_LEN] = [0x5d; NONCE_LEN];
const NONCE_SECOND_CONFIG: [u8; NONCE_LEN] = [0x5e; NONCE_LEN];

/// §15.3, §15.4, §15.5, §15.9, §15.12 – §15.14, §15.22.
const BLOB1_SEALED: &str = "444444444444444444444444444444444444444444444444b77ded7c7e43b31d97e0efbfa85d64d826c1b3ed291b2325ffec75d9422ff963cb49fcca689f1a10620ecfdeeaa0bec8";
const BLOB2_SEALED: &str = "454545454545454545454545454545454545454545454545c50c443173454a034d78085e4bfe01675e7daad3726cedaf36e5fa3eda339b1d61fea3b3441b0ff34980";
const PACK_HEADER_PLAIN: &str = "000200000000002a03df3a9f47fa0759916458820af7cbe89430b45a7ffbb1185fd95a96a721dc4800000020000000000122b3620e79699de12cc726a8f70740f6d122512ecb26be525c76a468c5abd0a54200000020010000";
const PACK_ID: &str = "fbc58c01e90da012a75754bec5ae01eac58bb4a7f30e72310c4e5ad265e716e6";
const CONFIG_PLAIN: &str = "0177777777777777777777777777777777777777777777777777777777777777770000080000001000000080000000000100002a36fe9c9717";
const CONFIG_ENVELOPE: &str = "68666f620101004848484848484848484848484848484848484848484848483bfee44d41dc56bc24525f5be2ae32e997fa41c2999c5f09d2f98ac430df975e1988881082edebca6116a29e38872b789978f26feaa2e25cf35c83bfa936cd0bb887a003cbdf988775";
const CONFIG_V2_PLAIN: &str = "0277777777777777777777777777777777777777777777777777777777777777770000080000001000000080000000000100002a36fe9c9717020000000000000001002a36fe9c9717020000000a0073657373696f6e2d7632010500302e312e3001002a36fe9c97170b00736e617073686f742d7632030500302e322e3001002a36fe9c9717";
const KEY_FILE_ID: &str = "4342d2f185a217c0b6bb18674f2022ceeef9561d9b7fa746502fffbe48d53c17";
const MARKER_PLAIN: &str = "0100002a36fe9c971701000000999999999999999999999999999999999999999999999999999999999999999902000000fbc58c01e90da012a75754bec5ae01eac58bb4a7f30e72310c4e5ad265e716e6a52ab44e9eaf33eea930f4b705dcc67be53de5ec5b64e88cc01c7bcafa1df414";
const SESSION_V1_PLAIN: &str =
    "01000102030405060708090a0b0c0d0e0f010500686f7374319210000000002a36fe9c971700b88e0f449d9717";
const SESSION_V2_PLAIN: &str = "02000102030405060708090a0b0c0d0e0f020500686f7374319310000000002a36fe9c97170070f3e8899d97173d0036633166306137652d336232642d346335392d396538312d326637643461366238633930207069643a5b343032363533313833365d2031323334353637";

fn hx(b: &[u8]) -> String {
    hex::encode(b)
}

fn b3(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("valid hex constant")
}

/// `base` with the bytes at `at` replaced by `with`.
fn patch(base: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    v[at..at + with.len()].copy_from_slice(with);
    v
}

/// `base` with `with` appended.
fn plus(base: &[u8], with: &[u8]) -> Vec<u8> {
    [base, with].concat()
}

/// A snapshot extension list (§9.1) of these records, unchecked.
fn ext(records: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = le32(records.len() as u32).to_vec();
    for (t, v) in records {
        out.extend(t.to_le_bytes());
        out.extend(le32(v.len() as u32));
        out.extend(*v);
    }
    out
}

fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

/// The key file of §15.10.
fn key_file() -> Vec<u8> {
    let kdf = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };
    let salt = [0x55; 32];
    let wrap = kdf.derive(PASSWORD, &salt).unwrap();
    let mut w = Writer::new();
    w.raw(b"hfky");
    w.u8(1);
    w.u8(1);
    w.u32(8);
    w.u32(1);
    w.u32(1);
    w.raw(&salt);
    w.i64(T0);
    w.bytes16(b"host1");
    w.bytes16(b"alice");
    let ad = w.buf.clone();
    w.raw(&crypto::seal_with_nonce(
        &wrap,
        &[0x49; NONCE_LEN],
        &ad,
        &master_key().to_bytes(),
    ));
    let kf = w.finish();
    assert_eq!(b3(&kf), KEY_FILE_ID);
    kf
}

/// The pack of §15.5 with its header plaintext replaced by `header`, sealed with `nonce`.
fn pack_with_header(header: &[u8], nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut p = plus(&unhex(BLOB1_SEALED), &unhex(BLOB2_SEALED));
    let sealed = crypto::seal_with_nonce(&master_key().encryption, nonce, HEADER_AD, header);
    p.extend_from_slice(&sealed);
    p.extend_from_slice(&le32(sealed.len() as u32));
    p.push(1);
    p.extend_from_slice(b"hfpk");
    p
}

/// The pack of §15.5.
fn pack() -> Vec<u8> {
    let p = pack_with_header(&unhex(PACK_HEADER_PLAIN), &[0x46; NONCE_LEN]);
    assert_eq!(b3(&p), PACK_ID);
    p
}

/// T1 (§15.20): a tree with one node `a` of kind 4 (fifo) and every other field zero or
/// empty. 94 bytes; the node's fields after its name start at offset 8.
fn t1() -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1);
    w.u32(1);
    w.raw(&t1_node(b"a"));
    w.finish()
}

/// The node of T1 under another name (`bytes16` name, then T1's 86 bytes from offset 8).
fn t1_node(name: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes16(name);
    w.u8(4); // fifo
    w.raw(&[0; 12]); // mode, uid, gid
    w.bytes16(b""); // user
    w.bytes16(b""); // group
    w.raw(&[0; 56]); // mtime, ctime, size, inode, device, links, rdev
    w.u32(0); // link target
    w.u32(0); // xattrs
    w.u32(0); // content
    w.u8(0); // no subtree
    w.finish()
}

/// T1 with its name replaced (offsets 5..8).
fn t1_named(name: &[u8]) -> Vec<u8> {
    let t = t1();
    [&t[..5], &bytes16(name), &t[8..]].concat()
}

/// A tree of two T1 nodes named `a` and `b`, in that order.
fn two_nodes(a: &[u8], b: &[u8]) -> Vec<u8> {
    [&[1u8, 2, 0, 0, 0][..], &t1_node(a), &t1_node(b)].concat()
}

fn bytes16(b: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes16(b);
    w.finish()
}

/// A data pack header listing three blobs of 2³² − 1 bytes: the third starts beyond u32.
fn three_huge_entries() -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(0);
    w.u32(3);
    for _ in 0..3 {
        w.u8(0);
        w.u8(0);
        w.raw(&[0; 32]);
        w.u32(u32::MAX);
        w.u32(u32::MAX);
    }
    w.finish()
}

/// I0 (§15.20): an index file with no supersedes and the pack of §15.5 holding one entry,
/// P1 (type 0, compression 0, offset 0, stored 72, raw 32). 91 bytes.
fn i0() -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1);
    w.u32(0);
    w.u32(1);
    w.raw(&unhex(PACK_ID));
    w.u32(1);
    w.u8(0);
    w.u8(0);
    w.id(&master_key().blob_id(PLAIN1));
    w.u32(0);
    w.u32(72);
    w.u32(32);
    w.finish()
}

/// S0 (§15.20), with `host` and `tags`: a snapshot whose every other field is zero or
/// empty (tree 32 × `00`, no parent). 180 bytes with an empty host and no tags.
fn s0_with(host: &[u8], tags: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1);
    w.i64(0);
    w.u32(0);
    w.bytes16(host);
    w.bytes16(b""); // user
    w.u32(0);
    w.u32(0);
    w.u32(0); // paths
    w.u32(tags.len() as u32);
    for t in tags {
        w.bytes16(t);
    }
    w.raw(&[0; 32]); // tree
    w.u8(0); // no parent
    w.bytes16(b""); // program version
    w.raw(&[0; 112]); // summary
    w.finish()
}

fn s0() -> Vec<u8> {
    s0_with(b"", &[])
}

// ---------------------------------------------------------------------------------------
// The vectors.
// ---------------------------------------------------------------------------------------

/// What a decoder must do with a vector.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Decodes (the edge just inside a bound).
    Accepted,
    /// Corrupt: the input ends before the structure.
    Truncated,
    /// Corrupt: bytes follow the structure.
    Trailing,
    /// Corrupt: this field holds a value the format does not allow.
    Invalid(&'static str),
    /// Unsupported version: a version byte above the one this build reads.
    Newer,
    /// Corrupt: a version byte below every version of the format (§13: version 0 never
    /// existed).
    Older,
    /// Corrupt, from a decoder that reports [`Error`] directly; the reference
    /// implementation's detail contains this text.
    Corrupt(&'static str),
    /// Unsupported version, from a decoder that reports [`Error`] directly.
    Unsupported,
    /// Needs a newer holdfast: a critical extension this build does not know.
    NewerFeature,
}

impl Want {
    fn class(self) -> String {
        match self {
            Want::Accepted => "accepted".into(),
            Want::Truncated => "corrupt (truncated)".into(),
            Want::Trailing => "corrupt (trailing bytes)".into(),
            Want::Invalid(f) => format!("corrupt (invalid {f})"),
            Want::Newer | Want::Unsupported => "unsupported version".into(),
            Want::NewerFeature => "needs a newer holdfast".into(),
            Want::Older => "corrupt (version below 1; see the note)".into(),
            Want::Corrupt("") => "corrupt".into(),
            Want::Corrupt(d) => format!("corrupt ({d})"),
        }
    }
}

/// Which decoder a vector is for.
#[derive(Debug, Clone, Copy)]
enum Decoder {
    /// `envelope::open`, expecting this kind; the name is the BLAKE3 of the bytes.
    Envelope(ObjectKind),
    Config,
    KeyFile,
    /// `blob::open_blob` with this index entry (type, compression, ID, raw length).
    Blob(BlobType, Compression, Id, u32),
    /// `pack::read_header` of a whole pack.
    Pack,
    /// `PackHeader::decode` with this data length (bytes before the sealed header).
    PackHeader(u64),
    Index,
    Tree,
    Snapshot,
    Session,
    GcMarker,
}

impl Decoder {
    fn kind(self) -> &'static str {
        match self {
            Decoder::Envelope(_) => "envelope",
            Decoder::Config => "config",
            Decoder::KeyFile => "key",
            Decoder::Blob(..) => "blob",
            Decoder::Pack | Decoder::PackHeader(_) => "pack",
            Decoder::Index => "index",
            Decoder::Tree => "tree",
            Decoder::Snapshot => "snapshot",
            Decoder::Session => "session",
            Decoder::GcMarker => "gc marker",
        }
    }

    /// Runs the decoder: a plaintext decoder's [`DecodeError`], or an [`Error`].
    fn run(self, bytes: &[u8]) -> Result<(), Failure> {
        let key = master_key();
        let d = |r: Result<(), DecodeError>| r.map_err(Failure::Decode);
        let e = |r: Result<(), Error>| r.map_err(Failure::Error);
        match self {
            Decoder::Envelope(kind) => {
                e(envelope::open(&key, kind, &Id::of_stored_bytes(bytes), bytes).map(drop))
            }
            Decoder::Config => d(Config::decode(bytes).map(drop)),
            Decoder::KeyFile => d(KeyFile::decode(bytes).map(drop)),
            Decoder::Blob(ty, c, id, raw) => e(open_blob(&key, ty, c, &id, raw, bytes).map(drop)),
            Decoder::Pack => {
                e(pack::read_header(&key, &Id::of_stored_bytes(bytes), bytes).map(drop))
            }
            Decoder::PackHeader(data_len) => d(PackHeader::decode(bytes, data_len).map(drop)),
            Decoder::Index => d(IndexFile::decode(bytes).map(drop)),
            Decoder::Tree => d(Tree::decode(bytes).map(drop)),
            Decoder::Snapshot => d(Snapshot::decode(bytes).map(drop)),
            Decoder::Session => d(Session::decode(bytes).map(drop)),
            Decoder::GcMarker => d(GcMarker::decode(bytes).map(drop)),
        }
    }
}

#[derive(Debug)]
enum Failure {
    Decode(DecodeError),
    Error(Error),
}

struct Vector {
    id: &'static str,
    /// How the input is made (the hex follows in SPEC.md for short inputs).
    input: String,
    /// The rule it breaks (or the edge it stays inside).
    rule: &'static str,
    bytes: Vec<u8>,
    decoder: Decoder,
    want: Want,
}

fn v(
    id: &'static str,
    input: impl Into<String>,
    rule: &'static str,
    bytes: Vec<u8>,
    decoder: Decoder,
    want: Want,
) -> Vector {
    Vector {
        id,
        input: input.into(),
        rule,
        bytes,
        decoder,
        want,
    }
}

/// The groups of §15.20, each with its vectors.
fn groups() -> Vec<(&'static str, Vec<Vector>)> {
    use Decoder as D;
    use Want::*;
    let key = master_key();
    let id1 = key.blob_id(PLAIN1);
    let id2 = key.blob_id(&b"holdfast ".repeat(32));
    let cfg_env = unhex(CONFIG_ENVELOPE);
    let cfg = unhex(CONFIG_PLAIN);
    let cfg2 = unhex(CONFIG_V2_PLAIN);
    let kf = key_file();
    let blob1 = unhex(BLOB1_SEALED);
    let blob2 = unhex(BLOB2_SEALED);
    let pk = pack();
    let ph = unhex(PACK_HEADER_PLAIN);
    let t1 = t1();
    let i0 = i0();
    let s0 = s0();
    let s1 = unhex(SESSION_V1_PLAIN);
    let s2 = unhex(SESSION_V2_PLAIN);
    let gc = unhex(MARKER_PLAIN);
    let env = D::Envelope(ObjectKind::Config);
    let not_zstd_env = {
        let h = [b'h', b'f', b'o', b'b', 1, 1, 1];
        plus(
            &h,
            &crypto::seal_with_nonce(&key.encryption, &NONCE_ENVELOPE_NOT_ZSTD, &h, &cfg),
        )
    };
    let p1_as_p2 = crypto::seal_with_nonce(
        &key.encryption,
        &NONCE_BLOB_WRONG_ID,
        &blob_ad(BlobType::Data, Compression::None, &id2),
        PLAIN1,
    );
    let p1_as_zstd = crypto::seal_with_nonce(
        &key.encryption,
        &NONCE_BLOB_NOT_ZSTD,
        &blob_ad(BlobType::Data, Compression::Zstd, &id1),
        PLAIN1,
    );
    let mut flipped_pack = pk.clone();
    flipped_pack[200] ^= 1;
    let mut flipped_env = cfg_env.clone();
    *flipped_env.last_mut().unwrap() ^= 1;
    let blob = |ty, c, id, raw| D::Blob(ty, c, id, raw);
    let (data, none, zstd) = (BlobType::Data, Compression::None, Compression::Zstd);
    vec![
        (
            "Envelopes (§3.2), expected kind config (1) unless stated",
            vec![
                v("N-ENV-1", "5 bytes", "length ≥ 7", unhex("68666f6201"), env, Corrupt("truncated")),
                v("N-ENV-2", "§15.9 with byte 3 = `63`", "magic `hfob`", patch(&cfg_env, 3, b"c"), env, Corrupt("bad magic")),
                v("N-ENV-3", "§15.9 with byte 4 = `02`", "version 1 (§13)", patch(&cfg_env, 4, &[2]), env, Unsupported),
                v("N-ENV-4", "header only: version 2, kind 7, compression 9", "version checked before kind and compression", unhex("68666f62020709"), env, Unsupported),
                v("N-ENV-5", "§15.9, expected kind index (2)", "kind equals the kind expected", cfg_env.clone(), D::Envelope(ObjectKind::Index), Corrupt("object kind")),
                v("N-ENV-6", "§15.9 with byte 5 = `06`", "known kind", patch(&cfg_env, 5, &[6]), env, Corrupt("object kind")),
                v("N-ENV-7", "§15.9 with byte 6 = `02`", "known compression", patch(&cfg_env, 6, &[2]), env, Corrupt("compression")),
                v("N-ENV-8", "§15.9 with byte 6 = `01`", "the header is associated data", patch(&cfg_env, 6, &[1]), env, Corrupt("authentication failed")),
                v("N-ENV-9", "§15.9 with the last byte xor `01`", "authentication", flipped_env, env, Corrupt("authentication failed")),
                v("N-ENV-10", "header only", "authentication (no nonce and tag)", unhex("68666f62010100"), env, Corrupt("authentication failed")),
                v("N-ENV-11", "the config plaintext of §15.9, sealed as compression 1 (nonce 24 × `5a`)", "a compressed body is a zstd frame", not_zstd_env, env, Corrupt("zstd")),
            ],
        ),
        (
            "Config plaintext (§3.3)",
            vec![
                v("N-CFG-1", "§15.9 with byte 0 = `03`", "version 1 or 2 (§13)", patch(&cfg, 0, &[3]), D::Config, Newer),
                v("N-CFG-2", "§15.9 without its last byte", "truncation (§2)", cfg[..56].to_vec(), D::Config, Truncated),
                v("N-CFG-3", "§15.9 + `00`", "trailing bytes (§2)", plus(&cfg, &[0]), D::Config, Trailing),
                v("N-CFG-4", "§15.9 with pack_size 1048575", "pack_size ≥ 1 MiB", patch(&cfg, 45, &le32((1 << 20) - 1)), D::Config, Invalid("pack size")),
                v("N-CFG-5", "§15.9 with pack_size 1048576", "pack_size ≥ 1 MiB (edge)", patch(&cfg, 45, &le32(1 << 20)), D::Config, Accepted),
                v("N-CFG-6", "§15.9 with pack_size 1073741825", "pack_size ≤ 1 GiB", patch(&cfg, 45, &le32((1 << 30) + 1)), D::Config, Invalid("pack size")),
                v("N-CFG-7", "§15.9 with pack_size 1073741824", "pack_size ≤ 1 GiB (edge)", patch(&cfg, 45, &le32(1 << 30)), D::Config, Accepted),
                v("N-CFG-8", "§15.9 with chunk_min 63", "64 ≤ chunk_min", patch(&cfg, 33, &le32(63)), D::Config, Invalid("chunk sizes")),
                v("N-CFG-9", "§15.9 with chunk sizes 64 / 64 / 64", "64 ≤ chunk_min ≤ chunk_avg ≤ chunk_max (edge)", patch(&cfg, 33, &[le32(64), le32(64), le32(64)].concat()), D::Config, Accepted),
                v("N-CFG-10", "§15.9 with chunk_min 2097152", "chunk_min ≤ chunk_avg", patch(&cfg, 33, &le32(2 << 20)), D::Config, Invalid("chunk sizes")),
                v("N-CFG-11", "§15.9 with chunk_max 524288", "chunk_avg ≤ chunk_max", patch(&cfg, 41, &le32(512 << 10)), D::Config, Invalid("chunk sizes")),
                v("N-CFG-12", "§15.9 with chunk_avg 1572864", "chunk_avg a power of two", patch(&cfg, 37, &le32(3 << 19)), D::Config, Invalid("chunk sizes")),
                v("N-CFG-13", "§15.9 with chunk_max 67108865", "chunk_max ≤ 64 MiB", patch(&cfg, 41, &le32((64 << 20) + 1)), D::Config, Invalid("chunk sizes")),
                v("N-CFG-14", "§15.9 with chunk_max 67108864", "chunk_max ≤ 64 MiB (edge)", patch(&cfg, 41, &le32(64 << 20)), D::Config, Accepted),
            ],
        ),
        (
            "Config plaintext, version 2 (§3.3)",
            vec![
                v("N-CFG2-1", "§15.9 with byte 0 = `02`", "version 2 has a generation", patch(&cfg, 0, &[2]), D::Config, Truncated),
                v("N-CFG2-2", "§15.22 with byte 0 = `03`", "version 1 or 2 (§13)", patch(&cfg2, 0, &[3]), D::Config, Newer),
                v("N-CFG2-3", "§15.22 with generation 0", "generation ≥ 1", patch(&cfg2, 57, &[0; 8]), D::Config, Invalid("generation")),
                v("N-CFG2-4", "§15.22 with the first class byte `04`", "class 1, 2 or 3", patch(&cfg2, 89, &[4]), D::Config, Invalid("feature class")),
                v("N-CFG2-5", "§15.22 with the first class byte `00`", "class 1, 2 or 3", patch(&cfg2, 89, &[0]), D::Config, Invalid("feature class")),
                v("N-CFG2-6", "§15.22 with the first name `Session-v2`", "names are a-z, 0-9 and -", patch(&cfg2, 79, b"S"), D::Config, Invalid("feature name")),
                v("N-CFG2-7", "§15.22 with the first name `tession-v2`", "names ascend, each once", patch(&cfg2, 79, b"t"), D::Config, Invalid("feature name")),
                v("N-CFG2-8", "§15.22 with the second name `session-v1x`", "names ascend", patch(&cfg2, 107, b"session-v1x"), D::Config, Invalid("feature name")),
                v("N-CFG2-9", "§15.22 with the first name empty and 10 bytes less", "names are 1 to 64 bytes", [&cfg2[..77], &[0, 0], &cfg2[89..]].concat(), D::Config, Invalid("feature name")),
                v("N-CFG2-10", "§15.22 with feature count 5", "count fits the remaining bytes (§2)", patch(&cfg2, 73, &le32(5)), D::Config, Invalid("feature count")),
                v("N-CFG2-11", "§15.22 with feature count 3", "truncation inside a counted list", patch(&cfg2, 73, &le32(3)), D::Config, Truncated),
                v("N-CFG2-12", "§15.22 without its last byte", "truncation (§2)", cfg2[..133].to_vec(), D::Config, Truncated),
                v("N-CFG2-13", "§15.22 + `00`", "trailing bytes (§2)", plus(&cfg2, &[0]), D::Config, Trailing),
                v("N-CFG2-14", "the first 77 bytes of §15.22 with feature count 0", "no features (edge)", patch(&cfg2[..77], 73, &le32(0)), D::Config, Accepted),
                v("N-CFG2-15", "§15.22 with the second class byte `02` and name `snapshot-v9`", "unknown features decode; their class is checked on open (§13.1)", patch(&patch(&cfg2, 118, &[2]), 107, b"snapshot-v9"), D::Config, Accepted),
            ],
        ),
        (
            "Key files (§4.2)",
            vec![
                v("N-KEY-1", "§15.10 with byte 3 = `7a`", "magic `hfky`", patch(&kf, 3, b"z"), D::KeyFile, Invalid("magic")),
                v("N-KEY-2", "§15.10 with byte 4 = `02`", "version 1 (§13)", patch(&kf, 4, &[2]), D::KeyFile, Newer),
                v("N-KEY-3", "§15.10 with byte 5 = `02`", "kdf 1", patch(&kf, 5, &[2]), D::KeyFile, Invalid("kdf")),
                v("N-KEY-4", "§15.10 with m_cost 7", "8 ≤ m_cost", patch(&kf, 6, &le32(7)), D::KeyFile, Invalid("argon2 m_cost")),
                v("N-KEY-5", "§15.10 with m_cost 4194305", "m_cost ≤ 4194304", patch(&kf, 6, &le32(4_194_305)), D::KeyFile, Invalid("argon2 m_cost")),
                v("N-KEY-6", "§15.10 with t_cost 0", "1 ≤ t_cost", patch(&kf, 10, &le32(0)), D::KeyFile, Invalid("argon2 t/p cost")),
                v("N-KEY-7", "§15.10 with t_cost 101", "t_cost ≤ 100", patch(&kf, 10, &le32(101)), D::KeyFile, Invalid("argon2 t/p cost")),
                v("N-KEY-8", "§15.10 with p_cost 0", "1 ≤ p_cost", patch(&kf, 14, &le32(0)), D::KeyFile, Invalid("argon2 t/p cost")),
                v("N-KEY-9", "§15.10 with p_cost 65", "p_cost ≤ 64", patch(&kf, 14, &le32(65)), D::KeyFile, Invalid("argon2 t/p cost")),
                v("N-KEY-10", "§15.10 with byte 60 = `ff`", "host is UTF-8 (§2)", patch(&kf, 60, &[0xff]), D::KeyFile, Invalid("host")),
                v("N-KEY-11", "§15.10 + `00`", "nothing may follow the tag", plus(&kf, &[0]), D::KeyFile, Trailing),
                v("N-KEY-12", "§15.10 without its last byte", "truncation (§2)", kf[..kf.len() - 1].to_vec(), D::KeyFile, Truncated),
                v("N-KEY-13", "§15.10 with m_cost 4194304, t_cost 100, p_cost 64", "the upper bounds (edge)", patch(&kf, 6, &[le32(4_194_304), le32(100), le32(64)].concat()), D::KeyFile, Accepted),
            ],
        ),
        (
            "Blobs (§5.3), opened with the index entry given",
            vec![
                v("N-BLOB-1", "§15.3, entry (type 1, compression 0, ID(P1), raw 32)", "the AD binds the type", blob1.clone(), blob(BlobType::Tree, none, id1, 32), Corrupt("authentication failed")),
                v("N-BLOB-2", "§15.3, entry (type 0, compression 1, ID(P1), raw 32)", "the AD binds the compression", blob1.clone(), blob(data, zstd, id1, 32), Corrupt("authentication failed")),
                v("N-BLOB-3", "§15.3, entry (type 0, compression 0, ID(P2), raw 32)", "the AD binds the ID", blob1.clone(), blob(data, none, id2, 32), Corrupt("authentication failed")),
                v("N-BLOB-4", "§15.3, entry (type 0, compression 0, ID(P1), raw 33)", "plaintext length equals raw_len", blob1.clone(), blob(data, none, id1, 33), Corrupt("differs from the indexed")),
                v("N-BLOB-5", "§15.4, entry (type 0, compression 1, ID(P2), raw 287)", "plaintext length equals raw_len", blob2.clone(), blob(data, zstd, id2, 287), Corrupt("")),
                v("N-BLOB-6", "P1 sealed with the AD of (type 0, compression 0, ID(P2)), nonce 24 × `5b`; entry (0, 0, ID(P2), 32)", "the plaintext hashes to the ID", p1_as_p2, blob(data, none, id2, 32), Corrupt("does not hash to its ID")),
                v("N-BLOB-7", "P1 sealed with the AD of (type 0, compression 1, ID(P1)), nonce 24 × `5c`; entry (0, 1, ID(P1), 32)", "compression 1 is a zstd frame", p1_as_zstd, blob(data, zstd, id1, 32), Corrupt("zstd")),
                v("N-BLOB-8", "the first 39 bytes of §15.3; entry (0, 0, ID(P1), 32)", "stored length ≥ 40", blob1[..39].to_vec(), blob(data, none, id1, 32), Corrupt("shorter than the encryption overhead")),
            ],
        ),
        (
            "Packs (§6.1), read whole",
            vec![
                v("N-PACK-1", "4 bytes", "at least a trailer", b"hfpk".to_vec(), D::Pack, Corrupt("too short")),
                v("N-PACK-2", "§15.5 with the last byte = `6c`", "magic `hfpk`", patch(&pk, 275, b"l"), D::Pack, Corrupt("no pack magic")),
                v("N-PACK-3", "§15.5 with byte 271 = `02`", "pack version 1 (§13)", patch(&pk, 271, &[2]), D::Pack, Unsupported),
                v("N-PACK-4", "§15.5 with header_len 39", "header_len ≥ 40", patch(&pk, 267, &le32(39)), D::Pack, Corrupt("does not fit")),
                v("N-PACK-5", "§15.5 with header_len 268", "header_len + 9 ≤ pack length", patch(&pk, 267, &le32(268)), D::Pack, Corrupt("does not fit")),
                v("N-PACK-6", "§15.5 with header_len 130", "header authentication", patch(&pk, 267, &le32(130)), D::Pack, Corrupt("header authentication failed")),
                v("N-PACK-7", "§15.5 with byte 200 xor `01`", "header authentication", flipped_pack, D::Pack, Corrupt("header authentication failed")),
                v("N-PACK-8", "§15.5 with its header resealed (nonce 24 × `5d`) after setting entry 1's stored_len to 67", "stored lengths sum to D", pack_with_header(&patch(&ph, 81, &le32(67)), &NONCE_PACK_HEADER_RESEALED), D::Pack, Corrupt("blobs cover")),
            ],
        ),
        (
            "Pack header plaintext (§6.1), with D = 138 (the pack of §15.5)",
            vec![
                v("N-PH-1", "§15.5's header with byte 0 = `02`", "known pack type", patch(&ph, 0, &[2]), D::PackHeader(138), Invalid("blob type")),
                v("N-PH-2", "§15.5's header with byte 0 = `01`", "blob type equals the pack type", patch(&ph, 0, &[1]), D::PackHeader(138), Invalid("blob type")),
                v("N-PH-3", "§15.5's header with byte 6 = `02`", "known compression", patch(&ph, 6, &[2]), D::PackHeader(138), Invalid("compression")),
                v("N-PH-4", "§15.5's header with entry 0's stored_len 39", "stored_len ≥ 40", patch(&ph, 39, &le32(39)), D::PackHeader(138), Invalid("stored length")),
                v("N-PH-5", "§15.5's header with entry 1's stored_len 67", "stored lengths sum to D", patch(&ph, 81, &le32(67)), D::PackHeader(138), Invalid("header")),
                v("N-PH-6", "§15.5's header with count 3", "count fits the remaining bytes (§2)", patch(&ph, 1, &le32(3)), D::PackHeader(138), Invalid("blob count")),
                v("N-PH-7", "§15.5's header without its last byte", "truncation inside a counted list", ph[..88].to_vec(), D::PackHeader(138), Invalid("blob count")),
                v("N-PH-8", "1 byte", "truncation inside a count", unhex("00"), D::PackHeader(138), Truncated),
                v("N-PH-9", "§15.5's header + `00`", "trailing bytes (§2)", plus(&ph, &[0]), D::PackHeader(138), Trailing),
                v("N-PH-10", "a data pack header listing three blobs (compression 0, ID 32 × `00`) with stored_len and raw_len 2³² − 1; D = 3 × (2³² − 1)", "offsets fit a `u32` (§6.2)", three_huge_entries(), D::PackHeader(3 * u64::from(u32::MAX)), Invalid("offset")),
            ],
        ),
        (
            "Index plaintext (§7.1)",
            vec![
                v("N-IDX-0", "I0", "(the base)", i0.clone(), D::Index, Accepted),
                v("N-IDX-1", "I0 with byte 0 = `02`", "version 1 (§13)", patch(&i0, 0, &[2]), D::Index, Newer),
                v("N-IDX-2", "I0 with offset `b8ffffff`", "offset + stored_len does not overflow u32", patch(&i0, 79, &le32(0xffff_ffb8)), D::Index, Invalid("blob location")),
                v("N-IDX-3", "I0 with offset `b7ffffff`", "offset + stored_len = 2³² − 1 (edge)", patch(&i0, 79, &le32(0xffff_ffb7)), D::Index, Accepted),
                v("N-IDX-4", "I0 with byte 45 = `02`", "known blob type", patch(&i0, 45, &[2]), D::Index, Invalid("blob type")),
                v("N-IDX-5", "I0 with byte 46 = `02`", "known compression", patch(&i0, 46, &[2]), D::Index, Invalid("compression")),
                v("N-IDX-6", "I0 with supersedes count 3", "count fits the remaining bytes (§2)", patch(&i0, 1, &le32(3)), D::Index, Invalid("supersedes count")),
                v("N-IDX-7", "I0 with pack count 3", "count fits the remaining bytes (§2)", patch(&i0, 5, &le32(3)), D::Index, Invalid("pack count")),
                v("N-IDX-8", "I0 with blob count 2", "count fits the remaining bytes (§2)", patch(&i0, 41, &le32(2)), D::Index, Invalid("blob count")),
                v("N-IDX-9", "I0 + `00`", "trailing bytes (§2)", plus(&i0, &[0]), D::Index, Trailing),
                v("N-IDX-10", "2 bytes", "truncation inside a count", unhex("0100"), D::Index, Truncated),
                v("N-IDX-11", "supersedes [32 × `88`], no packs", "a file with only supersedes is valid", [&unhex("0101000000")[..], &[0x88; 32], &[0; 4]].concat(), D::Index, Accepted),
            ],
        ),
        (
            "Trees (§8.1)",
            vec![
                v("N-TREE-0", "T1", "(the base)", t1.clone(), D::Tree, Accepted),
                v("N-TREE-1", "T1 with byte 0 = `02`", "version 1 (§13)", patch(&t1, 0, &[2]), D::Tree, Newer),
                v("N-TREE-2", "T1 with kind `00`", "known kind", patch(&t1, 8, &[0]), D::Tree, Invalid("node kind")),
                v("N-TREE-3", "T1 with kind `08`", "known kind", patch(&t1, 8, &[8]), D::Tree, Invalid("node kind")),
                v("N-TREE-4", "T1 with kind `02`", "a directory has a subtree", patch(&t1, 8, &[2]), D::Tree, Invalid("node")),
                v("N-TREE-5", "T1 with subtree flag 1 and ID 32 × `00`", "only a directory has a subtree", plus(&patch(&t1, 93, &[1]), &[0; 32]), D::Tree, Invalid("node")),
                v("N-TREE-6", "T1 with one content ref, tag 0, ID 32 × `00`", "only a file has content", [&t1[..89], &le32(1)[..], &[0; 33], &[0]].concat(), D::Tree, Invalid("node")),
                v("N-TREE-7", "T1 with subtree flag 2", "flags are 0 or 1", patch(&t1, 93, &[2]), D::Tree, Invalid("subtree flag")),
                v("N-TREE-8", "T1 as a file (kind 1) with one content ref of tag 2 and 8 zero bytes", "known content tag", [&patch(&t1, 8, &[1])[..89], &le32(1)[..], &[2], &[0; 8], &[0]].concat(), D::Tree, Invalid("content tag")),
                v("N-TREE-9", "T1 with an empty name", "names are not empty", t1_named(b""), D::Tree, Invalid("entry name")),
                v("N-TREE-10", "T1 named `.`", "names are not `.`", t1_named(b"."), D::Tree, Invalid("entry name")),
                v("N-TREE-11", "T1 named `..`", "names are not `..`", t1_named(b".."), D::Tree, Invalid("entry name")),
                v("N-TREE-12", "T1 named `a/b`", "names contain no `/`", t1_named(b"a/b"), D::Tree, Invalid("entry name")),
                v("N-TREE-13", "T1 named `a` followed by NUL", "names contain no NUL", t1_named(b"a\0"), D::Tree, Invalid("entry name")),
                v("N-TREE-14", "T1 named with the one byte `ff` (not UTF-8)", "names are raw bytes", t1_named(&[0xff]), D::Tree, Accepted),
                v("N-TREE-15", "T1 with user `ff` (one byte)", "user is UTF-8 (§2)", [&t1[..21], &unhex("0100ff")[..], &t1[23..]].concat(), D::Tree, Invalid("user")),
                v("N-TREE-16", "two T1 nodes named `b`, `a`", "names sorted", two_nodes(b"b", b"a"), D::Tree, Invalid("entry name")),
                v("N-TREE-17", "two T1 nodes named `a`, `a`", "names unique", two_nodes(b"a", b"a"), D::Tree, Invalid("entry name")),
                v("N-TREE-18", "two T1 nodes named `ab`, `a`", "a prefix sorts first", two_nodes(b"ab", b"a"), D::Tree, Invalid("entry name")),
                v("N-TREE-19", "two T1 nodes named `a`, `ab`", "a prefix sorts first (accepted)", two_nodes(b"a", b"ab"), D::Tree, Accepted),
                v("N-TREE-20", "two T1 nodes named `B`, `a`", "bytewise order (accepted)", two_nodes(b"B", b"a"), D::Tree, Accepted),
                v("N-TREE-21", "T1 with node count 2", "count fits the remaining bytes (§2)", patch(&t1, 1, &le32(2)), D::Tree, Invalid("node count")),
                v("N-TREE-22", "T1 with xattr count 1", "count fits the remaining bytes (§2)", patch(&t1, 85, &le32(1)), D::Tree, Invalid("xattr count")),
                v("N-TREE-23", "T1 with content count 1", "count fits the remaining bytes (§2)", patch(&t1, 89, &le32(1)), D::Tree, Invalid("content count")),
                v("N-TREE-24", "T1 + `00`", "trailing bytes (§2)", plus(&t1, &[0]), D::Tree, Trailing),
                v("N-TREE-25", "empty", "truncation before the version", Vec::new(), D::Tree, Truncated),
                v("N-TREE-26", "T1 with name length 255", "truncation inside a `bytes16`", patch(&t1, 5, &[0xff, 0]), D::Tree, Truncated),
                v("N-TREE-27", "T1 with link_target length 2³² − 1", "truncation inside a `bytes32`", patch(&t1, 81, &le32(u32::MAX)), D::Tree, Truncated),
                v("N-TREE-28", "the first 87 bytes of T1", "truncation inside a `u32`", t1[..87].to_vec(), D::Tree, Truncated),
                v("N-TREE-29", "T1 without its last byte", "truncation before a flag", t1[..93].to_vec(), D::Tree, Truncated),
                v("N-TREE-30", "T1 with subtree flag 1 and 16 bytes of ID", "truncation inside an `id`", plus(&patch(&t1, 93, &[1]), &[0; 16]), D::Tree, Truncated),
            ],
        ),
        (
            "Snapshot plaintext (§9.1)",
            vec![
                v("N-SNAP-0", "S0", "(the base)", s0.clone(), D::Snapshot, Accepted),
                v("N-SNAP-1", "S0 with byte 0 = `03`", "versions 1 and 2 (§13)", patch(&s0, 0, &[3]), D::Snapshot, Newer),
                v("N-SNAP-2", "S0 with parent flag (byte 65) 2", "flags are 0 or 1", patch(&s0, 65, &[2]), D::Snapshot, Invalid("parent flag")),
                v("N-SNAP-3", "S0 with host `ff` (one byte)", "host is UTF-8 (§2)", s0_with(&[0xff], &[]), D::Snapshot, Invalid("host")),
                v("N-SNAP-4", "S0 with tags [`ff`] (one byte)", "tags are UTF-8 (§2)", s0_with(b"", &[&[0xff]]), D::Snapshot, Invalid("tag")),
                v("N-SNAP-5", "S0 with path count 100", "count fits the remaining bytes (§2)", patch(&s0, 25, &le32(100)), D::Snapshot, Invalid("path count")),
                v("N-SNAP-6", "S0 with tag count 100", "count fits the remaining bytes (§2)", patch(&s0, 29, &le32(100)), D::Snapshot, Invalid("tag count")),
                v("N-SNAP-7", "S0 + `00`", "trailing bytes (§2)", plus(&s0, &[0]), D::Snapshot, Trailing),
                v("N-SNAP-8", "S0 without its last byte", "truncation inside a `u64`", s0[..179].to_vec(), D::Snapshot, Truncated),
                v("N-SNAP-9", "S0 with byte 0 = `02`", "version 2 has an extension list (§9.1)", patch(&s0, 0, &[2]), D::Snapshot, Truncated),
                v("N-SNAP-10", "S0 as version 2 + `00000000`", "the extension list is not empty", plus(&patch(&s0, 0, &[2]), &le32(0)), D::Snapshot, Invalid("extension count")),
                v("N-SNAP-11", "S0 as version 2 + `02000000` + type 2 (64 × `00`) + type 1 (8 × `00`)", "types ascend", plus(&patch(&s0, 0, &[2]), &ext(&[(2, &[0; 64]), (1, &[0; 8])])), D::Snapshot, Invalid("extension type")),
                v("N-SNAP-12", "S0 as version 2 + `01000000` + type 1 (7 × `00`)", "a host sequence number is 8 bytes", plus(&patch(&s0, 0, &[2]), &ext(&[(1, &[0; 7])])), D::Snapshot, Invalid("host sequence")),
                v("N-SNAP-13", "S0 as version 2 + `01000000` + type 2 (63 × `00`)", "an origin is 64 bytes", plus(&patch(&s0, 0, &[2]), &ext(&[(2, &[0; 63])])), D::Snapshot, Invalid("origin")),
                v("N-SNAP-14", "S0 as version 2 + `01000000` + type `0x8000` (empty)", "unknown critical extensions are refused (§9.1)", plus(&patch(&s0, 0, &[2]), &ext(&[(0x8000, &[])])), D::Snapshot, NewerFeature),
                v("N-SNAP-15", "S0 as version 2 + `01000000` + type `0x7fff` (empty)", "unknown ignorable extensions are accepted", plus(&patch(&s0, 0, &[2]), &ext(&[(0x7fff, &[])])), D::Snapshot, Accepted),
            ],
        ),
        (
            "Session plaintext (§12.2)",
            vec![
                v("N-SES-1", "§15.13 with role 3", "known role", patch(&s1, 17, &[3]), D::Session, Invalid("session role")),
                v("N-SES-2", "§15.13 with role 0", "known role", patch(&s1, 17, &[0]), D::Session, Invalid("session role")),
                v("N-SES-3", "§15.13 with byte 0 = `03`", "version 1 or 2 (§13)", patch(&s1, 0, &[3]), D::Session, Newer),
                v("N-SES-4", "§15.13 with byte 0 = `00`", "version 1 or 2 (§13)", patch(&s1, 0, &[0]), D::Session, Older),
                v("N-SES-5", "§15.13 + `0000` (a process field in version 1)", "version 1 ends after heartbeat_ns", plus(&s1, &[0, 0]), D::Session, Trailing),
                v("N-SES-6", "§15.13 with byte 0 = `02` (no process field)", "version 2 has a process field", patch(&s1, 0, &[2]), D::Session, Truncated),
                v("N-SES-7", "§15.13 with byte 20 = `ff`", "host is UTF-8 (§2)", patch(&s1, 20, &[0xff]), D::Session, Invalid("host")),
                v("N-SES-8", "§15.14 with byte 47 = `ff`", "process is UTF-8 (§2)", patch(&s2, 47, &[0xff]), D::Session, Invalid("process")),
                v("N-SES-9", "§15.14 + `00`", "trailing bytes (§2)", plus(&s2, &[0]), D::Session, Trailing),
                v("N-SES-10", "the first 20 bytes of §15.13", "truncation inside a `str16`", s1[..20].to_vec(), D::Session, Truncated),
            ],
        ),
        (
            "GC marker plaintext (§12.3)",
            vec![
                v("N-GC-1", "§15.12 + `00`", "trailing bytes (§2)", plus(&gc, &[0]), D::GcMarker, Trailing),
                v("N-GC-2", "§15.12 with byte 0 = `02`", "version 1 (§13)", patch(&gc, 0, &[2]), D::GcMarker, Newer),
                v("N-GC-3", "§15.12 with supersedes count 4", "count fits the remaining bytes (§2)", patch(&gc, 9, &le32(4)), D::GcMarker, Invalid("supersedes count")),
                v("N-GC-4", "§15.12 with pack count 3", "count fits the remaining bytes (§2)", patch(&gc, 45, &le32(3)), D::GcMarker, Invalid("pack count")),
                v("N-GC-5", "§15.12 without its last byte", "truncation inside a counted list", gc[..112].to_vec(), D::GcMarker, Invalid("pack count")),
                v("N-GC-6", "the first 5 bytes of §15.12", "truncation inside an `i64`", gc[..5].to_vec(), D::GcMarker, Truncated),
            ],
        ),
    ]
}

/// The input column of SPEC.md: how it is made, then its hex (up to 128 bytes) or its
/// length and BLAKE3.
fn shown(v: &Vector) -> String {
    if v.bytes.is_empty() {
        v.input.clone()
    } else if v.bytes.len() <= 128 {
        format!("{}: `{}`", v.input, hx(&v.bytes))
    } else {
        format!(
            "{} ({} bytes, BLAKE3 `{}`)",
            v.input,
            v.bytes.len(),
            b3(&v.bytes)
        )
    }
}

fn row(v: &Vector) -> String {
    format!(
        "| {} | {} | {} | {} |",
        v.id,
        v.rule,
        v.want.class(),
        shown(v)
    )
}

/// Checks one vector's outcome, including its class as the repository reports it.
fn check(v: &Vector) -> Result<(), String> {
    let got = v.decoder.run(&v.bytes);
    let fail = |got: &dyn std::fmt::Debug| Err(format!("{} ({:?}): got {got:?}", v.id, v.want));
    let class = |e: DecodeError| Error::decode(v.decoder.kind(), "x", e);
    match (v.want, got) {
        (Want::Accepted, Ok(())) => Ok(()),
        (Want::Truncated, Err(Failure::Decode(e @ DecodeError::Truncated { .. })))
        | (Want::Trailing, Err(Failure::Decode(e @ DecodeError::Trailing(_)))) => {
            corrupt(v, class(e))
        }
        (Want::Invalid(f), Err(Failure::Decode(e @ DecodeError::Invalid { field, .. })))
            if field == f =>
        {
            corrupt(v, class(e))
        }
        (
            Want::Older,
            Err(Failure::Decode(
                e @ DecodeError::Version {
                    found, supported, ..
                },
            )),
        ) if found < supported => corrupt(v, class(e)),
        (
            Want::Newer,
            Err(Failure::Decode(
                e @ DecodeError::Version {
                    found, supported, ..
                },
            )),
        ) if found > supported => match class(e) {
            Error::UnsupportedVersion { .. } => Ok(()),
            other => fail(&other),
        },
        (Want::Corrupt(d), Err(Failure::Error(Error::Corrupt { detail, .. })))
            if detail.contains(d) =>
        {
            Ok(())
        }
        (Want::Unsupported, Err(Failure::Error(Error::UnsupportedVersion { .. }))) => Ok(()),
        (Want::NewerFeature, Err(Failure::Decode(e @ DecodeError::Newer(_)))) => match class(e) {
            Error::Newer { .. } => Ok(()),
            other => fail(&other),
        },
        (_, got) => fail(&got),
    }
}

/// The repository reports a decode failure as corrupt.
fn corrupt(v: &Vector, err: Error) -> Result<(), String> {
    match err {
        Error::Corrupt { .. } => Ok(()),
        other => Err(format!("{}: reported as {other}", v.id)),
    }
}

/// SPEC.md, which must list every vector.
const SPEC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../SPEC.md"));

#[test]
fn negative_vectors() {
    let mut ids = std::collections::HashSet::new();
    let mut failed = Vec::new();
    for (_, vs) in groups() {
        for v in &vs {
            assert!(ids.insert(v.id), "{} twice", v.id);
            if let Err(e) = check(v) {
                failed.push(e);
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn spec_lists_every_negative_vector() {
    let lines: std::collections::HashSet<&str> = SPEC.lines().collect();
    for (title, vs) in groups() {
        assert!(
            lines.contains(format!("**{title}**").as_str()),
            "SPEC.md §15.20 lacks the group {title:?}"
        );
        for v in &vs {
            let r = row(v);
            assert!(lines.contains(r.as_str()), "SPEC.md §15.20 lacks\n{r}");
        }
    }
}

#[test]
#[ignore = "prints §15.20's tables; run with --ignored --nocapture"]
fn print_negative_vectors() {
    for (title, vs) in groups() {
        println!("**{title}**\n");
        println!("| Vector | Rule | Result | Input |");
        println!("|---|---|---|---|");
        for v in &vs {
            println!("{}", row(v));
        }
        println!();
    }
}

// ---------------------------------------------------------------------------------------
// Rules about stored files and repositories rather than one decoder (§3.1, §3.3).
// ---------------------------------------------------------------------------------------

/// A local repository holding the key file of §15.10 and the config of §15.9.
fn fixed_key_location(dir: &std::path::Path) -> Arc<LocalBackend> {
    let b = Arc::new(LocalBackend::new(dir));
    b.create().unwrap();
    let kf = key_file();
    b.write(FileKind::Key, &Id::of_stored_bytes(&kf), &kf)
        .unwrap();
    b
}

/// N-NAME-1: a whole file whose bytes do not hash to its name is corrupt (§3.1).
#[test]
fn name_must_be_the_hash_of_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let b = fixed_key_location(dir.path());
    let env = unhex(CONFIG_ENVELOPE);
    b.write(FileKind::Config, &Id([0; 32]), &env).unwrap();
    let e = read_checked(&*b, FileKind::Config, &Id([0; 32])).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { detail, .. } if detail.contains("content hash")),
        "{e}"
    );
    // ... and opening the repository reports it.
    assert!(matches!(
        Repository::open(b.clone(), PASSWORD),
        Err(Error::Corrupt { .. })
    ));
}

/// N-NAME-2: entries whose name is not 64 lowercase hex digits are ignored (§3.1).
#[test]
fn non_canonical_names_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let b = fixed_key_location(dir.path());
    let env = unhex(CONFIG_ENVELOPE);
    let name = b3(&env);
    for odd in [
        name.to_uppercase(),
        format!("{name}.tmp"),
        name[..63].to_string(),
    ] {
        std::fs::write(dir.path().join("config").join(odd), &env).unwrap();
    }
    assert!(b.list(FileKind::Config).unwrap().is_empty());
    // With only those, the repository has no config.
    assert!(matches!(
        Repository::open(b.clone(), PASSWORD),
        Err(Error::Missing { kind: "config", .. })
    ));
    b.write(FileKind::Config, &Id::of_stored_bytes(&env), &env)
        .unwrap();
    assert_eq!(
        b.list(FileKind::Config).unwrap(),
        vec![(Id::of_stored_bytes(&env), env.len() as u64)]
    );
    Repository::open(b, PASSWORD).unwrap();
}

/// N-REPO-1: a repository with two config files is refused (§3.3).
#[test]
fn two_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = fixed_key_location(dir.path());
    let env = unhex(CONFIG_ENVELOPE);
    b.write(FileKind::Config, &Id::of_stored_bytes(&env), &env)
        .unwrap();
    // The config of §15.9 with created_ns T0 + 1, sealed with nonce 24 × 5e.
    let other = patch(&unhex(CONFIG_PLAIN), 49, &(T0 + 1).to_le_bytes());
    let h = envelope::header(ObjectKind::Config, Compression::None);
    let env2 = plus(
        &h,
        &crypto::seal_with_nonce(&master_key().encryption, &NONCE_SECOND_CONFIG, &h, &other),
    );
    assert_eq!(b3(&env2), SECOND_CONFIG_NAME);
    b.write(FileKind::Config, &Id::of_stored_bytes(&env2), &env2)
        .unwrap();
    let e = Repository::open(b, PASSWORD).unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { kind: "config", detail, .. } if detail.contains("both are generation 1")),
        "{e}"
    );
}

/// A config plaintext sealed as a config envelope with `nonce`, stored in `b`.
fn store_config(b: &Arc<LocalBackend>, plain: &[u8], nonce: &[u8; NONCE_LEN]) -> Id {
    let h = envelope::header(ObjectKind::Config, Compression::None);
    let env = plus(
        &h,
        &crypto::seal_with_nonce(&master_key().encryption, nonce, &h, plain),
    );
    let id = Id::of_stored_bytes(&env);
    b.write(FileKind::Config, &id, &env).unwrap();
    id
}

/// N-REPO-3: beside the version-1 config of §15.9 (generation 1), the version-2 config of
/// §15.22 (generation 2) is the config (§3.3).
#[test]
fn the_highest_generation_is_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let b = fixed_key_location(dir.path());
    let env = unhex(CONFIG_ENVELOPE);
    b.write(FileKind::Config, &Id::of_stored_bytes(&env), &env)
        .unwrap();
    store_config(&b, &unhex(CONFIG_V2_PLAIN), &[0x59; NONCE_LEN]);
    let r = Repository::open(b, PASSWORD).unwrap();
    assert_eq!((r.config().version, r.config().generation), (2, 2));
    assert!(r.has_feature(holdfast_repo::config::SNAPSHOT_V2));
    assert_eq!(r.config_set().files().len(), 2);
}

/// N-REPO-4 and N-REPO-5: an unknown incompatible feature refuses the repository; an
/// unknown read-only compatible one lets it be read, not written (§13.1).
#[test]
fn unknown_features_by_class() {
    // §15.22 with the second feature renamed `snapshot-v9`, class 3 or 2.
    for (class, readable) in [(3u8, false), (2u8, true), (1u8, true)] {
        let dir = tempfile::tempdir().unwrap();
        let b = fixed_key_location(dir.path());
        let plain = patch(
            &patch(&unhex(CONFIG_V2_PLAIN), 118, &[class]),
            107,
            b"snapshot-v9",
        );
        store_config(&b, &plain, &[0x59; NONCE_LEN]);
        let r = Repository::open(b.clone(), PASSWORD);
        if !readable {
            let e = r.unwrap_err().to_string();
            assert_eq!(
                e,
                "this repository uses feature `snapshot-v9`, added in holdfast 0.2.0: upgrade holdfast"
            );
            continue;
        }
        let r = r.unwrap();
        assert!(r.snapshots().is_ok());
        let w = r.begin_write("h");
        if class == 2 {
            let e = w.err().expect("writing is refused").to_string();
            assert!(
                e.contains("`snapshot-v9`") && e.contains("can read but not write"),
                "{e}"
            );
            assert!(r.check_writable().is_err());
            // The refused writer's session file is gone again.
            assert!(b.list(FileKind::Session).unwrap().is_empty());
        } else {
            assert!(w.is_ok(), "a compatible feature is ignored");
        }
    }
}

/// N-REPO-2: a key file without a config cannot be opened (§3.3, §11.3).
#[test]
fn no_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = fixed_key_location(dir.path());
    let e = Repository::open(b, PASSWORD).unwrap_err();
    assert!(matches!(e, Error::Missing { kind: "config", .. }), "{e}");
}

const SECOND_CONFIG_NAME: &str = "8ecc215062429d4a693cf87f2569b1012a13216ae4aa0a22f1a8da7a5e4bffbb";
