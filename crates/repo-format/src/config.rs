//! The repository config: parameters fixed at `init` (SPEC.md §3.3).

use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::id::Id;

/// Parameters every writer must use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    /// Format version (also in every envelope).
    pub version: u8,
    /// Random repository ID (names the local cache, tells repositories apart).
    pub repo_id: Id,
    /// Minimum chunk size.
    pub chunk_min: u32,
    /// Average chunk size (power of two).
    pub chunk_avg: u32,
    /// Maximum chunk size.
    pub chunk_max: u32,
    /// Target size of a pack in bytes.
    pub pack_size: u32,
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
}

impl Config {
    /// Plaintext encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.version);
        w.id(&self.repo_id);
        w.u32(self.chunk_min);
        w.u32(self.chunk_avg);
        w.u32(self.chunk_max);
        w.u32(self.pack_size);
        w.i64(self.created_ns);
        w.finish()
    }

    /// Decodes a config plaintext.
    pub fn decode(buf: &[u8]) -> Result<Config, DecodeError> {
        let mut r = Reader::new(buf);
        let c = Config {
            version: r.u8()?,
            repo_id: r.id()?,
            chunk_min: r.u32()?,
            chunk_avg: r.u32()?,
            chunk_max: r.u32()?,
            pack_size: r.u32()?,
            created_ns: r.i64()?,
        };
        r.finish()?;
        if c.pack_size < 1024 * 1024 || c.pack_size > 1024 * 1024 * 1024 {
            return Err(invalid(
                "pack size",
                format!("{} outside 1 MiB..=1 GiB", c.pack_size),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    proptest! {
        #[test]
        fn config_round_trip(id: [u8; 32], a: u32, b: u32, c: u32, p in (1u32 << 20)..(1u32 << 30), t: i64) {
            let cfg = Config { version: 1, repo_id: Id(id), chunk_min: a, chunk_avg: b, chunk_max: c, pack_size: p, created_ns: t };
            let enc = cfg.encode();
            prop_assert_eq!(Config::decode(&enc).unwrap(), cfg);
            prop_assert!(Config::decode(&enc[..enc.len() - 1]).is_err());
        }
    }
}
