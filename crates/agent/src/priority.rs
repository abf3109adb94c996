//! Running politely: the agent shares its node with the workloads it backs up, so it lowers
//! its own CPU priority to nice 10 and its IO priority to the idle class before doing any
//! work (`--no-low-priority` keeps the defaults).
//!
//! On Linux both priorities belong to threads, not processes: `setpriority(PRIO_PROCESS,
//! 0, ..)` and `ioprio_set(IOPRIO_WHO_PROCESS, 0, ..)` change the calling thread, and a new
//! thread starts with its creator's values. [`lower`] therefore changes every thread that
//! exists when it runs (listed in `/proc/self/task`), the caller first, and the threads
//! started later inherit from them. Call it before any runtime or thread pool starts
//! anyway (first thing in `main`, before building tokio's runtime): a thread created by a
//! not-yet-lowered thread while the list is being walked would escape.
//!
//! Neither change needs a privilege: anyone may raise their nice value, and the idle IO
//! class has needed no capability since Linux 2.6.25. The agent's container adds no
//! capability for them (no SYS_NICE). The idle class is honoured by the BFQ and
//! mq-deadline IO schedulers; with `none` (common on NVMe) it has no effect, and the CPU
//! priority is what remains.

use std::fmt;

use crate::error::AgentError;

/// The nice value the agent runs at (0 is the default, 19 the lowest priority).
pub const NICE: i32 = 10;

/// `ioprio_set`'s "which": one thread (`IOPRIO_WHO_PROCESS` in linux/ioprio.h).
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// The class is stored above 13 bits of class data (`IOPRIO_CLASS_SHIFT`).
const IOPRIO_CLASS_SHIFT: u32 = 13;

/// An IO scheduling class (`ioprio_set(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// No class set: best effort, at a level derived from the nice value.
    None,
    /// Real time (needs CAP_SYS_ADMIN; never set by the agent).
    RealTime,
    /// Best effort, the default class.
    BestEffort,
    /// Idle: served only when no other process wants the disk.
    Idle,
}

impl IoClass {
    fn from_raw(class: libc::c_int) -> Option<IoClass> {
        match class {
            0 => Some(IoClass::None),
            1 => Some(IoClass::RealTime),
            2 => Some(IoClass::BestEffort),
            3 => Some(IoClass::Idle),
            _ => None,
        }
    }

    fn raw(self) -> libc::c_int {
        match self {
            IoClass::None => 0,
            IoClass::RealTime => 1,
            IoClass::BestEffort => 2,
            IoClass::Idle => 3,
        }
    }
}

impl fmt::Display for IoClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoClass::None => "none",
            IoClass::RealTime => "realtime",
            IoClass::BestEffort => "best-effort",
            IoClass::Idle => "idle",
        })
    }
}

/// What [`lower`] left in effect, read back from the kernel for the calling thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityReport {
    /// The nice value now (`None` if it could not be read).
    pub nice: Option<i32>,
    /// The IO class now (`None` if it could not be read).
    pub io_class: Option<IoClass>,
    /// How many threads were changed (1 when called before any other thread started).
    pub threads: usize,
    /// What the kernel refused: the agent runs on at the priority it had.
    pub warnings: Vec<String>,
}

impl fmt::Display for PriorityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nice = self.nice.map_or("unknown".into(), |n| n.to_string());
        let io = self.io_class.map_or("unknown".into(), |c| c.to_string());
        write!(f, "nice {nice}, IO class {io} ({} thread(s))", self.threads)?;
        for w in &self.warnings {
            write!(f, "; warning: {w}")?;
        }
        Ok(())
    }
}

/// The nice value of thread `tid` (0: the calling thread).
fn nice_of(tid: libc::id_t) -> Result<i32, nix::errno::Errno> {
    // getpriority returns -1 both for nice -1 and for an error: errno tells them apart.
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes plain integers and touches no memory of ours.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    match nix::errno::Errno::last_raw() {
        0 => Ok(n),
        e => Err(nix::errno::Errno::from_raw(e)),
    }
}

fn set_nice(tid: libc::id_t, nice: i32) -> Result<(), nix::errno::Errno> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    nix::errno::Errno::result(r).map(drop)
}

/// The IO class of thread `tid` (0: the calling thread).
fn io_class_of(tid: libc::c_int) -> Result<Option<IoClass>, nix::errno::Errno> {
    // SAFETY: ioprio_get(which, who) takes two integers and returns one; no pointers.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    let prio = nix::errno::Errno::result(r)?;
    Ok(IoClass::from_raw(
        (prio >> IOPRIO_CLASS_SHIFT) as libc::c_int,
    ))
}

fn set_io_class(tid: libc::c_int, class: IoClass) -> Result<(), nix::errno::Errno> {
    // IOPRIO_PRIO_VALUE(class, 0): the idle class has no levels.
    let value = class.raw() << IOPRIO_CLASS_SHIFT;
    // SAFETY: ioprio_set(which, who, ioprio) takes three integers; no pointers.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, value) };
    nix::errno::Errno::result(r).map(drop)
}

