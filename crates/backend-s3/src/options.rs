//! Tunables of the S3 backend: timeouts, retries, concurrency, multipart sizes.

use std::time::Duration;

use crate::S3Error;

const MIB: u64 = 1024 * 1024;

/// How the S3 backend talks to its server. [`S3Options::default`] suits a LAN server and
/// AWS alike; [`S3Options::from_env`] lets a user override the timeouts and limits.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Region; `None` takes it from the AWS environment/profile, else `us-east-1`.
    pub region: Option<String>,
    /// Static credentials (access key, secret key); `None` uses the standard AWS chain
    /// (environment variables, profiles, web identity, container and instance metadata).
    pub credentials: Option<(String, String)>,
    /// Time limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Time limit for one attempt of one request, and for any pause while a response body
    /// streams in.
    pub attempt_timeout: Duration,
    /// Attempts per request (the first one included) before a transient failure is final.
    pub max_attempts: u32,
    /// First retry delay; it doubles each attempt, with full jitter, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
    /// Requests in flight at once, across all threads using the backend.
    pub concurrency: usize,
    /// Objects larger than this are uploaded in parts (multipart upload).
    pub multipart_threshold: u64,
    /// Size of a part of a multipart upload (at least 5 MiB, S3's minimum).
    pub part_size: u64,
    /// Block size for small reads of packs (a restore's blob-by-blob reads): once a pack
    /// is being read in small pieces, whole aligned blocks are fetched and kept; 0 turns
    /// this off.
    pub read_ahead: u64,
    /// How many bytes of such blocks are kept (least recently used out first).
    pub read_cache: u64,
    /// S3 Object Lock retention for every object written (the bucket must have been
    /// created with Object Lock): `None` writes none.
    pub object_lock: Option<ObjectLock>,
}

/// S3 Object Lock retention given to every object a backend writes (README "Object Lock").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// GOVERNANCE (users with `s3:BypassGovernanceRetention` may still delete) or
    /// COMPLIANCE (nobody may, not even the bucket's owner, until the date).
    pub mode: LockMode,
    /// Days from the write until which the object version may not be deleted or replaced.
    pub days: u32,
}

/// The Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `GOVERNANCE`.
    Governance,
    /// `COMPLIANCE`.
    Compliance,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("region", &self.region)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(ak, _)| (ak, "<secret>")),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("concurrency", &self.concurrency)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("read_ahead", &self.read_ahead)
            .field("read_cache", &self.read_cache)
            .field("object_lock", &self.object_lock)
            .finish()
    }
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            region: None,
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(60),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            concurrency: 16,
            multipart_threshold: 32 * MIB,
            part_size: 16 * MIB,
            read_ahead: 2 * MIB,
            read_cache: 64 * MIB,
            object_lock: None,
        }
    }
}

/// Environment variables read by [`S3Options::from_env`], with what they set.
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "HOLDFAST_S3_CONNECT_TIMEOUT",
        "connect timeout, seconds (default 10)",
    ),
    (
        "HOLDFAST_S3_TIMEOUT",
        "time limit of one request attempt and of a stalled download, seconds (default 60)",
    ),
    (
        "HOLDFAST_S3_MAX_ATTEMPTS",
        "attempts per request before giving up (default 8)",
    ),
    (
        "HOLDFAST_S3_CONNECTIONS",
        "requests in flight at once (default 16)",
    ),
    (
        "HOLDFAST_S3_PART_SIZE_MIB",
        "multipart part size in MiB; packs over twice this are uploaded in parts (default 16)",
    ),
    (
        "HOLDFAST_S3_READ_AHEAD_MIB",
        "block size in MiB for small reads of packs (a restore's), 0 for none (default 2)",
    ),
    (
        "HOLDFAST_S3_READ_CACHE_MIB",
        "memory for those blocks in MiB (default 64)",
    ),
    (
        "HOLDFAST_S3_OBJECT_LOCK_DAYS",
        "Object Lock retention in days for every object written; the bucket must have Object Lock (default: none)",
    ),
    (
        "HOLDFAST_S3_OBJECT_LOCK_MODE",
        "governance or compliance (default governance)",
    ),
];

