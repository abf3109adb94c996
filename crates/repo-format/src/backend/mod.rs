//! Where repository files are stored. The interface fits object stores: whole immutable
//! objects are written once, read whole or by range, listed by kind, and deleted; there is
//! no rename, append or in-place update (SPEC.md §3).

use std::fmt::Debug;

use crate::error::Result;
use crate::id::Id;

pub mod local;
pub mod throttle;

/// The kinds of stored file, each under its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `config/`: the repository config.
    Config,
    /// `keys/`: key files.
    Key,
    /// `data/XX/`: packs, sharded by the first two hex digits of their name.
    Pack,
    /// `index/`: index files.
    Index,
    /// `snapshots/`: snapshots.
    Snapshot,
    /// `gc/`: garbage-collection markers.
    GcMarker,
    /// `sessions/`: running writers.
    Session,
}

impl FileKind {
    /// Every kind, in the order `init` creates them.
    pub const ALL: [FileKind; 7] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::GcMarker,
        FileKind::Session,
    ];

    /// The directory (prefix) of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::GcMarker => "gc",
            FileKind::Session => "sessions",
        }
    }

    /// Human name for messages.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "key",
            FileKind::Pack => "pack",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshot",
            FileKind::GcMarker => "gc marker",
            FileKind::Session => "session",
        }
    }

    /// Path of a file of this kind relative to the repository root.
    pub fn path(self, id: &Id) -> String {
        let hex = id.to_hex();
        match self {
            FileKind::Pack => format!("data/{}/{}", &hex[..2], hex),
            _ => format!("{}/{}", self.dir(), hex),
        }
    }
}

/// A repository file being written: see [`Backend::stage`].
pub trait StagedFile: Send {
    /// Appends bytes.
    fn write_all(&mut self, bytes: &[u8]) -> Result<()>;
    /// Stores the complete file as `id`, durably, like [`Backend::write`].
    fn commit(self: Box<Self>, id: &Id) -> Result<()>;
}

/// [`Backend::stage`] for backends without a staging area of their own.
struct StagedInMemory<'a, B: ?Sized> {
    backend: &'a B,
    kind: FileKind,
    bytes: Vec<u8>,
}

impl<B: Backend + ?Sized> StagedFile for StagedInMemory<'_, B> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
    fn commit(self: Box<Self>, id: &Id) -> Result<()> {
        self.backend.write(self.kind, id, &self.bytes)
    }
}

/// Storage for a repository. Implementations are shared by many threads.
pub trait Backend: Send + Sync + Debug {
    /// A human-readable location for messages.
    fn location(&self) -> String;
    /// Creates whatever structure a new repository needs (directories, bucket).
    fn create(&self) -> Result<()>;
    /// Every file of a kind, with its size.
    fn list(&self, kind: FileKind) -> Result<Vec<(Id, u64)>>;
    /// A whole file. A missing file is [`crate::Error::Missing`].
    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>>;
    /// `len` bytes at `offset`; a short file is [`crate::Error::Corrupt`].
    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Size of a file.
    fn size(&self, kind: FileKind, id: &Id) -> Result<u64>;
    /// When the storage last wrote a file, by the storage's clock (ns since the epoch):
    /// the one clock every host of a repository shares (SPEC.md §12.2). `None` where the
    /// backend cannot tell. A missing file is [`crate::Error::Missing`].
    fn modified(&self, kind: FileKind, id: &Id) -> Result<Option<i64>> {
        self.size(kind, id).map(|_| None)
    }
    /// Like [`Backend::list`], with each file's [`Backend::modified`] time where the
    /// listing reports it.
    fn list_modified(&self, kind: FileKind) -> Result<Vec<(Id, u64, Option<i64>)>> {
        Ok(self
            .list(kind)?
            .into_iter()
            .map(|(id, size)| (id, size, None))
            .collect())
    }
    /// Stores a complete file. It must become visible under its name only once complete
    /// and durable, and it never replaces a file that exists (create-only: S3
    /// `If-None-Match: *`, a hard link on a filesystem). A name that exists already holds the
    /// same bytes by construction (names are the hash of the bytes, SPEC.md §3.1), so the
    /// write then succeeds without writing, after a cheap check that the stored file has
    /// the same size (and, where the storage reports one, the same MD5); a stored file
    /// that differs is damaged, and the write fails with [`crate::Error::Corrupt`] naming it.
    fn write(&self, kind: FileKind, id: &Id, bytes: &[u8]) -> Result<()>;
    /// Deletes a file; deleting a missing file is not an error. Storage that refuses the
    /// deletion (writer-only credentials) is [`crate::Error::DeleteDenied`].
    fn remove(&self, kind: FileKind, id: &Id) -> Result<()>;
    /// Keeps files that are still in use locked: where the storage gives every write a
    /// retention period (S3 Object Lock), extends the retention of each of `ids` that ends
    /// within half the period to a full period from now, so that live data stays
    /// protected as long as it is live (a prune calls this for everything it keeps).
    /// Returns how many were extended; storage without retention has nothing to do.
    fn extend_retention(&self, kind: FileKind, ids: &[Id]) -> Result<usize> {
        let _ = (kind, ids);
        Ok(0)
    }
    /// Checks, before a prune or forget starts, that these credentials may delete files,
    /// so that a writer-only user fails at once with [`crate::Error::DeleteDenied`] instead
    /// of halfway. Backends that cannot tell without deleting a real file say `Ok`.
    fn check_delete_allowed(&self) -> Result<()> {
        Ok(())
    }
    /// Starts a file of `kind` whose name is known only once it is complete (a pack is
    /// named by its hash): bytes are appended as they are produced, and
    /// [`StagedFile::commit`] makes it visible as [`Backend::write`] would. Dropped
    /// without a commit, it leaves nothing behind. Backends stage in a temporary file;
    /// this default collects the bytes in memory.
    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile + '_>> {
        Ok(Box::new(StagedInMemory {
            backend: self,
            kind,
            bytes: Vec::new(),
        }))
    }
    /// Deletes staging files ([`Backend::stage`]) last written more than `age` ago:
    /// leftovers of writers that were killed. Returns how many went. Only safe when no
    /// writer is running (the caller checks the sessions). Backends whose staging leaves
    /// nothing behind (memory, unnamed temporary files) have nothing to do.
    fn remove_stale_staging(&self, age: std::time::Duration) -> Result<usize> {
        let _ = age;
        Ok(0)
    }
    /// Whether requests go over a network (latency worth hiding with more reads in
    /// flight than there are cores).
    fn is_remote(&self) -> bool {
        false
    }
    /// Deletes several files of one kind, as [`Backend::remove`] does each; backends that
    /// can delete in batches (S3: up to 1000 objects a request) do so.
    fn remove_many(&self, kind: FileKind, ids: &[Id]) -> Result<()> {
        ids.iter().try_for_each(|id| self.remove(kind, id))
    }
}
