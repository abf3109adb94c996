//! Filesystem metadata: reading an entry's metadata into a tree [`Node`] at backup time,
//! and putting it back onto a restored entry.
//!
//! Everything here works on the entry itself and never follows symlinks (lstat, readlink,
//! `llistxattr`/`lgetxattr`, `lchown`, `utimensat(AT_SYMLINK_NOFOLLOW)`), so a hostile tree
//! or a link placed in the source cannot redirect a read or a write elsewhere. Nothing here
//! panics on filesystem input: odd values are clamped and failures become [`FsError`]s or
//! warnings.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use holdfast_repo::tree::{Node, NodeKind, Xattr};
use nix::errno::Errno;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Group, Uid, User, Whence};

/// A filesystem operation that failed, with the operation and path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O or system call error.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed (e.g. `readlink`, `lchown`).
        op: &'static str,
        /// The path it failed on.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
}

fn fs_err(op: &'static str, path: &Path, source: impl Into<io::Error>) -> FsError {
    FsError::Io {
        op,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// Caches uid→user name and gid→group name lookups, which otherwise cost an NSS query
/// (possibly a network round trip) per entry. Thread-safe and cheap to share by reference.
#[derive(Debug, Default)]
pub struct UserCache {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl UserCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name of user `uid`, or an empty string if it has none (or the lookup failed).
    pub fn user(&self, uid: u32) -> String {
        cached(&self.users, uid, |id| {
            match User::from_uid(Uid::from_raw(id)) {
                Ok(Some(u)) => u.name,
                _ => String::new(),
            }
        })
    }

    /// The name of group `gid`, or an empty string if it has none (or the lookup failed).
    pub fn group(&self, gid: u32) -> String {
        cached(&self.groups, gid, |id| {
            match Group::from_gid(Gid::from_raw(id)) {
                Ok(Some(g)) => g.name,
                _ => String::new(),
            }
        })
    }
}

fn cached(
    map: &Mutex<HashMap<u32, String>>,
    id: u32,
    lookup: impl FnOnce(u32) -> String,
) -> String {
    if let Some(name) = map.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return name.clone();
    }
    // The lookup runs without the lock held so one slow NSS query doesn't stall other threads;
    // at worst two threads look the same id up once each.
    let name = lookup(id);
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id)
        .or_insert(name)
        .clone()
}

/// Whether the process runs as root (effective uid 0), i.e. may restore ownership.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Seconds and nanoseconds to nanoseconds since the epoch, saturating instead of overflowing.
fn to_ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

/// Nanoseconds since the epoch to a `TimeSpec` (negative times round towards minus infinity).
fn to_timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Whether an error means "this filesystem has no extended attributes".
fn xattrs_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == Errno::EOPNOTSUPP as i32 || code == Errno::ENOTSUP as i32)
}

/// The extended attributes of `path` itself (not a symlink's target), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>, FsError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if xattrs_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(fs_err("llistxattr", path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(value)) => out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            }),
            // Removed between list and get.
            Ok(None) => {}
            Err(e) if xattrs_unsupported(&e) => {}
            Err(e) => return Err(fs_err("lgetxattr", path, e)),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// Reads an entry's metadata into a [`Node`] named `name`, without content or subtree.
///
/// `meta` must come from lstat (`std::fs::symlink_metadata` or `DirEntry::metadata`); `path`
/// is used for the symlink target and the extended attributes, neither followed through a
/// symlink. `size` is the content length for files, the target length for symlinks and 0
/// for everything else (a directory's `st_size` is meaningless and would churn trees).
pub fn capture(
    path: &Path,
    name: &[u8],
    meta: &Metadata,
    users: &UserCache,
) -> Result<Node, FsError> {
    let mut node = capture_stat(path, name, meta, users)?;
    node.xattrs = read_xattrs(path)?;
    Ok(node)
}