/// The ids of this process's threads, the calling thread (0) first.
fn threads() -> Vec<libc::pid_t> {
    let mut tids = vec![0];
    // Without /proc, only the calling thread (which is all there is if the caller kept
    // the contract).
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        // SAFETY: gettid takes nothing and cannot fail.
        let me = unsafe { libc::gettid() };
        tids.extend(
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&t: &libc::pid_t| t != me),
        );
    }
    tids
}

/// Lowers the whole process to nice [`NICE`] (never raising it: a process already nicer
/// stays so) and to the idle IO class, and reports what is in effect afterwards.
///
/// Call it before starting any runtime or thread pool (see the module documentation).
/// What the kernel refuses is reported as a warning in [`PriorityReport::warnings`], not an
/// error: a backup at normal priority is better than none. No error is returned today; the
/// `Result` leaves room for platforms where the request cannot even be expressed.
pub fn lower() -> Result<PriorityReport, AgentError> {
    let mut warnings = Vec::new();
    let mut changed = 0;
    for tid in threads() {
        let mut refused = |what: &str, e: nix::errno::Errno| {
            // A thread that ended since the listing needs nothing.
            if e != nix::errno::Errno::ESRCH {
                warnings.push(format!("{what} refused for thread {tid}: {e}"));
            }
        };
        let mut ok = true;
        match nice_of(tid as libc::id_t) {
            Ok(n) if n >= NICE => {}
            Ok(_) => {
                if let Err(e) = set_nice(tid as libc::id_t, NICE) {
                    refused("nice", e);
                    ok = false;
                }
            }
            Err(e) => {
                refused("getpriority", e);
                ok = false;
            }
        }
        if let Err(e) = set_io_class(tid, IoClass::Idle) {
            refused("IO class idle", e);
            ok = false;
        }
        if ok {
            changed += 1;
        }
    }
    let nice = nice_of(0)
        .map_err(|e| warnings.push(format!("reading the nice value: {e}")))
        .ok();
    let io_class = io_class_of(0)
        .map_err(|e| warnings.push(format!("reading the IO class: {e}")))
        .ok()
        .flatten();
    Ok(PriorityReport {
        nice,
        io_class,
        threads: changed,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs this test binary's test `name` in a child process with `HOLDFAST_PRIORITY_CHILD`
    /// set (priorities are per process: the test runner's must stay as they are), and
    /// returns its output; fails if the child failed.
    fn in_child(name: &str) -> String {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads", "1"])
            .env("HOLDFAST_PRIORITY_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "child: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("CHILD DONE"),
            "the child ran nothing:\n{stdout}"
        );
        stdout
    }

    fn is_child() -> bool {
        std::env::var_os("HOLDFAST_PRIORITY_CHILD").is_some()
    }

    /// The calling thread's (nice, IO class), read from the kernel.
    fn mine() -> (i32, Option<IoClass>) {
        (nice_of(0).unwrap(), io_class_of(0).unwrap())
    }

    #[test]
    fn lowers_every_thread_existing_and_later() {
        if !is_child() {
            let out = in_child("priority::tests::lowers_every_thread_existing_and_later");
            assert!(out.contains("report: nice 10, IO class idle"), "{out}");
            return;
        }
        // A thread started before the call must be lowered too (the /proc/self/task walk).
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (back, seen) = std::sync::mpsc::channel();
        let early = std::thread::spawn(move || {
            wait.recv().unwrap();
            back.send(mine()).unwrap();
        });
        let before = mine();
        assert!(
            before.0 < NICE,
            "the test runner already runs at {before:?}"
        );
        let report = lower().unwrap();
        println!("report: {report}");
        assert!(report.warnings.is_empty(), "{report}");
        assert_eq!(report.nice, Some(NICE));
        assert_eq!(report.io_class, Some(IoClass::Idle));
        assert!(report.threads >= 2, "{report}");
        assert_eq!(mine(), (NICE, Some(IoClass::Idle)), "this thread");
        go.send(()).unwrap();
        assert_eq!(
            seen.recv().unwrap(),
            (NICE, Some(IoClass::Idle)),
            "a thread started before"
        );
        early.join().unwrap();
        let later = std::thread::spawn(mine).join().unwrap();
        assert_eq!(later, (NICE, Some(IoClass::Idle)), "a thread started after");
        println!("CHILD DONE");
    }

    #[test]
    fn a_nicer_process_is_not_raised() {
        if !is_child() {
            in_child("priority::tests::a_nicer_process_is_not_raised");
            return;
        }
        for tid in threads() {
            set_nice(tid as libc::id_t, 15).unwrap();
        }
        let report = lower().unwrap();
        assert!(report.warnings.is_empty(), "{report}");
        assert_eq!(report.nice, Some(15), "lowering never raises the priority");
        assert_eq!(report.io_class, Some(IoClass::Idle));
        println!("CHILD DONE");
    }

    #[test]
    fn report_reads_well() {
        let r = PriorityReport {
            nice: Some(10),
            io_class: None,
            threads: 1,
            warnings: vec!["IO class idle refused for thread 0: EPERM".into()],
        };
        assert_eq!(
            r.to_string(),
            "nice 10, IO class unknown (1 thread(s)); warning: IO class idle refused for \
             thread 0: EPERM"
        );
    }
}
