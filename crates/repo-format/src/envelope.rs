//! The envelope of every encrypted stand-alone object: config, index files, snapshots,
//! garbage-collection markers (SPEC.md §3.2).
//!
//! ```text
//! "hfob" | version: u8 | kind: u8 | compression: u8 | nonce (24) | ciphertext | tag (16)
//! ```
//! The seven header bytes are the associated data, so a snapshot can never be passed off
//! as an index, nor a version byte changed, without failing authentication.

use crate::blob::Compression;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;

/// Envelope magic.
pub const MAGIC: &[u8; 4] = b"hfob";
/// Repository format version written by this build.
pub const FORMAT_VERSION: u8 = 1;
/// Plain header length.
pub const HEADER_LEN: usize = 7;

/// What an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// The repository config.
    Config = 1,
    /// An index file.
    Index = 2,
    /// A snapshot.
    Snapshot = 3,
    /// A garbage-collection marker (packs pending deletion).
    GcMarker = 4,
    /// A writer session announcement.
    Session = 5,
}

impl ObjectKind {
    /// Lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::GcMarker => "gc marker",
            ObjectKind::Session => "session",
        }
    }
}

/// Seals `plaintext` (compressing it with zstd when `compress`) into an envelope.
pub fn seal(key: &MasterKey, kind: ObjectKind, plaintext: &[u8], compress: bool) -> Vec<u8> {
    let compressed = if compress {
        zstd::bulk::compress(plaintext, 3)
            .ok()
            .filter(|c| c.len() < plaintext.len())
    } else {
        None
    };
    let (compression, body) = match &compressed {
        Some(c) => (Compression::Zstd, c.as_slice()),
        None => (Compression::None, plaintext),
    };
    let header = header(kind, compression);
    let sealed = key.seal(&header, body);
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&sealed);
    out
}

/// The plain header bytes of an envelope.
pub fn header(kind: ObjectKind, compression: Compression) -> [u8; HEADER_LEN] {
    [
        MAGIC[0],
        MAGIC[1],
        MAGIC[2],
        MAGIC[3],
        FORMAT_VERSION,
        kind as u8,
        compression as u8,
    ]
}

/// Opens an envelope named `name` that must hold `kind`; checks version and authenticity.
pub fn open(key: &MasterKey, kind: ObjectKind, name: &Id, stored: &[u8]) -> Result<Vec<u8>> {
    let what = kind.name();
    let corrupt = |d: String| Error::Corrupt {
        kind: what,
        name: name.to_string(),
        detail: d,
    };
    if stored.len() < HEADER_LEN {
        return Err(corrupt(format!("only {} bytes (truncated)", stored.len())));
    }
    if &stored[..4] != MAGIC {
        return Err(corrupt("bad magic (not a holdfast object)".into()));
    }
    if stored[4] != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            what: format!("{what} {name}"),
            found: stored[4],
            supported: FORMAT_VERSION,
        });
    }
    if stored[5] != kind as u8 {
        return Err(corrupt(format!(
            "holds object kind {}, expected {}",
            stored[5], kind as u8
        )));
    }
    let compression = Compression::from_u8(stored[6]).map_err(|e| corrupt(e.to_string()))?;
    let body = key
        .open(&stored[..HEADER_LEN], &stored[HEADER_LEN..])
        .ok_or_else(|| {
            corrupt("authentication failed (damaged or written with another key)".into())
        })?;
    match compression {
        Compression::None => Ok(body),
        Compression::Zstd => {
            let mut out = Vec::new();
            zstd::stream::copy_decode(body.as_slice(), &mut out)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn envelope_round_trip(data in proptest::collection::vec(any::<u8>(), 0..3000), compress: bool) {
            let key = MasterKey::generate();
            let s = seal(&key, ObjectKind::Index, &data, compress);
            let id = Id::of_stored_bytes(&s);
            prop_assert_eq!(open(&key, ObjectKind::Index, &id, &s).unwrap(), data);
            prop_assert!(open(&key, ObjectKind::Snapshot, &id, &s).is_err());
            for cut in 0..s.len().min(64) {
                prop_assert!(open(&key, ObjectKind::Index, &id, &s[..cut]).is_err());
            }
        }
    }

    #[test]
    fn newer_version_is_refused_clearly() {
        let key = MasterKey::generate();
        let mut s = seal(&key, ObjectKind::Config, b"x", false);
        s[4] = 2;
        let e = open(&key, ObjectKind::Config, &Id::default(), &s).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }
}
