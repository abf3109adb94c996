//! How source paths are recorded: single files, symlinks and FIFOs given as paths,
//! overlapping and unnormalised paths, relative paths, paths through symlinked
//! directories, `--one-file-system`; and partial restores of hard-linked files.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use holdfast_e2e::*;

/// A single file, a symlink and a FIFO given as backup paths are recorded as what they
/// are (the symlink is not followed, the FIFO is not read) and restore to their
/// absolute paths under the target.
#[test]
fn single_file_symlink_and_fifo_paths() {
    let repo = Repo::new();
    let work = tempdir();
    let file = work.path().join("file.txt");
    write_file(&file, b"single file\n");
    let link = work.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let fifo = work.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    set_mtime(&file, 1_500_000_000, 123_456_789);

    // A FIFO must not be opened for reading (that would block forever).
    let mut args: Vec<&std::ffi::OsStr> = vec!["backup".as_ref(), "--json".as_ref()];
    args.extend([file.as_os_str(), link.as_os_str(), fifo.as_os_str()]);
    let run = run_command(repo.command(&args), Duration::from_secs(120));
    run.assert_ok();

    let t = tempdir();
    repo.restore("latest", t.path(), &[] as &[&str]);
    let rf = restored(t.path(), &file);
    assert_eq!(fs::read(&rf).unwrap(), b"single file\n");
    let m = fs::symlink_metadata(&rf).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 123_456_789));
    let rl = restored(t.path(), &link);
    assert!(fs::symlink_metadata(&rl).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(&rl).unwrap(), file);
    let rp = restored(t.path(), &fifo);
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(&rp).unwrap().file_type().is_fifo());
    // Nothing else in the work directory was recorded.
    let listed = repo.ls_paths("latest", &[] as &[&str]);
    let work_s = work.path().to_str().unwrap();
    let inside: Vec<&String> = listed
        .iter()
        .filter(|p| p.starts_with(&format!("{work_s}/")))
        .collect();
    assert_eq!(inside.len(), 3, "{listed:#?}");
}

/// Paths are normalised (`.`, `..`, repeated and trailing `/`), relative paths are made
/// absolute, a path inside another backed-up path adds nothing, and a relative
/// `--target` works.
#[test]
fn paths_are_normalised_and_overlaps_merge() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("a/b/c"), b"c\n");
    write_file(&src.join("d"), b"d\n");

    let messy = format!("{}/./src//a/../", work.path().display());
    let mut c = repo.command(&[
        "backup".as_ref(),
        "--json".as_ref(),
        "src/a".as_ref(),
        messy.as_ref(),
        src.join("a/b").as_os_str(),
    ]);
    c.current_dir(work.path());
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_ok();
    let snaps = repo.snapshots(&[] as &[&str]);
    let mut paths: Vec<String> = snaps[0]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let mut want = [
        src.to_str().unwrap().to_string(),
        src.join("a").to_str().unwrap().to_string(),
        src.join("a/b").to_str().unwrap().to_string(),
    ];
    want.sort();
    // The nested paths may or may not be listed, but the normalised outer one must be,
    // and nothing unnormalised may be.
    assert!(
        paths.contains(&src.to_str().unwrap().to_string()),
        "{paths:?}"
    );
    for p in &paths {
        assert!(want.contains(p), "unexpected recorded path {p:?}");
    }
    let listed = repo.ls_paths("latest", &[] as &[&str]);
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        listed.len(),
        "an entry is listed twice: {listed:#?}"
    );
    assert_eq!(b_stat(&run, "files_new"), 2, "{run}");

    // Relative --target.
    let mut c = repo.command(&["restore", "latest", "--target", "restored-here"]);
    c.current_dir(work.path());
    run_command(c, COMMAND_TIMEOUT).assert_ok();
    assert_trees_equal(&src, &restored(&work.path().join("restored-here"), &src));
}

fn b_stat(run: &Run, k: &str) -> u64 {
    run.json()["summary"][k].as_u64().unwrap()
}

/// A path reached through a symlinked directory is recorded under the path as given,
/// with the symlinked component recorded as a directory.
#[test]
fn path_through_symlinked_directory() {
    let repo = Repo::new();
    let work = tempdir();
    let real = work.path().join("real");
    write_file(&real.join("src/f"), b"f\n");
    let via = work.path().join("via");
    std::os::unix::fs::symlink(&real, &via).unwrap();
    repo.backup(&[via.join("src")], &[] as &[&str]);
    let listed = repo.ls_paths("latest", &[] as &[&str]);
    let f = via.join("src/f").to_str().unwrap().to_string();
    assert!(listed.contains(&f), "{listed:#?}");
    let t = tempdir();
    repo.restore("latest", t.path(), &[] as &[&str]);
    let rvia = restored(t.path(), &via);
    assert!(fs::symlink_metadata(&rvia).unwrap().is_dir());
    assert_eq!(fs::read(rvia.join("src/f")).unwrap(), b"f\n");
}

/// Unmounts (lazily) when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "holdfast-e2e"])
        .arg(at)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| Mount(at.to_path_buf()))
}

