//! Sessions and their leases: how a running writer or pruner announces itself to a
//! concurrent prune, and how it knows that it still may write (SPEC.md §12.2).
//!
//! A session file is refreshed on a heartbeat and removed when the guard drops, so a
//! backup that fails leaves no live-looking session behind. The **lease** is the writer's
//! own side of the same contract: a prune on another host deletes data a writer depends on
//! only once that writer's session looks stale to it, so the writer may write an index file
//! or a snapshot only while its last heartbeat is recent enough that no prune can yet judge
//! it stale. The lease is measured on `CLOCK_BOOTTIME`, which keeps counting while the
//! machine sleeps or the process is stopped, and once lost it stays lost: a process that
//! was frozen past it resumes with a lost lease, whatever its heartbeat does next.
//! Every guarded write checks the lease before and again after the write (the process may
//! have been stopped in between), and deletes what it wrote when the second check fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{Backend, FileKind};
use crate::crypto::{random_array, MasterKey};
use crate::envelope::{self, ObjectKind};
use crate::error::{Error, Result};
use crate::gc::{Role, Session};
use crate::id::Id;

/// The coarsest time stamps a backend may give (FAT's 2 s; S3's 1 s).
const STAMP_GRANULARITY_NS: i64 = 2_000_000_000;

/// Why a lease is lost when its session file is gone.
const REMOVED: &str =
    "its session file was removed from the repository (a prune judged the session stale)";

/// Why a lease is lost when it ran out.
fn expired_reason() -> String {
    format!(
        "no heartbeat reached the repository for {} minutes (the process was stopped or suspended, or the storage was unreachable)",
        LEASE.as_secs() / 60
    )
}

/// How often a session file is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(5 * 60);
/// How long a heartbeat keeps the lease: well below the time after which a prune may judge
/// the session stale (`STALE_NS + SKEW_NS`), so a writer stops before any prune can act on
/// its absence.
pub const LEASE: Duration = Duration::from_secs(50 * 60);
/// A session whose newest heartbeat is older than this (plus [`SKEW_NS`]) is stale: its
/// process is taken to be gone, and prunes stop waiting for it.
pub const STALE_NS: i64 = 3600 * 1_000_000_000;
/// Allowance for the difference between two hosts' clocks.
pub const SKEW_NS: i64 = 600 * 1_000_000_000;
/// Most a process's clock may differ from the storage server's before it refuses to write:
/// half the allowance, so that any two hosts differ by at most [`SKEW_NS`].
pub const MAX_OWN_SKEW_NS: i64 = SKEW_NS / 2;

/// Now by the wall clock, ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Time since boot, counting suspend (`CLOCK_BOOTTIME`): the clock of the lease. A
/// monotonic clock that stops while the machine sleeps would let a writer that slept for
/// hours believe its lease still held.
pub fn boot_time() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(t) => Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().max(0) as u32),
        // Not on this kernel: the wall clock, whose jumps can only end a lease early or
        // late by the jump; CLOCK_BOOTTIME exists on every Linux since 2.6.39.
        Err(_) => Duration::from_nanos(now_ns().max(0) as u64),
    }
}

/// The lease's bookkeeping, apart from clocks and storage so that its rules can be tested
/// with plain numbers. Times are [`boot_time`] readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    expires: Duration,
    lost: bool,
}

impl Lease {
    /// A lease from a session file whose write began at `start`.
    pub fn new(start: Duration) -> Lease {
        Lease {
            expires: start + LEASE,
            lost: false,
        }
    }

    /// Whether the lease holds at `now`. Once it has not, it never does again.
    pub fn check(&mut self, now: Duration) -> bool {
        if now >= self.expires {
            self.lost = true;
        }
        !self.lost
    }

    /// Records a heartbeat whose write began at `start` and completed at `done`. It extends
    /// the lease only if it completed while the lease still held: a heartbeat that lands
    /// after a gap cannot undo what a prune may have done during the gap. Returns whether
    /// the lease holds.
    pub fn renew(&mut self, start: Duration, done: Duration) -> bool {
        if !self.check(done) {
            return false;
        }
        self.expires = self.expires.max(start + LEASE);
        true
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        self.lost
    }
}

/// A session file as listed: what it says and when the storage server last wrote it.
#[derive(Debug, Clone)]
pub struct ListedSession {
    /// The file's name.
    pub id: Id,
    /// Its content.
    pub session: Session,
    /// The server's modification time, ns since the epoch, where the backend reports one.
    pub modified_ns: Option<i64>,
}

