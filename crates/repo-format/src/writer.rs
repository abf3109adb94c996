//! The write side of a repository as a type. Everything that adds index files or snapshots
//! (a backup, `repair`) holds a [`Writer`]: its session was announced before its view of
//! the index was loaded, that view leaves out packs that are marked for deletion or do not
//! exist, and every index file and snapshot it writes is checked against the session's
//! lease (SPEC.md §12.2). The order that makes concurrent prunes safe is thereby kept by
//! construction, not by the order of calls in each command.

use crate::error::Result;
use crate::gc::Role;
use crate::id::Id;
use crate::index::{IndexFile, MasterIndex};
use crate::repository::Repository;
use crate::session::SessionGuard;
use crate::snapshot::Snapshot;

/// A writer's session and its view of the index. Dropping it ends the session.
pub struct Writer<'r> {
    repo: &'r Repository,
    // Declared before `session`: nothing refers to the index once the session has ended.
    index: MasterIndex,
    session: SessionGuard,
}

impl Repository {
    /// Starts writing: announces a writer session for `host`, then loads the index as a
    /// writer sees it (SPEC.md §12.2, §12.3).
    pub fn begin_write(&self, host: &str) -> Result<Writer<'_>> {
        let session = self.start_session(Role::Writer, host)?;
        let index = self.load_index_for_writing()?;
        Ok(Writer {
            repo: self,
            index,
            session,
        })
    }
}

impl<'r> Writer<'r> {
    /// The repository written to.
    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// The index this writer deduplicates against: blobs in marked or missing packs are
    /// absent from it.
    pub fn index(&self) -> &MasterIndex {
        &self.index
    }

    /// The session, for its lease and times.
    pub fn session(&self) -> &SessionGuard {
        &self.session
    }

    /// Fails with [`crate::Error::LeaseLost`] once the session's lease is lost.
    pub fn check(&self) -> Result<()> {
        self.session.check()
    }

    /// Writes an index file under the lease.
    pub fn save_index(&self, f: &IndexFile) -> Result<Id> {
        self.repo.save_index(&self.session, f)
    }

    /// Writes a snapshot under the lease. Call only after every blob it references is
    /// durable and indexed (SPEC.md §11.2).
    pub fn save_snapshot(&self, s: &Snapshot) -> Result<Id> {
        self.repo.save_snapshot(&self.session, s)
    }
}
