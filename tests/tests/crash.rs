//! Crash safety (light): a backup or restore killed with SIGKILL midway leaves a
//! repository that works, and the next run produces a complete, correct result.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use holdfast_e2e::*;

const MIB: u64 = 1024 * 1024;

fn kill9(mut child: Child) {
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "holdfast was not killed by SIGKILL: {status}"
    );
}

fn make_src(src: &Path) {
    // 160 MiB in 10 files; with 4 MiB packs a backup writes about 40 packs, so it is
    // still running when the first ones appear.
    for i in 0..10u64 {
        write_random(&src.join(format!("d{}/file{i}", i % 3)), 16 * MIB, 1000 + i);
    }
    write_file(&src.join("small.txt"), b"small\n");
}

/// kill -9 during a backup, once packs have been written: `snapshots` still works and
/// lists nothing half-made, a new backup succeeds, and it restores byte for byte.
#[test]
fn backup_killed_midway_then_next_backup_restores_identically() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "4"]);
    let work = tempdir();
    let src = work.path().join("src");
    make_src(&src);

    let mut c = repo.command(&[OsStr::new("backup"), src.as_os_str()]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_until(
        &mut child,
        Duration::from_secs(300),
        "packs appear in data/",
        || repo.packs().len() >= 2,
    );
    kill9(child);

    assert!(
        repo.snapshot_ids(&[] as &[&str]).is_empty(),
        "a killed backup left a snapshot"
    );
    repo.json(&["stats"]);

    let b = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(b.stat("errors"), 0);
    assert_eq!(repo.snapshot_ids(&[] as &[&str]), vec![b.id.clone()]);
    let t = tempdir();
    repo.restore(&b.id, t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));

    // And an incremental backup on top of it works as usual.
    let again = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(again.stat("bytes_read"), 0, "{}", again.json);
}

/// kill -9 during a restore; restoring again into the same target gives the exact tree.
#[test]
fn restore_killed_midway_then_restore_again_is_identical() {
    let repo = Repo::with_init_args(&["--pack-size-mib", "4"]);
    let work = tempdir();
    let src = work.path().join("src");
    make_src(&src);
    repo.backup(&[&src], &[] as &[&str]);

    let target = tempdir();
    let mut args: Vec<std::ffi::OsString> =
        vec!["restore".into(), "latest".into(), "--target".into()];
    args.push(target.path().into());
    let mut c = repo.command(&args);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let out = restored(target.path(), &src);
    wait_until(
        &mut child,
        Duration::from_secs(300),
        "restored data appears",
        || {
            out.is_dir()
                && list_tree(&out).iter().any(|r| {
                    std::fs::symlink_metadata(out.join(r))
                        .map(|m| m.is_file() && (m.len() > 0 || m.blocks() > 0))
                        .unwrap_or(false)
                })
        },
    );
    kill9(child);
    repo.restore("latest", target.path(), &[] as &[&str]);
    assert_trees_equal(&src, &out);
}
