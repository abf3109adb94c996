//! Bandwidth limits for a backend, like restic's `--limit-upload` / `--limit-download`:
//! [`Throttled`] wraps any [`Backend`] and paces the bytes it writes and reads with one
//! token bucket per direction, shared by every thread using the backend.
//!
//! The bucket holds up to one second of bytes (at least 256 KiB), so short bursts pass at
//! full speed and the average over any longer stretch stays at the limit. A request larger
//! than what the bucket holds is let through once its bytes are paid for: the bucket goes
//! into debt and every later request waits for the debt to be paid back, so several threads
//! share the rate instead of each getting it. The sleep happens outside the lock.
//!
//! Granularity: the wrapper sees whole requests, not the bytes on the wire. A write is
//! paid for before it is forwarded, a staged file ([`Backend::stage`]) chunk by chunk as it
//! is appended, and a read after it returns (its size is known only then). The average
//! rate holds; within one large request the underlying transfer still runs at full speed.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Backend, FileKind, StagedFile};
use crate::error::Result;
use crate::id::Id;

/// The smallest burst a bucket allows, whatever the rate: one request of a typical size.
const MIN_BURST: u64 = 256 * 1024;

/// A token bucket in bytes per second, shared across threads.
pub struct RateLimit {
    bytes_per_sec: u64,
    burst: u64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// Bytes that may pass now; negative while requests already let through are being paid
    /// off.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("bytes_per_sec", &self.bytes_per_sec)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimit {
    /// A limit of `kib` KiB/s (1024 bytes), as restic's flags take it; 0 is no limit
    /// (`None`).
    pub fn kib_per_sec(kib: u64) -> Option<RateLimit> {
        Self::bytes_per_sec(kib.saturating_mul(1024))
    }

