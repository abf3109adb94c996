//! `holdfast mount` (issue 13) through the real binary and real FUSE: every file and its
//! metadata byte-for-byte against the source, random reads of a multi-chunk file, the
//! hosts/, tags/, ids/ and pvcs/ views, a snapshot taken while mounted appearing after a
//! refresh, a deleted pack giving EIO for that file only, and SIGTERM unmounting cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use holdfast_e2e::*;
use rand::{Rng, SeedableRng};

/// Whether FUSE can be used here: /dev/fuse and fusermount3. Without it the test fails
/// under CI and is skipped, loudly, elsewhere.
fn fuse_usable() -> bool {
    let have = Path::new("/dev/fuse").exists()
        && std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    if !have && !in_ci() {
        eprintln!(
            "SKIPPED {}: FUSE is not usable here (needs /dev/fuse and fusermount3 from the \
             fuse3 package; .ci/run installs it)",
            std::thread::current().name().unwrap_or("mount test")
        );
        return false;
    }
    require(
        have,
        "FUSE (/dev/fuse and fusermount3 from the fuse3 package)",
    );
    true
}

fn mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy().into_owned();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// A running `holdfast mount`, unmounted (SIGTERM, then `fusermount3 -u -z`) if the test
/// fails before it does so itself.
struct Mounted {
    child: Child,
    mnt: PathBuf,
    stderr: PathBuf,
}

impl Mounted {
    fn start(repo: &Repo, mnt: &Path, extra: &[&str]) -> Mounted {
        fs::create_dir_all(mnt).unwrap();
        let stderr = repo.scratch().join("mount.stderr");
        let mut args = vec!["mount".to_string(), mnt.to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = repo.command(&args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        let mut m = Mounted {
            child: cmd.spawn().expect("start holdfast mount"),
            mnt: mnt.to_path_buf(),
            stderr,
        };
        let start = Instant::now();
        while !mounted(mnt) {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!(
                    "holdfast mount exited ({status}) before mounting: {}",
                    m.log()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not mounted after 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM; returns the exit status once the process ended.
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "still running 30 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if mounted(&self.mnt) {
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .status();
        }
    }
}

/// Everything about an entry that the mount must show as the source has it.
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    link: Option<PathBuf>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
}

fn meta(p: &Path) -> Meta {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    };
    let mut xattrs = BTreeMap::new();
    if !ft.is_symlink() {
        for name in xattr::list(p).unwrap() {
            if name.to_string_lossy().starts_with("user.") {
                let v = xattr::get(p, &name).unwrap().unwrap_or_default();
                xattrs.insert(name, v);
            }
        }
    }
    Meta {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: if ft.is_dir() { 0 } else { m.size() },
        mtime: (m.mtime(), m.mtime_nsec()),
        link: ft.is_symlink().then(|| fs::read_link(p).unwrap()),
        xattrs,
    }
}

/// Compares the tree at `src` with its view at `seen`, entry by entry; returns how many
/// entries were compared.
fn compare_trees(src: &Path, seen: &Path) -> usize {
    let (a, b) = (meta(src), meta(seen));
    assert_eq!(
        a,
        b,
        "metadata of {} differs from {}",
        seen.display(),
        src.display()
    );
    let mut n = 1;
    match a.kind {
        "file" => {
            let (x, y) = (fs::read(src).unwrap(), fs::read(seen).unwrap());
            assert!(x == y, "content of {} differs", seen.display());
        }
        "dir" => {
            let names = |d: &Path| -> BTreeSet<OsString> {
                fs::read_dir(d)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect()
            };
            let (ns, nm) = (names(src), names(seen));
            assert_eq!(ns, nm, "entries of {}", seen.display());
            for name in ns {
                n += compare_trees(&src.join(&name), &seen.join(&name));
            }
        }
        _ => {}
    }
    n
}

/// The sample tree: nested directories, a 100-entry directory, a 20 MiB random file, a
/// symlink, an empty file, a name that is not UTF-8, a FIFO and an extended attribute.
fn sample_tree(root: &Path) {
    write_file(&root.join("a/b/c/deep.txt"), b"deep\n");
    for i in 0..100 {
        write_file(
            &root.join(format!("many/f{i:03}")),
            format!("file {i}\n").as_bytes(),
        );
    }
    write_random(&root.join("big.bin"), 20 * 1024 * 1024 + 77, 13);
    write_file(&root.join("empty"), b"");
    write_file(&root.join("changing.txt"), b"first version\n");
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("link")).unwrap();
    let odd = root.join(OsString::from_vec(b"odd\xff\n name".to_vec()));
    write_file(&odd, b"odd\n");
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::set_permissions(
        root.join("a/b"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    xattr::set(root.join("a/b/c/deep.txt"), "user.note", b"kept").expect("set xattr");
}

fn snapshot_dirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "latest")
        .collect();
    v.sort();
    v
}

