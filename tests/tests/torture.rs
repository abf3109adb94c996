//! Randomized torture of the lock-free garbage collection (issue 9, SPEC.md §12): several
//! writers back up into one repository in loops, with clocks a few minutes apart
//! (libfaketime), while prunes run at a 0 s safety margin and forgets create garbage; a
//! chaos thread stops processes (SIGSTOP) for random spans, removes session files while
//! they are stopped (what a prune elsewhere does once it judges a session stale),
//! resumes them (SIGCONT), and kills some (SIGKILL). Afterwards every snapshot that a
//! backup reported saved, and that no forget removed, must restore to exactly the tree it
//! was taken of, and `check --read-data` must pass.
//!
//! `TORTURE_SECONDS` sets the length (default 20: the smoke run in CI); RELIABILITY.md
//! records long runs. `TORTURE_SEED` replays a run's random choices (the processes' timing
//! still differs).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_e2e::*;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;

/// What the run did, for the report.
#[derive(Default)]
struct Counts {
    backups_started: AtomicU64,
    backups_saved: AtomicU64,
    backups_lease_lost: AtomicU64,
    backups_killed: AtomicU64,
    backups_failed_other: AtomicU64,
    prunes_run: AtomicU64,
    prunes_ok: AtomicU64,
    prunes_lease_lost: AtomicU64,
    prunes_refused_missing: AtomicU64,
    prunes_failed_other: AtomicU64,
    forgets: AtomicU64,
    pauses: AtomicU64,
    sessions_removed: AtomicU64,
    kills: AtomicU64,
}

/// A running holdfast process the chaos thread may act on.
struct Running {
    pid: u32,
    what: &'static str,
}

type Registry = Arc<Mutex<HashMap<u32, Running>>>;

/// Hash of a tree: every relative path with its kind and, for files, its bytes.
fn tree_digest(root: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    for rel in list_tree(root) {
        rel.hash(&mut h);
        let p = root.join(&rel);
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_file() {
            std::fs::read(&p).unwrap().hash(&mut h);
        } else {
            md.is_dir().hash(&mut h);
        }
    }
    h.finish()
}

