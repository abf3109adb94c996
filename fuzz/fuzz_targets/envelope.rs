//! `envelope::open` on arbitrary bytes with a fixed key, for every object kind; it must
//! never panic.
//!
//! Random bytes essentially never authenticate, so the input is also sealed with the fixed
//! key (first byte: kind and compression; the rest: body) into a valid envelope. That
//! reaches zstd decompression of arbitrary data, and the opened plaintext is then fed to
//! the decoder the repository would use for that kind.
#![no_main]

use holdfast_repo::blob::Compression;
use holdfast_repo::config::Config;
use holdfast_repo::crypto::{seal_with_nonce, MasterKey};
use holdfast_repo::envelope::{self, ObjectKind};
use holdfast_repo::index::IndexFile;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;
use libfuzzer_sys::fuzz_target;

const KINDS: [ObjectKind; 5] = [
    ObjectKind::Config,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::GcMarker,
    ObjectKind::Session,
];

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_bytes(&[7u8; 96]);
    let name = Id::of_stored_bytes(data);
    for kind in KINDS {
        let _ = envelope::open(&key, kind, &name, data);
    }

    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let kind = KINDS[(sel & 0x7) as usize % KINDS.len()];
    let compression = if sel & 0x8 != 0 {
        Compression::Zstd
    } else {
        Compression::None
    };
    let header = envelope::header(kind, compression);
    let mut stored = header.to_vec();
    stored.extend_from_slice(&seal_with_nonce(&key.encryption, &[3u8; 24], &header, body));
    let opened = envelope::open(&key, kind, &name, &stored);
    if compression == Compression::None {
        assert_eq!(
            opened.as_deref().ok(),
            Some(body),
            "an uncompressed envelope must open to its body"
        );
    }
    // Any other kind must be refused.
    for other in KINDS {
        if other != kind {
            assert!(
                envelope::open(&key, other, &name, &stored).is_err(),
                "envelope opened as the wrong kind"
            );
        }
    }
    if let Ok(plain) = opened {
        match kind {
            ObjectKind::Config => drop(Config::decode(&plain)),
            ObjectKind::Index => drop(IndexFile::decode(&plain)),
            ObjectKind::Snapshot => drop(Snapshot::decode(&plain)),
            ObjectKind::GcMarker | ObjectKind::Session => {}
        }
    }
});
