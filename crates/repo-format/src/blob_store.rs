//! The write path for blobs: deduplicate against the index, seal (compress + encrypt),
//! collect into packs, write packs, then write an index file for them (SPEC.md §11).
//!
//! Safe to call from many threads at once. Sealing happens outside any lock; only the
//! short append to the open pack is serialised, and a full pack is written to the backend
//! by the thread that filled it while others go on adding.
//!
//! [`BlobStore::pipelined`] adds a stage of its own: callers (the readers and chunkers)
//! only hash and deduplicate, and hand new blobs over a bounded queue to sealer threads
//! that compress, encrypt, pack and upload. A single large file thus keeps every core
//! busy, and the queue bound keeps memory flat whatever the input.
//!
//! Memory: packs are written to the backend's staging area as blobs arrive (never held
//! whole), each sealer reuses its zstd contexts and output buffer, and chunk buffers go
//! back to a small pool ([`BlobStore::buffer`]) once sealed, so a backup's resident
//! memory is the chunks in flight, not the packs.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use crate::backend::{FileKind, StagedFile};
use crate::blob::{blob_ad, BlobType, Compression, CompressionLevel, SealedParts, Sealer};
use crate::cache::CachedStaged;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{IndexFile, IndexPack, MasterIndex, INDEX_FILE_ENTRIES};
use crate::pack::{FinishedPack, PackWriter};
use crate::repository::Repository;
use crate::writer::Writer;

/// A pack being written to the backend's staging area.
type OpenPack<'a> = PackWriter<Box<dyn StagedFile + 'a>>;

/// Chunk buffers kept for reuse: enough for every chunk in flight (readers, queue,
/// sealers), so that steady state allocates nothing.
const POOL_BUFFERS: usize = 16;

/// Buffers above this capacity (chunks far above the 1 MiB average) are freed rather
/// than kept, so the pool's resident size stays near `POOL_BUFFERS` average chunks.
const POOL_MAX_CAPACITY: usize = 2 * 1024 * 1024 + 256 * 1024;

/// Write an index file after this many packs, so an interrupted long backup leaves most
/// of its uploaded data indexed and reusable by the next run; and at the latest after
/// [`INDEX_FILE_ENTRIES`] blobs (packs of tiny blobs hold 100,000 each), so neither this
/// store nor a later reader holds a huge index file in memory.
const PACKS_PER_INDEX: usize = 64;

/// The blobs a store has added, by full ID, for deduplication within one run: a list in
/// the order added plus a hash table of positions in it. 33 bytes a blob in the list and 5
/// a table slot, where a set of IDs costs 34 a slot (and twice that while it grows): a
/// backup of millions of tiny files holds one entry per file.
#[derive(Default)]
struct AddedBlobs {
    list: Vec<(BlobType, Id)>,
    table: hashbrown::HashTable<u32>,
}

impl AddedBlobs {
    /// Blob IDs are keyed hashes, uniformly distributed: their first bytes are a hash.
    fn hash(ty: BlobType, id: &Id) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&id.0[..8]);
        u64::from_le_bytes(b) ^ ty as u64
    }

    fn contains(&self, ty: BlobType, id: &Id) -> bool {
        self.table
            .find(Self::hash(ty, id), |&i| self.list[i as usize] == (ty, *id))
            .is_some()
    }

    /// Adds a blob; false if it was there already.
    fn insert(&mut self, ty: BlobType, id: Id) -> Result<bool> {
        let list = &self.list;
        let entry = self.table.entry(
            Self::hash(ty, &id),
            |&i| list[i as usize] == (ty, id),
            |&i| {
                let (t, id) = &list[i as usize];
                Self::hash(*t, id)
            },
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(_) => Ok(false),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let pos = u32::try_from(self.list.len()).map_err(|_| Error::Encode {
                    what: "backup",
                    detail: "more than 4 billion new blobs in one run".into(),
                })?;
                v.insert(pos);
                self.list.push((ty, id));
                Ok(true)
            }
        }
    }
}

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

