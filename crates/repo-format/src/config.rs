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
            version: r
                .version("config", crate::envelope::FORMAT_VERSION)
                .map(|()| crate::envelope::FORMAT_VERSION)?,
            repo_id: r.id()?,
            chunk_min: r.u32()?,
            chunk_avg: r.u32()?,
            chunk_max: r.u32()?,
            pack_size: r.u32()?,
            created_ns: r.i64()?,
        };
        r.finish()?;
        let (min, avg, max) = (c.chunk_min, c.chunk_avg, c.chunk_max);
        if !(64 <= min
            && min <= avg
            && avg <= max
            && max <= 64 * 1024 * 1024
            && avg.is_power_of_two())
        {
            return Err(invalid("chunk sizes", format!("min {min}, avg {avg}, max {max} are not 64 <= min <= avg <= max <= 64 MiB with avg a power of two")));
        }
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
        fn config_round_trip(id: [u8; 32], bits in 7u32..=24, a in 64u32..=1 << 24, c in 0u32..=1 << 24, p in (1u32 << 20)..(1u32 << 30), t: i64) {
            let avg = 1u32 << bits;
            let (min, max) = (a.min(avg), (avg + c).min(64 << 20));
            let cfg = Config { version: 1, repo_id: Id(id), chunk_min: min, chunk_avg: avg, chunk_max: max, pack_size: p, created_ns: t };
            let enc = cfg.encode();
            prop_assert_eq!(Config::decode(&enc).unwrap(), cfg);
            prop_assert!(Config::decode(&enc[..enc.len() - 1]).is_err());
        }
    }

    #[test]
    fn impossible_parameters_are_rejected() {
        let ok = Config {
            version: 1,
            repo_id: Id::default(),
            chunk_min: 512 << 10,
            chunk_avg: 1 << 20,
            chunk_max: 8 << 20,
            pack_size: 16 << 20,
            created_ns: 0,
        };
        assert!(Config::decode(&ok.encode()).is_ok());
        for bad in [
            Config {
                chunk_avg: 3 << 19,
                ..ok.clone()
            },
            Config {
                chunk_min: 2 << 20,
                ..ok.clone()
            },
            Config {
                chunk_max: 128 << 20,
                ..ok.clone()
            },
            Config {
                pack_size: 1000,
                ..ok.clone()
            },
        ] {
            assert!(Config::decode(&bad.encode()).is_err(), "{bad:?}");
        }
    }
}