/// [`capture`] without the extended attributes (an image file's are not part of the volume
/// it holds, and FUSE images such as rbd-fuse's refuse to list them).
pub fn capture_stat(
    path: &Path,
    name: &[u8],
    meta: &Metadata,
    users: &UserCache,
) -> Result<Node, FsError> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        return Err(fs_err(
            "lstat",
            path,
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unknown file type (mode {:o})", meta.mode()),
            ),
        ));
    };
    let mut node = Node::new(name.to_vec(), kind);
    node.mode = meta.mode() & 0o7777;
    node.uid = meta.uid();
    node.gid = meta.gid();
    node.user = users.user(node.uid);
    node.group = users.group(node.gid);
    node.mtime_ns = to_ns(meta.mtime(), meta.mtime_nsec());
    node.ctime_ns = to_ns(meta.ctime(), meta.ctime_nsec());
    node.inode = meta.ino();
    node.device = meta.dev();
    node.links = meta.nlink();
    match kind {
        NodeKind::File => node.size = meta.size(),
        NodeKind::Symlink => {
            let target = std::fs::read_link(path).map_err(|e| fs_err("readlink", path, e))?;
            node.link_target = target.as_os_str().as_bytes().to_vec();
            node.size = node.link_target.len() as u64;
        }
        NodeKind::CharDevice | NodeKind::BlockDevice => node.rdev = meta.rdev(),
        NodeKind::Dir | NodeKind::Fifo | NodeKind::Socket => {}
    }
    Ok(node)
}

/// The data ranges `(offset, len)` of an open regular file of `size` bytes, found with
/// `lseek(SEEK_DATA/SEEK_HOLE)` so holes need not be read. A filesystem without hole support
/// reports one range `(0, size)`; a fully sparse file reports none. Ranges are sorted,
/// non-overlapping, non-adjacent and clipped to `size`. The file offset is left unchanged.
pub fn data_ranges(file: &File, size: u64) -> Result<Vec<(u64, u64)>, FsError> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    if size == 0 {
        return Ok(ranges);
    }
    let fd = file.as_raw_fd();
    let path = Path::new("<open file>");
    let saved = nix::unistd::lseek(fd, 0, Whence::SeekCur).map_err(|e| fs_err("lseek", path, e))?;
    let result = scan_ranges(fd, size, &mut ranges);
    let restored = nix::unistd::lseek(fd, saved, Whence::SeekSet);
    result.map_err(|e| fs_err("lseek", path, e))?;
    restored.map_err(|e| fs_err("lseek", path, e))?;
    Ok(ranges)
}

fn scan_ranges(
    fd: std::os::fd::RawFd,
    size: u64,
    ranges: &mut Vec<(u64, u64)>,
) -> Result<(), Errno> {
    let mut pos: u64 = 0;
    while pos < size {
        let Ok(off) = i64::try_from(pos) else { break };
        let start = match nix::unistd::lseek(fd, off, Whence::SeekData) {
            Ok(s) => s as u64,
            // No data at or after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            // No SEEK_DATA support on this filesystem: everything is data.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) if pos == 0 => {
                ranges.push((0, size));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if start >= size {
            break;
        }
        let end = match nix::unistd::lseek(fd, start as i64, Whence::SeekHole) {
            Ok(h) => (h as u64).min(size),
            // The file shrank under us; treat the rest as data and let the reader cope.
            Err(Errno::ENXIO) => size,
            Err(e) => return Err(e),
        };
        // A hole at or before the data start can only come from a concurrent change;
        // take the rest as data rather than loop forever.
        let end = if end <= start { size } else { end };
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 >= start => last.1 = end.max(last.0 + last.1) - last.0,
            _ => ranges.push((start, end - start)),
        }
        pos = end;
    }
    Ok(())
}