/// Adds blobs to a repository, deduplicating against the writer's index.
pub struct BlobStore<'a> {
    writer: &'a Writer<'a>,
    repo: &'a Repository,
    index: &'a MasterIndex,
    seen: Mutex<AddedBlobs>,
    /// The open pack of each type, created at its first blob.
    open: [Mutex<Option<OpenPack<'a>>>; 2],
    /// Recycled chunk buffers.
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Sealers for blobs added without the pipeline, reused.
    sealers: Mutex<Vec<Sealer>>,
    unindexed: Mutex<Vec<IndexPack>>,
    level: CompressionLevel,
    /// Hand-over queue to the sealer threads, in pipelined mode.
    queue: Option<Sender<Job>>,
    /// Hand-over queue to the upload threads, in pipelined mode.
    uploads: Option<Sender<Upload<'a>>>,
    /// The first error a sealer thread hit; later adds fail with it.
    failure: Mutex<Option<Error>>,
    failed: AtomicBool,
    /// An index file is written once this many packs are unindexed.
    packs_per_index: usize,
    /// What was written.
    pub stats: StoreStats,
}

enum Job {
    Seal(BlobType, Id, Vec<u8>),
    Stop,
}

enum Upload<'a> {
    Pack(FinishedPack<Box<dyn StagedFile + 'a>>),
    Stop,
}

/// Upload threads of a pipelined store: enough to hide a local fsync or a network round
/// trip, few enough that the packs in flight stay within the memory budget.
const UPLOADERS: usize = 2;

fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) {
    for h in handles {
        if let Err(panic) = h.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Final counters of a [`BlobStore`], returned when a pipelined store is finished.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreTotals {
    /// Data blobs written.
    pub data_blobs: u64,
    /// Tree blobs written.
    pub tree_blobs: u64,
    /// Plaintext bytes of written blobs.
    pub raw_bytes: u64,
    /// Stored bytes of written blobs.
    pub stored_bytes: u64,
    /// Packs written.
    pub packs: u64,
}

impl<'a> BlobStore<'a> {
    /// A store that writes for `writer`, treating blobs in its index as present.
    pub fn new(writer: &'a Writer<'a>, level: CompressionLevel) -> Self {
        BlobStore {
            writer,
            repo: writer.repo(),
            index: writer.index(),
            seen: Mutex::new(AddedBlobs::default()),
            open: [Mutex::new(None), Mutex::new(None)],
            buffers: Mutex::new(Vec::new()),
            sealers: Mutex::new(Vec::new()),
            unindexed: Mutex::new(Vec::new()),
            level,
            queue: None,
            uploads: None,
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            packs_per_index: PACKS_PER_INDEX,
            stats: StoreStats::default(),
        }
    }

    /// Writes an index file every `n` packs (at least 1) instead of every 64: for writers
    /// whose interruption should lose less (a copy over a slow link, SPEC.md §11.3).
    pub fn with_packs_per_index(mut self, n: usize) -> Self {
        self.packs_per_index = n.max(1);
        self
    }

    /// Runs `f` with a store whose sealing, packing and uploading happen on `sealers`
    /// threads of their own, fed by a bounded queue; then drains the queue and flushes.
    /// Returns what `f` returned and what was written. Every blob `f` added is durable
    /// and indexed when this returns `Ok`.
    pub fn pipelined<R, E: From<Error>>(
        writer: &'a Writer<'a>,
        level: CompressionLevel,
        sealers: usize,
        f: impl FnOnce(&BlobStore<'a>) -> std::result::Result<R, E>,
    ) -> std::result::Result<(R, StoreTotals), E> {
        let sealers = sealers.max(1);
        let (tx, rx) = crossbeam_channel::bounded(sealers * 2);
        let (utx, urx) = crossbeam_channel::bounded(1);
        let mut store = BlobStore::new(writer, level);
        store.queue = Some(tx);
        store.uploads = Some(utx);
        let out = std::thread::scope(|s| {
            let st = &store;
            let uploaders: Vec<_> = (0..UPLOADERS)
                .map(|_| {
                    let rx: Receiver<Upload<'a>> = urx.clone();
                    s.spawn(move || st.upload_loop(rx))
                })
                .collect();
            let workers: Vec<_> = (0..sealers)
                .map(|_| {
                    let rx: Receiver<Job> = rx.clone();
                    s.spawn(move || st.seal_loop(rx))
                })
                .collect();
            let out = f(st);
            // Drain in pipeline order: sealers first (they may still fill packs), then uploads.
            if let Some(q) = &st.queue {
                for _ in 0..sealers {
                    let _ = q.send(Job::Stop);
                }
            }
            join_all(workers);
            if let Some(q) = &st.uploads {
                for _ in 0..UPLOADERS {
                    let _ = q.send(Upload::Stop);
                }
            }
            join_all(uploaders);
            out
        });
        store.uploads = None;
        let r = out?;
        store.take_failure()?;
        store.flush()?;
        Ok((r, store.totals()))
    }

    fn seal_loop(&self, rx: Receiver<Job>) {
        let mut sealer = match Sealer::new(self.level) {
            Ok(s) => s,
            Err(e) => return self.fail(e),
        };
        while let Ok(job) = rx.recv() {
            match job {
                Job::Stop => break,
                Job::Seal(ty, id, mut data) => {
                    if self.failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = self.seal_and_pack(&mut sealer, ty, id, &mut data) {
                        self.fail(e);
                    }
                    self.recycle(data);
                }
            }
        }
    }

    fn upload_loop(&self, rx: Receiver<Upload<'a>>) {
        while let Ok(job) = rx.recv() {
            match job {
                Upload::Stop => break,
                Upload::Pack(p) => {
                    if self.failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = self.upload(p) {
                        self.fail(e);
                    }
                }
            }
        }
    }

    fn fail(&self, e: Error) {
        self.failed.store(true, Ordering::Relaxed);
        self.failure.lock().expect("lock").get_or_insert(e);
    }

    fn take_failure(&self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            if let Some(e) = self.failure.lock().expect("lock").take() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The counters so far.
    pub fn totals(&self) -> StoreTotals {
        let st = &self.stats;
        StoreTotals {
            data_blobs: st.data_blobs.load(Ordering::Relaxed),
            tree_blobs: st.tree_blobs.load(Ordering::Relaxed),
            raw_bytes: st.raw_bytes.load(Ordering::Relaxed),
            stored_bytes: st.stored_bytes.load(Ordering::Relaxed),
            packs: st.packs.load(Ordering::Relaxed),
        }
    }

    /// A buffer for a chunk: recycled from a sealed one when the pool has one. Its
    /// length and contents are left over from earlier use ([`holdfast_chunker`]'s stream
    /// treats them as scratch).
    pub fn buffer(&self) -> Vec<u8> {
        self.buffers.lock().expect("lock").pop().unwrap_or_default()
    }

    /// Returns a buffer to the pool (or frees it when the pool is full or it is large).
    pub fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY {
            return;
        }
        let mut pool = self.buffers.lock().expect("lock");
        if pool.len() < POOL_BUFFERS {
            pool.push(buf);
        }
    }

    /// Like [`BlobStore::add`], taking ownership so that a pipelined store can hand the
    /// buffer to a sealer thread without copying it; the buffer goes back to the pool
    /// once sealed (or at once when the blob is a duplicate).
    pub fn add_owned(&self, ty: BlobType, id: Id, mut plaintext: Vec<u8>) -> Result<bool> {
        self.take_failure()?;
        if self.index.contains(ty, &id) || !self.seen.lock().expect("lock").insert(ty, id)? {
            self.recycle(plaintext);
            return Ok(false);
        }
        match &self.queue {
            Some(q) => {
                if q.send(Job::Seal(ty, id, plaintext)).is_err() {
                    return Err(Error::Encode {
                        what: "blob",
                        detail: "the sealer threads stopped".into(),
                    });
                }
            }
            None => {
                let pooled = self.sealers.lock().expect("lock").pop();
                let mut sealer = match pooled {
                    Some(s) => s,
                    None => Sealer::new(self.level)?,
                };
                let r = self.seal_and_pack(&mut sealer, ty, id, &mut plaintext);
                self.sealers.lock().expect("lock").push(sealer);
                self.recycle(plaintext);
                if r.is_err() {
                    self.failed.store(true, Ordering::Relaxed);
                }
                r?;
            }
        }
        Ok(true)
    }

    /// The blob ID of a plaintext.
    pub fn id_of(&self, plaintext: &[u8]) -> Id {
        self.repo.key().blob_id(plaintext)
    }

    /// Whether a blob is already stored or being stored by this writer.
    pub fn has(&self, ty: BlobType, id: &Id) -> bool {
        self.index.contains(ty, id) || self.seen.lock().expect("lock").contains(ty, id)
    }

    /// Stores a blob unless it is already present; returns whether it was new.
    pub fn add(&self, ty: BlobType, id: Id, plaintext: &[u8]) -> Result<bool> {
        let mut buf = self.buffer();
        buf.clear();
        buf.extend_from_slice(plaintext);
        self.add_owned(ty, id, buf)
    }

    /// A new pack of `ty` in the backend's staging area (teed into the cache for trees).
    fn new_pack(&self, ty: BlobType) -> Result<OpenPack<'a>> {
        let mut file = self.repo.backend().stage(FileKind::Pack)?;
        if let (Some(cache), BlobType::Tree) = (self.repo.cache(), ty) {
            // The next backup walks these trees: keep them rather than download them.
            file = Box::new(CachedStaged::new(file, cache, FileKind::Pack));
        }
        Ok(PackWriter::new(ty, file))
    }

    /// Seals a new blob (overwriting `plaintext`) and appends it to the open pack of its
    /// type, writing the pack when it is full.
    fn seal_and_pack(
        &self,
        sealer: &mut Sealer,
        ty: BlobType,
        id: Id,
        plaintext: &mut [u8],
    ) -> Result<()> {
        let parts = sealer.seal(self.repo.key(), ty, id, plaintext)?;
        self.pack_sealed(ty, id, &parts)
    }

    /// Stores a blob given as its stored body, the plaintext or its zstd frame as
    /// `compression` says, of a plaintext of `raw_len` bytes whose ID is `id`: it is sealed
    /// under this repository's key without compressing it again. For `copy` between
    /// repositories that share the blob-ID key (the body was opened, and so authenticated
    /// under this ID, from the other repository). Returns whether the blob was new.
    pub fn add_body(
        &self,
        ty: BlobType,
        id: Id,
        compression: Compression,
        raw_len: u32,
        mut body: Vec<u8>,
    ) -> Result<bool> {
        self.take_failure()?;
        if self.index.contains(ty, &id) || !self.seen.lock().expect("lock").insert(ty, id)? {
            return Ok(false);
        }
        let (nonce, tag) = self
            .repo
            .key()
            .seal_in_place(&blob_ad(ty, compression, &id), &mut body);
        let parts = SealedParts {
            compression,
            raw_len,
            nonce,
            body: &body,
            tag,
        };
        let r = self.pack_sealed(ty, id, &parts);
        if r.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        r.map(|()| true)
    }

    /// Appends a sealed blob to the open pack of its type, writing the pack when it is
    /// full.
    fn pack_sealed(&self, ty: BlobType, id: Id, parts: &SealedParts<'_>) -> Result<()> {
        let raw = parts.raw_len as u64;
        let stored = parts.stored_len() as u64;
        let full = {
            let mut slot = self.open[ty as usize].lock().expect("lock");
            let pack = match &mut *slot {
                Some(p) => p,
                None => slot.insert(self.new_pack(ty)?),
            };
            if let Err(e) = pack.add_sealed(id, ty, parts) {
                // The staged file may hold part of the blob: it is dropped, never committed.
                *slot = None;
                return Err(e);
            }
            if pack.size() >= self.repo.config().pack_size as u64 {
                slot.take()
            } else {
                None
            }
        };
        match ty {
            BlobType::Data => &self.stats.data_blobs,
            BlobType::Tree => &self.stats.tree_blobs,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.stats.raw_bytes.fetch_add(raw, Ordering::Relaxed);
        self.stats.stored_bytes.fetch_add(stored, Ordering::Relaxed);
        if let Some(p) = full {
            self.write_pack(p)?;
        }
        Ok(())
    }

    fn write_pack(&self, p: OpenPack<'a>) -> Result<()> {
        if p.is_empty() {
            return Ok(());
        }
        let finished = p.finish(self.repo.key())?;
        if let Some(q) = &self.uploads {
            // Storage latency (fsync, network) is paid on the upload threads.
            return q.send(Upload::Pack(finished)).map_err(|_| Error::Encode {
                what: "pack",
                detail: "the upload threads stopped".into(),
            });
        }
        self.upload(finished)
    }

    fn upload(&self, finished: FinishedPack<Box<dyn StagedFile + 'a>>) -> Result<()> {
        finished.sink.commit(&finished.id)?;
        self.stats.packs.fetch_add(1, Ordering::Relaxed);
        let batch = {
            let mut u = self.unindexed.lock().expect("lock");
            u.push(IndexPack {
                id: finished.id,
                blobs: finished.header.entries,
            });
            let entries: usize = u.iter().map(|p| p.blobs.len()).sum();
            if u.len() >= self.packs_per_index || entries >= INDEX_FILE_ENTRIES {
                Some(std::mem::take(&mut *u))
            } else {
                None
            }
        };
        if let Some(packs) = batch {
            self.writer.save_index(&IndexFile {
                supersedes: vec![],
                packs,
            })?;
        }
        Ok(())
    }

    /// Writes the open packs and an index file for every pack not yet indexed. After this
    /// returns, every blob added is durable and indexed: a snapshot may refer to it.
    pub fn flush(&self) -> Result<()> {
        self.take_failure()?;
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::Encode {
                what: "blob store",
                detail: "an earlier blob could not be stored".into(),
            });
        }
        for ty in [BlobType::Data, BlobType::Tree] {
            let p = self.open[ty as usize].lock().expect("lock").take();
            if let Some(p) = p {
                self.write_pack(p)?;
            }
        }
        let packs = std::mem::take(&mut *self.unindexed.lock().expect("lock"));
        if !packs.is_empty() {
            self.writer.save_index(&IndexFile {
                supersedes: vec![],
                packs,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    proptest! {
        /// Same answers as a set of full IDs, also for IDs that share their first 8 bytes
        /// (the hash) and for the same ID under both types.
        #[test]
        fn added_blobs_behave_like_a_set(
            ops in proptest::collection::vec((any::<bool>(), 0u8..6, any::<u8>(), any::<bool>()), 0..3000)
        ) {
            let mut added = AddedBlobs::default();
            let mut model: HashSet<(BlobType, Id)> = HashSet::new();
            for (tree, prefix, tail, insert) in ops {
                let ty = if tree { BlobType::Tree } else { BlobType::Data };
                let mut id = Id([0; 32]);
                id.0[0] = prefix;
                id.0[31] = tail;
                if insert {
                    prop_assert_eq!(added.insert(ty, id).unwrap(), model.insert((ty, id)));
                } else {
                    prop_assert_eq!(added.contains(ty, &id), model.contains(&(ty, id)));
                }
            }
            prop_assert_eq!(added.list.len(), model.len());
            for (ty, id) in &model {
                prop_assert!(added.contains(*ty, id));
            }
        }
    }
}
