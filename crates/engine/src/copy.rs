//! Copying snapshots from one repository into another (`holdfast copy`, SPEC.md §11.3): a
//! second, offsite copy of some or all snapshots, re-encrypted under the target's keys.
//!
//! The copy is a writer of the target (a session with a lease, SPEC.md §12.2). A source
//! snapshot is skipped when the target holds a snapshot of the same identity (its origin,
//! [`Snapshot::origin_or`]). Every other one is copied tree by tree, bottom-up:
//!
//! * When both repositories share the blob-ID key (`init --copy-chunker-params`), blob IDs
//!   are equal: a blob the target has is skipped by ID without being read, and trees are
//!   stored as they are.
//! * Otherwise each data blob is read, decrypted and hashed with the target's blob-ID key;
//!   trees are re-encoded with the translated IDs. The translations are kept in a
//!   [`TranslationMap`] in the local cache, so a later copy (new snapshots, or a copy that
//!   was killed) does not read again a blob whose translated ID the target already has.
//!
//! Memory is bounded by the blobs in flight (`readers` of them) and the maps of blob IDs
//! (about 100 bytes a data blob), never by pack or file sizes. A blob that cannot be read
//! from the source fails its snapshot, naming the snapshot, the path and the blob; the
//! other snapshots are copied.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::{blob_ad, BlobType, CompressionLevel};
use holdfast_repo::blob_store::BlobStore;
use holdfast_repo::crypto::{NONCE_LEN, TAG_LEN};
use holdfast_repo::index::MasterIndex;
use holdfast_repo::pack::PackEntry;
use holdfast_repo::repository::{Repository, SnapshotFilter};
use holdfast_repo::snapshot::{Origin, Snapshot, SnapshotExt};
use holdfast_repo::tree::{ContentRef, Tree};
use holdfast_repo::Id;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::listing::paths_text;

/// What to copy and how; [`CopyRequest::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// Only source snapshots that pass this filter.
    pub filter: SnapshotFilter,
    /// Only these source snapshots (IDs, unique prefixes or `latest`, resolved with the
    /// filter); all that pass the filter if empty.
    pub ids: Vec<String>,
    /// List what would be copied; write nothing.
    pub dry_run: bool,
    /// Host name of the target write session.
    pub host: String,
    /// zstd level for blobs stored in the target.
    pub compression: CompressionLevel,
    /// Base directory of the translation maps (`None`: translations are kept for this run
    /// only).
    pub map_dir: Option<PathBuf>,
    /// Blobs read, translated and stored at the same time.
    pub readers: usize,
    /// An index file every this many packs (backups use 64): a killed copy leaves at most
    /// this many packs unindexed, which the next run sends again.
    pub packs_per_index: usize,
}

impl CopyRequest {
    /// A copy of every source snapshot, with 4 readers and an index file every 8 packs.
    pub fn new() -> CopyRequest {
        CopyRequest {
            filter: SnapshotFilter::default(),
            ids: Vec::new(),
            dry_run: false,
            host: crate::backup::host_name(),
            compression: CompressionLevel::default(),
            map_dir: None,
            readers: 4,
            packs_per_index: 8,
        }
    }
}

impl Default for CopyRequest {
    fn default() -> Self {
        CopyRequest::new()
    }
}

/// Counters a progress display polls while a copy runs.
#[derive(Debug, Default)]
pub struct CopyProgress {
    /// Snapshots finished (copied or failed).
    pub snapshots: AtomicU64,
    /// File bytes gone through (copied or found in the target).
    pub bytes: AtomicU64,
    /// File bytes of the snapshots to copy (their `bytes_total`), known once they are listed.
    pub total: AtomicU64,
}

/// One source snapshot that is (or, in a dry run, would be) copied.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    /// Its ID in the source.
    pub source: Id,
    /// The ID of the copy in the target (`None` in a dry run).
    pub target: Option<Id>,
    /// Snapshot time, RFC 3339.
    pub time: String,
    /// Its host.
    pub host: String,
    /// Its paths.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The repositories share the blob-ID key: no ID translation was needed.
    pub shared_keys: bool,
    /// The snapshots copied (or to copy, in a dry run), oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Snapshots copied.
    pub snapshots_copied: u64,
    /// Source snapshots that passed the filters but the target already holds.
    pub snapshots_skipped: u64,
    /// Snapshots that could not be copied (see `errors`).
    pub snapshots_failed: u64,
    /// Blobs stored in the target.
    pub blobs_copied: u64,
    /// Distinct blobs the copied snapshots need that the target already had.
    pub blobs_skipped: u64,
    /// Stored bytes read from the source (sealed blobs, trees included).
    pub bytes_read: u64,
    /// Stored bytes of the blobs written to the target.
    pub bytes_written: u64,
    /// One message per failed snapshot: snapshot, path, blob and why.
    pub errors: Vec<String>,
}

