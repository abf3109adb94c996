//! A local copy of the repository files a backup reads again every time: index files,
//! snapshots and packs of trees (issue 3), so an incremental backup over a remote backend
//! downloads nothing it already has.
//!
//! Repository files never change once written and are named by the hash of their stored
//! bytes (SPEC.md §3), so a cached copy is either exactly the file or detectably wrong:
//! every whole file taken from the cache is hashed against its name, and a blob read from
//! a cached pack is authenticated like any blob. A copy that fails either check is deleted
//! and the file is read from the backend again. The cache is best effort: a cache that
//! cannot be written only costs downloads, never an error. Several processes may share it:
//! files appear under their final name only when complete (written to a temporary name,
//! then renamed).
//!
//! Layout: `DIR/<repository id>/<kind dir>/<name>`, kind dirs as in the repository.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::backend::{FileKind, StagedFile};
use crate::id::Id;

/// The cache of one repository.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// The default cache directory: `$XDG_CACHE_HOME/holdfast`, else `$HOME/.cache/holdfast`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("holdfast"));
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty())?;
    Some(PathBuf::from(home).join(".cache").join("holdfast"))
}

impl Cache {
    /// The cache of repository `repo_id` under `base` (created when first written).
    pub fn new(base: &Path, repo_id: &Id) -> Cache {
        Cache {
            dir: base.join(repo_id.to_hex()),
        }
    }

    /// Where this repository's cached files live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: FileKind, id: &Id) -> PathBuf {
        self.dir.join(kind.dir()).join(id.to_hex())
    }

    /// The cached copy of a whole file, if there is one and it hashes to its name; a
    /// damaged copy is deleted.
    pub fn get(&self, kind: FileKind, id: &Id) -> Option<Vec<u8>> {
        let path = self.path(kind, id);
        let bytes = fs::read(&path).ok()?;
        if Id::of_stored_bytes(&bytes) == *id {
            Some(bytes)
        } else {
            tracing::warn!("cached {} {} is damaged; reading it again", kind.name(), id);
            let _ = fs::remove_file(&path);
            None
        }
    }

    /// `len` bytes at `offset` of a cached file, if it is cached and long enough. Not
    /// checked here: the caller authenticates what it reads (a sealed blob), and calls
    /// [`Cache::remove`] if that fails.
    pub fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u64) -> Option<Vec<u8>> {
        let f = fs::File::open(self.path(kind, id)).ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        f.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    }

    /// Whether a file is cached (not checked).
    pub fn contains(&self, kind: FileKind, id: &Id) -> bool {
        self.path(kind, id).is_file()
    }

    /// Keeps a copy of a file whose bytes were checked against its name. Failures are
    /// logged and otherwise ignored: the cache only saves downloads.
    pub fn put(&self, kind: FileKind, id: &Id, bytes: &[u8]) {
        if let Err(e) = self.try_put(kind, id, bytes) {
            tracing::warn!("cannot cache {} {}: {e}", kind.name(), id);
        }
    }

    fn try_put(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(kind, id);
        let dir = path.parent().expect("cache paths have a parent");
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            // Marks the directory as a cache for backup tools that honour the convention
            // (https://bford.info/cachedir/), so backups of a home directory skip it.
            if let Some(base) = self.dir.parent() {
                let tag = base.join("CACHEDIR.TAG");
                if !tag.exists() {
                    fs::write(
                        tag,
                        "Signature: 8a477f597d28d172789f06886806bc55\n\
                         # This file is a cache directory tag created by holdfast.\n",
                    )?;
                }
            }
        }
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Deletes a cached copy (damaged, or gone from the repository).
    pub fn remove(&self, kind: FileKind, id: &Id) {
        let _ = fs::remove_file(self.path(kind, id));
    }

    /// Deletes the cached files of `kind` not in `keep` (gone from the repository), and
    /// leftovers of interrupted writes.
    pub fn retain(&self, kind: FileKind, keep: &HashSet<Id>) {
        let Ok(entries) = fs::read_dir(self.dir.join(kind.dir())) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let keep_it = name
                .to_str()
                .and_then(|n| Id::from_hex(n).ok())
                .is_some_and(|id| keep.contains(&id));
            if !keep_it {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// A staged repository file whose bytes also go into the cache once committed: tree
/// packs a backup writes are what the next backup reads.
pub struct CachedStaged<'a> {
    inner: Box<dyn StagedFile + 'a>,
    cache: &'a Cache,
    kind: FileKind,
    bytes: Vec<u8>,
}

impl<'a> CachedStaged<'a> {
    /// Stages through `inner`, keeping a copy for `cache`.
    pub fn new(inner: Box<dyn StagedFile + 'a>, cache: &'a Cache, kind: FileKind) -> Self {
        CachedStaged {
            inner,
            cache,
            kind,
            bytes: Vec::new(),
        }
    }
}

impl StagedFile for CachedStaged<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> crate::error::Result<()> {
        self.bytes.extend_from_slice(bytes);
        self.inner.write_all(bytes)
    }
    fn commit(self: Box<Self>, id: &Id) -> crate::error::Result<()> {
        self.inner.commit(id)?;
        self.cache.put(self.kind, id, &self.bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_checked_and_damage_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path(), &Id([7; 32]));
        let bytes = b"sealed bytes".to_vec();
        let id = Id::of_stored_bytes(&bytes);
        assert_eq!(c.get(FileKind::Index, &id), None);
        c.put(FileKind::Index, &id, &bytes);
        assert_eq!(c.get(FileKind::Index, &id), Some(bytes.clone()));
        let tag = fs::read_to_string(d.path().join("CACHEDIR.TAG")).unwrap();
        assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"));
        assert_eq!(
            c.read_range(FileKind::Index, &id, 7, 5),
            Some(b"bytes".to_vec())
        );
        assert_eq!(c.read_range(FileKind::Index, &id, 7, 50), None);
        // A flipped byte: not returned, and deleted.
        let path = c.path(FileKind::Index, &id);
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert_eq!(c.get(FileKind::Index, &id), None);
        assert!(!path.exists());
    }

    #[test]
    fn retain_drops_what_the_repository_no_longer_has() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path(), &Id([7; 32]));
        let (a, b) = (b"a".to_vec(), b"b".to_vec());
        let (ia, ib) = (Id::of_stored_bytes(&a), Id::of_stored_bytes(&b));
        c.put(FileKind::Pack, &ia, &a);
        c.put(FileKind::Pack, &ib, &b);
        fs::write(c.dir().join("data").join(".tmpXYZ"), b"partial").unwrap();
        c.retain(FileKind::Pack, &HashSet::from([ia]));
        assert!(c.contains(FileKind::Pack, &ia));
        assert!(!c.contains(FileKind::Pack, &ib));
        assert_eq!(fs::read_dir(c.dir().join("data")).unwrap().count(), 1);
        // A cache that cannot be written is not an error.
        let ro = Cache::new(Path::new("/proc/holdfast-no-such-dir"), &Id([1; 32]));
        ro.put(FileKind::Pack, &ia, &a);
        assert!(!ro.contains(FileKind::Pack, &ia));
    }
}
