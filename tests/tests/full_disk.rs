//! A full disk: a backup into a repository whose filesystem fills up fails with a clear
//! error and exit status 1 (no panic), leaves the repository valid (check passes once there
//! is room, the earlier snapshot restores, the next backup succeeds); a restore into a
//! full target fails the same way.
//!
//! Needs a small filesystem: a tmpfs mounted for the test, so it runs as root (as CI does)
//! and fails, saying why, when it cannot mount.

use std::path::Path;
use std::process::Command;

use holdfast_e2e::*;

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        require(
            ok,
            "a small filesystem: `mount -t tmpfs` (root with CAP_SYS_ADMIN)",
        );
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, mib: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_repository_disk_fails_cleanly_and_loses_nothing() {
    let work = tempdir();
    let mnt = work.path().join("small");
    let fs = Tmpfs::mount(&mnt, 4);
    let mut repo = Repo::uninit();
    repo.path = mnt.join("repo");
    repo.init(&["--pack-size-mib", "1"]).assert_ok();
    let src = work.path().join("src");
    write_file(&src.join("small.txt"), b"the first snapshot\n");
    let first = repo.backup(&[&src], &[] as &[&str]);

    // 12 MiB of incompressible data into a 4 MiB filesystem.
    write_file(&src.join("big.bin"), &random_bytes(12 << 20, 5));
    let run = repo.backup_run(&[&src], &[] as &[&str]);
    run.assert_no_panic().assert_code(1);
    run.assert_stderr_contains("No space left on device");

    // With room again: nothing was lost, and the next backup works.
    fs.resize(64);
    repo.cmd(&["check"]).assert_ok();
    let target = tempdir();
    repo.restore(&first.id, target.path(), &[] as &[&str]);
    assert_eq!(
        std::fs::read(restored(target.path(), &src).join("small.txt")).unwrap(),
        b"the first snapshot\n"
    );
    let again = repo.backup(&[&src], &[] as &[&str]);
    let target = tempdir();
    repo.restore(&again.id, target.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(target.path(), &src));
    repo.cmd(&["check", "--read-data"]).assert_ok();
}

#[test]
fn full_restore_target_fails_cleanly() {
    let work = tempdir();
    let repo = Repo::new();
    let src = work.path().join("src");
    write_file(&src.join("big.bin"), &random_bytes(6 << 20, 6));
    let b = repo.backup(&[&src], &[] as &[&str]);
    let mnt = work.path().join("target");
    let _fs = Tmpfs::mount(&mnt, 2);
    let run = repo.restore_run(&b.id, &mnt, &[] as &[&str]);
    run.assert_no_panic().assert_code(1);
    run.assert_stderr_contains("No space left on device");
}