/// A session file that could not be read or decoded.
#[derive(Debug)]
pub struct BadSession {
    /// The file's name.
    pub id: Id,
    /// The server's modification time, where the backend reports one: an unreadable file
    /// expires by it like a stale session.
    pub modified_ns: Option<i64>,
    /// Why it could not be read.
    pub error: Error,
}

/// The age of a session's newest heartbeat at server time `server_now`: by the file's
/// server modification time where the backend reports one (one clock for every host), else
/// by the heartbeat time its writer recorded (the writer's clock, within the allowance).
pub fn heartbeat_age_ns(s: &ListedSession, server_now: i64) -> i64 {
    server_now.saturating_sub(s.modified_ns.unwrap_or(s.session.heartbeat_ns))
}

/// Whether a session is still alive at server time `server_now`: its heartbeat is recent,
/// and it was not written by a process on this very machine that has since died.
pub fn is_live(s: &ListedSession, server_now: i64) -> bool {
    heartbeat_age_ns(s, server_now) < STALE_NS + SKEW_NS && !process_is_gone(&s.session)
}

/// Whether an unreadable session file is old enough to be treated as stale (by its server
/// modification time; a file whose time is unknown never is).
pub fn bad_is_stale(b: &BadSession, server_now: i64) -> bool {
    b.modified_ns
        .is_some_and(|m| server_now.saturating_sub(m) >= STALE_NS + SKEW_NS)
}

struct Shared {
    /// The current session file.
    file: Option<Id>,
    lease: Lease,
    /// Why the lease was lost, once it was.
    lost: Option<String>,
}

/// A live session and its lease; dropping it ends the session.
pub struct SessionGuard {
    backend: Arc<dyn Backend>,
    shared: Arc<Mutex<Shared>>,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The announced session.
    pub session: Session,
    /// The storage server's clock minus this process's, ns, measured from the first
    /// session file (0 where the backend reports no times).
    pub server_offset_ns: i64,
}

fn write(backend: &dyn Backend, key: &MasterKey, s: &Session) -> Result<Id> {
    let bytes = envelope::seal(key, ObjectKind::Session, &s.encode()?, false);
    let id = Id::of_stored_bytes(&bytes);
    backend.write(FileKind::Session, &id, &bytes)?;
    Ok(id)
}

/// Whether a refused deletion of a session file was reported already (once per process).
static DELETE_DENIED_REPORTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Deletes one of this session's files, best effort. Writer-only credentials (node agents,
/// README "Writer-only credentials for the agents") may not delete: the file then stays,
/// which is safe (SPEC.md §12.2: an old heartbeat file of a live session only looks like
/// that session, and goes stale 70 minutes after it was written), and is said once per
/// process, naming the file; a prune run with credentials that may delete removes it
/// once stale. Other failures are warnings each time. Returns whether the file is gone.
fn remove_own_file(backend: &dyn Backend, id: &Id, what: &str) -> bool {
    match backend.remove(FileKind::Session, id) {
        Ok(()) => true,
        Err(Error::DeleteDenied { path, .. }) => {
            if !DELETE_DENIED_REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "the storage refused to delete {what} {path} (these credentials may not \
                     delete: writer-only); it stays, and so will this process's other old \
                     session files: a prune run with credentials that may delete (the \
                     maintenance job) removes them once stale, 70 minutes after they were \
                     written. The backup is not affected"
                );
            } else {
                tracing::debug!("the storage refused to delete {what} {path}");
            }
            false
        }
        Err(e) => {
            tracing::warn!("could not remove {what} {id}: {e}");
            false
        }
    }
}

