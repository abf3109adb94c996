//! Restore never writes outside `--target`, whatever is already in the target: symlinks
//! planted where the snapshot has directories or files, hard links to outside files,
//! FIFOs in the way. What was planted is replaced by the real entry.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_e2e::*;

fn make_src(work: &Path) -> PathBuf {
    let src = work.join("src");
    write_file(&src.join("file.txt"), b"restored content\n");
    write_file(&src.join("sub/inner.txt"), b"inner\n");
    write_file(&src.join("sub/deeper/x"), b"x\n");
    write_file(&src.join("big.bin"), &random_bytes(2_000_000, 3));
    write_file(
        &src.join("fifo-spot"),
        b"a file where a fifo will be planted\n",
    );
    chmod(&src.join("sub"), 0o700);
    stamp_mtimes(&src);
    src
}

/// Snapshot of everything below `dir`: relative paths with type, size, mode, mtime and
/// content, to prove it was not touched.
fn fingerprint(dir: &Path) -> Vec<String> {
    list_tree(dir)
        .into_iter()
        .map(|r| {
            let p = dir.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                format!("{:?}", fs::read(&p).unwrap())
            } else {
                String::new()
            };
            format!(
                "{} {:o} {} {} {}.{} {}",
                r.display(),
                m.mode(),
                m.uid(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                content
            )
        })
        .collect()
}

fn outside_dir(work: &Path) -> PathBuf {
    let o = work.join("outside");
    write_file(&o.join("victim.txt"), b"must not change\n");
    fs::create_dir_all(o.join("sub")).unwrap();
    write_file(
        &o.join("sub/inner.txt"),
        b"outside inner, must not change\n",
    );
    chmod(&o, 0o755);
    o
}

/// A symlink planted in the target where the snapshot has a directory (at the top, `tmp`,
/// and deeper, `src/sub`) is not followed: the outside directory is untouched and a real
/// directory is restored in its place.
#[test]
fn restore_does_not_follow_planted_directory_symlinks() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    repo.backup(&[&src], &[] as &[&str]);
    let outside = outside_dir(work.path());
    let outside_fp = fingerprint(&outside);
    let outside_meta = fs::metadata(&outside).unwrap();

    // Top-level component of the stored path.
    let target = tempdir();
    let first = src.components().nth(1).unwrap().as_os_str().to_owned();
    symlink(&outside, target.path().join(&first)).unwrap();
    repo.restore("latest", target.path(), &[] as &[&str]);
    assert_eq!(
        fingerprint(&outside),
        outside_fp,
        "restore wrote through a symlink"
    );
    let m = fs::metadata(&outside).unwrap();
    assert_eq!(
        (m.mode(), m.uid(), m.mtime(), m.mtime_nsec()),
        (
            outside_meta.mode(),
            outside_meta.uid(),
            outside_meta.mtime(),
            outside_meta.mtime_nsec()
        ),
        "restore changed the metadata of a directory outside the target"
    );
    let top = fs::symlink_metadata(target.path().join(&first)).unwrap();
    assert!(
        top.is_dir(),
        "the planted symlink was not replaced by a directory"
    );
    assert_trees_equal(&src, &restored(target.path(), &src));

    // Deeper: the snapshot's `src/sub` directory.
    let target = tempdir();
    let out = restored(target.path(), &src);
    fs::create_dir_all(&out).unwrap();
    symlink(outside.join("sub"), out.join("sub")).unwrap();
    repo.restore("latest", target.path(), &[] as &[&str]);
    assert_eq!(
        fingerprint(&outside),
        outside_fp,
        "restore wrote through a symlink"
    );
    assert!(fs::symlink_metadata(out.join("sub")).unwrap().is_dir());
    assert_trees_equal(&src, &out);

    // With a sub-path restore, the restored directory's own name.
    let target = tempdir();
    symlink(&outside, target.path().join("sub")).unwrap();
    let spec = format!("latest:{}", src.join("sub").display());
    repo.restore(&spec, target.path(), &[] as &[&str]);
    assert_eq!(
        fingerprint(&outside),
        outside_fp,
        "restore wrote through a symlink"
    );
    assert!(fs::symlink_metadata(target.path().join("sub"))
        .unwrap()
        .is_dir());
    assert_trees_equal(&src.join("sub"), &target.path().join("sub"));
}

