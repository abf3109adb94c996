//! Key files: the master key wrapped under a key derived from a password with Argon2id
//! (SPEC.md §4.2). Several key files can open one repository.
//!
//! ```text
//! "hfky" | version u8 | kdf u8 (1 = argon2id v19) | m_cost KiB u32 | t_cost u32 | p_cost u32
//! | salt (32) | created_ns i64 | host (u16 len + bytes) | user (u16 len + bytes)
//! | sealed master key: nonce (24) | 96 bytes ciphertext | tag (16)
//! ```
//! Everything before the sealed part is its associated data, so the parameters cannot be
//! weakened by someone with write access to the storage without the key file failing.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::crypto::{self, MasterKey, SEAL_OVERHEAD};
use crate::error::{Error, Result};

/// Key-file magic.
pub const MAGIC: &[u8; 4] = b"hfky";
/// Key-file version.
pub const VERSION: u8 = 1;
/// KDF identifier for Argon2id version 0x13.
pub const KDF_ARGON2ID: u8 = 1;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl KdfParams {
    /// 32 MiB, 6 passes, 1 lane: the same memory traffic per guess (what bounds an
    /// attacker's rate on GPUs) as RFC 9106's 64 MiB × 3, about a quarter second on a
    /// small machine, but a peak of 32 MiB: unlocking is the largest allocation a backup
    /// makes, and it counts against a pod's memory limit like any other.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 32 * 1024,
        t_cost: 6,
        p_cost: 1,
    };

    /// Upper bounds enforced when reading a key file, so a hostile key file cannot make
    /// us allocate unbounded memory or spin forever.
    fn check(&self) -> Result<(), DecodeError> {
        if self.m_cost_kib < 8 || self.m_cost_kib > 4 * 1024 * 1024 {
            return Err(invalid(
                "argon2 m_cost",
                format!("{} KiB out of range 8..=4 GiB", self.m_cost_kib),
            ));
        }
        // Argon2 needs 8 KiB per lane: a key file asking for less cannot be derived, and is
        // skipped as damaged rather than stopping the search for the right key file.
        if self.t_cost == 0
            || self.t_cost > 100
            || self.p_cost == 0
            || self.p_cost > 64
            || self.m_cost_kib < 8 * self.p_cost
        {
            return Err(invalid(
                "argon2 t/p cost",
                format!("t={} p={} out of range", self.t_cost, self.p_cost),
            ));
        }
        Ok(())
    }

    /// Derives a 32-byte wrapping key from a password and salt.
    pub fn derive(&self, password: &[u8], salt: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
        self.check().map_err(|e| Error::Kdf(e.to_string()))?;
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::Kdf(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password, salt, out.as_mut())
            .map_err(|e| Error::Kdf(e.to_string()))?;
        Ok(out)
    }
}

/// A decoded key file (the master key still sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Random salt.
    pub salt: [u8; 32],
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
    /// Host that created it (informational).
    pub host: String,
    /// User that created it (informational).
    pub user: String,
    /// The sealed master key.
    pub sealed: Vec<u8>,
    /// Length of the encoded prefix that is the associated data.
    ad_len: usize,
    /// The encoded bytes.
    encoded: Vec<u8>,
}