fn faketime_lib() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("libfaketime is not installed: `apt-get install faketime` (or run `bash .ci/run`)")
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Runs a holdfast command to its end, registered for the chaos thread meanwhile.
fn run_registered(
    mut cmd: std::process::Command,
    what: &'static str,
    reg: &Registry,
) -> (Option<i32>, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child: Child = cmd.spawn().expect("spawn holdfast");
    let pid = child.id();
    reg.lock().unwrap().insert(pid, Running { pid, what });
    let out = child.wait_with_output().expect("wait");
    reg.lock().unwrap().remove(&pid);
    // A process stopped when it ended must not stay stopped in the registry's absence.
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn writers_prunes_pauses_kills_and_skewed_clocks_lose_nothing() {
    let seconds: u64 = std::env::var("TORTURE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random());
    eprintln!("torture: {seconds} s, TORTURE_SEED={seed}");
    let lib = faketime_lib();
    let repo = Arc::new(Repo::with_init_args(&["--pack-size-mib", "1"]));
    let work = tempdir();
    let counts = Arc::new(Counts::default());
    let reg: Registry = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Snapshot ID -> (writer, digest of the tree it was taken of).
    let saved: Arc<Mutex<BTreeMap<String, (usize, u64)>>> = Arc::default();
    let sources: Vec<PathBuf> = (0..3).map(|w| work.path().join(format!("w{w}"))).collect();
    // Shared content in every source (deduplicated across writers), plus each writer's own.
    for (w, src) in sources.iter().enumerate() {
        for i in 0..6u64 {
            write_random(&src.join(format!("shared/s{i}")), 384 * KIB, 500 + i);
        }
        write_random(&src.join("own/seed"), 256 * KIB, 900 + w as u64);
    }
    // Clocks within the allowed 5 minutes of the storage's, in both directions.
    let skews = ["-4m", "+0", "+3m"];
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let mut threads = Vec::new();
    for (w, src) in sources.iter().cloned().enumerate() {
        let (repo, counts, reg, stop, saved, lib) = (
            repo.clone(),
            counts.clone(),
            reg.clone(),
            stop.clone(),
            saved.clone(),
            lib.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (w as u64 + 1));
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // Change the writer's own files a little each round.
                let n = rng.gen_range(1..4);
                for k in 0..n {
                    write_random(
                        &src.join(format!("own/r{}", rng.gen_range(0..5))),
                        rng.gen_range(16..1500) * KIB,
                        seed ^ (round << 8) ^ k ^ (w as u64) << 40,
                    );
                }
                let digest = tree_digest(&src);
                let mut cmd = repo.command(&[
                    OsStr::new("backup"),
                    OsStr::new("--json"),
                    OsStr::new("--host"),
                    OsStr::new(&format!("w{w}")),
                    src.as_os_str(),
                ]);
                cmd.env("LD_PRELOAD", &lib)
                    .env("FAKETIME", skews[w])
                    .env("FAKETIME_DONT_RESET", "1");
                counts.backups_started.fetch_add(1, Ordering::Relaxed);
                let (code, stdout, stderr) = run_registered(cmd, "backup", &reg);
                assert!(!stderr.contains("panicked"), "backup panicked: {stderr}");
                match code {
                    Some(0) => {
                        let v: serde_json::Value = serde_json::from_str(stdout.trim())
                            .unwrap_or_else(|e| panic!("backup JSON {stdout:?}: {e}"));
                        let id = v["snapshot_id"].as_str().unwrap().to_string();
                        saved.lock().unwrap().insert(id, (w, digest));
                        counts.backups_saved.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(1) if stderr.contains("lease was lost") => {
                        counts.backups_lease_lost.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        counts.backups_killed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counts.backups_failed_other.fetch_add(1, Ordering::Relaxed);
                        eprintln!("backup w{w} exit {code:?}: {stderr}");
                    }
                }
            }
        }));
    }
    {
        let (repo, counts, reg, stop) = (repo.clone(), counts.clone(), reg.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xabc);
            while !stop.load(Ordering::Relaxed) {
                if rng.gen_bool(0.3) {
                    let host = format!("w{}", rng.gen_range(0..3));
                    let keep = rng.gen_range(1..4).to_string();
                    let r = repo.cmd(&["forget", "--host", &host, "--keep-last", &keep]);
                    r.assert_no_panic();
                    counts.forgets.fetch_add(1, Ordering::Relaxed);
                }
                let cmd = repo.command(&["prune", "--safety-margin", "0s"]);
                counts.prunes_run.fetch_add(1, Ordering::Relaxed);
                let (code, _, stderr) = run_registered(cmd, "prune", &reg);
                assert!(!stderr.contains("panicked"), "prune panicked: {stderr}");
                match code {
                    Some(0) => counts.prunes_ok.fetch_add(1, Ordering::Relaxed),
                    None => 0, // killed by the chaos thread, counted there
                    Some(_) if stderr.contains("lease was lost") => {
                        counts.prunes_lease_lost.fetch_add(1, Ordering::Relaxed)
                    }
                    Some(_) if stderr.contains("packs that snapshots need are missing") => {
                        eprintln!("prune refused: {stderr}");
                        counts
                            .prunes_refused_missing
                            .fetch_add(1, Ordering::Relaxed)
                    }
                    Some(_) => {
                        eprintln!("prune exit {code:?}: {stderr}");
                        counts.prunes_failed_other.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
            }
        }));
    }
    {
        let (repo, counts, reg, stop) = (repo.clone(), counts.clone(), reg.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xdef);
            let sessions = repo.path.join("sessions");
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.gen_range(20..300)));
                let victim = {
                    let r = reg.lock().unwrap();
                    let all: Vec<(u32, &'static str)> =
                        r.values().map(|x| (x.pid, x.what)).collect();
                    if all.is_empty() {
                        continue;
                    }
                    all[rng.gen_range(0..all.len())]
                };
                if rng.gen_bool(0.1) {
                    signal(victim.0, nix::sys::signal::Signal::SIGKILL);
                    counts.kills.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                signal(victim.0, nix::sys::signal::Signal::SIGSTOP);
                counts.pauses.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(rng.gen_range(50..1000)));
                if rng.gen_bool(0.5) {
                    // What a prune elsewhere does once the sessions look stale.
                    for e in std::fs::read_dir(&sessions).into_iter().flatten().flatten() {
                        if std::fs::remove_file(e.path()).is_ok() {
                            counts.sessions_removed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Let the other processes run on meanwhile, as they would.
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..1500)));
                }
                signal(victim.0, nix::sys::signal::Signal::SIGCONT);
            }
        }));
    }
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    // Nothing may stay stopped.
    for r in reg.lock().unwrap().values() {
        signal(r.pid, nix::sys::signal::Signal::SIGCONT);
    }
    let chaos_done = Instant::now();
    for t in threads {
        t.join().expect("torture thread");
    }
    eprintln!(
        "torture: threads ended {:.1} s after the deadline",
        chaos_done.elapsed().as_secs_f64()
    );

    // Settle: two prunes at margin 0 delete everything that is unused, then the check.
    for _ in 0..2 {
        repo.cmd(&["prune", "--safety-margin", "0s"]).assert_ok();
    }
    repo.cmd(&["check", "--read-data"]).assert_ok();
    let present: Vec<String> = repo.snapshot_ids(&[] as &[&str]);
    let saved = saved.lock().unwrap();
    let mut verified = 0;
    for id in &present {
        let Some((w, digest)) = saved.get(id) else {
            // Saved by a backup that was killed after its snapshot: check covered it.
            continue;
        };
        let target = work.path().join(format!("restore-{}", &id[..12]));
        repo.restore(id, &target, &[] as &[&str]).assert_ok();
        let got = tree_digest(&restored(&target, &sources[*w]));
        assert_eq!(
            got, *digest,
            "snapshot {id} of w{w} does not restore what was backed up"
        );
        std::fs::remove_dir_all(&target).unwrap();
        verified += 1;
    }
    let c = &counts;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "torture result (seed {seed}, {seconds} s): backups started {}, saved {}, lease lost {}, killed {}, other failures {}; prunes {} (ok {}, lease lost {}, refused for missing packs {}, other failures {}); forgets {}; pauses {}, session files removed {}, kills {}; snapshots present {}, verified by restore {}",
        l(&c.backups_started),
        l(&c.backups_saved),
        l(&c.backups_lease_lost),
        l(&c.backups_killed),
        l(&c.backups_failed_other),
        l(&c.prunes_run),
        l(&c.prunes_ok),
        l(&c.prunes_lease_lost),
        l(&c.prunes_refused_missing),
        l(&c.prunes_failed_other),
        l(&c.forgets),
        l(&c.pauses),
        l(&c.sessions_removed),
        l(&c.kills),
        present.len(),
        verified
    );
    assert!(
        l(&c.backups_saved) > 0,
        "no backup succeeded: the run proves nothing"
    );
    assert!(verified > 0, "no snapshot was left to verify");
    assert_eq!(
        l(&c.backups_failed_other),
        0,
        "backups failed for other reasons (above)"
    );
    assert_eq!(
        l(&c.prunes_failed_other),
        0,
        "prunes failed for other reasons (above)"
    );
}