/// Creates the special file `node` describes at `path`: a fifo (mkfifo) or a character or
/// block device (mknod with `node.rdev`). Sockets can't be recreated meaningfully, so they
/// are skipped with `Ok(false)`; `Ok(true)` means an entry was created. Permissions are set
/// later by [`apply`]. Regular files, directories and symlinks are rejected as invalid input.
pub fn create_special(path: &Path, node: &Node) -> Result<bool, FsError> {
    let perm = Mode::from_bits_truncate((node.mode & 0o777) as nix::libc::mode_t);
    let res = match node.kind {
        NodeKind::Fifo => nix::unistd::mkfifo(path, perm).map_err(|e| fs_err("mkfifo", path, e)),
        NodeKind::CharDevice => {
            nix::sys::stat::mknod(path, SFlag::S_IFCHR, perm, node.rdev as nix::libc::dev_t)
                .map_err(|e| fs_err("mknod", path, e))
        }
        NodeKind::BlockDevice => {
            nix::sys::stat::mknod(path, SFlag::S_IFBLK, perm, node.rdev as nix::libc::dev_t)
                .map_err(|e| fs_err("mknod", path, e))
        }
        NodeKind::Socket => return Ok(false),
        NodeKind::File | NodeKind::Dir | NodeKind::Symlink => {
            return Err(fs_err(
                "create_special",
                path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{:?} is not a special file", node.kind),
                ),
            ))
        }
    };
    res.map(|()| true)
}

/// What [`apply`] restores besides mode and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOptions {
    /// Restore ownership (uid/gid); only possible as root.
    pub owners: bool,
    /// Restore extended attributes.
    pub xattrs: bool,
}

/// Applies `node`'s metadata to the already-created entry at `path`, never following a symlink.
///
/// Order: ownership (`lchown`, if `opts.owners`) first because it clears setuid/setgid bits
/// and file capabilities; then extended attributes (if `opts.xattrs`; each failure becomes a
/// warning), before the mode so a read-only mode can't block them; then the mode (skipped for
/// symlinks, whose mode Linux ignores); and the times last (`utimensat` with
/// `AT_SYMLINK_NOFOLLOW`, atime = mtime, nanoseconds kept) because every change before
/// bumps them. Returns the non-fatal warnings.
pub fn apply(path: &Path, node: &Node, opts: &ApplyOptions) -> Result<Vec<String>, FsError> {
    let mut warnings = Vec::new();
    if opts.owners {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
            .map_err(|e| fs_err("lchown", path, e))?;
    }
    if opts.xattrs {
        set_xattrs(path, node, &mut warnings, |name, value| {
            xattr::set(path, name, value)
        });
    }
    if node.kind != NodeKind::Symlink {
        // chmod follows symlinks: make sure what is there now isn't one.
        let is_link = std::fs::symlink_metadata(path)
            .map_err(|e| fs_err("lstat", path, e))?
            .file_type()
            .is_symlink();
        if is_link {
            warnings.push(format!(
                "{}: expected a {:?} but found a symlink; mode not set",
                path.display(),
                node.kind
            ));
        } else {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o7777))
                .map_err(|e| fs_err("chmod", path, e))?;
        }
    }
    let t = to_timespec(node.mtime_ns);
    nix::sys::stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| fs_err("utimensat", path, e))?;
    Ok(warnings)
}

/// Sets `node`'s extended attributes with `set`; each failure becomes a warning.
fn set_xattrs(
    path: &Path,
    node: &Node,
    warnings: &mut Vec<String>,
    set: impl Fn(&OsStr, &[u8]) -> io::Result<()>,
) {
    for x in &node.xattrs {
        if let Err(e) = set(OsStr::from_bytes(&x.name), &x.value) {
            warnings.push(format!(
                "{}: cannot set extended attribute {}: {e}",
                path.display(),
                String::from_utf8_lossy(&x.name)
            ));
        }
    }
}

