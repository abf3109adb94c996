//! 32-byte identifiers: blob IDs (keyed BLAKE3 of plaintext) and object names (BLAKE3 of stored bytes).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A 32-byte identifier, shown as 64 lowercase hex digits.
///
/// Used both for blob IDs (keyed hash of the plaintext, see SPEC.md §5) and for the
/// names of stored files (plain hash of the stored bytes, SPEC.md §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Length of an ID in bytes.
    pub const LEN: usize = 32;

    /// The name of a stored file: unkeyed BLAKE3 of its exact bytes.
    pub fn of_stored_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex form, as used in file names and on the command line.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, for display.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses exactly 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Id> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(Error::InvalidId(s.to_string()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| Error::InvalidId(s.to_string()))?;
        Ok(Id(out))
    }

    /// Whether the hex form of this ID starts with `prefix` (case-insensitive).
    pub fn has_hex_prefix(&self, prefix: &str) -> bool {
        self.to_hex().starts_with(&prefix.to_ascii_lowercase())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Id> {
        Id::from_hex(s)
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_input() {
        let id = Id::of_stored_bytes(b"abc");
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        assert!(Id::from_hex("abc").is_err());
        assert!(Id::from_hex(&"zz".repeat(32)).is_err());
        assert!(id.has_hex_prefix(&id.to_hex()[..6].to_uppercase()));
    }
}