/// The number in the variable `name`, if set: positive, or also zero with `allow_zero`.
fn env_number(name: &str, allow_zero: bool) -> Result<Option<f64>, S3Error> {
    let bad = |value: String| S3Error::InvalidSetting {
        var: name.to_string(),
        value,
        expected: if allow_zero {
            "a number, 0 or more"
        } else {
            "a positive number"
        },
    };
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && (n > 0.0 || (allow_zero && n == 0.0)) => Ok(Some(n)),
            _ => Err(bad(v)),
        },
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(bad(v.to_string_lossy().into_owned())),
    }
}

impl S3Options {
    /// Defaults, overridden by the `HOLDFAST_S3_*` variables listed in [`ENV_VARS`].
    pub fn from_env() -> Result<S3Options, S3Error> {
        let mut o = S3Options::default();
        if let Some(s) = env_number("HOLDFAST_S3_CONNECT_TIMEOUT", false)? {
            o.connect_timeout = Duration::from_secs_f64(s);
        }
        if let Some(s) = env_number("HOLDFAST_S3_TIMEOUT", false)? {
            o.attempt_timeout = Duration::from_secs_f64(s);
        }
        if let Some(n) = env_number("HOLDFAST_S3_MAX_ATTEMPTS", false)? {
            o.max_attempts = (n as u32).clamp(1, 100);
        }
        if let Some(n) = env_number("HOLDFAST_S3_CONNECTIONS", false)? {
            o.concurrency = (n as usize).clamp(1, 1024);
        }
        if let Some(n) = env_number("HOLDFAST_S3_PART_SIZE_MIB", false)? {
            o.part_size = ((n * MIB as f64) as u64).max(5 * MIB);
            o.multipart_threshold = 2 * o.part_size;
        }
        if let Some(n) = env_number("HOLDFAST_S3_READ_AHEAD_MIB", true)? {
            o.read_ahead = ((n * MIB as f64) as u64).min(256 * MIB);
        }
        if let Some(n) = env_number("HOLDFAST_S3_READ_CACHE_MIB", true)? {
            o.read_cache = ((n * MIB as f64) as u64).min(16 * 1024 * MIB);
        }
        if let Some(n) = env_number("HOLDFAST_S3_OBJECT_LOCK_DAYS", false)? {
            let mode = match std::env::var("HOLDFAST_S3_OBJECT_LOCK_MODE") {
                Err(_) => LockMode::Governance,
                Ok(m) => match m.trim().to_ascii_lowercase().as_str() {
                    "" | "governance" => LockMode::Governance,
                    "compliance" => LockMode::Compliance,
                    _ => {
                        return Err(S3Error::InvalidSetting {
                            var: "HOLDFAST_S3_OBJECT_LOCK_MODE".into(),
                            value: m,
                            expected: "governance or compliance",
                        })
                    }
                },
            };
            if n.fract() != 0.0 || n > 36_500.0 {
                return Err(S3Error::InvalidSetting {
                    var: "HOLDFAST_S3_OBJECT_LOCK_DAYS".into(),
                    value: n.to_string(),
                    expected: "a whole number of days, 1 to 36500",
                });
            }
            o.object_lock = Some(ObjectLock {
                mode,
                days: n as u32,
            });
        }
        Ok(o)
    }

    /// Checks the values for consistency.
    pub fn validate(&self) -> Result<(), S3Error> {
        let bad = |why| Err(S3Error::InvalidOptions(why));
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1");
        }
        if self.part_size < 5 * MIB {
            return bad("part_size must be at least 5 MiB (the S3 minimum)");
        }
        if self.attempt_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let o = S3Options::default();
        o.validate().unwrap();
        assert_eq!(o.max_attempts, 8);
        assert_eq!(o.multipart_threshold, 32 * MIB);
        let mut bad = o.clone();
        bad.part_size = MIB;
        assert!(bad.validate().is_err());
        let dbg = format!(
            "{:?}",
            S3Options {
                credentials: Some(("AK".into(), "SECRET".into())),
                ..o
            }
        );
        assert!(!dbg.contains("SECRET"), "{dbg}");
    }
}