/// Why one snapshot could not be copied: a source blob could not be read.
#[derive(Debug)]
struct SourceFailure {
    path: String,
    blob: Id,
    error: EngineError,
}

/// A failure while copying one snapshot: of the source (that snapshot fails, the others
/// go on) or of the target (the copy stops).
enum Fail {
    Source(Box<SourceFailure>),
    Target(EngineError),
}

impl From<holdfast_repo::Error> for Fail {
    fn from(e: holdfast_repo::Error) -> Fail {
        Fail::Target(e.into())
    }
}

/// Copies the snapshots `req` selects from `src` into `dst`.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    req: &CopyRequest,
    progress: &CopyProgress,
) -> Result<CopyReport> {
    if src.config().repo_id == dst.config().repo_id {
        return Err(EngineError::Usage(
            "the source and the target are the same repository".into(),
        ));
    }
    let shared_keys = src.key().blob_id == dst.key().blob_id;
    let mut report = CopyReport {
        dry_run: req.dry_run,
        shared_keys,
        ..CopyReport::default()
    };
    // In a real copy the session is announced before the target's snapshots and index are
    // read (SPEC.md §12.2).
    let writer = if req.dry_run {
        None
    } else {
        Some(dst.begin_write(&req.host)?)
    };
    // A copy records its origin (a version-2 snapshot): refused before any blob is sent
    // where the target cannot hold it yet.
    if !dst.has_feature(holdfast_repo::config::SNAPSHOT_V2) {
        return Err(holdfast_repo::Error::FeatureOff {
            feature: holdfast_repo::config::SNAPSHOT_V2.name,
            what: "copied snapshots (they record their origin)".into(),
        }
        .into());
    }
    let src_id = src.config().repo_id;
    let (src_all, _) = src.snapshots()?;
    let chosen: Vec<(Id, Snapshot)> = if req.ids.is_empty() {
        src_all
            .iter()
            .filter(|(_, s)| req.filter.matches(s))
            .cloned()
            .collect()
    } else {
        let mut want = HashSet::new();
        for spec in &req.ids {
            want.insert(src.find_snapshot(spec, &req.filter)?.0);
        }
        src_all
            .iter()
            .filter(|(id, _)| want.contains(id))
            .cloned()
            .collect()
    };
    // Identity of every snapshot in the target → its ID there.
    let (dst_all, _) = dst.snapshots()?;
    let dst_repo = dst.config().repo_id;
    let mut in_target: HashMap<Origin, Id> = dst_all
        .iter()
        .map(|(id, s)| (s.origin_or(dst_repo, *id), *id))
        .collect();
    let identity_in_src: HashMap<Id, Origin> = src_all
        .iter()
        .map(|(id, s)| (*id, s.origin_or(src_id, *id)))
        .collect();
    let mut todo = Vec::new();
    for (id, s) in chosen {
        if in_target.contains_key(&s.origin_or(src_id, id)) {
            report.snapshots_skipped += 1;
        } else {
            todo.push((id, s));
        }
    }
    todo.sort_by_key(|(_, s)| s.time_ns);
    progress.total.store(
        todo.iter().map(|(_, s)| s.summary.bytes_total).sum(),
        Ordering::Relaxed,
    );
    let entry = |id: Id, s: &Snapshot, target: Option<Id>| CopiedSnapshot {
        source: id,
        target,
        time: crate::listing::format_time(s.time_ns, s.utc_offset_s),
        host: s.host.clone(),
        paths: paths_text(&s.paths),
        tags: s.tags.clone(),
    };
    let Some(writer) = writer else {
        report.copied = todo.iter().map(|(id, s)| entry(*id, s, None)).collect();
        return Ok(report);
    };
    if todo.is_empty() {
        return Ok(report);
    }
    let src_index = src.load_index()?;
    let map = match &req.map_dir {
        Some(dir) if !shared_keys => Some(TranslationMap::open(dir, src, dst)?),
        _ => None,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.readers.max(1))
        .thread_name(|i| format!("copy-{i}"))
        .build()
        .map_err(|e| EngineError::Usage(format!("cannot start reader threads: {e}")))?;
    let store = BlobStore::new(&writer, req.compression).with_packs_per_index(req.packs_per_index);
    let copier = Copier {
        src,
        dst,
        src_index: &src_index,
        store: &store,
        shared_keys,
        map,
        run: Mutex::new(HashMap::new()),
        trees: Mutex::new(HashMap::new()),
        counts: Counts::default(),
        progress,
    };
    for (id, s) in &todo {
        let root = pool.install(|| copier.tree(s.tree, "/"));
        let root = match root {
            Ok(t) => t,
            Err(Fail::Target(e)) => return Err(e),
            Err(Fail::Source(f)) => {
                report.snapshots_failed += 1;
                report.errors.push(format!(
                    "snapshot {} not copied: {}: blob {}: {}",
                    id.short(),
                    f.path,
                    f.blob,
                    error_chain(&f.error)
                ));
                progress.snapshots.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        // Everything the snapshot references is durable and indexed before it is written.
        store.flush()?;
        copier.save_map()?;
        let parent = s
            .parent
            .and_then(|p| identity_in_src.get(&p))
            .and_then(|o| in_target.get(o))
            .copied();
        let origin = s.origin_or(src_id, *id);
        let copy = Snapshot {
            tree: root,
            parent,
            ext: SnapshotExt {
                host_seq: s.ext.host_seq,
                origin: Some(origin),
                unknown: s.ext.unknown.clone(),
            },
            ..s.clone()
        };
        let new_id = writer.save_snapshot(&copy)?;
        in_target.insert(origin, new_id);
        report.snapshots_copied += 1;
        report.copied.push(entry(*id, s, Some(new_id)));
        progress.snapshots.fetch_add(1, Ordering::Relaxed);
    }
    store.flush()?;
    copier.save_map()?;
    let c = &copier.counts;
    let totals = store.totals();
    report.blobs_copied = totals.data_blobs + totals.tree_blobs;
    report.blobs_skipped = c.skipped.load(Ordering::Relaxed);
    report.bytes_read = c.read.load(Ordering::Relaxed);
    report.bytes_written = totals.stored_bytes;
    Ok(report)
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[derive(Default)]
struct Counts {
    /// Distinct blobs the target had.
    skipped: AtomicU64,
    /// Stored bytes read from the source.
    read: AtomicU64,
}

/// The state of one copy run.
struct Copier<'a, 's> {
    src: &'a Repository,
    dst: &'a Repository,
    src_index: &'a MasterIndex,
    store: &'a BlobStore<'s>,
    shared_keys: bool,
    /// Persistent translations of data blob IDs (only without shared keys).
    map: Option<TranslationMap>,
    /// Data blobs handled in this run: source ID → target ID.
    run: Mutex<HashMap<Id, Id>>,
    /// Trees copied in this run: source ID → target ID.
    trees: Mutex<HashMap<Id, Id>>,
    counts: Counts,
    progress: &'a CopyProgress,
}

impl Copier<'_, '_> {
    /// Reads a source blob, counting the bytes read.
    fn read(&self, ty: BlobType, id: &Id, path: &str) -> Result<Vec<u8>, Fail> {
        let stored = self
            .src_index
            .get(ty, id)
            .map_or(0, |l| l.entry.stored_len as u64);
        let plain = self.src.read_blob(self.src_index, ty, id).map_err(|e| {
            Fail::Source(Box::new(SourceFailure {
                path: path.to_string(),
                blob: *id,
                error: e.into(),
            }))
        })?;
        self.counts.read.fetch_add(stored, Ordering::Relaxed);
        Ok(plain)
    }

    /// Reads a source data blob's stored body (its plaintext or zstd frame, decrypted and
    /// authenticated under its ID, not decompressed), counting the bytes read.
    fn read_body(&self, id: &Id, path: &str) -> Result<(PackEntry, Vec<u8>), Fail> {
        let fail = |error: holdfast_repo::Error| {
            Fail::Source(Box::new(SourceFailure {
                path: path.to_string(),
                blob: *id,
                error: error.into(),
            }))
        };
        let loc = self
            .src_index
            .get(BlobType::Data, id)
            .ok_or(holdfast_repo::Error::BlobNotIndexed(*id))
            .map_err(fail)?;
        let e = loc.entry;
        let mut buf = self
            .src
            .backend()
            .read_range(
                FileKind::Pack,
                &loc.pack,
                e.offset as u64,
                e.stored_len as u64,
            )
            .map_err(fail)?;
        if buf.len() != e.stored_len as usize
            || !self
                .src
                .key()
                .open_in_place(&blob_ad(BlobType::Data, e.compression, id), &mut buf)
        {
            return Err(fail(holdfast_repo::Error::corrupt(
                "blob",
                id,
                format!("cannot be authenticated (in pack {})", loc.pack),
            )));
        }
        self.counts
            .read
            .fetch_add(e.stored_len as u64, Ordering::Relaxed);
        buf.truncate(buf.len() - TAG_LEN);
        buf.drain(..NONCE_LEN);
        Ok((e, buf))
    }

    /// The raw length of a source data blob, for progress.
    fn raw_len(&self, id: &Id) -> u64 {
        self.src_index
            .get(BlobType::Data, id)
            .map_or(0, |l| l.entry.raw_len as u64)
    }

    /// The target ID of source data blob `id`, storing the blob in the target unless it
    /// is there.
    fn data(&self, id: Id, path: &str) -> Result<Id, Fail> {
        if let Some(t) = self.run.lock().expect("lock").get(&id) {
            return Ok(*t);
        }
        let known = if self.shared_keys {
            Some(id)
        } else {
            self.map.as_ref().and_then(|m| m.get(&id))
        };
        let target = match known {
            Some(t) if self.store.has(BlobType::Data, &t) => {
                self.counts.skipped.fetch_add(1, Ordering::Relaxed);
                t
            }
            _ if self.shared_keys => {
                // Same ID in both: the stored body is sealed again as it is, without
                // decompressing and compressing it again.
                let (entry, body) = self.read_body(&id, path)?;
                if !self.store.add_body(
                    BlobType::Data,
                    id,
                    entry.compression,
                    entry.raw_len,
                    body,
                )? {
                    self.counts.skipped.fetch_add(1, Ordering::Relaxed);
                }
                id
            }
            _ => {
                let plain = self.read(BlobType::Data, &id, path)?;
                let t = if self.shared_keys {
                    id
                } else {
                    self.dst.key().blob_id(&plain)
                };
                if let Some(m) = &self.map {
                    m.insert(id, t);
                }
                if !self.store.add_owned(BlobType::Data, t, plain)? {
                    self.counts.skipped.fetch_add(1, Ordering::Relaxed);
                }
                t
            }
        };
        self.run.lock().expect("lock").insert(id, target);
        Ok(target)
    }

    /// Copies source tree `id` (recorded at `path`) and everything below it; returns the
    /// target's ID of the tree.
    fn tree(&self, id: Id, path: &str) -> Result<Id, Fail> {
        if let Some(t) = self.trees.lock().expect("lock").get(&id) {
            return Ok(*t);
        }
        let plain = self.read(BlobType::Tree, &id, path)?;
        let mut tree = Tree::decode(&plain).map_err(|e| {
            Fail::Source(Box::new(SourceFailure {
                path: path.to_string(),
                blob: id,
                error: holdfast_repo::Error::decode("tree", id, e).into(),
            }))
        })?;
        let child = |name: &[u8]| {
            let n = String::from_utf8_lossy(name);
            if path.ends_with('/') {
                format!("{path}{n}")
            } else {
                format!("{path}/{n}")
            }
        };
        // The data blobs of this directory's files, each once, in parallel.
        let mut work: Vec<(Id, usize)> = Vec::new();
        let mut seen = HashSet::new();
        for (i, node) in tree.nodes.iter().enumerate() {
            for r in &node.content {
                if let ContentRef::Blob(b) = r {
                    if seen.insert(*b) {
                        work.push((*b, i));
                    }
                }
            }
        }
        let translated: Vec<(Id, Id)> = work
            .par_iter()
            .map(|(b, i)| {
                let t = self.data(*b, &child(&tree.nodes[*i].name))?;
                self.progress
                    .bytes
                    .fetch_add(self.raw_len(b), Ordering::Relaxed);
                Ok((*b, t))
            })
            .collect::<Result<_, Fail>>()?;
        let translated: HashMap<Id, Id> = translated.into_iter().collect();
        for node in &mut tree.nodes {
            for r in &mut node.content {
                if let ContentRef::Blob(b) = r {
                    *b = translated[b];
                }
            }
        }
        // Subtrees before their parent (SPEC.md §8.1).
        for node in &mut tree.nodes {
            if let Some(sub) = node.subtree {
                let p = child(&node.name);
                node.subtree = Some(self.tree(sub, &p)?);
            }
        }
        let target = if self.shared_keys {
            // Same IDs: the tree's encoding is unchanged.
            self.store.add_owned(BlobType::Tree, id, plain)?;
            id
        } else {
            let bytes = tree.encode().map_err(|e| holdfast_repo::Error::Encode {
                what: "tree",
                detail: e.to_string(),
            })?;
            let t = self.dst.key().blob_id(&bytes);
            self.store.add_owned(BlobType::Tree, t, bytes)?;
            t
        };
        self.trees.lock().expect("lock").insert(id, target);
        Ok(target)
    }

    /// Appends the translations found since the last call to the map file.
    fn save_map(&self) -> Result<()> {
        if let Some(m) = &self.map {
            m.save()?;
        }
        Ok(())
    }
}

/// Source → target data blob IDs for one pair of repositories, kept in a local file so
/// that later copies need not read a blob again to learn its target ID.
///
/// The file (`<dir>/copy/<source repo ID>-<target repo ID>.map`) is a sequence of records,
/// each `length u32 LE ‖ sealed(target encryption key, ad, n × (source ID ‖ target ID))`:
/// appended, never rewritten, and sealed so that the IDs stay as private as inside the
/// repository. A torn or damaged record at the end (a killed copy) ends the map there; it
/// is cut off at the next save. A translation is true whatever the target holds, so a
/// record may be written before the blob is durable: the copy checks the target's index
/// before it skips a blob.
pub struct TranslationMap {
    path: PathBuf,
    key: [u8; 32],
    ad: Vec<u8>,
    /// The translations known: loaded and new.
    known: Mutex<HashMap<Id, Id>>,
    /// New translations, not yet written.
    pending: Mutex<Vec<(Id, Id)>>,
    /// Length of the intact part of the file.
    good_len: Mutex<u64>,
    /// When pending translations were last written.
    saved: Mutex<Instant>,
}

/// Pairs per record: a record is appended every time this many are pending, a second after
/// the last one, and when the copy finishes a snapshot.
const MAP_RECORD_PAIRS: usize = 256;

/// Pending translations are written at least this often, so a killed copy loses few.
const MAP_SAVE_INTERVAL: Duration = Duration::from_secs(1);

impl TranslationMap {
    /// Opens (or starts) the map of `src` → `dst` under `dir`.
    pub fn open(dir: &Path, src: &Repository, dst: &Repository) -> Result<TranslationMap> {
        let (s, d) = (src.config().repo_id, dst.config().repo_id);
        let path = dir.join("copy").join(format!("{s}-{d}.map"));
        let mut ad = b"holdfast copy map v1\0".to_vec();
        ad.extend_from_slice(&s.0);
        ad.extend_from_slice(&d.0);
        let map = TranslationMap {
            path,
            key: dst.key().encryption,
            ad,
            known: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            good_len: Mutex::new(0),
            saved: Mutex::new(Instant::now()),
        };
        map.load()?;
        Ok(map)
    }

    fn io(&self, op: &'static str, e: std::io::Error) -> EngineError {
        holdfast_repo::Error::Io {
            op,
            path: self.path.display().to_string(),
            source: e,
        }
        .into()
    }

    fn load(&self) -> Result<()> {
        let mut bytes = Vec::new();
        match File::open(&self.path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes).map_err(|e| self.io("read", e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("open", e)),
        }
        let mut known = self.known.lock().expect("lock");
        let mut pos = 0usize;
        while bytes.len() - pos >= 4 {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let Some(sealed) = bytes.get(pos + 4..pos + 4 + len) else {
                break;
            };
            let Some(plain) = holdfast_repo::crypto::open(&self.key, &self.ad, sealed) else {
                break;
            };
            if plain.len() % 64 != 0 {
                break;
            }
            for pair in plain.chunks_exact(64) {
                let mut a = Id([0; 32]);
                let mut b = Id([0; 32]);
                a.0.copy_from_slice(&pair[..32]);
                b.0.copy_from_slice(&pair[32..]);
                known.insert(a, b);
            }
            pos += 4 + len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                "translation map {}: {} damaged bytes at the end are dropped",
                self.path.display(),
                bytes.len() - pos
            );
        }
        *self.good_len.lock().expect("lock") = pos as u64;
        Ok(())
    }

    /// The number of translations known.
    pub fn len(&self) -> usize {
        self.known.lock().expect("lock").len()
    }

    /// Whether no translation is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The target ID of source data blob `id`, if known.
    pub fn get(&self, id: &Id) -> Option<Id> {
        self.known.lock().expect("lock").get(id).copied()
    }

    /// Records a translation; it is written with the next record.
    pub fn insert(&self, src: Id, dst: Id) {
        let fresh = self.known.lock().expect("lock").insert(src, dst).is_none();
        if fresh {
            let full = {
                let mut p = self.pending.lock().expect("lock");
                p.push((src, dst));
                p.len() >= MAP_RECORD_PAIRS
                    || self.saved.lock().expect("lock").elapsed() >= MAP_SAVE_INTERVAL
            };
            if full {
                // A failed write only costs reading those blobs again next time.
                if let Err(e) = self.save() {
                    tracing::warn!("{e}");
                }
            }
        }
    }

    /// Appends the pending translations as one record.
    pub fn save(&self) -> Result<()> {
        *self.saved.lock().expect("lock") = Instant::now();
        let pairs = std::mem::take(&mut *self.pending.lock().expect("lock"));
        if pairs.is_empty() {
            return Ok(());
        }
        let mut plain = Vec::with_capacity(pairs.len() * 64);
        for (a, b) in &pairs {
            plain.extend_from_slice(&a.0);
            plain.extend_from_slice(&b.0);
        }
        let sealed = holdfast_repo::crypto::seal(&self.key, &self.ad, &plain);
        let mut rec = (sealed.len() as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&sealed);
        let mut good = self.good_len.lock().expect("lock");
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).map_err(|e| self.io("create", e))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io("open", e))?;
        // A torn record from a killed run is cut off before appending after it.
        let len = f.metadata().map_err(|e| self.io("stat", e))?.len();
        if len != *good {
            f.set_len(*good).map_err(|e| self.io("truncate", e))?;
        }
        f.write_all(&rec).map_err(|e| self.io("write", e))?;
        *good += rec.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use holdfast_repo::backend::local::LocalBackend;
    use holdfast_repo::repository::InitOptions;

    use super::*;
    use crate::archiver::BackupProgress;
    use crate::backup::{self, BackupRequest, ParentChoice, Source};
    use crate::restorer;
    use crate::testing::repo;

    fn backup(r: &Repository, dir: &Path, t: i64) -> Id {
        let req = BackupRequest {
            host: "h".into(),
            user: "u".into(),
            time_ns: t,
            utc_offset_s: 0,
            parent: ParentChoice::Auto,
            ..BackupRequest::new(vec![Source::new(dir)])
        };
        backup::run(r, &req, &BackupProgress::default())
            .unwrap()
            .snapshot_id
    }

    fn fill(dir: &Path, gen: u8) {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), format!("alpha {gen}")).unwrap();
        // Incompressible (xorshift), so that reading it shows in the byte counts.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut big: Vec<u8> = (0..3_000_000u32)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        big[gen as usize] = gen;
        std::fs::write(dir.join("sub/big.bin"), big).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
    }

    fn req(map: &Path) -> CopyRequest {
        CopyRequest {
            map_dir: Some(map.to_path_buf()),
            host: "copier".into(),
            ..CopyRequest::new()
        }
    }

    /// The files restored from a repository's newest snapshot of the source dir.
    fn restored(r: &Repository, id: &Id, to: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let snap = r.load_snapshot(id).unwrap();
        let opts = restorer::RestoreOptions {
            target: to.to_path_buf(),
            subpath: None,
            includes: Default::default(),
            excludes: Default::default(),
            owners: false,
        };
        restorer::restore_snapshot(r, *id, &snap, &opts, &Default::default()).unwrap();
        let mut out = Vec::new();
        walk(to, &mut out);
        out.sort();
        out.into_iter()
            .map(|p| {
                (
                    p.strip_prefix(to).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    }

    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }

    fn files(dir: &Path, kind: &str) -> usize {
        let mut v = Vec::new();
        if dir.join(kind).exists() {
            walk(&dir.join(kind), &mut v);
        }
        v.len()
    }

    #[test]
    fn copies_translate_ids_skip_copied_snapshots_and_keep_origin() {
        let d = tempfile::tempdir().unwrap();
        let src = repo(&d.path().join("src"));
        let dst = repo(&d.path().join("dst"));
        let data = d.path().join("data");
        fill(&data, 1);
        let s1 = backup(&src, &data, 1_000);
        fill(&data, 2);
        let s2 = backup(&src, &data, 2_000);
        let map = d.path().join("map");
        let r = copy(&src, &dst, &req(&map), &CopyProgress::default()).unwrap();
        assert!(!r.shared_keys);
        assert_eq!((r.snapshots_copied, r.snapshots_skipped), (2, 0), "{r:?}");
        assert!(r.blobs_copied > 0 && r.bytes_read > 0 && r.bytes_written > 0);
        // The copies: origin, host_seq, parent translated, other fields kept.
        let (all, _) = dst.snapshots().unwrap();
        assert_eq!(all.len(), 2);
        let src_repo = src.config().repo_id;
        let (c1, c2) = (&all[0], &all[1]);
        assert_eq!(c1.1.ext.origin.unwrap().snapshot, s1);
        assert_eq!(c2.1.ext.origin.unwrap().snapshot, s2);
        assert_eq!(c2.1.ext.origin.unwrap().repo_id, src_repo);
        assert_eq!(c2.1.parent, Some(c1.0));
        let orig = src.load_snapshot(&s2).unwrap();
        assert_eq!(c2.1.ext.host_seq, orig.ext.host_seq);
        assert_eq!(
            (c2.1.time_ns, &c2.1.host, &c2.1.paths, &c2.1.summary),
            (orig.time_ns, &orig.host, &orig.paths, &orig.summary)
        );
        assert_ne!(c2.1.tree, orig.tree, "IDs are translated under another key");
        assert_eq!(
            restored(&src, &s2, &d.path().join("r1")),
            restored(&dst, &c2.0, &d.path().join("r2"))
        );
        // A second copy sends nothing and writes no file into data/ or index/.
        let before = (
            files(&d.path().join("dst"), "data"),
            files(&d.path().join("dst"), "index"),
        );
        let r = copy(&src, &dst, &req(&map), &CopyProgress::default()).unwrap();
        assert_eq!(
            (r.snapshots_copied, r.snapshots_skipped, r.blobs_copied),
            (0, 2, 0)
        );
        assert_eq!(r.bytes_read, 0);
        assert_eq!(
            before,
            (
                files(&d.path().join("dst"), "data"),
                files(&d.path().join("dst"), "index")
            )
        );
        // A copy of a copy keeps the first origin: copying back to the source skips both.
        let r = copy(&dst, &src, &req(&map), &CopyProgress::default()).unwrap();
        assert_eq!((r.snapshots_copied, r.snapshots_skipped), (0, 2));
    }

    #[test]
    fn the_map_spares_reading_blobs_the_target_has() {
        let d = tempfile::tempdir().unwrap();
        let src = repo(&d.path().join("src"));
        let dst = repo(&d.path().join("dst"));
        let data = d.path().join("data");
        fill(&data, 1);
        backup(&src, &data, 1_000);
        let map = d.path().join("map");
        let first = copy(&src, &dst, &req(&map), &CopyProgress::default()).unwrap();
        // A new snapshot that changes one small file: only its blob and the trees are read.
        std::fs::write(data.join("a.txt"), b"changed").unwrap();
        backup(&src, &data, 2_000);
        let m = TranslationMap::open(&map, &src, &dst).unwrap();
        assert!(!m.is_empty());
        let second = copy(&src, &dst, &req(&map), &CopyProgress::default()).unwrap();
        assert_eq!(second.snapshots_copied, 1);
        assert!(
            second.bytes_read * 10 < first.bytes_read,
            "{} vs {}",
            second.bytes_read,
            first.bytes_read
        );
        // Without the map every blob must be read again to learn its target ID.
        std::fs::write(data.join("a.txt"), b"changed again").unwrap();
        backup(&src, &data, 3_000);
        let mut no_map = req(&map);
        no_map.map_dir = None;
        let third = copy(&src, &dst, &no_map, &CopyProgress::default()).unwrap();
        assert!(third.bytes_read * 2 > first.bytes_read);
        assert!(third.blobs_copied < first.blobs_copied, "{third:?}");
    }

    #[test]
    fn a_torn_map_record_is_dropped_and_cut_off() {
        let d = tempfile::tempdir().unwrap();
        let src = repo(&d.path().join("src"));
        let dst = repo(&d.path().join("dst"));
        let m = TranslationMap::open(d.path(), &src, &dst).unwrap();
        m.insert(Id([1; 32]), Id([2; 32]));
        m.save().unwrap();
        let path = m.path.clone();
        let good = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[200, 0, 0, 0, 9, 9])
            .unwrap();
        let m = TranslationMap::open(d.path(), &src, &dst).unwrap();
        assert_eq!(m.get(&Id([1; 32])), Some(Id([2; 32])));
        m.insert(Id([3; 32]), Id([4; 32]));
        m.save().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > good);
        let m = TranslationMap::open(d.path(), &src, &dst).unwrap();
        assert_eq!((m.len(), m.get(&Id([3; 32]))), (2, Some(Id([4; 32]))));
        // Another target's key cannot read it: a different repository pair has its own.
        let other = repo(&d.path().join("other"));
        assert!(TranslationMap::open(d.path(), &src, &other)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_missing_pack_fails_only_its_snapshot_naming_path_and_blob() {
        let d = tempfile::tempdir().unwrap();
        let src = repo(&d.path().join("src"));
        let dst = repo(&d.path().join("dst"));
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("lost.bin"), vec![5u8; 100_000]).unwrap();
        std::fs::write(b.join("kept.bin"), vec![6u8; 100_000]).unwrap();
        let sa = backup(&src, &a, 1_000);
        backup(&src, &b, 2_000);
        // Delete the data pack of a's file.
        let index = src.load_index().unwrap();
        let tree = src
            .load_tree(&index, &src.load_snapshot(&sa).unwrap().tree)
            .unwrap();
        let mut t = tree;
        let lost = loop {
            let n = &t.nodes[0];
            match n.subtree {
                Some(s) => t = src.load_tree(&index, &s).unwrap(),
                None => break n.content[0],
            }
        };
        let ContentRef::Blob(lost) = lost else {
            panic!("a blob")
        };
        let pack = index.get(BlobType::Data, &lost).unwrap().pack;
        src.backend().remove(FileKind::Pack, &pack).unwrap();
        let r = copy(
            &src,
            &dst,
            &req(&d.path().join("map")),
            &CopyProgress::default(),
        )
        .unwrap();
        assert_eq!((r.snapshots_copied, r.snapshots_failed), (1, 1), "{r:?}");
        let msg = &r.errors[0];
        assert!(msg.contains(&sa.short()), "{msg}");
        assert!(msg.contains("lost.bin"), "{msg}");
        assert!(msg.contains(&lost.to_string()), "{msg}");
    }

    #[test]
    fn shared_keys_need_no_translation_and_dedup_with_own_backups() {
        let d = tempfile::tempdir().unwrap();
        let src = repo(&d.path().join("src"));
        let mut key = holdfast_repo::crypto::MasterKey::generate();
        key.blob_id = src.key().blob_id;
        key.chunker = src.key().chunker;
        let opts = InitOptions {
            chunk: (
                src.config().chunk_min,
                src.config().chunk_avg,
                src.config().chunk_max,
            ),
            ..crate::testing::init_options()
        };
        let dst = Repository::init_with_key(
            Arc::new(LocalBackend::new(d.path().join("dst"))),
            b"pw",
            &opts,
            key,
        )
        .unwrap();
        assert_ne!(dst.key().encryption, src.key().encryption);
        let data = d.path().join("data");
        fill(&data, 1);
        let s1 = backup(&src, &data, 1_000);
        let r = copy(
            &src,
            &dst,
            &req(&d.path().join("map")),
            &CopyProgress::default(),
        )
        .unwrap();
        assert!(r.shared_keys);
        assert_eq!(r.snapshots_copied, 1);
        let (all, _) = dst.snapshots().unwrap();
        assert_eq!(all[0].1.tree, src.load_snapshot(&s1).unwrap().tree);
        assert_eq!(
            restored(&src, &s1, &d.path().join("r1")),
            restored(&dst, &all[0].0, &d.path().join("r2"))
        );
        assert!(!d.path().join("map/copy").exists(), "no map is needed");
        // A backup of the same data made directly into the target adds no data.
        let direct = backup::run(
            &dst,
            &BackupRequest {
                host: "other".into(),
                parent: ParentChoice::None,
                ..BackupRequest::new(vec![Source::new(&data)])
            },
            &BackupProgress::default(),
        )
        .unwrap();
        assert_eq!(direct.summary.data_blobs_added, 0);
    }

    #[test]
    fn dry_run_lists_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src = repo(&d.path().join("src"));
        let dst = repo(&d.path().join("dst"));
        let data = d.path().join("data");
        fill(&data, 1);
        let s1 = backup(&src, &data, 1_000);
        let mut rq = req(&d.path().join("map"));
        rq.dry_run = true;
        let r = copy(&src, &dst, &rq, &CopyProgress::default()).unwrap();
        assert_eq!(r.copied.len(), 1);
        assert_eq!((r.copied[0].source, r.copied[0].target), (s1, None));
        assert_eq!(files(&d.path().join("dst"), "sessions"), 0);
        assert_eq!(dst.snapshots().unwrap().0.len(), 0);
        assert!(copy(
            &src,
            &src,
            &req(&d.path().join("map")),
            &CopyProgress::default()
        )
        .is_err());
    }
}
