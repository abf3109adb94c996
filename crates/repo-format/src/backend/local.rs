//! A repository in a local directory (or any mounted filesystem).
//!
//! Crash safety: a file is written under a temporary name in `tmp/`, synced, hard-linked to
//! its final name (which, unlike a rename, never replaces a file that exists), the temporary
//! name removed, and the directory is synced, so a file under its final name is always
//! complete (SPEC.md §11). Leftover temporary files from a crash are harmless.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Backend, FileKind, StagedFile};
use crate::crypto::random_array;
use crate::error::{Error, Result};
use crate::id::Id;

/// A repository rooted at a directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

impl LocalBackend {
    /// A backend for the repository at `root` (which may not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    fn path(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.root.join(kind.path(id))
    }

    fn not_found(&self, kind: FileKind, id: &Id) -> Error {
        Error::Missing {
            kind: kind.name(),
            name: id.to_string(),
        }
    }

    fn open(&self, kind: FileKind, id: &Id) -> Result<File> {
        let p = self.path(kind, id);
        File::open(&p).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                self.not_found(kind, id)
            } else {
                io("open", &p, e)
            }
        })
    }
}

/// A file written under a temporary name in `tmp/`, renamed into place on commit.
struct LocalStaged<'a> {
    backend: &'a LocalBackend,
    kind: FileKind,
    /// `None` once the commit has begun.
    file: Option<File>,
    tmp: PathBuf,
    /// Whether `tmp` was renamed to its final name.
    renamed: bool,
}

impl StagedFile for LocalStaged<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let f = self
            .file
            .as_mut()
            .expect("a staged file is written before its commit");
        f.write_all(bytes).map_err(|e| io("write", &self.tmp, e))
    }

    fn commit(mut self: Box<Self>, id: &Id) -> Result<()> {
        let f = self.file.take().expect("a staged file is committed once");
        f.sync_all().map_err(|e| io("sync", &self.tmp, e))?;
        let len = f.metadata().map_err(|e| io("stat", &self.tmp, e))?.len();
        drop(f);
        let dest = self.backend.path(self.kind, id);
        let parent = dest.parent().expect("repository paths have a parent");
        // A repository copied without its empty directories (a git checkout, some sync
        // tools) lacks `data/XX`, `sessions/` or `gc/`: made on first use. The staging
        // file exists, so the repository root does too.
        if !parent.exists() {
            fs::create_dir_all(parent).map_err(|e| io("create directory", parent, e))?;
            sync_dir(
                parent
                    .parent()
                    .expect("repository directories have a parent"),
            )?;
            sync_dir(&self.backend.root)?;
        }
        // Create-only (SPEC.md §11.1): a hard link fails where the name exists, which no
        // rename can (rename replaces). Filesystems without hard links get a rename after
        // an existence check; the race between the two can only replace identical bytes.
        let placed = match fs::hard_link(&self.tmp, &dest) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
            Err(e) if links_unsupported(&e) => match fs::symlink_metadata(&dest) {
                Ok(_) => false,
                Err(m) if m.kind() == ErrorKind::NotFound => {
                    fs::rename(&self.tmp, &dest).map_err(|e| io("rename", &dest, e))?;
                    self.renamed = true;
                    true
                }
                Err(m) => return Err(io("stat", &dest, m)),
            },
            Err(e) => return Err(io("link", &dest, e)),
        };
        if !placed {
            // The name exists, so it holds these bytes by construction (names are their
            // hash): nothing to write, once a cheap check agrees.
            let found = fs::metadata(&dest).map_err(|e| io("stat", &dest, e))?.len();
            if found != len {
                return Err(exists_different(self.kind, id, found, len));
            }
        }
        // The temporary name goes (Drop removes it unless it was renamed).
        sync_dir(dest.parent().expect("repository paths have a parent"))
    }
}

/// Whether a hard link failed because the filesystem has none (FAT, some network and FUSE
/// filesystems), not because of the names.
fn links_unsupported(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(nix::libc::EPERM | nix::libc::EOPNOTSUPP | nix::libc::EMLINK | nix::libc::ENOSYS)
        )
}

/// A write found its name taken by a file of another size: the stored file is damaged
/// (its name is the hash of the right bytes), and a write never replaces a file.
pub(crate) fn exists_different(kind: FileKind, id: &Id, found: u64, len: u64) -> Error {
    Error::corrupt(
        kind.name(),
        id,
        format!(
            "already stored with {found} bytes where its name says {len}: the stored file is \
             damaged, and a write never replaces a file; run `holdfast check --read-data`, \
             then `holdfast repair`"
        ),
    )
}

impl Drop for LocalStaged<'_> {
    fn drop(&mut self) {
        // Not committed, or the commit failed before the rename: leave nothing behind.
        if !self.renamed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync directory", dir, e))
}