/// Whether a session file still exists (`Ok(false)` only for a definite "missing").
fn file_exists(backend: &dyn Backend, id: &Id) -> Result<bool> {
    match backend.size(FileKind::Session, id) {
        Ok(_) => Ok(true),
        Err(Error::Missing { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Writer => "backup",
        Role::Prune => "prune",
    }
}

impl SessionGuard {
    /// Writes the session file, checks this host's clock against the storage server's, and
    /// starts the heartbeat. Must be called before the writer loads the index and the gc
    /// markers.
    pub fn start(
        backend: Arc<dyn Backend>,
        key: &MasterKey,
        role: Role,
        host: &str,
    ) -> Result<SessionGuard> {
        let lease_start = boot_time();
        let before = now_ns();
        let session = Session {
            session_id: random_array(),
            role,
            host: host.to_string(),
            pid: std::process::id(),
            start_ns: before,
            heartbeat_ns: before,
            process: own_process_identity(),
        };
        let first = write(&*backend, key, &session)?;
        let after = now_ns();
        let offset = match backend.modified(FileKind::Session, &first) {
            Ok(Some(m)) => clock_offset(m, before, after),
            Ok(None) => 0,
            // Removed already: by a prune that took it for stale (a clock far ahead of
            // the storage's, or a stop right after the write).
            Err(Error::Missing { .. }) => {
                return Err(Error::LeaseLost {
                    role: role_name(role),
                    reason: REMOVED.into(),
                })
            }
            Err(e) => {
                remove_own_file(&*backend, &first, "session file");
                return Err(e);
            }
        };
        if offset.abs() > MAX_OWN_SKEW_NS {
            remove_own_file(&*backend, &first, "session file");
            return Err(Error::ClockSkew {
                location: backend.location(),
                offset_s: offset / 1_000_000_000,
                limit_s: MAX_OWN_SKEW_NS / 1_000_000_000,
            });
        }
        let shared = Arc::new(Mutex::new(Shared {
            file: Some(first),
            lease: Lease::new(lease_start),
            lost: None,
        }));
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let (b2, sh2, mut s2, key) = (
            backend.clone(),
            shared.clone(),
            session.clone(),
            key.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("holdfast-heartbeat".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(HEARTBEAT)
                {
                    if !heartbeat(&*b2, &key, &sh2, &mut s2) {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Io {
                op: "start the session heartbeat thread",
                path: String::new(),
                source: e,
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                remove_own_file(&*backend, &first, "session file");
                return Err(e);
            }
        };
        Ok(SessionGuard {
            backend,
            shared,
            stop: Some(tx),
            thread: Some(thread),
            session,
            server_offset_ns: offset,
        })
    }

    /// Now by the storage server's clock, as far as this process can tell.
    pub fn server_now_ns(&self) -> i64 {
        now_ns().saturating_add(self.server_offset_ns)
    }

    /// Fails with [`Error::LeaseLost`] unless the lease holds: no heartbeat is overdue and
    /// the session file is still there (a prune deletes it only once it judged the session
    /// stale). A lost lease stays lost.
    pub fn check(&self) -> Result<()> {
        let mut g = self.shared.lock().expect("lock");
        if g.lost.is_none() && !g.lease.check(boot_time()) {
            g.lost = Some(expired_reason());
        }
        if g.lost.is_none() {
            if let Some(id) = g.file {
                if !file_exists(&*self.backend, &id)? {
                    g.lease.lost = true;
                    g.lost = Some(REMOVED.into());
                }
            }
        }
        match &g.lost {
            None => Ok(()),
            Some(reason) => Err(Error::LeaseLost {
                role: role_name(self.session.role),
                reason: reason.clone(),
            }),
        }
    }

    /// Runs a write of a `kind` file under the lease: the lease is checked before, and
    /// again after the write completed. If it was lost meanwhile, a snapshot just written
    /// is deleted again (it may name data a prune has deleted, and nothing depends on a
    /// snapshot); an index file or gc marker is kept, because from the moment it landed
    /// others may depend on it (a writer that deduplicated against the packs an index file
    /// names, a prune that deleted the files it supersedes, writers that saw a marker), and
    /// keeping it is harmless: entries of deleted packs are ignored (SPEC.md §7.2) and a
    /// marker's packs are rescued if anything needs them. Either way the error is returned.
    pub fn guarded_write(&self, kind: FileKind, write: impl FnOnce() -> Result<Id>) -> Result<Id> {
        self.check()?;
        let id = write()?;
        if let Err(e) = self.check() {
            if kind == FileKind::Snapshot {
                if let Err(r) = self.backend.remove(kind, &id) {
                    tracing::warn!(
                        "could not delete snapshot {id}, written after the session's lease was lost: {r}"
                    );
                }
            }
            return Err(e);
        }
        Ok(id)
    }
}

/// One heartbeat: writes a new session file, and keeps it only if the previous one was still
/// there and the lease held until the write completed. Returns false once the lease is lost.
fn heartbeat(
    backend: &dyn Backend,
    key: &MasterKey,
    shared: &Mutex<Shared>,
    s: &mut Session,
) -> bool {
    if shared.lock().expect("lock").lost.is_some() {
        return false;
    }
    let start = boot_time();
    s.heartbeat_ns = now_ns();
    let id = match write(backend, key, s) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(
                "session heartbeat failed (the lease ends {} minutes after the last one that succeeded): {e}",
                LEASE.as_secs() / 60
            );
            return true;
        }
    };
    let done = boot_time();
    let mut g = shared.lock().expect("lock");
    let old = g.file;
    let old_present = match old {
        Some(o) if o != id => file_exists(backend, &o).unwrap_or(true),
        _ => true,
    };
    if !old_present {
        g.lease.lost = true;
        g.lost = Some(REMOVED.into());
    } else if !g.lease.renew(start, done) {
        g.lost = Some(expired_reason());
    }
    if g.lost.is_some() {
        drop(g);
        // The new file must not make the session look alive again. (Where deletes are
        // refused it does, for 70 minutes: that only holds prunes back, which is safe.)
        remove_own_file(backend, &id, "session file");
        tracing::warn!("the session's lease was lost: its next index or snapshot write will fail");
        return false;
    }
    g.file = Some(id);
    drop(g);
    if let Some(old) = old.filter(|o| *o != id) {
        remove_own_file(backend, &old, "the previous session file");
    }
    true
}

/// The server's clock minus ours, from a file the server stamped `modified` while our clock
/// went from `before` to `after`: zero when the stamp falls between them, allowing for
/// stamps truncated to [`STAMP_GRANULARITY_NS`] (S3's `LastModified` has whole seconds).
/// Without that allowance two processes a second apart could disagree on the server's time
/// by a second, and a marker written by one would not yet be due for the other at a 0 s
/// margin; an offset this small matters to nothing else.
fn clock_offset(modified: i64, before: i64, after: i64) -> i64 {
    if modified < before - STAMP_GRANULARITY_NS {
        modified + STAMP_GRANULARITY_NS - before
    } else if modified > after {
        modified - after
    } else {
        0
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(id) = self.shared.lock().expect("lock").file.take() {
            remove_own_file(&*self.backend, &id, "session file");
        }
    }
}

/// The machine part of a process identity: boot ID and PID namespace. Two processes with
/// the same machine part see the same PIDs; `None` where either cannot be read.
fn machine_identity() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let (boot, ns) = (boot.trim(), ns.to_string_lossy().into_owned());
    (!boot.is_empty() && !ns.is_empty()).then(|| format!("{boot} {ns}"))
}

/// Start time (clock ticks since boot) of process `pid`, and whether it is a zombie; `Ok(None)`
/// when no such process exists.
fn process_start(pid: u32) -> std::io::Result<Option<(u64, bool)>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) may hold spaces and parentheses: fields resume after the
    // last ')'; there, field 3 (state) comes first and field 22 (starttime) is the 20th.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| std::io::Error::other("unparsable /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| std::io::Error::other("unparsable /proc stat"))?;
    Ok(Some((start, fields.first() == Some(&"Z"))))
}