/// [`apply`] for a regular file through an open descriptor of it (`fchown`, `fsetxattr`,
/// `fchmod`, `futimens`): no path is looked up again, so nothing can be swapped in
/// between the steps. Same order and warnings as [`apply`].
pub fn apply_file(
    file: &File,
    path: &Path,
    node: &Node,
    opts: &ApplyOptions,
) -> Result<Vec<String>, FsError> {
    use xattr::FileExt as _;
    let mut warnings = Vec::new();
    if opts.owners {
        std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid))
            .map_err(|e| fs_err("fchown", path, e))?;
    }
    if opts.xattrs {
        set_xattrs(path, node, &mut warnings, |name, value| {
            file.set_xattr(name, value)
        });
    }
    file.set_permissions(std::fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(|e| fs_err("fchmod", path, e))?;
    let t = to_timespec(node.mtime_ns);
    nix::sys::stat::futimens(file.as_raw_fd(), &t, &t)
        .map_err(|e| fs_err("futimens", path, io::Error::from(e)))?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::ffi::OsStringExt;

    const T_NS: i64 = 1_600_000_000_123_456_789;

    fn cap(path: &Path) -> Node {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let name = path.file_name().unwrap().as_bytes().to_vec();
        capture(path, &name, &meta, &UserCache::new()).unwrap()
    }

    fn set_mtime(path: &Path, ns: i64) {
        let t = to_timespec(ns);
        nix::sys::stat::utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    /// Whether the filesystem holding `dir` takes `user.*` xattrs on regular files.
    fn user_xattrs_supported(dir: &Path) -> bool {
        let p = dir.join(".xattr-probe");
        std::fs::write(&p, b"").unwrap();
        let ok = xattr::set(&p, "user.probe", b"1").is_ok();
        std::fs::remove_file(&p).unwrap();
        ok
    }

    /// Makes sure the environment provides `what` (`have`); panics otherwise, so that a test
    /// that cannot run does not pass. (A copy of `holdfast_e2e::require`, which this crate
    /// cannot depend on.) CI runs as root on a filesystem with user xattrs and a tmpfs
    /// /dev/shm, so there every such test runs.
    #[track_caller]
    fn require(have: bool, what: &str) {
        if have {
            return;
        }
        let in_ci =
            matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "0" && v != "false");
        if in_ci {
            panic!("this test did not run: it needs {what}, which CI must provide");
        }
        panic!(
            "this test did not run: it needs {what}, which this environment lacks. Run it \
             where that is available (CI runs the tests as root), or leave it out explicitly \
             (cargo nextest run -E 'not test(NAME)')"
        );
    }

    #[track_caller]
    fn require_user_xattrs(dir: &Path) {
        require(
            user_xattrs_supported(dir),
            &format!(
                "user xattrs on the filesystem of {} (the temporary directory, $TMPDIR)",
                dir.display()
            ),
        );
    }

    #[test]
    fn capture_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        set_mtime(&p, T_NS);
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let n = cap(&p);
        assert_eq!(n.name, b"f");
        assert_eq!(n.kind, NodeKind::File);
        assert_eq!(n.size, 11);
        assert_eq!(n.mode, 0o640);
        assert_eq!(n.mtime_ns, T_NS);
        assert_eq!(n.ctime_ns, to_ns(meta.ctime(), meta.ctime_nsec()));
        assert_eq!((n.uid, n.gid), (meta.uid(), meta.gid()));
        assert_eq!((n.inode, n.device, n.links), (meta.ino(), meta.dev(), 1));
        assert_eq!(n.rdev, 0);
        assert!(n.link_target.is_empty() && n.content.is_empty() && n.subtree.is_none());
        if n.uid == 0 {
            assert_eq!(n.user, "root");
        }
        // Hard links show up in the link count.
        std::fs::hard_link(&p, dir.path().join("g")).unwrap();
        assert_eq!(cap(&p).links, 2);
    }

    #[test]
    fn capture_pre_epoch_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("sub");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1750)).unwrap();
        let before_epoch = -1_500_000_001; // 1.5 s before 1970, not a whole second
        set_mtime(&d, before_epoch);
        let n = cap(&d);
        assert_eq!(n.kind, NodeKind::Dir);
        assert_eq!(n.mode, 0o1750);
        assert_eq!(n.mtime_ns, before_epoch);
        assert_eq!(n.size, 0);
    }

    #[test]
    fn capture_symlinks_keep_exact_target_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &l).unwrap();
        set_mtime(&l, T_NS);
        let n = cap(&l);
        assert_eq!(n.kind, NodeKind::Symlink);
        assert_eq!(n.link_target, target.as_os_str().as_bytes());
        assert_eq!(n.size, target.as_os_str().len() as u64);
        assert_eq!(n.mtime_ns, T_NS);

        // Dangling, with a non-UTF-8 target.
        let raw = vec![b'n', b'o', 0xff, 0xfe, b'/', b'\n', b'x'];
        let d = dir.path().join("dangling");
        std::os::unix::fs::symlink(std::ffi::OsString::from_vec(raw.clone()), &d).unwrap();
        let n = cap(&d);
        assert_eq!(n.kind, NodeKind::Symlink);
        assert_eq!(n.link_target, raw);
        assert_eq!(n.size, raw.len() as u64);
    }

    #[test]
    fn capture_fifo_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fifo");
        nix::unistd::mkfifo(&f, Mode::from_bits_truncate(0o620)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o620)).unwrap();
        set_mtime(&f, T_NS);
        let n = cap(&f);
        assert_eq!(n.kind, NodeKind::Fifo);
        assert_eq!((n.mode, n.size, n.mtime_ns, n.rdev), (0o620, 0, T_NS, 0));

        let s = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&s).unwrap();
        assert_eq!(cap(&s).kind, NodeKind::Socket);
    }

    #[test]
    fn capture_reads_xattrs_sorted() {
        let dir = tempfile::tempdir().unwrap();
        require_user_xattrs(dir.path());
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        xattr::set(&p, "user.zeta", b"last").unwrap();
        xattr::set(&p, "user.alpha", b"\x00\xff binary").unwrap();
        xattr::set(&p, "user.empty", b"").unwrap();
        let user: Vec<Xattr> = cap(&p)
            .xattrs
            .into_iter()
            .filter(|x| x.name.starts_with(b"user."))
            .collect();
        assert_eq!(
            user,
            vec![
                Xattr {
                    name: b"user.alpha".to_vec(),
                    value: b"\x00\xff binary".to_vec()
                },
                Xattr {
                    name: b"user.empty".to_vec(),
                    value: Vec::new()
                },
                Xattr {
                    name: b"user.zeta".to_vec(),
                    value: b"last".to_vec()
                },
            ]
        );
    }

    #[test]
    fn xattr_unsupported_filesystems_do_not_fail_capture() {
        assert!(xattrs_unsupported(&io::Error::from_raw_os_error(
            Errno::EOPNOTSUPP as i32
        )));
        assert!(xattrs_unsupported(&io::Error::from(Errno::ENOTSUP)));
        assert!(!xattrs_unsupported(&io::Error::from(Errno::EACCES)));
        // procfs rejects setting xattrs with EOPNOTSUPP; capturing there must still work.
        let p = Path::new("/proc/self/status");
        if let Ok(meta) = std::fs::symlink_metadata(p) {
            let n = capture(p, b"status", &meta, &UserCache::new()).unwrap();
            assert_eq!(n.kind, NodeKind::File);
            assert!(n.xattrs.is_empty());
        }
    }

    #[test]
    fn capture_missing_entry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let l = dir.path().join("link");
        std::os::unix::fs::symlink("t", &l).unwrap();
        let meta = std::fs::symlink_metadata(&l).unwrap();
        std::fs::remove_file(&l).unwrap();
        let err = capture(&l, b"link", &meta, &UserCache::new()).unwrap_err();
        assert!(err.to_string().starts_with("readlink "), "{err}");
    }

    #[test]
    fn user_cache_names_and_unknown_ids() {
        let users = UserCache::new();
        assert_eq!(users.user(0), "root");
        assert_eq!(users.group(0), "root");
        // Cached answers are the same.
        assert_eq!(users.user(0), "root");
        let unknown = 3_999_999_999;
        assert_eq!(users.user(unknown), "");
        assert_eq!(users.group(unknown), "");
        // Shared across threads.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| assert_eq!(users.user(0), "root"));
            }
        });
    }

    #[test]
    fn apply_round_trips_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let xattrs_ok = user_xattrs_supported(dir.path());
        let a = dir.path().join("a");
        std::fs::write(&a, b"data").unwrap();
        if is_root() {
            std::os::unix::fs::lchown(&a, Some(1234), Some(5678)).unwrap();
        }
        if xattrs_ok {
            xattr::set(&a, "user.note", b"kept\x00").unwrap();
        }
        // After chown, which would clear setuid.
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o4751)).unwrap();
        set_mtime(&a, T_NS);
        let node_a = cap(&a);
        assert_eq!(node_a.mode, 0o4751);
        if is_root() {
            assert_eq!((node_a.uid, node_a.gid), (1234, 5678));
        }

        let b = dir.path().join("b");
        std::fs::write(&b, b"other").unwrap();
        let mut node = node_a.clone();
        node.name = b"b".to_vec();
        let opts = ApplyOptions {
            owners: is_root(),
            xattrs: true,
        };
        let warnings = apply(&b, &node, &opts).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let node_b = cap(&b);
        assert_eq!(node_b.mode, 0o4751);
        assert_eq!((node_b.uid, node_b.gid), (node_a.uid, node_a.gid));
        assert_eq!(node_b.mtime_ns, T_NS);
        assert_eq!(node_b.xattrs, node_a.xattrs);
        if xattrs_ok {
            assert!(node_b
                .xattrs
                .iter()
                .any(|x| x.name == b"user.note" && x.value == b"kept\x00"));
        }

        // Without the options, owners and xattrs are left alone but mode and times are set.
        let c = dir.path().join("c");
        std::fs::write(&c, b"").unwrap();
        let mut plain = node_a.clone();
        plain.mode = 0o600;
        apply(&c, &plain, &ApplyOptions::default()).unwrap();
        let node_c = cap(&c);
        assert_eq!((node_c.mode, node_c.mtime_ns), (0o600, T_NS));
        assert!(node_c.xattrs.iter().all(|x| !x.name.starts_with(b"user.")));
        if is_root() {
            assert_eq!((node_c.uid, node_c.gid), (0, 0));
        }
    }

    #[test]
    fn apply_read_only_mode_after_xattrs() {
        let dir = tempfile::tempdir().unwrap();
        require_user_xattrs(dir.path());
        let p = dir.path().join("ro");
        std::fs::write(&p, b"").unwrap();
        let mut node = cap(&p);
        node.mode = 0o444;
        node.xattrs = vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"1".to_vec(),
        }];
        let w = apply(
            &p,
            &node,
            &ApplyOptions {
                owners: false,
                xattrs: true,
            },
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let got = cap(&p);
        assert_eq!(got.mode, 0o444);
        assert!(got.xattrs.contains(&node.xattrs[0]));
    }

    #[test]
    fn apply_xattr_failures_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        let mut node = cap(&p);
        node.mode = 0o640;
        node.mtime_ns = T_NS;
        // No such namespace, and a name with a NUL byte: neither can be set.
        node.xattrs = vec![
            Xattr {
                name: b"bogus.ns".to_vec(),
                value: b"1".to_vec(),
            },
            Xattr {
                name: b"user.a\0b".to_vec(),
                value: b"1".to_vec(),
            },
        ];
        let w = apply(
            &p,
            &node,
            &ApplyOptions {
                owners: false,
                xattrs: true,
            },
        )
        .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("bogus.ns"), "{w:?}");
        let got = cap(&p);
        assert_eq!((got.mode, got.mtime_ns), (0o640, T_NS));
    }

    #[test]
    fn apply_to_missing_path_fails() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new("gone", NodeKind::File);
        let err = apply(&dir.path().join("gone"), &node, &ApplyOptions::default()).unwrap_err();
        assert!(matches!(err, FsError::Io { .. }));
    }

    #[test]
    fn apply_on_symlink_touches_only_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let target_mtime = 1_000_000_000_000_000_001;
        set_mtime(&target, target_mtime);
        if is_root() {
            std::os::unix::fs::lchown(&target, Some(42), Some(43)).unwrap();
        }

        let l = dir.path().join("link");
        std::os::unix::fs::symlink("target", &l).unwrap();
        let mut node = cap(&l);
        node.mode = 0o755;
        node.mtime_ns = T_NS;
        node.uid = 1234;
        node.gid = 5678;
        apply(
            &l,
            &node,
            &ApplyOptions {
                owners: is_root(),
                xattrs: true,
            },
        )
        .unwrap();

        let link = cap(&l);
        assert_eq!(link.kind, NodeKind::Symlink);
        assert_eq!(link.mtime_ns, T_NS);
        if is_root() {
            assert_eq!((link.uid, link.gid), (1234, 5678));
        }
        let t = cap(&target);
        assert_eq!((t.mode, t.mtime_ns), (0o600, target_mtime));
        if is_root() {
            assert_eq!((t.uid, t.gid), (42, 43));
        }
    }

    #[test]
    fn apply_refuses_chmod_through_an_unexpected_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = dir.path().join("link");
        std::os::unix::fs::symlink("target", &l).unwrap();
        let mut node = Node::new("link", NodeKind::File);
        node.mode = 0o777;
        let w = apply(&l, &node, &ApplyOptions::default()).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(cap(&target).mode, 0o600);
    }

    #[test]
    fn data_ranges_of_a_sparse_file() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.set_len(10 * MIB).unwrap();
        f.seek(SeekFrom::Start(5 * MIB)).unwrap();
        f.write_all(&[0xab; 4096]).unwrap();
        f.sync_all().unwrap();
        f.seek(SeekFrom::Start(123)).unwrap();
        let ranges = data_ranges(&f, 10 * MIB).unwrap();
        assert!(!ranges.is_empty());
        assert!(
            ranges
                .iter()
                .any(|&(o, l)| o <= 5 * MIB && o + l >= 5 * MIB + 4096),
            "data not covered: {ranges:?}"
        );
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert!(total < MIB, "{ranges:?}");
        assert_sane(&ranges, 10 * MIB);
        // The file offset is restored.
        assert_eq!(f.stream_position().unwrap(), 123);
        let mut byte = [0u8; 1];
        f.read_exact(&mut byte).unwrap();
        assert_eq!(byte, [0]);

        // Clipped to a smaller `size`, and nothing past it.
        let clipped = data_ranges(&f, 5 * MIB + 100).unwrap();
        assert_sane(&clipped, 5 * MIB + 100);
        assert_eq!(clipped.last().map(|r| r.0 + r.1), Some(5 * MIB + 100));
        assert_eq!(data_ranges(&f, 4 * MIB).unwrap(), Vec::new());
    }

    #[test]
    fn data_ranges_of_fully_sparse_dense_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("holes");
        let f = File::create(&sparse).unwrap();
        f.set_len(8 << 20).unwrap();
        assert_eq!(data_ranges(&f, 8 << 20).unwrap(), Vec::new());

        let dense = dir.path().join("dense");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8 | 1).collect();
        std::fs::write(&dense, &data).unwrap();
        let f = File::open(&dense).unwrap();
        assert_eq!(
            data_ranges(&f, data.len() as u64).unwrap(),
            vec![(0, data.len() as u64)]
        );

        let empty = dir.path().join("empty");
        let f = File::create(&empty).unwrap();
        assert_eq!(data_ranges(&f, 0).unwrap(), Vec::new());
    }

    #[test]
    fn data_ranges_on_tmpfs_too() {
        // /dev/shm is usually tmpfs, which implements SEEK_DATA differently from ext4.
        let dir = tempfile::tempdir_in("/dev/shm");
        require(dir.is_ok(), "a writable /dev/shm (a tmpfs)");
        let dir = dir.unwrap();
        let p = dir.path().join("s");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.set_len(4 << 20).unwrap();
        f.seek(SeekFrom::Start(2 << 20)).unwrap();
        f.write_all(b"x").unwrap();
        let ranges = data_ranges(&f, 4 << 20).unwrap();
        assert_sane(&ranges, 4 << 20);
        assert!(
            ranges.iter().any(|&(o, l)| o <= 2 << 20 && o + l > 2 << 20),
            "{ranges:?}"
        );
        assert!(
            ranges.iter().map(|r| r.1).sum::<u64>() < 1 << 20,
            "{ranges:?}"
        );
    }

    fn assert_sane(ranges: &[(u64, u64)], size: u64) {
        let mut prev_end = None;
        for &(o, l) in ranges {
            assert!(l > 0, "{ranges:?}");
            assert!(o + l <= size, "{ranges:?}");
            if let Some(p) = prev_end {
                assert!(o > p, "{ranges:?}");
            }
            prev_end = Some(o + l);
        }
    }

    #[test]
    fn create_special_fifo_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let mut node = Node::new("fifo", NodeKind::Fifo);
        node.mode = 0o640;
        node.mtime_ns = T_NS;
        assert!(create_special(&p, &node).unwrap());
        apply(&p, &node, &ApplyOptions::default()).unwrap();
        let got = cap(&p);
        assert_eq!(
            (got.kind, got.mode, got.mtime_ns),
            (NodeKind::Fifo, 0o640, T_NS)
        );
        // Creating over an existing entry fails rather than replacing it.
        assert!(create_special(&p, &node).is_err());

        let s = dir.path().join("sock");
        assert!(!create_special(&s, &Node::new("sock", NodeKind::Socket)).unwrap());
        assert!(std::fs::symlink_metadata(&s).is_err());

        for kind in [NodeKind::File, NodeKind::Dir, NodeKind::Symlink] {
            assert!(create_special(&dir.path().join("x"), &Node::new("x", kind)).is_err());
        }
    }

    #[test]
    fn create_special_char_device() {
        require(is_root(), "root (to create a device node)");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("null");
        let mut node = Node::new("null", NodeKind::CharDevice);
        node.mode = 0o666;
        node.rdev = nix::sys::stat::makedev(1, 3);
        match create_special(&p, &node) {
            Ok(created) => assert!(created),
            // A container without CAP_MKNOD.
            Err(FsError::Io { source, .. })
                if source.raw_os_error() == Some(Errno::EPERM as i32) =>
            {
                require(
                    false,
                    "CAP_MKNOD (mknod of a device node was refused: EPERM)",
                );
            }
            Err(e) => panic!("{e}"),
        }
        apply(&p, &node, &ApplyOptions::default()).unwrap();
        let got = cap(&p);
        assert_eq!(got.kind, NodeKind::CharDevice);
        assert_eq!(got.rdev, node.rdev);
        assert_eq!(
            got.rdev,
            std::fs::metadata("/dev/null")
                .map(|m| m.rdev())
                .unwrap_or(node.rdev)
        );
        assert_eq!(got.mode, 0o666);
    }

    #[test]
    fn time_conversions_do_not_overflow() {
        assert_eq!(to_ns(i64::MAX, 999_999_999), i64::MAX);
        assert_eq!(to_ns(i64::MIN, 0), i64::MIN);
        assert_eq!(to_ns(1, 5), 1_000_000_005);
        let t = to_timespec(-1);
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-1, 999_999_999));
        let t = to_timespec(i64::MIN);
        assert!(t.tv_nsec() >= 0 && t.tv_nsec() < 1_000_000_000);
    }
}