    /// A limit of `rate` bytes/s; 0 is no limit (`None`). The bucket starts full.
    pub fn bytes_per_sec(rate: u64) -> Option<RateLimit> {
        if rate == 0 {
            return None;
        }
        let burst = rate.max(MIN_BURST);
        Some(RateLimit {
            bytes_per_sec: rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst as f64,
                at: Instant::now(),
            }),
        })
    }

    /// The limit, bytes per second.
    pub fn rate(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Takes `n` bytes from the bucket, sleeping until they are paid for.
    pub fn consume(&self, n: u64) {
        if n == 0 {
            return;
        }
        let wait = {
            // A poisoned lock only means another thread panicked while holding it; the
            // bucket's two numbers are still consistent enough to pace with.
            let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(b.at).as_secs_f64() * self.bytes_per_sec as f64;
            b.tokens = (b.tokens + refill).min(self.burst as f64) - n as f64;
            b.at = now;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.tokens / self.bytes_per_sec as f64)
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

/// A backend whose uploads and downloads are limited to a rate. Every [`Backend`] method
/// is forwarded to the wrapped backend (its own implementation, not the trait's default),
/// so wrapping changes nothing but timing.
#[derive(Debug)]
pub struct Throttled {
    inner: Arc<dyn Backend>,
    up: Option<RateLimit>,
    down: Option<RateLimit>,
}

impl Throttled {
    /// Wraps `inner`, limiting what is written to `up` and what is read to `down`.
    pub fn new(inner: Arc<dyn Backend>, up: Option<RateLimit>, down: Option<RateLimit>) -> Self {
        Throttled { inner, up, down }
    }

    /// `inner` limited to `up_kib` / `down_kib` KiB/s (0 or `None`: that direction is not
    /// limited); `inner` itself when neither is limited, so an unlimited backend pays
    /// nothing for the option.
    pub fn wrap(
        inner: Arc<dyn Backend>,
        up_kib: Option<u64>,
        down_kib: Option<u64>,
    ) -> Arc<dyn Backend> {
        let up = up_kib.and_then(RateLimit::kib_per_sec);
        let down = down_kib.and_then(RateLimit::kib_per_sec);
        if up.is_none() && down.is_none() {
            inner
        } else {
            Arc::new(Throttled::new(inner, up, down))
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    fn upload(&self, n: usize) {
        if let Some(l) = &self.up {
            l.consume(n as u64);
        }
    }

    fn download(&self, n: usize) {
        if let Some(l) = &self.down {
            l.consume(n as u64);
        }
    }
}

/// A staged file whose appended bytes are paid for from the upload budget.
struct ThrottledStaged<'a> {
    inner: Box<dyn StagedFile + 'a>,
    up: Option<&'a RateLimit>,
}

impl StagedFile for ThrottledStaged<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(l) = self.up {
            l.consume(bytes.len() as u64);
        }
        self.inner.write_all(bytes)
    }

    fn commit(self: Box<Self>, id: &Id) -> Result<()> {
        self.inner.commit(id)
    }
}

impl Backend for Throttled {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        self.inner.list(kind)
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let bytes = self.inner.read(kind, id)?;
        self.download(bytes.len());
        Ok(bytes)
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u64) -> Result<Vec<u8>> {
        let bytes = self.inner.read_range(kind, id, offset, len)?;
        self.download(bytes.len());
        Ok(bytes)
    }

    fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        self.inner.size(kind, id)
    }

    fn modified(&self, kind: FileKind, id: &Id) -> Result<Option<i64>> {
        self.inner.modified(kind, id)
    }

    fn list_modified(&self, kind: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>> {
        self.inner.list_modified(kind)
    }

    fn write(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<()> {
        self.upload(bytes.len());
        self.inner.write(kind, id, bytes)
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        self.inner.remove(kind, id)
    }

    fn check_delete_allowed(&self) -> Result<()> {
        self.inner.check_delete_allowed()
    }

    fn extend_retention(&self, kind: FileKind, ids: &[Id]) -> Result<usize> {
        self.inner.extend_retention(kind, ids)
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile + '_>> {
        Ok(Box::new(ThrottledStaged {
            inner: self.inner.stage(kind)?,
            up: self.up.as_ref(),
        }))
    }

    fn remove_stale_staging(&self, age: Duration) -> Result<usize> {
        self.inner.remove_stale_staging(age)
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn remove_many(&self, kind: FileKind, ids: &[Id]) -> Result<()> {
        self.inner.remove_many(kind, ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MIB: usize = 1024 * 1024;

    fn local() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let d = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(d.path().join("repo"));
        b.create().unwrap();
        (d, Arc::new(b))
    }

    /// The wrapper over a local directory behaves like the directory.
    #[test]
    fn wrapped_local_backend_round_trips() {
        let (dir, inner) = local();
        let b = Throttled::new(
            inner.clone(),
            RateLimit::kib_per_sec(1 << 20),
            RateLimit::kib_per_sec(1 << 20),
        );
        assert_eq!(b.location(), inner.location());
        assert!(!b.is_remote());
        let id = Id::of_stored_bytes(b"hello");
        b.write(FileKind::Pack, &id, b"hello").unwrap();
        assert_eq!(b.read(FileKind::Pack, &id).unwrap(), b"hello");
        assert_eq!(b.read_range(FileKind::Pack, &id, 1, 3).unwrap(), b"ell");
        assert!(b.read_range(FileKind::Pack, &id, 3, 5).is_err());
        assert_eq!(b.size(FileKind::Pack, &id).unwrap(), 5);
        assert_eq!(b.list(FileKind::Pack).unwrap(), vec![(id, 5)]);
        assert_eq!(
            b.list_modified(FileKind::Pack).unwrap(),
            inner.list_modified(FileKind::Pack).unwrap(),
            "the local backend's own listing, with times"
        );
        assert!(b.modified(FileKind::Pack, &id).unwrap().is_some());

        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let staged_id = Id::of_stored_bytes(&data);
        let mut f = b.stage(FileKind::Pack).unwrap();
        for piece in data.chunks(7_000) {
            f.write_all(piece).unwrap();
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("repo/tmp"))
                .unwrap()
                .count(),
            1,
            "the local backend's staging, not the in-memory default"
        );
        f.commit(&staged_id).unwrap();
        assert_eq!(b.read(FileKind::Pack, &staged_id).unwrap(), data);

        b.remove_many(FileKind::Pack, &[id, staged_id]).unwrap();
        assert_eq!(b.list(FileKind::Pack).unwrap(), vec![]);
        b.remove(FileKind::Pack, &id).unwrap();
        assert!(matches!(
            b.read(FileKind::Pack, &id),
            Err(crate::Error::Missing { .. })
        ));
        assert_eq!(
            b.remove_stale_staging(Duration::from_secs(3600)).unwrap(),
            0
        );
    }

    /// A backend that overrides every method and counts the calls, so a method the
    /// wrapper failed to forward (leaving the trait's default body) shows up as 0.
    #[derive(Debug, Default)]
    struct Recorder {
        calls: [AtomicUsize; 18],
    }

    impl Recorder {
        fn hit(&self, i: usize) {
            self.calls[i].fetch_add(1, Ordering::SeqCst);
        }
    }

    struct RecStaged<'a>(&'a Recorder);

    impl StagedFile for RecStaged<'_> {
        fn write_all(&mut self, _: &[u8]) -> Result<()> {
            self.0.hit(14);
            Ok(())
        }
        fn commit(self: Box<Self>, _: &Id) -> Result<()> {
            self.0.hit(15);
            Ok(())
        }
    }

    impl Backend for Recorder {
        fn location(&self) -> String {
            self.hit(0);
            "recorder".into()
        }
        fn create(&self) -> Result<()> {
            self.hit(1);
            Ok(())
        }
        fn list(&self, _: FileKind) -> Result<Vec<(Id, u64)>> {
            self.hit(2);
            Ok(vec![])
        }
        fn read(&self, _: FileKind, _: &Id) -> Result<Vec<u8>> {
            self.hit(3);
            Ok(vec![1; 10])
        }
        fn read_range(&self, _: FileKind, _: &Id, _: u64, len: u64) -> Result<Vec<u8>> {
            self.hit(4);
            Ok(vec![1; len as usize])
        }
        fn size(&self, _: FileKind, _: &Id) -> Result<u64> {
            self.hit(5);
            Ok(10)
        }
        fn modified(&self, _: FileKind, _: &Id) -> Result<Option<i64>> {
            self.hit(6);
            Ok(Some(7))
        }
        fn list_modified(&self, _: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>> {
            self.hit(7);
            Ok(vec![])
        }
        fn write(&self, _: FileKind, _: &Id, _: &[u8]) -> Result<()> {
            self.hit(8);
            Ok(())
        }
        fn remove(&self, _: FileKind, _: &Id) -> Result<()> {
            self.hit(9);
            Ok(())
        }
        fn stage(&self, _: FileKind) -> Result<Box<dyn StagedFile + '_>> {
            self.hit(10);
            Ok(Box::new(RecStaged(self)))
        }
        fn remove_stale_staging(&self, _: Duration) -> Result<usize> {
            self.hit(11);
            Ok(3)
        }
        fn is_remote(&self) -> bool {
            self.hit(12);
            true
        }
        fn remove_many(&self, _: FileKind, _: &[Id]) -> Result<()> {
            // Counted apart from remove: the default body would call remove instead.
            self.hit(13);
            Ok(())
        }
        fn check_delete_allowed(&self) -> Result<()> {
            self.hit(16);
            Ok(())
        }
        fn extend_retention(&self, _: FileKind, _: &[Id]) -> Result<usize> {
            self.hit(17);
            Ok(2)
        }
    }

    /// Every trait method (provided ones included) reaches the wrapped backend's own
    /// implementation. When the trait grows a method, add it to Recorder and here.
    #[test]
    fn every_method_is_forwarded() {
        let rec = Arc::new(Recorder::default());
        let b = Throttled::new(
            rec.clone(),
            RateLimit::kib_per_sec(1 << 20),
            RateLimit::kib_per_sec(1 << 20),
        );
        let id = Id::of_stored_bytes(b"x");
        let k = FileKind::Pack;
        assert_eq!(b.location(), "recorder");
        b.create().unwrap();
        b.list(k).unwrap();
        b.read(k, &id).unwrap();
        b.read_range(k, &id, 0, 4).unwrap();
        b.size(k, &id).unwrap();
        assert_eq!(b.modified(k, &id).unwrap(), Some(7));
        b.list_modified(k).unwrap();
        b.write(k, &id, b"x").unwrap();
        b.remove(k, &id).unwrap();
        let mut f = b.stage(k).unwrap();
        f.write_all(b"x").unwrap();
        f.commit(&id).unwrap();
        assert_eq!(b.remove_stale_staging(Duration::ZERO).unwrap(), 3);
        assert!(b.is_remote());
        b.remove_many(k, &[id]).unwrap();
        b.check_delete_allowed().unwrap();
        assert_eq!(b.extend_retention(k, &[id]).unwrap(), 2);
        let counts: Vec<usize> = rec.calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, [1; 18], "calls per method (index = Recorder::hit)");
    }

    #[test]
    fn writes_are_held_to_the_upload_rate() {
        let (_dir, inner) = local();
        let b = Throttled::new(inner, RateLimit::kib_per_sec(1024), None);
        let data = vec![7u8; 3 * MIB];
        let id = Id::of_stored_bytes(&data);
        let t = Instant::now();
        b.write(FileKind::Pack, &id, &data).unwrap();
        // 3 MiB at 1 MiB/s with a 1 MiB burst: at least 2 s.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1950), "took {took:?}");
        assert_eq!(b.read(FileKind::Pack, &id).unwrap(), data);
    }

    #[test]
    fn staged_and_read_bytes_share_their_direction_across_threads() {
        let (_dir, inner) = local();
        let b = Arc::new(Throttled::new(
            inner,
            RateLimit::kib_per_sec(1024),
            RateLimit::kib_per_sec(1024),
        ));
        let ids: Vec<Id> = (0..2u8)
            .map(|i| {
                let data = vec![i; MIB];
                let id = Id::of_stored_bytes(&data);
                // Fills the upload bucket's debt: 2 MiB staged, 1 MiB burst.
                let mut f = b.stage(FileKind::Pack).unwrap();
                for piece in data.chunks(64 * 1024) {
                    f.write_all(piece).unwrap();
                }
                f.commit(&id).unwrap();
                id
            })
            .collect();
        // Two threads read 1.5 MiB each from one 1 MiB/s bucket with a 1 MiB burst: the
        // pair cannot finish in under 2 s, whichever thread goes first.
        let t = Instant::now();
        std::thread::scope(|s| {
            for id in &ids {
                let b = &b;
                s.spawn(move || {
                    b.read(FileKind::Pack, id).unwrap();
                    b.read_range(FileKind::Pack, id, 0, MIB as u64 / 2).unwrap();
                });
            }
        });
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(1950), "took {took:?}");
    }

    #[test]
    fn zero_or_none_is_unlimited() {
        assert!(RateLimit::kib_per_sec(0).is_none());
        assert!(RateLimit::bytes_per_sec(0).is_none());
        let (_dir, inner) = local();
        let same = Throttled::wrap(inner.clone(), Some(0), None);
        assert!(
            Arc::ptr_eq(&same, &inner),
            "no limit in either direction: the backend itself"
        );
        let b = Throttled::new(inner, None, None);
        let data = vec![1u8; 8 * MIB];
        let id = Id::of_stored_bytes(&data);
        let t = Instant::now();
        b.write(FileKind::Pack, &id, &data).unwrap();
        b.read(FileKind::Pack, &id).unwrap();
        // A loose bound that only a limiter's sleep would break (any limit in KiB/s would
        // make these 16 MiB take far longer).
        assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
        let small = RateLimit::kib_per_sec(1).unwrap();
        assert_eq!(small.rate(), 1024);
        let t = Instant::now();
        small.consume(MIN_BURST);
        // Had it waited, it would have waited ~256 s.
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the minimum burst passes at once"
        );
    }
}
