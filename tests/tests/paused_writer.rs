//! Writers that pause, clocks that disagree and packs that go missing (issue 9, SPEC.md
//! §12.2): none of them may cost data. A backup frozen past its session's staleness while a
//! prune elsewhere gives up on it must fail cleanly instead of writing an index or snapshot
//! that names deleted packs; a later backup must never deduplicate against a pack that does
//! not exist; a prune must refuse to run while snapshots need missing packs; and a host
//! whose clock is far off the storage's must refuse to write at all.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use holdfast_e2e::*;

const MIB: u64 = 1024 * 1024;

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("kill");
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn make_src(src: &Path) {
    // 80 MiB in 5 files: with 4 MiB packs, about 20 packs, so the backup is caught with
    // packs uploaded and no index file written (that comes after 64 packs or at the end).
    for i in 0..5u64 {
        write_random(&src.join(format!("d{}/file{i}", i % 2)), 16 * MIB, 7000 + i);
    }
    write_file(&src.join("small.txt"), b"small\n");
}

fn prune_now(repo: &Repo) -> serde_json::Value {
    let out = repo.json(&["prune", "--safety-margin", "0s"]);
    out.get("report").cloned().unwrap_or(out)
}

/// The reproduced loss: a backup frozen (SIGSTOP) after uploading packs and before its
/// index file; its session file removed, as a prune on another host does once the
/// heartbeat is older than the staleness limit; two prunes at margin 0 mark and delete its
/// packs; then SIGCONT. The frozen backup must fail cleanly and save nothing, and a healthy
/// backup afterwards must be complete: `check --read-data` passes and it restores identical.
#[test]
fn frozen_backup_whose_session_went_stale_fails_cleanly_and_loses_nothing() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "4"]);
    let work = tempdir();
    let src = work.path().join("src");
    make_src(&src);

    let mut c = repo.command(&[OsStr::new("backup"), src.as_os_str()]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    wait_until(
        &mut child,
        Duration::from_secs(300),
        "packs appear in data/",
        || repo.packs().len() >= 3,
    );
    stop_child(&child);
    assert!(
        repo.files("index").is_empty(),
        "the backup wrote an index file before it was stopped: the test must catch it earlier"
    );
    let frozen_packs = repo.packs().len();

    // What a prune elsewhere does once the session is stale.
    let sessions = files_in(&repo.path.join("sessions"));
    assert_eq!(sessions.len(), 1, "the running backup's session file");
    for s in sessions {
        std::fs::remove_file(s).unwrap();
    }
    let first = prune_now(&repo);
    assert!(
        first["orphans_marked"].as_u64().unwrap() >= frozen_packs as u64,
        "the frozen backup's packs look like orphans of a dead writer: {first}"
    );
    let second = prune_now(&repo);
    assert!(
        second["packs_deleted"].as_u64().unwrap() >= frozen_packs as u64,
        "the second prune deletes them: {second}"
    );

    signal(&child, nix::sys::signal::Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the resumed backup must fail: {stderr}"
    );
    assert!(
        stderr.contains("lease was lost") && stderr.contains("run it again"),
        "the error says what happened and what to do: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        repo.snapshot_ids(&[] as &[&str]).is_empty(),
        "the resumed backup saved a snapshot"
    );
    // Nothing it wrote names a deleted pack.
    repo.cmd(&["check", "--read-data"]).assert_ok();

    // A healthy backup afterwards is complete and restores byte for byte.
    let b = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(b.stat("errors"), 0);
    repo.cmd(&["check", "--read-data"]).assert_ok();
    let target = work.path().join("restore");
    repo.restore("latest", &target, &[] as &[&str]).assert_ok();
    assert_trees_equal(&src, &restored(&target, &src));
}

/// A pack the index names has gone (lost by the storage, or deleted by a sweep that a
/// writer without a lease raced with). Prune must refuse to run while a snapshot needs it,
/// naming the problem and the repair; the next backup must store its blobs again instead of
/// referring to it, which also makes the older snapshot whole again (same blob IDs); then
/// prune runs and drops the dangling entries, and `check --read-data` passes.
#[test]
fn a_missing_pack_is_never_deduplicated_against_and_prune_refuses() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    for i in 0..4u64 {
        write_random(&src.join(format!("f{i}")), 3 * MIB, 100 + i);
    }
    let first = repo.backup(&[&src], &[] as &[&str]);
    let data_packs = repo.packs_of_type("data");
    assert!(data_packs.len() >= 2, "{data_packs:?}");
    std::fs::remove_file(&data_packs[0]).unwrap();

    let check = repo.cmd(&["check"]);
    check.assert_failed();
    let report = check.stdout_str();
    assert!(
        report.contains("missing") && report.contains(&first.id[..8]),
        "check names the missing pack and the damaged snapshot: {report}"
    );
    // Prune refuses while a snapshot needs the missing pack, and names the way out.
    let p = repo.cmd(&["prune", "--safety-margin", "0s"]);
    p.assert_code(1);
    p.assert_stderr_contains("missing");
    p.assert_stderr_contains("repair");
    assert!(
        repo.files("gc").is_empty(),
        "the refusing prune marked nothing"
    );

    let second = repo.backup_run(&[&src], &["--force"]);
    second.assert_ok();
    second.assert_stderr_contains("do not exist");
    let second = Repo::parse_backup(&second);
    assert!(
        second.stat("bytes_added_raw") > 0,
        "the blobs of the missing pack were stored again"
    );
    for id in [&second.id, &first.id] {
        let target = work.path().join(format!("restore-{}", &id[..8]));
        repo.restore(id, &target, &[] as &[&str]).assert_ok();
        assert_trees_equal(&src, &restored(&target, &src));
    }
    let report = prune_now(&repo);
    assert_eq!(report["missing_packs_dropped"], 1, "{report}");
    repo.cmd(&["check", "--read-data"]).assert_ok();
}

