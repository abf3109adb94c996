//! Incremental backups: unchanged files are recognised from the parent snapshot and not
//! read again; changed files are.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use holdfast_e2e::*;

const FILES: usize = 30;

/// A tree of `FILES` regular files in nested directories; returns the total size.
fn make_tree(src: &Path) -> u64 {
    let mut total = 0;
    for i in 0..FILES {
        let rel = PathBuf::from(format!("d{}/sub{}/f{i:02}", i % 3, i % 5));
        let len = 1000 + i * 7919;
        write_file(&src.join(rel), &random_bytes(len, i as u64));
        total += len as u64;
    }
    fs::create_dir_all(src.join("empty")).unwrap();
    std::os::unix::fs::symlink("d0", src.join("link")).unwrap();
    total
}

fn ls_below(repo: &Repo, snap: &str, path: &Path) -> Vec<Value> {
    let run = repo.cmd(&[
        "ls".as_ref(),
        "--json".as_ref(),
        snap.as_ref(),
        path.as_os_str(),
    ]);
    run.assert_ok();
    run.json_lines()
}

/// A second backup of an unchanged tree reads no file content, reports every file as
/// unchanged, names the first snapshot as its parent, and records exactly the same
/// entries and metadata.
#[test]
fn incremental_unchanged_tree_reads_nothing() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    let total = make_tree(&src);

    let first = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(first.stat("files_new"), FILES as u64, "{}", first.json);
    assert_eq!(first.stat("bytes_read"), total, "{}", first.json);
    assert_eq!(first.stat("bytes_total"), total, "{}", first.json);

    let second = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(
        second.stat("files_unchanged"),
        FILES as u64,
        "{}",
        second.json
    );
    assert_eq!(second.stat("files_new"), 0, "{}", second.json);
    assert_eq!(second.stat("files_changed"), 0, "{}", second.json);
    assert_eq!(second.stat("bytes_read"), 0, "{}", second.json);
    assert_eq!(second.stat("bytes_total"), total, "{}", second.json);
    assert_eq!(second.stat("data_blobs_added"), 0, "{}", second.json);
    assert_eq!(second.stat("dirs_new"), 0, "{}", second.json);
    assert_eq!(
        second.json.get("parent").and_then(Value::as_str),
        Some(first.id.as_str()),
        "the second backup's parent must be the first: {}",
        second.json
    );
    let snaps = repo.snapshots(&[] as &[&str]);
    let s2 = snaps
        .iter()
        .find(|s| s["id"] == second.id.as_str())
        .expect("second snapshot listed");
    assert_eq!(s2["parent"], first.id.as_str(), "{s2}");

    assert_eq!(
        ls_below(&repo, &first.id, &src),
        ls_below(&repo, &second.id, &src),
        "an unchanged tree must be recorded identically"
    );

    let target = tempdir();
    repo.restore(&second.id, target.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// After one file is modified, exactly that file is read again and reported changed;
/// after one is added, it is reported new; the restore has the new content.
#[test]
fn incremental_one_modified_file_is_changed() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    make_tree(&src);
    repo.backup(&[&src], &[] as &[&str]);

    let victim = src.join("d1/sub1/f01");
    let mut content = fs::read(&victim).unwrap();
    content.extend_from_slice(b"appended");
    fs::write(&victim, &content).unwrap();

    let b = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(b.stat("files_changed"), 1, "{}", b.json);
    assert_eq!(b.stat("files_new"), 0, "{}", b.json);
    assert_eq!(b.stat("files_unchanged"), FILES as u64 - 1, "{}", b.json);
    assert_eq!(b.stat("bytes_read"), content.len() as u64, "{}", b.json);

    write_file(&src.join("d2/new-file"), b"brand new\n");
    let c = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(c.stat("files_new"), 1, "{}", c.json);
    assert_eq!(c.stat("files_changed"), 0, "{}", c.json);
    assert_eq!(c.stat("files_unchanged"), FILES as u64, "{}", c.json);
    assert_eq!(c.stat("bytes_read"), 10, "{}", c.json);

    let target = tempdir();
    repo.restore("latest", target.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(target.path(), &src));
}

/// A file rewritten with the same size and its old mtime put back is still detected
/// (its ctime changed), so the new content is backed up.
#[test]
fn incremental_detects_change_hidden_behind_restored_mtime() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    make_tree(&src);
    let victim = src.join("d0/sub0/f00");
    let before = fs::symlink_metadata(&victim).unwrap();
    repo.backup(&[&src], &[] as &[&str]);

    // Let the clock move so the ctime differs even on coarse-grained filesystems.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut content = fs::read(&victim).unwrap();
    for b in content.iter_mut().take(64) {
        *b = !*b;
    }
    fs::write(&victim, &content).unwrap();
    set_mtime(&victim, before.mtime(), before.mtime_nsec());
    let after = fs::symlink_metadata(&victim).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert_ne!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec())
    );

    let b = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(b.stat("files_changed"), 1, "{}", b.json);
    let run = repo.cmd(&["dump".as_ref(), "latest".as_ref(), victim.as_os_str()]);
    run.assert_ok();
    assert!(
        run.stdout == content,
        "dump returned the old content of a file changed behind an unchanged mtime"
    );
}

/// The parent is the latest snapshot of the same host and paths: a backup for another
/// host reads everything again, `--parent` picks one explicitly, and `--force` re-reads.
#[test]
fn incremental_parent_is_chosen_by_host_and_paths() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    let total = make_tree(&src);
    let other = work.path().join("other");
    make_tree(&other);

    let a = repo.backup(&[&src], &["--host", "alpha"]);
    let b = repo.backup(&[&src], &["--host", "beta"]);
    assert_eq!(
        b.stat("bytes_read"),
        total,
        "another host has no parent: {}",
        b.json
    );
    assert!(b.json["parent"].is_null(), "{}", b.json);

    // Different path set: no parent either.
    let c = repo.backup(&[&src, &other], &["--host", "alpha"]);
    assert_eq!(c.stat("bytes_read"), 2 * total, "{}", c.json);

    // Back to the original path set on alpha: the parent is `a`, not `c`.
    let d = repo.backup(&[&src], &["--host", "alpha"]);
    assert_eq!(d.json["parent"], a.id.as_str(), "{}", d.json);
    assert_eq!(d.stat("bytes_read"), 0, "{}", d.json);

    // An explicit parent from another host works too.
    let e = repo.backup(&[&src], &["--host", "gamma", "--parent", &b.id]);
    assert_eq!(e.json["parent"], b.id.as_str(), "{}", e.json);
    assert_eq!(e.stat("bytes_read"), 0, "{}", e.json);
    assert_eq!(e.stat("files_unchanged"), FILES as u64, "{}", e.json);

    // --force reads everything though the parent matches.
    let f = repo.backup(&[&src], &["--host", "alpha", "--force"]);
    assert_eq!(f.stat("bytes_read"), total, "{}", f.json);
    assert_eq!(f.stat("data_blobs_added"), 0, "{}", f.json);
}