/// Files under the repository's data directory, with their sizes.
fn pack_files(repo: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    for d in fs::read_dir(repo.join("data")).unwrap() {
        let d = d.unwrap().path();
        for f in fs::read_dir(&d).unwrap() {
            let f = f.unwrap();
            out.insert(f.path(), f.metadata().unwrap().len());
        }
    }
    out
}

#[test]
fn mount_shows_every_snapshot_byte_for_byte_and_survives_damage() {
    if !fuse_usable() {
        return;
    }
    let repo = Repo::new();
    let src = repo.scratch().join("src");
    sample_tree(&src);
    let first = repo.backup(&[&src], &["--tag", "namespace=ns,pvc=data"]);
    write_file(&src.join("changing.txt"), b"second version, longer\n");
    write_file(&src.join("many/f100"), b"new\n");
    let second = repo.backup(&[&src], &[] as &[&str]);
    // A snapshot of one unique file, whose pack is deleted while mounted.
    let victim_dir = repo.scratch().join("victim");
    let before = pack_files(&repo.path);
    write_random(&victim_dir.join("victim.bin"), 3 * 1024 * 1024, 99);
    let victim = repo.backup(&[&victim_dir], &["--tag", "victim"]);
    let new_packs: Vec<(PathBuf, u64)> = pack_files(&repo.path)
        .into_iter()
        .filter(|(p, _)| !before.contains_key(p))
        .collect();

    let mnt = repo.scratch().join("mnt");
    let mut m = Mounted::start(&repo, &mnt, &[]);
    let rel = src.strip_prefix("/").unwrap();

    // The newest snapshot of the source, through `hosts/<host>/latest` (the victim's
    // snapshot is the newest overall) and through ids/.
    let second_dir = mnt.join("ids").join(&second.id[..8]);
    let compared = compare_trees(&src, &second_dir.join(rel));
    assert!(compared > 110, "only {compared} entries compared");
    // The first snapshot holds the first version, and lacks the later file.
    let first_dir = mnt.join("ids").join(&first.id[..8]);
    assert_eq!(
        fs::read(first_dir.join(rel).join("changing.txt")).unwrap(),
        b"first version\n"
    );
    assert!(!first_dir.join(rel).join("many/f100").exists());
    assert_eq!(
        fs::read_dir(first_dir.join(rel).join("many"))
            .unwrap()
            .count(),
        100
    );

    // snapshots/: one directory per snapshot, `latest` the newest (the victim's).
    let snaps = snapshot_dirs(&mnt.join("snapshots"));
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let latest = fs::read_link(mnt.join("snapshots/latest")).unwrap();
    // Snapshots in the same second carry their short ID: the newest is the victim's.
    let latest = latest.to_string_lossy().into_owned();
    assert!(snaps.contains(&latest), "{latest} not in {snaps:?}");
    assert!(
        !latest.contains('Z') || latest.ends_with('Z') || latest.ends_with(&victim.id[..8]),
        "{latest}"
    );
    assert!(mnt
        .join("snapshots/latest")
        .join(victim_dir.strip_prefix("/").unwrap())
        .is_dir());

    // hosts/, tags/ and pvcs/.
    let hosts = snapshot_dirs(&mnt.join("hosts"));
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(snapshot_dirs(&mnt.join("hosts").join(&hosts[0])).len(), 3);
    let tags = snapshot_dirs(&mnt.join("tags"));
    assert_eq!(tags, ["namespace=ns", "pvc=data", "victim"]);
    let pvc = mnt.join("pvcs/ns/data");
    assert_eq!(snapshot_dirs(&pvc).len(), 1);
    assert_eq!(
        fs::read(pvc.join("latest").join(rel).join("changing.txt")).unwrap(),
        b"first version\n"
    );

    // Random reads of the big file, against the source.
    let want = fs::read(src.join("big.bin")).unwrap();
    let mut f = fs::File::open(second_dir.join(rel).join("big.bin")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..200 {
        let off = rng.gen_range(0..want.len() as u64 + 10);
        let len = rng.gen_range(0..300_000usize);
        f.seek(SeekFrom::Start(off)).unwrap();
        let mut got = Vec::new();
        (&mut f).take(len as u64).read_to_end(&mut got).unwrap();
        let o = (off as usize).min(want.len());
        let e = (o + len).min(want.len());
        assert!(got == want[o..e], "read of {len} at {off} differs");
    }

    drop(f); // an open file keeps the mount busy: it could not be unmounted below

    // A snapshot taken while mounted appears after a refresh (SIGHUP).
    write_file(&src.join("later.txt"), b"taken while mounted\n");
    let third = repo.backup(&[&src], &[] as &[&str]);
    m.signal(nix::sys::signal::Signal::SIGHUP);
    let start = Instant::now();
    while snapshot_dirs(&mnt.join("snapshots")).len() < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the new snapshot did not appear"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fs::read(
            mnt.join("ids")
                .join(&third.id[..8])
                .join(rel)
                .join("later.txt")
        )
        .unwrap(),
        b"taken while mounted\n"
    );

    // A deleted pack: EIO for the file whose data it held, logged; the mount stays up.
    let (pack, _) = new_packs
        .iter()
        .max_by_key(|(_, len)| *len)
        .expect("the victim's backup wrote packs");
    fs::remove_file(pack).unwrap();
    let victim_file = mnt
        .join("ids")
        .join(&victim.id[..8])
        .join(victim_dir.strip_prefix("/").unwrap())
        .join("victim.bin");
    let err = fs::read(&victim_file).expect_err("reading data of a deleted pack must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(mounted(&mnt));
    assert_eq!(
        fs::read(second_dir.join(rel).join("a/b/c/deep.txt")).unwrap(),
        b"deep\n"
    );
    let log = m.log();
    assert!(
        log.contains("victim.bin") && log.contains("data blob"),
        "log: {log}"
    );
    assert!(!log.contains("panicked"), "log: {log}");

    // SIGTERM unmounts and exits 0, leaving no mount behind.
    let status = m.terminate();
    assert!(status.success(), "exit {status}: {}", m.log());
    assert!(!mounted(&mnt), "still in /proc/mounts after SIGTERM");
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
}

