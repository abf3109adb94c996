//! The write path for blobs: deduplicate against the index, seal (compress + encrypt),
//! collect into packs, write packs, then write an index file for them (SPEC.md §11).
//!
//! Safe to call from many threads at once. Sealing happens outside any lock; only the
//! short append to the open pack is serialised, and a full pack is written to the backend
//! by the thread that filled it while others go on adding.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::backend::FileKind;
use crate::blob::{seal_blob, BlobType, CompressionLevel};
use crate::error::Result;
use crate::id::Id;
use crate::index::{IndexFile, IndexPack, MasterIndex};
use crate::pack::PackBuilder;
use crate::repository::Repository;

/// Write an index file after this many packs, so an interrupted long backup leaves most
/// of its uploaded data indexed and reusable by the next run.
const PACKS_PER_INDEX: usize = 64;

/// Counters of what a [`BlobStore`] wrote.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Data blobs written.
    pub data_blobs: AtomicU64,
    /// Tree blobs written.
    pub tree_blobs: AtomicU64,
    /// Plaintext bytes of written blobs.
    pub raw_bytes: AtomicU64,
    /// Stored bytes of written blobs.
    pub stored_bytes: AtomicU64,
    /// Packs written.
    pub packs: AtomicU64,
}

/// Adds blobs to a repository, deduplicating against an index loaded before.
pub struct BlobStore<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    seen: Mutex<HashSet<(BlobType, Id)>>,
    open: [Mutex<PackBuilder>; 2],
    unindexed: Mutex<Vec<IndexPack>>,
    level: CompressionLevel,
    /// What was written.
    pub stats: StoreStats,
}

impl<'a> BlobStore<'a> {
    /// A store that writes into `repo`, treating blobs in `index` as present.
    pub fn new(repo: &'a Repository, index: &'a MasterIndex, level: CompressionLevel) -> Self {
        BlobStore {
            repo,
            index,
            seen: Mutex::new(HashSet::new()),
            open: [
                Mutex::new(PackBuilder::new(BlobType::Data)),
                Mutex::new(PackBuilder::new(BlobType::Tree)),
            ],
            unindexed: Mutex::new(Vec::new()),
            level,
            stats: StoreStats::default(),
        }
    }

    /// The blob ID of a plaintext.
    pub fn id_of(&self, plaintext: &[u8]) -> Id {
        self.repo.key().blob_id(plaintext)
    }

    /// Whether a blob is already stored or being stored by this writer.
    pub fn has(&self, ty: BlobType, id: &Id) -> bool {
        self.index.contains(ty, id) || self.seen.lock().expect("lock").contains(&(ty, *id))
    }

    /// Stores a blob unless it is already present; returns whether it was new.
    pub fn add(&self, ty: BlobType, id: Id, plaintext: &[u8]) -> Result<bool> {
        if self.index.contains(ty, &id) || !self.seen.lock().expect("lock").insert((ty, id)) {
            return Ok(false);
        }
        let sealed = match seal_blob(self.repo.key(), ty, id, plaintext, self.level) {
            Ok(s) => s,
            Err(e) => {
                self.seen.lock().expect("lock").remove(&(ty, id));
                return Err(e);
            }
        };
        let stored = sealed.bytes.len() as u64;
        let full = {
            let mut p = self.open[ty as usize].lock().expect("lock");
            p.add(sealed)?;
            if p.size() >= self.repo.config().pack_size as usize {
                Some(std::mem::replace(&mut *p, PackBuilder::new(ty)))
            } else {
                None
            }
        };
        match ty {
            BlobType::Data => &self.stats.data_blobs,
            BlobType::Tree => &self.stats.tree_blobs,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.stats
            .raw_bytes
            .fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        self.stats.stored_bytes.fetch_add(stored, Ordering::Relaxed);
        if let Some(p) = full {
            self.write_pack(p)?;
        }
        Ok(true)
    }

    fn write_pack(&self, p: PackBuilder) -> Result<()> {
        if p.is_empty() {
            return Ok(());
        }
        let finished = p.finish(self.repo.key())?;
        self.repo
            .backend()
            .write(FileKind::Pack, &finished.id, &finished.bytes)?;
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        let batch = {
            let mut u = self.unindexed.lock().expect("lock");
            u.push(IndexPack {
                id: finished.id,
                blobs: finished.header.entries,
            });
            if u.len() >= PACKS_PER_INDEX {
                Some(std::mem::take(&mut *u))
            } else {
                None
            }
        };
        if let Some(packs) = batch {
            self.repo.save_index(&IndexFile {
                supersedes: vec![],
                packs,
            })?;
        }
        Ok(())
    }

    /// Writes the open packs and an index file for every pack not yet indexed. After this
    /// returns, every blob added is durable and indexed: a snapshot may refer to it.
    pub fn flush(&self) -> Result<()> {
        for ty in [BlobType::Data, BlobType::Tree] {
            let p = std::mem::replace(
                &mut *self.open[ty as usize].lock().expect("lock"),
                PackBuilder::new(ty),
            );
            self.write_pack(p)?;
        }
        let packs = std::mem::take(&mut *self.unindexed.lock().expect("lock"));
        if !packs.is_empty() {
            self.repo.save_index(&IndexFile {
                supersedes: vec![],
                packs,
            })?;
        }
        Ok(())
    }
}
