//! `blob::open_blob` with a fixed key. Input: byte 0 selects the blob type (bit 0) and
//! compression (bit 1), bytes 1..5 are `raw_len` (LE u32), the rest is the stored blob.
//! It must never panic.
//!
//! Random bytes essentially never authenticate, so the stored part is also sealed with the
//! fixed key (bound to its type, compression and ID, as a writer would) and opened again,
//! which reaches zstd decompression of arbitrary data and the length and ID checks.
#![no_main]

use holdfast_repo::blob::{blob_ad, open_blob, BlobType, Compression};
use holdfast_repo::crypto::{seal_with_nonce, MasterKey};
use holdfast_repo::Id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let ty = if data[0] & 1 != 0 {
        BlobType::Tree
    } else {
        BlobType::Data
    };
    let compression = if data[0] & 2 != 0 {
        Compression::Zstd
    } else {
        Compression::None
    };
    let raw_len = u32::from_le_bytes(data[1..5].try_into().unwrap());
    let stored = &data[5..];
    let key = MasterKey::from_bytes(&[7u8; 96]);

    // As read from a damaged or hostile pack: must be an error, never a panic.
    let id = Id::of_stored_bytes(stored);
    let _ = open_blob(&key, ty, compression, &id, raw_len, stored);
    let _ = open_blob(&key, ty, compression, &key.blob_id(stored), raw_len, stored);

    // Authentic blobs. `open_blob` reserves `raw_len` bytes (a value from the
    // authenticated index) before decompressing; keep it to 16 MiB so libFuzzer's
    // malloc limit does not flag a 4 GiB reservation that is never touched.
    let raw_len = raw_len.min(16 << 20);
    let body = stored;
    let sealed_as = |id: &Id| {
        seal_with_nonce(
            &key.encryption,
            &[5u8; 24],
            &blob_ad(ty, compression, id),
            body,
        )
    };
    match compression {
        Compression::None => {
            // The body is the plaintext: with its true ID and length it must open.
            let id = key.blob_id(body);
            let s = sealed_as(&id);
            let plain = open_blob(&key, ty, compression, &id, body.len() as u32, &s)
                .expect("an authentic blob must open");
            assert_eq!(plain, body);
            // A wrong length or another type must be refused.
            assert!(open_blob(&key, ty, compression, &id, body.len() as u32 + 1, &s).is_err());
            let other = if ty == BlobType::Data {
                BlobType::Tree
            } else {
                BlobType::Data
            };
            assert!(open_blob(&key, other, compression, &id, body.len() as u32, &s).is_err());
        }
        Compression::Zstd => {
            // The body is an arbitrary zstd stream; the ID is that of its (unknown)
            // decompression, so this mostly ends at the hash check, never in a panic.
            let id = key.blob_id(body);
            let s = sealed_as(&id);
            let _ = open_blob(&key, ty, compression, &id, raw_len, &s);
        }
    }
});