/// Index entries of a missing pack that no snapshot needs are dropped by prune (so no
/// writer or reader keeps tripping over them), and it runs.
#[test]
fn prune_drops_index_entries_of_missing_packs_nothing_needs() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    write_random(&src.join("a"), 3 * MIB, 1);
    let first = repo.backup(&[&src], &[] as &[&str]);
    repo.cmd(&["forget", &first.id]).assert_ok();
    let packs = repo.packs_of_type("data");
    std::fs::remove_file(&packs[0]).unwrap();
    let report = prune_now(&repo);
    assert_eq!(report["missing_packs_dropped"], 1, "{report}");
    prune_now(&repo);
    repo.cmd(&["check", "--read-data"]).assert_ok();
}

fn faketime_lib() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A host whose clock is 15 minutes ahead of or behind the storage (libfaketime shifts
/// holdfast's clock; the files' times come from the kernel) refuses to back up or prune,
/// saying why; with 2 minutes it works. Afterwards the repository is whole.
///
/// Needs libfaketime (Debian's `faketime`, which `.ci/run` installs); without it the test
/// fails rather than pass untested.
#[test]
fn host_clock_far_off_the_storage_refuses_to_write() {
    let lib = faketime_lib()
        .expect("libfaketime is not installed: `apt-get install faketime` (or run `bash .ci/run`)");
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_random(&src.join("a"), MIB, 5);
    repo.backup(&[&src], &[] as &[&str]);
    for shift in ["+15m", "-15m"] {
        let env = [
            ("LD_PRELOAD", lib.as_os_str()),
            ("FAKETIME", OsStr::new(shift)),
            ("FAKETIME_DONT_RESET", OsStr::new("1")),
        ];
        let r = repo.cmd_env(&[OsStr::new("backup"), src.as_os_str()], &env);
        r.assert_code(1);
        r.assert_stderr_contains("clock");
        r.assert_stderr_contains("NTP");
        let p = repo.cmd_env(&["prune", "--safety-margin", "0s"], &env);
        p.assert_code(1);
        p.assert_stderr_contains("clock");
    }
    let env = [
        ("LD_PRELOAD", lib.as_os_str()),
        ("FAKETIME", OsStr::new("+2m")),
        ("FAKETIME_DONT_RESET", OsStr::new("1")),
    ];
    repo.cmd_env(&[OsStr::new("backup"), src.as_os_str()], &env)
        .assert_ok();
    repo.cmd_env(&["prune", "--safety-margin", "0s"], &env)
        .assert_ok();
    assert_eq!(repo.snapshot_ids(&[] as &[&str]).len(), 2);
    assert!(files_in(&repo.path.join("sessions")).is_empty());
    repo.cmd(&["check", "--read-data"]).assert_ok();
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Orphan packs are judged pack by pack (SPEC.md §12.3): while a backup runs, the packs a
/// killed backup left two hours ago are marked, and the running backup's own packs (written
/// after its session started) are not. With a fleet of agents there is always some backup
/// running, so the old rule (no orphan marked while any writer is live) never collected.
#[test]
fn old_orphans_are_marked_while_a_backup_runs_and_its_own_packs_are_not() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    make_src(&src);
    // A backup killed after writing packs: its orphans, made two hours old.
    let mut c = repo.command(&[OsStr::new("backup"), src.as_os_str()]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_until(&mut child, Duration::from_secs(300), "packs", || {
        repo.packs().len() >= 3
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let old: Vec<PathBuf> = repo.packs();
    for p in &old {
        set_mtime(p, now_s() - 7200, 0);
    }
    for s in files_in(&repo.path.join("sessions")) {
        std::fs::remove_file(s).unwrap(); // its session, as a prune removes a dead one
    }
    // A backup that is running (stopped here, its session fresh) with packs of its own.
    let mut c = repo.command(&[OsStr::new("backup"), src.as_os_str()]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut running = c.spawn().unwrap();
    wait_until(&mut running, Duration::from_secs(300), "new packs", || {
        repo.packs().len() >= old.len() + 3
    });
    stop_child(&running);
    let new = repo.packs().len() - old.len();
    let report = prune_now(&repo);
    assert_eq!(
        report["orphans_marked"].as_u64().unwrap(),
        old.len() as u64,
        "{report}"
    );
    assert_eq!(
        report["orphans_deferred"].as_u64().unwrap(),
        new as u64,
        "{report}"
    );
    // The running backup started before the mark, so the sweep waits for it (SPEC.md
    // §12.3 sweep step 1), and deletes the old orphans once it has finished.
    let second = prune_now(&repo);
    assert_eq!(second["packs_deleted"], 0, "{second}");
    assert_eq!(
        second["sweep_postponed"].as_array().unwrap().len(),
        1,
        "{second}"
    );
    signal(&running, nix::sys::signal::Signal::SIGCONT);
    let out = running.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third = prune_now(&repo);
    assert!(
        third["packs_deleted"].as_u64().unwrap() >= old.len() as u64 - 1,
        "{third}"
    );
    repo.cmd(&["check", "--read-data"]).assert_ok();
    let target = work.path().join("restore");
    repo.restore("latest", &target, &[] as &[&str]).assert_ok();
    assert_trees_equal(&src, &restored(&target, &src));
}

/// An unreadable session file (damaged, or from a newer holdfast) counts as a running
/// backup of unknown start while it is fresh, holding sweeps back, and expires by its
/// modification time like a stale session: it cannot postpone every sweep forever.
#[test]
fn an_unreadable_session_holds_sweeps_back_only_until_it_is_stale() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "1"]);
    let work = tempdir();
    let src = work.path().join("src");
    write_random(&src.join("a"), 3 * MIB, 3);
    let b = repo.backup(&[&src], &[] as &[&str]);
    repo.cmd(&["forget", &b.id]).assert_ok();
    let marked = prune_now(&repo);
    assert!(marked["packs_marked"].as_u64().unwrap() > 0, "{marked}");
    let bad = repo.path.join("sessions").join("ab".repeat(32));
    write_random(&bad, 200, 9);
    let held = prune_now(&repo);
    assert_eq!(held["packs_deleted"], 0, "{held}");
    assert!(
        held["sweep_postponed"][0]
            .as_str()
            .unwrap()
            .contains("unreadable"),
        "{held}"
    );
    assert!(bad.exists(), "a fresh unreadable session is left alone");
    set_mtime(&bad, now_s() - 71 * 60, 0);
    let swept = prune_now(&repo);
    assert!(swept["packs_deleted"].as_u64().unwrap() > 0, "{swept}");
    assert!(
        swept["stale_sessions_removed"].as_u64().unwrap() >= 1,
        "{swept}"
    );
    assert!(!bad.exists());
    repo.cmd(&["check", "--read-data"]).assert_ok();
}

/// Supersede lists carry only index files that still exist (SPEC.md §7.2): a compaction
/// names the files it replaces, not every file ever superseded before, so the lists stay
/// the size of one compaction instead of growing with each (0.1 carried them all).
#[test]
fn supersede_lists_do_not_grow_with_compactions() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    let mut longest = Vec::new();
    for round in 0..4u64 {
        for i in 0..9u64 {
            write_random(&src.join(format!("f{i}")), 10 * 1024, round * 100 + i);
            repo.backup(&[&src], &[] as &[&str]);
        }
        let r = prune_now(&repo);
        let compacted = r["index_files_compacted"].as_u64().unwrap() as usize;
        assert!(compacted >= 8, "{r}");
        let max = repo
            .files("index")
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                repo.json(&["cat", "index", &name])["supersedes"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .max()
            .unwrap();
        assert!(
            max <= compacted,
            "round {round}: a supersede list of {max} after compacting {compacted} files"
        );
        longest.push(max);
    }
    assert!(
        longest[3] <= longest[0] + 1,
        "supersede lists grow: {longest:?}"
    );
    repo.cmd(&["check", "--read-data"]).assert_ok();
}

/// When the tree packs are the ones missing, prune cannot even walk the snapshots: it
/// still refuses with the missing packs named and the way out, not a raw read error; and
/// after `repair index` and `repair snapshots` it runs and `check --read-data` passes.
#[test]
fn missing_tree_packs_make_prune_refuse_and_repair_mends_it() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_random(&src.join("a"), MIB, 11);
    repo.backup(&[&src], &[] as &[&str]);
    for p in repo.packs() {
        std::fs::remove_file(p).unwrap();
    }
    let p = repo.cmd(&["prune", "--safety-margin", "0s"]);
    p.assert_code(1);
    p.assert_stderr_contains("refusing to prune");
    p.assert_stderr_contains("repair snapshots");
    repo.cmd(&["repair", "index"]).assert_ok();
    repo.cmd(&["repair", "snapshots"]).assert_ok();
    prune_now(&repo);
    repo.cmd(&["check", "--read-data"]).assert_ok();
}