/// A file's time by the clock of the machine that holds the filesystem, ns since the
/// epoch: when its last byte was written, and for gc markers the later of that and its last
/// status change, which the rename into place sets. A prune stopped between writing a
/// marker's temporary file and renaming it makes the marker visible long after its last
/// write, and for a marker it is the landing that matters (SPEC.md §12.3 sweep step 1).
/// For the other kinds the write is what counts: a session's or a pack's writer started
/// before it.
fn mtime_ns(kind: FileKind, m: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    let written = ns(m.mtime(), m.mtime_nsec());
    match kind {
        FileKind::GcMarker => written.max(ns(m.ctime(), m.ctime_nsec())),
        _ => written,
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        for kind in FileKind::ALL {
            let d = self.root.join(kind.dir());
            fs::create_dir_all(&d).map_err(|e| io("create directory", &d, e))?;
        }
        for i in 0..=255u8 {
            let d = self.root.join("data").join(format!("{i:02x}"));
            fs::create_dir_all(&d).map_err(|e| io("create directory", &d, e))?;
        }
        let t = self.root.join("tmp");
        fs::create_dir_all(&t).map_err(|e| io("create directory", &t, e))?;
        sync_dir(&self.root)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>> {
        Ok(self
            .list_modified(kind)?
            .into_iter()
            .map(|(id, size, _)| (id, size))
            .collect())
    }

    fn list_modified(&self, kind: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>> {
        let base = self.root.join(kind.dir());
        let dirs: Vec<PathBuf> = if kind == FileKind::Pack {
            match fs::read_dir(&base) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect(),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io("list", &base, e)),
            }
        } else {
            vec![base]
        };
        let mut out = Vec::new();
        for d in dirs {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", &d, e)),
            };
            for e in rd {
                let e = e.map_err(|e| io("list", &d, e))?;
                let name = e.file_name();
                // Only canonical names (64 lowercase hex digits) are repository files.
                let Some(id) = name
                    .to_str()
                    .and_then(|n| Id::from_hex(n).ok().filter(|id| id.to_hex() == n))
                else {
                    continue;
                };
                let (size, modified) = match e.metadata() {
                    Ok(m) => (m.len(), Some(mtime_ns(kind, &m))),
                    Err(err) if err.kind() == ErrorKind::NotFound => continue,
                    Err(err) => return Err(io("stat", &e.path(), err)),
                };
                out.push((id, size, modified));
            }
        }
        out.sort();
        Ok(out)
    }

    fn modified(&self, kind: FileKind, id: &Id) -> Result<Option<i64>> {
        let path = self.path(kind, id);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(mtime_ns(kind, &m))),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::Missing {
                kind: kind.name(),
                name: id.to_string(),
            }),
            Err(e) => Err(io("stat", &path, e)),
        }
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let mut f = self.open(kind, id)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| io("read", &self.path(kind, id), e))?;
        Ok(buf)
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u64) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = self.open(kind, id)?;
        let mut buf = vec![0u8; len as usize];
        let mut done = 0usize;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(Error::corrupt(
                        kind.name(),
                        id,
                        format!(
                            "truncated: wanted {len} bytes at offset {offset}, file ends at {}",
                            offset + done as u64
                        ),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io("read", &self.path(kind, id), e)),
            }
        }
        Ok(buf)
    }

    fn size(&self, kind: FileKind, id: &Id) -> Result<u64> {
        let mut f = self.open(kind, id)?;
        f.seek(SeekFrom::End(0))
            .map_err(|e| io("stat", &self.path(kind, id), e))
    }

    fn write(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<()> {
        let mut f = self.stage(kind)?;
        f.write_all(bytes)?;
        f.commit(id)
    }

    fn remove_stale_staging(&self, age: std::time::Duration) -> Result<usize> {
        let dir = self.root.join("tmp");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("list", &dir, e)),
        };
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for e in entries {
            let e = e.map_err(|err| io("list", &dir, err))?;
            let name = e.file_name();
            if !name.to_string_lossy().ends_with(".tmp") {
                continue;
            }
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age));
            if stale {
                match fs::remove_file(e.path()) {
                    Ok(()) => removed += 1,
                    Err(err) if err.kind() == ErrorKind::NotFound => {}
                    Err(err) => return Err(io("delete", &e.path(), err)),
                }
            }
        }
        Ok(removed)
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile + '_>> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.tmp", hex::encode(random_array::<12>())));
        let open = || OpenOptions::new().write(true).create_new(true).open(&tmp);
        let file = match open() {
            // `tmp/` is missing from a repository copied without its empty directories:
            // made here (only inside an existing repository root, never the root itself).
            Err(e) if e.kind() == ErrorKind::NotFound && self.root.join("keys").is_dir() => {
                let dir = self.root.join("tmp");
                match fs::create_dir(&dir) {
                    Ok(()) => sync_dir(&self.root)?,
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io("create directory", &dir, e)),
                }
                open()
            }
            r => r,
        }
        .map_err(|e| io("create", &tmp, e))?;
        Ok(Box::new(LocalStaged {
            backend: self,
            kind,
            file: Some(file),
            tmp,
            renamed: false,
        }))
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        let p = self.path(kind, id);
        match fs::remove_file(&p) {
            // Synced so that a deletion (a removed key above all) survives a power cut.
            Ok(()) => sync_dir(p.parent().expect("repository paths have a parent")),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(Error::DeleteDenied {
                path: p.display().to_string(),
                detail: e.to_string(),
            }),
            Err(e) => Err(io("delete", &p, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository copied without its empty directories (as git keeps it) is written to
    /// as if they were there.
    #[test]
    fn missing_empty_directories_are_made_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        for d in ["tmp", "sessions", "gc", "data"] {
            fs::remove_dir_all(dir.path().join(d)).unwrap();
        }
        for kind in [FileKind::Session, FileKind::GcMarker, FileKind::Pack] {
            let data = format!("{kind:?}").into_bytes();
            let id = Id::of_stored_bytes(&data);
            b.write(kind, &id, &data).unwrap();
            assert_eq!(b.read(kind, &id).unwrap(), data);
        }
        // Never a repository where there is none.
        let none = LocalBackend::new(dir.path().join("absent"));
        assert!(none.write(FileKind::Session, &Id::default(), b"x").is_err());
        assert!(!dir.path().join("absent").exists());
    }

    #[test]
    fn staged_files_appear_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        let tmp_entries = || fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let id = Id::of_stored_bytes(&data);
        let mut f = b.stage(FileKind::Pack).unwrap();
        for piece in data.chunks(7_000) {
            f.write_all(piece).unwrap();
        }
        assert_eq!(
            b.list(FileKind::Pack).unwrap(),
            vec![],
            "visible before the commit"
        );
        assert_eq!(tmp_entries(), 1);
        f.commit(&id).unwrap();
        assert_eq!(b.read(FileKind::Pack, &id).unwrap(), data);
        assert_eq!(tmp_entries(), 0);
        let mut dropped = b.stage(FileKind::Pack).unwrap();
        dropped.write_all(b"never committed").unwrap();
        drop(dropped);
        assert_eq!(tmp_entries(), 0, "an uncommitted file is removed");
        assert_eq!(b.list(FileKind::Pack).unwrap().len(), 1);
    }

    #[test]
    fn stale_staging_files_are_removed_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        let tmp = dir.path().join("tmp");
        let old = tmp.join("aaaa.tmp");
        fs::write(&old, b"left by a killed backup").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        fs::write(tmp.join("bbbb.tmp"), b"being written").unwrap();
        fs::write(tmp.join("not-ours"), b"x").unwrap();
        File::options()
            .write(true)
            .open(tmp.join("not-ours"))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(b.remove_stale_staging(hour).unwrap(), 1);
        assert!(!old.exists());
        assert!(tmp.join("bbbb.tmp").exists(), "a fresh staging file stays");
        assert!(
            tmp.join("not-ours").exists(),
            "only staging files are touched"
        );
        assert_eq!(b.remove_stale_staging(hour).unwrap(), 0);
    }

    /// A write never replaces a file: a name that exists is left as it is (same inode),
    /// and one that holds another size is reported as damaged, not overwritten.
    #[test]
    fn writes_are_create_only() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(d.path());
        b.create().unwrap();
        let id = Id::of_stored_bytes(b"hello");
        b.write(FileKind::Pack, &id, b"hello").unwrap();
        let path = b.path(FileKind::Pack, &id);
        let inode = fs::metadata(&path).unwrap().ino();
        b.write(FileKind::Pack, &id, b"hello").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "replaced");
        // Damaged in place (a shorter file under the name): the write refuses to hide it.
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"hell").unwrap();
        let e = b.write(FileKind::Pack, &id, b"hello").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("already stored with 4 bytes"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"hell", "overwritten");
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn write_read_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(d.path().join("repo"));
        b.create().unwrap();
        let id = Id::of_stored_bytes(b"hello");
        b.write(FileKind::Pack, &id, b"hello").unwrap();
        assert_eq!(b.read(FileKind::Pack, &id).unwrap(), b"hello");
        assert_eq!(b.read_range(FileKind::Pack, &id, 1, 3).unwrap(), b"ell");
        assert!(matches!(
            b.read_range(FileKind::Pack, &id, 3, 5),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(b.list(FileKind::Pack).unwrap(), vec![(id, 5)]);
        assert_eq!(b.size(FileKind::Pack, &id).unwrap(), 5);
        assert!(
            fs::read_dir(d.path().join("repo/tmp"))
                .unwrap()
                .next()
                .is_none(),
            "no temporary file left"
        );
        b.remove(FileKind::Pack, &id).unwrap();
        b.remove(FileKind::Pack, &id).unwrap();
        assert!(matches!(
            b.read(FileKind::Pack, &id),
            Err(Error::Missing { .. })
        ));
    }
}