#[test]
fn mount_filters_and_refuses_a_bad_mount_point() {
    if !fuse_usable() {
        return;
    }
    let repo = Repo::new();
    let a = repo.scratch().join("a");
    write_file(&a.join("x"), b"x");
    repo.backup(&[&a], &["--tag", "keep"]);
    repo.backup(&[&a], &["--tag", "other"]);
    // Only the snapshots the filters pass.
    let mnt = repo.scratch().join("mnt");
    let mut m = Mounted::start(&repo, &mnt, &["--tag", "keep"]);
    assert_eq!(snapshot_dirs(&mnt.join("snapshots")).len(), 1);
    assert_eq!(snapshot_dirs(&mnt.join("tags")), ["keep"]);
    // Writing is refused.
    let err = fs::write(
        mnt.join("snapshots/latest")
            .join(a.strip_prefix("/").unwrap())
            .join("x"),
        b"y",
    )
    .expect_err("the mount is read-only");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)),
        "{err}"
    );
    assert!(m.terminate().success());
    assert!(!mounted(&mnt));

    // A mount point that is not a directory: a clear error, exit 1, no panic.
    let file = repo.scratch().join("file");
    write_file(&file, b"");
    repo.cmd(&[std::ffi::OsStr::new("mount"), file.as_os_str()])
        .assert_code(exit::FAILURE)
        .assert_stderr_contains("not a directory");
    repo.cmd(&[
        std::ffi::OsStr::new("mount"),
        repo.scratch().join("missing").as_os_str(),
    ])
    .assert_code(exit::FAILURE)
    .assert_stderr_contains("cannot mount");
}
