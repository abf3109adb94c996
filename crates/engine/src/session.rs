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
            process: own_process_identity(),
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

/// Whether a session is still alive as seen at `now`: its heartbeat is recent, and it was
/// not written by a process on this very machine that has since died.
pub fn is_live(s: &Session, now: i64) -> bool {
    now.saturating_sub(s.heartbeat_ns) < STALE_NS + SKEW_NS && !process_is_gone(s)
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

    #[test]
    fn own_process_is_alive() {
        let me = own_process_identity();
        assert!(!me.is_empty(), "no process identity on Linux");
        let s = session(std::process::id(), me);
        assert!(!process_is_gone(&s));
        assert!(is_live(&s, now_ns()));
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
        assert!(!is_live(&s, now_ns()));
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
        assert!(is_live(&other, now_ns()));
        assert!(!process_is_gone(&session(u32::MAX - 1, String::new())));
        let mut old = session(me, String::new());
        old.heartbeat_ns = now_ns() - STALE_NS - SKEW_NS - 1;
        assert!(!is_live(&old, now_ns()));
    }
}