/// `--one-file-system` records a mount point below the source but not its contents;
/// without it, the contents are backed up.
#[test]
fn one_file_system_stops_at_mount_points() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("here"), b"same filesystem\n");
    fs::create_dir_all(src.join("mnt")).unwrap();
    let m = mount_tmpfs(&src.join("mnt"));
    require(
        m.is_some(),
        "a mount point: `mount -t tmpfs` (root with CAP_SYS_ADMIN)",
    );
    write_file(&src.join("mnt/there"), b"other filesystem\n");
    assert_ne!(
        fs::metadata(&src).unwrap().dev(),
        fs::metadata(src.join("mnt")).unwrap().dev()
    );

    let x = repo.backup(&[&src], &["--one-file-system"]);
    let listed = repo.ls_paths(&x.id, &[] as &[&str]);
    let p = |r: &str| src.join(r).to_str().unwrap().to_string();
    assert!(listed.contains(&p("here")), "{listed:#?}");
    assert!(
        listed.contains(&p("mnt")),
        "the mount point itself should be recorded: {listed:#?}"
    );
    assert!(
        !listed.contains(&p("mnt/there")),
        "--one-file-system crossed into a mount: {listed:#?}"
    );

    let all = repo.backup(&[&src], &[] as &[&str]);
    let listed = repo.ls_paths(&all.id, &[] as &[&str]);
    assert!(listed.contains(&p("mnt/there")), "{listed:#?}");
}

fn make_links(work: &Path) -> PathBuf {
    let src = work.join("src");
    write_file(&src.join("a/one"), b"linked content\n");
    fs::create_dir_all(src.join("b")).unwrap();
    fs::hard_link(src.join("a/one"), src.join("a/two")).unwrap();
    fs::hard_link(src.join("a/one"), src.join("b/three")).unwrap();
    stamp_mtimes(&src);
    src
}

/// Hard-linked files restore with their content when the first name (in tree order) is
/// left out by `--exclude` or `--include`, or lies outside a sub-path restore; the
/// restored names that belong together are still linked together.
#[test]
fn partial_restore_of_hard_linked_files() {
    let repo = Repo::new();
    let work = tempdir();
    let src = make_links(work.path());
    repo.backup(&[&src], &[] as &[&str]);

    // --exclude the first name.
    let t = tempdir();
    repo.restore("latest", t.path(), &["--exclude", "one"]);
    let out = restored(t.path(), &src);
    assert!(!out.join("a/one").exists());
    for f in ["a/two", "b/three"] {
        assert_eq!(fs::read(out.join(f)).unwrap(), b"linked content\n", "{f}");
    }
    assert_eq!(
        fs::metadata(out.join("a/two")).unwrap().ino(),
        fs::metadata(out.join("b/three")).unwrap().ino(),
        "the two restored names should still be one file"
    );

    // --include only the last name.
    let t = tempdir();
    repo.restore("latest", t.path(), &["--include", "three"]);
    let out = restored(t.path(), &src);
    assert_eq!(fs::read(out.join("b/three")).unwrap(), b"linked content\n");
    assert!(!out.join("a/one").exists() && !out.join("a/two").exists());

    // Sub-path restore of the directory holding only the later name.
    let t = tempdir();
    let spec = format!("latest:{}", src.join("b").display());
    repo.restore(&spec, t.path(), &[] as &[&str]);
    assert_eq!(
        fs::read(t.path().join("b/three")).unwrap(),
        b"linked content\n"
    );
    assert_eq!(
        list_tree(t.path()),
        vec![PathBuf::from("b"), PathBuf::from("b/three")]
    );
}

/// Entries with times before 1970 and far in the future keep them exactly.
#[test]
fn extreme_timestamps_round_trip() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    write_file(&src.join("ancient"), b"old\n");
    write_file(&src.join("future"), b"new\n");
    fs::create_dir_all(src.join("old-dir")).unwrap();
    std::os::unix::fs::symlink("ancient", src.join("old-link")).unwrap();
    set_mtime(&src.join("ancient"), -123_456_789, 42);
    set_mtime(&src.join("future"), 7_000_000_000, 999_999_999);
    set_mtime(&src.join("old-dir"), -1, 1);
    set_mtime(&src.join("old-link"), 0, 0);
    set_mtime(&src, 86_400, 500);
    repo.backup(&[&src], &[] as &[&str]);
    let t = tempdir();
    repo.restore("latest", t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));
    let run = repo.cmd(&[
        "ls",
        "--json",
        "latest",
        src.join("ancient").to_str().unwrap(),
    ]);
    run.assert_ok();
    assert_eq!(
        run.json_lines()[0]["mtime_ns"].as_i64(),
        Some(-123_456_789 * 1_000_000_000 + 42)
    );
}

/// Many small files in one directory (and many directories) back up and restore intact.
#[test]
fn many_small_files() {
    let repo = Repo::new();
    let work = tempdir();
    let src = work.path().join("src");
    for i in 0..3000u32 {
        write_file(
            &src.join(format!("d{:02}/f{i:05}", i % 40)),
            format!("file {i}\n").as_bytes(),
        );
    }
    write_file(&src.join("same-1"), b"same\n");
    write_file(&src.join("same-2"), b"same\n");
    let b = repo.backup(&[&src], &[] as &[&str]);
    assert_eq!(b.stat("files_new"), 3002);
    assert_eq!(
        b.stat("data_blobs_added"),
        3001,
        "identical small files must be one blob: {}",
        b.json
    );
    let t = tempdir();
    repo.restore("latest", t.path(), &[] as &[&str]);
    assert_trees_equal(&src, &restored(t.path(), &src));
}
