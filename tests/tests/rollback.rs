//! Rollback detection (SPEC.md §14.2): snapshots carry a host sequence number, and each
//! client keeps a high-water mark outside the repository, so deleting the newest snapshots
//! (or putting an old copy of the repository back) is reported.

use std::fs;

use holdfast_e2e::*;

fn seqs(repo: &Repo) -> Vec<(String, u64)> {
    repo.snapshots::<&str>(&[])
        .iter()
        .map(|s| {
            (
                s["host"].as_str().unwrap().to_string(),
                s["host_seq"]
                    .as_u64()
                    .expect("host_seq in snapshots --json"),
            )
        })
        .collect()
}

#[test]
fn deleting_the_newest_snapshot_is_reported_and_numbering_goes_on_past_it() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("f"), b"one\n");
    let host = [("HOLDFAST_HOST", std::ffi::OsStr::new("laptop"))];
    let backup = |extra: &str| {
        write_file(&src.join("f"), extra.as_bytes());
        let run = repo.cmd_env(
            &["backup".as_ref(), "--json".as_ref(), src.as_os_str()],
            &host,
        );
        run.assert_ok();
        run
    };
    backup("1");
    backup("2");
    let third = backup("3");
    assert_eq!(
        seqs(&repo),
        [
            ("laptop".into(), 1),
            ("laptop".into(), 2),
            ("laptop".into(), 3)
        ]
    );
    assert!(!third.stderr_str().contains("WARNING"), "{third}");

    // Someone with write access to the storage deletes the newest snapshot.
    let newest = Repo::parse_backup(&third).id;
    fs::remove_file(repo.path.join("snapshots").join(&newest)).unwrap();
    let run = repo.cmd(&["snapshots"]);
    run.assert_ok()
        .assert_stderr_contains("WARNING: the repository went backwards")
        .assert_stderr_contains("this machine saw number 3");
    // The next backup says so too, and numbers past what this machine saw.
    let fourth = backup("4");
    fourth.assert_stderr_contains("went backwards");
    assert_eq!(seqs(&repo).last().unwrap(), &("laptop".to_string(), 4));
    // Written past it: quiet.
    let run = repo.cmd(&["snapshots"]);
    assert!(!run.stderr_str().contains("WARNING"), "{run}");

    // Forgetting the newest snapshot on purpose, from this machine, is not a rollback.
    repo.cmd(&["forget", "latest"]).assert_ok();
    let run = repo.cmd(&["snapshots"]);
    assert!(!run.stderr_str().contains("WARNING"), "{run}");
}