/// A symlink planted where the snapshot has a file is replaced, not written through.
#[test]
fn restore_does_not_write_files_through_planted_symlinks() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    repo.backup(&[&src], &[] as &[&str]);
    let outside = outside_dir(work.path());
    let outside_fp = fingerprint(&outside);

    let target = tempdir();
    let out = restored(target.path(), &src);
    fs::create_dir_all(out.join("sub")).unwrap();
    symlink(outside.join("victim.txt"), out.join("file.txt")).unwrap();
    symlink(outside.join("sub/inner.txt"), out.join("sub/inner.txt")).unwrap();
    symlink(outside.join("does-not-exist-yet"), out.join("big.bin")).unwrap();
    repo.restore("latest", target.path(), &[] as &[&str]);
    assert_eq!(
        fingerprint(&outside),
        outside_fp,
        "restore wrote through a symlink"
    );
    assert!(
        !outside.join("does-not-exist-yet").exists(),
        "restore created a file through a dangling symlink"
    );
    for f in ["file.txt", "sub/inner.txt", "big.bin"] {
        assert!(
            fs::symlink_metadata(out.join(f)).unwrap().is_file(),
            "{f} is still not a regular file"
        );
    }
    assert_trees_equal(&src, &out);
}

/// A hard link to an outside file planted where the snapshot has a file: restoring must
/// replace the name, not rewrite the shared inode (which would change the outside file).
#[test]
fn restore_does_not_write_into_planted_hard_links() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    repo.backup(&[&src], &[] as &[&str]);
    let outside = outside_dir(work.path());
    let outside_fp = fingerprint(&outside);

    let target = tempdir();
    let out = restored(target.path(), &src);
    fs::create_dir_all(&out).unwrap();
    fs::hard_link(outside.join("victim.txt"), out.join("file.txt")).unwrap();
    repo.restore("latest", target.path(), &[] as &[&str]);
    assert_eq!(
        fingerprint(&outside),
        outside_fp,
        "restore changed a file outside the target through a hard link in the target"
    );
    assert_trees_equal(&src, &out);
}

/// A FIFO planted where the snapshot has a regular file must not make restore hang or
/// write into the FIFO; the file is restored in its place.
#[test]
fn restore_replaces_planted_fifo_without_hanging() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    repo.backup(&[&src], &[] as &[&str]);
    let target = tempdir();
    let out = restored(target.path(), &src);
    fs::create_dir_all(&out).unwrap();
    nix::unistd::mkfifo(
        &out.join("fifo-spot"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let mut args: Vec<std::ffi::OsString> =
        vec!["restore".into(), "latest".into(), "--target".into()];
    args.push(target.path().into());
    let run = run_command(repo.command(&args), Duration::from_secs(120));
    run.assert_ok();
    assert_trees_equal(&src, &out);
}

/// Restoring twice into the same target (over the first restore, with some files changed
/// or replaced by other kinds of entries in between) gives the snapshot's tree again.
#[test]
fn restore_over_existing_restore_recreates_snapshot() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_src(work.path());
    repo.backup(&[&src], &[] as &[&str]);
    let target = tempdir();
    repo.restore("latest", target.path(), &[] as &[&str]);
    let out = restored(target.path(), &src);
    fs::write(
        out.join("file.txt"),
        b"changed after restore, and longer than before\n",
    )
    .unwrap();
    fs::write(out.join("big.bin"), b"short").unwrap();
    fs::remove_dir_all(out.join("sub/deeper")).unwrap();
    write_file(&out.join("sub/deeper"), b"a file where a directory belongs");
    chmod(&out.join("sub"), 0o500);
    repo.restore("latest", target.path(), &[] as &[&str]);
    assert_trees_equal(&src, &out);
}