impl KeyFile {
    /// Wraps `master` under `password`.
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        kdf: KdfParams,
        created_ns: i64,
        host: &str,
        user: &str,
    ) -> Result<KeyFile> {
        if host.len() > u16::MAX as usize || user.len() > u16::MAX as usize {
            return Err(Error::Encode {
                what: "key file",
                detail: "host or user name longer than 65535 bytes".into(),
            });
        }
        let salt: [u8; 32] = crypto::random_array();
        let wrap = kdf.derive(password, &salt)?;
        let mut w = Writer::new();
        w.raw(MAGIC);
        w.u8(VERSION);
        w.u8(KDF_ARGON2ID);
        w.u32(kdf.m_cost_kib);
        w.u32(kdf.t_cost);
        w.u32(kdf.p_cost);
        w.raw(&salt);
        w.i64(created_ns);
        w.str16(host);
        w.str16(user);
        let ad_len = w.buf.len();
        let plain = Zeroizing::new(master.to_bytes());
        let sealed = crypto::seal(&wrap, &w.buf, plain.as_ref());
        w.raw(&sealed);
        Ok(KeyFile {
            kdf,
            salt,
            created_ns,
            host: host.to_string(),
            user: user.to_string(),
            sealed,
            ad_len,
            encoded: w.finish(),
        })
    }

    /// The stored bytes.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Parses a key file without decrypting it.
    pub fn decode(buf: &[u8]) -> Result<KeyFile, DecodeError> {
        let mut r = Reader::new(buf);
        if r.take(4)? != MAGIC {
            return Err(invalid("magic", "not a holdfast key file"));
        }
        r.version("key file", VERSION)?;
        let kdf_id = r.u8()?;
        if kdf_id != KDF_ARGON2ID {
            return Err(invalid("kdf", format!("unknown kdf {kdf_id}")));
        }
        let kdf = KdfParams {
            m_cost_kib: r.u32()?,
            t_cost: r.u32()?,
            p_cost: r.u32()?,
        };
        kdf.check()?;
        let mut salt = [0u8; 32];
        salt.copy_from_slice(r.take(32)?);
        let created_ns = r.i64()?;
        let host = r.str16("host")?;
        let user = r.str16("user")?;
        let ad_len = r.position();
        let sealed = r.take(MasterKey::LEN + SEAL_OVERHEAD)?.to_vec();
        r.finish()?;
        Ok(KeyFile {
            kdf,
            salt,
            created_ns,
            host,
            user,
            sealed,
            ad_len,
            encoded: buf.to_vec(),
        })
    }

    /// Unwraps the master key; `None` if the password is wrong (or the file was altered).
    pub fn unlock(&self, password: &[u8]) -> Result<Option<MasterKey>> {
        let wrap = self.kdf.derive(password, &self.salt)?;
        let Some(plain) = crypto::open(&wrap, &self.encoded[..self.ad_len], &self.sealed) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let arr: &[u8; 96] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::Kdf("master key of wrong length".into()))?;
        Ok(Some(MasterKey::from_bytes(arr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn memory_below_8_kib_per_lane_is_refused() {
        let p = |m, lanes| KdfParams {
            m_cost_kib: m,
            t_cost: 1,
            p_cost: lanes,
        };
        assert!(p(8, 1).check().is_ok());
        assert!(p(16, 2).check().is_ok());
        assert!(p(8, 2).check().is_err());
        assert!(p(64, 9).check().is_err());
    }

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn key_file_round_trip(pw in proptest::collection::vec(any::<u8>(), 0..40), host in "[a-z0-9.-]{0,20}", user in "[a-z]{0,10}", t: i64) {
            let mk = MasterKey::generate();
            let kf = KeyFile::create(&mk, &pw, FAST, t, &host, &user).unwrap();
            let back = KeyFile::decode(kf.encoded()).unwrap();
            prop_assert_eq!(&back, &kf);
            prop_assert_eq!(back.unlock(&pw).unwrap().unwrap().to_bytes(), mk.to_bytes());
            let mut wrong = pw.clone();
            wrong.push(b'x');
            prop_assert!(back.unlock(&wrong).unwrap().is_none());
            for cut in 0..kf.encoded().len() {
                prop_assert!(KeyFile::decode(&kf.encoded()[..cut]).is_err());
            }
        }
    }

    #[test]
    fn altered_parameters_fail_to_unlock() {
        let mk = MasterKey::generate();
        let kf = KeyFile::create(&mk, b"pw", FAST, 0, "h", "u").unwrap();
        let mut enc = kf.encoded().to_vec();
        enc[10] ^= 1; // t_cost byte region
        if let Ok(k) = KeyFile::decode(&enc) {
            assert!(k.unlock(b"pw").map(|o| o.is_none()).unwrap_or(true));
        }
        let mut enc = kf.encoded().to_vec();
        enc[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            KeyFile::decode(&enc).is_err(),
            "absurd memory cost must be refused"
        );
    }
}
