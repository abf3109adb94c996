//! The `holdfast` binary through a faulty network: a TCP proxy between it and the S3 server
//! (on Ceph RGW and on moto) drops connections, stalls, cuts requests and responses
//! halfway and answers 500/503 at random ([`common::proxy`]). Backups and restores finish
//! correctly; when the server keeps failing they stop with a clear error and a non-zero
//! exit; either way `check --read-data` (straight to the server) passes afterwards and
//! restores are byte-identical. No multipart upload is left pending.

#[macro_use]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::proxy::{FaultPlan, Mode, Proxy};
use common::{make_tree, S3Repo, Server};
use holdfast_e2e::{assert_trees_equal, exit, random_bytes, restored, tempdir, write_file};

const NO: &[&str] = &[];
const MIB: usize = 1024 * 1024;

/// How long an injected stall lasts: longer than the request timeout given below.
const STALL: Duration = Duration::from_secs(5);

/// The environment of holdfast behind the faulty proxy: a short request timeout (so that
/// stalls cost little), enough attempts to get through ~40% failing requests, and parts of
/// 5 MiB (so packs over 10 MiB go up in parts).
fn faulty_env(attempts: u32) -> Vec<(String, String)> {
    vec![
        ("HOLDFAST_S3_TIMEOUT".into(), "2.5".into()),
        ("HOLDFAST_S3_CONNECT_TIMEOUT".into(), "2".into()),
        ("HOLDFAST_S3_MAX_ATTEMPTS".into(), attempts.to_string()),
        ("HOLDFAST_S3_PART_SIZE_MIB".into(), "5".into()),
    ]
}

/// The end of a command's error output (where the error is), without progress lines.
fn stderr_tail(run: &holdfast_e2e::Run) -> String {
    let err = run.stderr_str();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("\"message_type\":\"status\""))
        .collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn restore_equals(repo: &S3Repo, spec: &str, src: &Path) {
    let target = tempdir();
    repo.restore(spec, target.path());
    assert_trees_equal(src, &restored(target.path(), src));
}

/// The repository is whole, read straight from the server, and no upload is pending.
fn assert_healthy(repo: &S3Repo) {
    repo.cmd(&["check", "--read-data"]).assert_ok();
    assert_eq!(
        repo.pending_uploads(),
        Vec::<String>::new(),
        "multipart uploads left pending"
    );
}

/// Backup and restore through about two failing requests in five (every kind of fault):
/// both succeed, the restore is byte-identical, and the repository checks clean.
fn backup_and_restore_through_faults(s: &Server) {
    let repo = s.repo("faults");
    repo.init(&["--pack-size-mib", "12"]).assert_ok();
    let work = tempdir();
    let src = work.path().join("src");
    make_tree(&src, 5, 30, 2 * MIB);
    // Packs of 12 MiB: uploaded in parts through the faults.
    write_file(&src.join("large.bin"), &random_bytes(26 * MIB, 555));

    let seed = match s.name {
        "rgw" => 11,
        _ => 12,
    };
    let proxy = Proxy::start(&s.endpoint, Mode::Faults(FaultPlan::heavy(seed, STALL)));
    let mut via = repo.via(proxy.addr);
    via.extra_env = faulty_env(15);

    let start = Instant::now();
    let run = via.backup_run(&[&src], NO);
    assert_eq!(
        run.code(),
        Some(exit::OK),
        "backup through faults failed: {}\nstderr ends: {}",
        proxy.stats.summary(),
        stderr_tail(&run)
    );
    let backup = holdfast_e2e::Repo::parse_backup(&run);
    eprintln!(
        "{}: backup through faults in {:?}: {}",
        s.name,
        start.elapsed(),
        proxy.stats.summary()
    );
    let faults_in_backup = proxy.stats.total_faults();
    assert!(
        faults_in_backup >= 5,
        "too few faults to show anything: {}",
        proxy.stats.summary()
    );
    assert_healthy(&repo);

    let start = Instant::now();
    restore_equals(&via, &backup.id, &src);
    eprintln!(
        "{}: restore through faults in {:?}: {}",
        s.name,
        start.elapsed(),
        proxy.stats.summary()
    );
    assert!(
        proxy.stats.total_faults() >= faults_in_backup + 3,
        "too few faults in the restore: {}",
        proxy.stats.summary()
    );
    // And straight from the server.
    restore_equals(&repo, &backup.id, &src);
}

/// A server that keeps failing: the command stops with a clear error and exit 1, within
/// a bounded time, and the repository stays valid; a later backup works.
fn persistent_failures_fail_cleanly(s: &Server) {
    let repo = s.repo("fail");
    repo.init(NO).assert_ok();
    let work = tempdir();
    let src = work.path().join("src");
    make_tree(&src, 6, 30, 0);
    let first = repo.backup(&[&src], NO);
    write_file(&src.join("new.bin"), &random_bytes(MIB, 66));

    // Every request fails.
    {
        let proxy = Proxy::start(&s.endpoint, Mode::Faults(FaultPlan::always_503()));
        let mut via = repo.via(proxy.addr);
        via.extra_env = faulty_env(2);
        let start = Instant::now();
        for args in [&["snapshots"][..], &["check"][..]] {
            let run = via.cmd(args);
            run.assert_code(exit::FAILURE);
            run.assert_stderr_contains("503");
        }
        let run = via.backup_run(&[&src], NO);
        run.assert_code(exit::FAILURE);
        run.assert_stderr_contains("503");
        run.assert_stderr_contains("attempts");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "failing took {:?}",
            start.elapsed()
        );
    }

    // Only pack uploads fail (the repository's other files can be read and written):
    // the backup gets going and then stops.
    for (method, target) in [("PUT", "/data/"), ("POST", "uploadId=")] {
        let proxy = Proxy::start(&s.endpoint, Mode::Reject { method, target });
        let mut via = repo.via(proxy.addr);
        via.extra_env = faulty_env(2);
        if method == "POST" {
            // Large packs, uploaded in parts whose completion fails.
            write_file(&src.join("large.bin"), &random_bytes(14 * MIB, 77));
        }
        let run = via.backup_run(&[&src], NO);
        run.assert_code(exit::FAILURE);
        run.assert_stderr_contains("503");
        run.assert_stderr_contains(&repo.prefix);
        assert!(
            proxy.stats.total_faults() >= 1,
            "{method} {target}: {}",
            proxy.stats.summary()
        );
        assert_eq!(
            repo.snapshot_ids(),
            vec![first.id.clone()],
            "{method} {target}: a failed backup saved a snapshot"
        );
        assert_healthy(&repo);
    }

    // The repository is fine: the same backup, straight to the server, works.
    let again = repo.backup(&[&src], NO);
    restore_equals(&repo, &again.id, &src);
}

per_server!(
    backup_and_restore_through_faults,
    persistent_failures_fail_cleanly
);
