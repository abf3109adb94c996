//! Session files: how a running writer or pruner announces itself to a concurrent prune
//! (SPEC.md §12.2). The file is refreshed on a heartbeat and removed when the guard drops,
//! so a backup that fails still leaves no live-looking session behind.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_repo::backend::{Backend, FileKind};
use holdfast_repo::crypto::{random_array, MasterKey};
use holdfast_repo::envelope::{self, ObjectKind};
use holdfast_repo::gc::{Role, Session};
use holdfast_repo::repository::Repository;
use holdfast_repo::Id;

/// How often a session is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(10 * 60);
/// A session whose newest heartbeat is older than this is stale (its process is gone).
pub const STALE_NS: i64 = 3600 * 1_000_000_000;
/// Allowance for clock differences between hosts.
pub const SKEW_NS: i64 = 600 * 1_000_000_000;
/// A writer that could not refresh its session for this long must re-validate before
/// writing its snapshot.
pub const MISSED_NS: i64 = 50 * 60 * 1_000_000_000;

/// Now, ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

struct Shared {
    file: Option<Id>,
    last_ok: Instant,
}

/// A live session; dropping it ends the session.
pub struct SessionGuard {
    backend: Arc<dyn Backend>,
    shared: Arc<Mutex<Shared>>,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The announced session.
    pub session: Session,
}

fn write(backend: &dyn Backend, key: &MasterKey, s: &Session) -> holdfast_repo::Result<Id> {
    let bytes = envelope::seal(key, ObjectKind::Session, &s.encode(), false);
    let id = Id::of_stored_bytes(&bytes);
    backend.write(FileKind::Session, &id, &bytes)?;
    Ok(id)
}

impl SessionGuard {
    /// Writes the session file and starts the heartbeat. Must be called before the
    /// writer loads the index and the gc markers.
    pub fn start(repo: &Repository, role: Role, host: &str) -> holdfast_repo::Result<SessionGuard> {
        let now = now_ns();
        let session = Session {
            session_id: random_array(),
            role,
            host: host.to_string(),
            pid: std::process::id(),
            start_ns: now,
            heartbeat_ns: now,
        };
        let backend = repo.backend().clone();
        let key = repo.key().clone();
        let first = write(&*backend, &key, &session)?;
        let shared = Arc::new(Mutex::new(Shared {
            file: Some(first),
            last_ok: Instant::now(),
        }));
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let (b2, sh2, mut s2) = (backend.clone(), shared.clone(), session.clone());
        let thread = std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(HEARTBEAT)
            {
                s2.heartbeat_ns = now_ns();
                match write(&*b2, &key, &s2) {
                    Ok(id) => {
                        let old = {
                            let mut g = sh2.lock().expect("lock");
                            g.last_ok = Instant::now();
                            g.file.replace(id)
                        };
                        if let Some(old) = old.filter(|o| *o != id) {
                            let _ = b2.remove(FileKind::Session, &old);
                        }
                    }
                    Err(e) => tracing::warn!("session heartbeat failed: {e}"),
                }
            }
        });
        Ok(SessionGuard {
            backend,
            shared,
            stop: Some(tx),
            thread: Some(thread),
            session,
        })
    }

    /// Whether the heartbeat has failed for so long that a prune may have swept since:
    /// the writer must then re-validate what it references (SPEC.md §12.2).
    pub fn missed_heartbeats(&self) -> bool {
        let since = self.shared.lock().expect("lock").last_ok.elapsed();
        since.as_nanos() as i64 > MISSED_NS
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(id) = self.shared.lock().expect("lock").file.take() {
            if let Err(e) = self.backend.remove(FileKind::Session, &id) {
                tracing::warn!("could not remove session file {id}: {e}");
            }
        }
    }
}

/// Whether a session is still alive as seen at `now`.
pub fn is_live(s: &Session, now: i64) -> bool {
    now.saturating_sub(s.heartbeat_ns) < STALE_NS + SKEW_NS
}