/// This process's identity for its session files: machine identity and start time.
pub fn own_process_identity() -> String {
    match (
        machine_identity(),
        process_start(std::process::id()).ok().flatten(),
    ) {
        (Some(m), Some((start, _))) => format!("{m} {start}"),
        _ => String::new(),
    }
}

/// Whether the session's process is known to have ended: it ran on this machine (same boot,
/// same PID namespace) and its PID is gone, a zombie, or now another process. Anything
/// uncertain counts as alive, so a session on another machine only goes stale by time.
pub fn process_is_gone(s: &Session) -> bool {
    let Some(mine) = machine_identity() else {
        return false;
    };
    let Some((machine, start)) = s.process.rsplit_once(' ') else {
        return false;
    };
    if machine != mine {
        return false;
    }
    let Ok(start) = start.parse::<u64>() else {
        return false;
    };
    match process_start(s.pid) {
        Ok(None) => true,
        Ok(Some((now_start, zombie))) => zombie || now_start != start,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pid: u32, process: String) -> Session {
        Session {
            session_id: [7; 16],
            role: Role::Writer,
            host: "h".into(),
            pid,
            start_ns: now_ns(),
            heartbeat_ns: now_ns(),
            process,
        }
    }

    fn listed(session: Session, modified_ns: Option<i64>) -> ListedSession {
        ListedSession {
            id: Id([1; 32]),
            session,
            modified_ns,
        }
    }

    #[test]
    fn own_process_is_alive() {
        let me = own_process_identity();
        assert!(!me.is_empty(), "no process identity on Linux");
        let s = session(std::process::id(), me);
        assert!(!process_is_gone(&s));
        assert!(is_live(&listed(s, None), now_ns()));
    }

    #[test]
    fn ended_process_on_this_machine_is_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        let start = process_start(pid).expect("stat").map(|(s, _)| s);
        child.wait().expect("wait");
        let m = machine_identity().expect("machine identity");
        // Start time from while it ran (or any number if it was already reaped).
        let s = session(pid, format!("{m} {}", start.unwrap_or(1)));
        assert!(process_is_gone(&s));
        assert!(!is_live(&listed(s, None), now_ns()));
    }

    #[test]
    fn reused_pid_is_gone_and_other_machines_are_not_judged() {
        let m = machine_identity().expect("machine identity");
        let me = std::process::id();
        let (start, _) = process_start(me).unwrap().unwrap();
        // Same PID, other start time: the PID was reused.
        assert!(process_is_gone(&session(me, format!("{m} {}", start + 1))));
        // Another machine (or PID namespace), or no identity: only time decides.
        let other = session(u32::MAX - 1, format!("other-boot pid:[1] {start}"));
        assert!(!process_is_gone(&other));
        assert!(is_live(&listed(other, None), now_ns()));
        assert!(!process_is_gone(&session(u32::MAX - 1, String::new())));
        let mut old = session(me, String::new());
        old.heartbeat_ns = now_ns() - STALE_NS - SKEW_NS - 1;
        assert!(!is_live(&listed(old.clone(), None), now_ns()));
        // The server's time of the file decides where there is one, whatever the writer's
        // clock said: a fresh file is live, an old one stale.
        let now = now_ns();
        assert!(is_live(
            &listed(old.clone(), Some(now - 60_000_000_000)),
            now
        ));
        let mut fresh = session(u32::MAX - 1, String::new());
        fresh.heartbeat_ns = now + 3600 * 1_000_000_000;
        assert!(!is_live(
            &listed(fresh, Some(now - STALE_NS - SKEW_NS)),
            now
        ));
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn lease_expires_and_stays_lost() {
        let t0 = Duration::from_secs(1000);
        let mut l = Lease::new(t0);
        assert!(l.check(t0 + 49 * MIN));
        // A heartbeat that completes in time extends it from the heartbeat's start.
        assert!(l.renew(t0 + 40 * MIN, t0 + 41 * MIN));
        assert!(l.check(t0 + 89 * MIN));
        assert!(!l.check(t0 + 90 * MIN));
        // Sticky: neither a later check nor a heartbeat brings it back.
        assert!(!l.check(t0 + 10 * MIN));
        assert!(!l.renew(t0 + 91 * MIN, t0 + 91 * MIN));
        assert!(l.is_lost());
    }

    #[test]
    fn heartbeat_that_lands_after_the_lease_does_not_renew_it() {
        let t0 = Duration::from_secs(1000);
        let mut l = Lease::new(t0);
        // Began in time, but the process was stopped before the write completed.
        assert!(!l.renew(t0 + 45 * MIN, t0 + 50 * MIN));
        assert!(!l.check(t0 + 46 * MIN));
    }

    #[test]
    fn renewing_never_shortens() {
        let t0 = Duration::from_secs(1000);
        let mut l = Lease::new(t0 + 10 * MIN);
        assert!(l.renew(t0, t0 + MIN));
        assert!(l.check(t0 + 59 * MIN));
    }

    #[test]
    fn clock_offset_is_zero_inside_the_write() {
        let (b, a) = (100 * STAMP_GRANULARITY_NS, 101 * STAMP_GRANULARITY_NS);
        assert_eq!(clock_offset(b + 5, b, a), 0);
        // A stamp truncated to whole seconds, just before `before`: no offset.
        assert_eq!(clock_offset(b - STAMP_GRANULARITY_NS + 1, b, a), 0);
        assert_eq!(clock_offset(b - STAMP_GRANULARITY_NS - 5, b, a), -5);
        assert_eq!(clock_offset(a + 10, b, a), 10);
    }

    #[test]
    fn unreadable_sessions_expire_by_server_time() {
        let now = now_ns();
        let bad = |m| BadSession {
            id: Id([2; 32]),
            modified_ns: m,
            error: Error::Refused("x".into()),
        };
        assert!(bad_is_stale(&bad(Some(now - STALE_NS - SKEW_NS)), now));
        assert!(!bad_is_stale(&bad(Some(now - STALE_NS)), now));
        assert!(!bad_is_stale(&bad(None), now));
    }

    #[test]
    fn boot_time_advances() {
        let a = boot_time();
        std::thread::sleep(Duration::from_millis(5));
        assert!(boot_time() > a);
    }

    /// After the lease is lost during a write, a snapshot just written is deleted and an
    /// index file or marker kept (others may depend on them from the moment they landed).
    #[test]
    fn lease_lost_during_a_write_deletes_a_snapshot_and_keeps_an_index_file() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> =
            Arc::new(crate::backend::local::LocalBackend::new(dir.path()));
        backend.create().unwrap();
        let key = MasterKey::generate();
        let guard = SessionGuard::start(backend.clone(), &key, Role::Writer, "h").unwrap();
        let session_file = backend.list(FileKind::Session).unwrap()[0].0;
        for (kind, kept) in [(FileKind::Index, true), (FileKind::Snapshot, false)] {
            let id = Id([kind as u8 + 1; 32]);
            let r = guard.guarded_write(kind, || {
                backend.write(kind, &id, b"x")?;
                // What a prune elsewhere does meanwhile: the session looked stale to it.
                backend.remove(FileKind::Session, &session_file)?;
                Ok(id)
            });
            assert!(matches!(r, Err(Error::LeaseLost { .. })), "{r:?}");
            assert_eq!(backend.size(kind, &id).is_ok(), kept, "{kind:?}");
        }
        // Lost for good: the next write does not happen at all.
        let r = guard.guarded_write(FileKind::Index, || panic!("written without a lease"));
        assert!(matches!(r, Err(Error::LeaseLost { .. })));
    }

    /// A backend whose credentials may not delete (a node agent's writer-only user).
    #[derive(Debug)]
    struct NoDelete(crate::backend::local::LocalBackend);

    impl Backend for NoDelete {
        fn location(&self) -> String {
            self.0.location()
        }
        fn create(&self) -> Result<()> {
            self.0.create()
        }
        fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
            self.0.list(kind)
        }
        fn list_modified(&self, kind: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>> {
            self.0.list_modified(kind)
        }
        fn modified(&self, kind: FileKind, id: &Id) -> Result<Option<i64>> {
            self.0.modified(kind, id)
        }
        fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
            self.0.read(kind, id)
        }
        fn read_range(&self, kind: FileKind, id: &Id, o: u64, l: u64) -> Result<Vec<u8>> {
            self.0.read_range(kind, id, o, l)
        }
        fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
            self.0.size(kind, id)
        }
        fn write(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<()> {
            self.0.write(kind, id, bytes)
        }
        fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
            Err(Error::DeleteDenied {
                path: kind.path(id),
                detail: "HTTP 403 AccessDenied".into(),
            })
        }
    }

    /// Where deletes are refused, heartbeats leave the older session files behind and the
    /// lease still holds (the predecessor check finds the newest previous file); ending the
    /// session leaves its files, all of one session_id, and nothing fails.
    #[test]
    fn heartbeats_hold_the_lease_where_deletes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let local = crate::backend::local::LocalBackend::new(dir.path());
        local.create().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(NoDelete(local));
        let key = MasterKey::generate();
        let guard = SessionGuard::start(backend.clone(), &key, Role::Writer, "h").unwrap();
        let mut s = guard.session.clone();
        for n in 2..=3 {
            std::thread::sleep(Duration::from_millis(2));
            assert!(
                heartbeat(&*backend, &key, &guard.shared, &mut s),
                "lease lost"
            );
            assert_eq!(backend.list(FileKind::Session).unwrap().len(), n);
        }
        guard.check().unwrap();
        let current = guard.shared.lock().unwrap().file.unwrap();
        let id = guard.session.session_id;
        drop(guard);
        let files = backend.list(FileKind::Session).unwrap();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files.iter().any(|f| f.0 == current));
        for (f, _) in files {
            let bytes = backend.read(FileKind::Session, &f).unwrap();
            let plain = envelope::open(&key, ObjectKind::Session, &f, &bytes).unwrap();
            assert_eq!(Session::decode(&plain).unwrap().session_id, id);
        }
    }
}
