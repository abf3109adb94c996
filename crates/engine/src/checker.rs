//! `check`: verifies that a repository is complete and consistent, and names every
//! problem with the object concerned and the snapshots (and paths) it affects.
//!
//! Structure (always):
//! * every index file decodes;
//! * every pack an index names exists, has the size its index entries imply, and its
//!   header (read by range: trailer and header only) lists exactly those entries;
//! * packs no index names are reported as information: they are what an interrupted
//!   backup leaves, and the next prune removes them — unless a snapshot needs a blob that
//!   only such a pack holds, which means an index file was lost (an error);
//! * every snapshot decodes; every tree reachable from a snapshot loads and decodes; every
//!   data blob a file references is indexed.
//!
//! Data (`--read-data`, or a deterministic subset): every selected pack is read in full,
//! in bounded windows, its BLAKE3 compared with its name, and every blob decrypted and
//! verified against its ID.
//!
//! Order matters beside running writers: snapshots are listed first, then index files,
//! then packs. A writer writes packs, then index files, then its snapshot, so everything
//! a listed snapshot references was indexed before the index was listed, and every pack
//! the index names was written before the packs are listed. A pack that vanished because
//! a concurrent prune swept it (and superseded the index files naming it) is recognised
//! by listing the index again, and is not an error.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::{open_blob_in_place, BlobType};
use holdfast_repo::envelope::ObjectKind;
use holdfast_repo::gc::GcMarker;
use holdfast_repo::index::{IndexFile, MasterIndex};
use holdfast_repo::pack::{open_header, parse_trailer, PackEntry, HEADER_ENTRY_LEN, TRAILER_LEN};
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::ContentRef;
use holdfast_repo::{Error, Id};
use rayon::prelude::*;

use crate::error::{EngineError, Result};

/// Bytes of a sealed pack header besides its entries: nonce, tag, type and count.
const HEADER_FIXED: u64 = 24 + 16 + 5;
/// Bytes read at once when reading packs in full.
const READ_WINDOW: u64 = 8 << 20;
/// Paths listed per problem; the rest are counted.
const MAX_PATHS: usize = 20;
/// Blob IDs named in one detail line; the rest are counted.
const MAX_IDS: usize = 5;

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    /// None: structure only.
    #[default]
    None,
    /// Every pack.
    All,
    /// `n/m`: the packs whose name's first byte modulo `m` is `n − 1`. Running `1/m`
    /// through `m/m` reads every pack exactly once.
    Subset {
        /// Which part, 1-based.
        n: u32,
        /// Number of parts, 1..=256.
        m: u32,
    },
    /// `p%`: the packs whose keyed hash of the name falls below `p` percent of the hash
    /// range. Deterministic: the same packs every run, about `p` percent of them.
    Percent(f64),
}

impl ReadData {
    /// Parses `--read-data-subset`: `n/m` (1 ≤ n ≤ m ≤ 256) or `p%` (0 < p ≤ 100).
    pub fn parse_subset(s: &str) -> std::result::Result<ReadData, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("invalid subset {s:?}: expected a percentage like 10%"))?;
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!(
                    "invalid subset {s:?}: the percentage must be above 0 and at most 100"
                ));
            }
            return Ok(ReadData::Percent(v));
        }
        if let Some((a, b)) = t.split_once('/') {
            let n: u32 = a.trim().parse().map_err(|_| {
                format!("invalid subset {s:?}: expected n/m with whole numbers, like 1/5")
            })?;
            let m: u32 = b.trim().parse().map_err(|_| {
                format!("invalid subset {s:?}: expected n/m with whole numbers, like 1/5")
            })?;
            if m == 0 || m > 256 || n == 0 || n > m {
                return Err(format!(
                    "invalid subset {s:?}: need 1 <= n <= m <= 256 (run 1/m, 2/m, ... m/m to read everything)"
                ));
            }
            return Ok(ReadData::Subset { n, m });
        }
        Err(format!(
            "invalid subset {s:?}: expected n/m (like 1/5) or a percentage (like 10%)"
        ))
    }

    /// Whether this setting reads the pack named `pack`.
    pub fn selects(&self, pack: &Id) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, m } => u32::from(pack.0[0]) % m == n - 1,
            ReadData::Percent(p) => {
                let h = blake3::keyed_hash(&PERCENT_KEY, &pack.0);
                let mut v = [0u8; 8];
                v.copy_from_slice(&h.as_bytes()[..8]);
                let x = u64::from_be_bytes(v) as f64 / (u64::MAX as f64 + 1.0);
                x < p / 100.0
            }
        }
    }

    /// Whether any data is read.
    pub fn is_none(&self) -> bool {
        matches!(self, ReadData::None)
    }
}

/// Fixed key for the percentage selection, so it does not line up with `n/m` parts.
const PERCENT_KEY: [u8; 32] = *b"holdfast check --read-data-subs%";

/// How to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Which packs to read in full.
    pub read_data: ReadData,
    /// Packs read at once (each holds at most one read window, 8 MiB plus a blob, in
    /// memory); 0 means 4.
    pub read_threads: usize,
}

/// Live counters a UI can poll while a check runs.
#[derive(Debug, Default)]
pub struct CheckProgress {
    /// Packs whose header was checked.
    pub headers: AtomicU64,
    /// Trees walked.
    pub trees: AtomicU64,
    /// Packs read in full.
    pub packs_read: AtomicU64,
    /// Bytes read by `--read-data`.
    pub bytes_read: AtomicU64,
    /// Bytes `--read-data` will read in total (known once packs are listed).
    pub bytes_to_read: AtomicU64,
}

/// One damaged, missing or noteworthy object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    /// `index`, `pack`, `snapshot`, `tree`, `blob` or `gc marker`.
    pub kind: &'static str,
    /// The object's ID (file name, or blob ID for trees and blobs).
    pub id: Id,
    /// What is wrong, one line each.
    pub details: Vec<String>,
    /// Snapshots that cannot be restored completely because of it.
    pub snapshots: Vec<Id>,
    /// Paths in those snapshots that are affected (at most 20 listed).
    pub paths: Vec<String>,
    /// Affected paths not listed.
    pub more_paths: u64,
}

/// Totals of what was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckCounts {
    /// Snapshots listed.
    pub snapshots: u64,
    /// Index files listed.
    pub index_files: u64,
    /// Packs listed.
    pub packs: u64,
    /// Bytes in all packs.
    pub pack_bytes: u64,
    /// Packs no index names.
    pub unindexed_packs: u64,
    /// Packs listed by a gc marker (pending deletion by a later prune).
    pub marked_packs: u64,
    /// Blobs in the index.
    pub indexed_blobs: u64,
    /// Distinct trees walked.
    pub trees: u64,
    /// Data blob references checked (with repeats across trees).
    pub data_refs: u64,
    /// Packs read in full.
    pub packs_read: u64,
    /// Bytes read in full.
    pub bytes_read: u64,
    /// Blobs decrypted and verified.
    pub blobs_verified: u64,
}

/// The outcome of a check. Serialized with an `ok` field beside the others
/// ([`CheckReport::is_ok`]).
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Problems that make the repository (or some snapshots) incomplete or damaged.
    pub errors: Vec<Problem>,
    /// Things worth knowing that are not damage: unindexed packs, superseded index files.
    pub infos: Vec<Problem>,
    /// What was checked.
    pub counts: CheckCounts,
}

impl CheckReport {
    /// Whether no error was found.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl serde::Serialize for CheckReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CheckReport", 4)?;
        st.serialize_field("ok", &self.is_ok())?;
        st.serialize_field("errors", &self.errors)?;
        st.serialize_field("infos", &self.infos)?;
        st.serialize_field("counts", &self.counts)?;
        st.end()
    }
}

type Key = (&'static str, Id);

#[derive(Debug, Default)]
struct Acc {
    error: bool,
    details: Vec<String>,
    snapshots: BTreeSet<Id>,
    paths: BTreeSet<String>,
    more_paths: u64,
}

#[derive(Debug, Default)]
struct Problems(Mutex<BTreeMap<Key, Acc>>);

impl Problems {
    fn add(&self, error: bool, kind: &'static str, id: Id, detail: impl Into<String>) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let a = m.entry((kind, id)).or_default();
        a.error |= error;
        let d = detail.into();
        if !d.is_empty() && !a.details.contains(&d) {
            a.details.push(d);
        }
    }

    fn error(&self, kind: &'static str, id: Id, detail: impl Into<String>) {
        self.add(true, kind, id, detail)
    }

    fn info(&self, kind: &'static str, id: Id, detail: impl Into<String>) {
        self.add(false, kind, id, detail)
    }

    fn affects(&self, key: Key, snapshot: Id, paths: &[Vec<u8>], more: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let a = m.entry(key).or_default();
        a.snapshots.insert(snapshot);
        for p in paths {
            let s = format!("/{}", String::from_utf8_lossy(p));
            if a.paths.len() < MAX_PATHS {
                a.paths.insert(s);
            } else if !a.paths.contains(&s) {
                a.more_paths += 1;
            }
        }
        a.more_paths += more;
    }

    /// Makes a problem an error with `detail` as its only description.
    fn replace_with_error(&self, kind: &'static str, id: Id, detail: impl Into<String>) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let a = m.entry((kind, id)).or_default();
        a.error = true;
        a.details = vec![detail.into()];
    }

    fn has(&self, key: &Key) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    fn into_report(self, counts: CheckCounts) -> CheckReport {
        let mut r = CheckReport {
            counts,
            ..CheckReport::default()
        };
        let mut all: Vec<(Key, Acc)> = self
            .0
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .collect();
        // Containers before their contents: index, pack, snapshot, tree, blob.
        let rank = |k: &str| match k {
            "index" => 0,
            "pack" => 1,
            "snapshot" => 2,
            "tree" => 3,
            "blob" => 4,
            _ => 5,
        };
        all.sort_by(|((ka, ia), _), ((kb, ib), _)| rank(ka).cmp(&rank(kb)).then(ia.cmp(ib)));
        for ((kind, id), a) in all {
            if a.details.is_empty() {
                continue;
            }
            let p = Problem {
                kind,
                id,
                details: a.details,
                snapshots: a.snapshots.into_iter().collect(),
                paths: a.paths.into_iter().collect(),
                more_paths: a.more_paths,
            };
            if a.error {
                r.errors.push(p);
            } else {
                r.infos.push(p);
            }
        }
        r
    }
}

/// Lists IDs for a detail line: the first few, and how many more.
fn some_ids<'a>(ids: impl IntoIterator<Item = &'a Id>) -> String {
    let all: Vec<&Id> = ids.into_iter().collect();
    let mut s: Vec<String> = all.iter().take(MAX_IDS).map(|i| i.to_string()).collect();
    if all.len() > MAX_IDS {
        s.push(format!("and {} more", all.len() - MAX_IDS));
    }
    s.join(", ")
}

/// The index files that loaded, and the IDs of those that could not be read.
struct IndexState {
    files: Vec<(Id, IndexFile)>,
    damaged: Vec<Id>,
}

/// Lists and loads every index file. A file listed but gone when read was superseded and
/// deleted by a concurrent compaction (SPEC.md §7.2): list again, a few times.
fn load_indexes(repo: &Repository, problems: &Problems) -> Result<IndexState> {
    let mut files: HashMap<Id, IndexFile> = HashMap::new();
    let mut damaged: Vec<Id> = Vec::new();
    for round in 0..3 {
        let listed = repo.backend().list(FileKind::Index)?;
        let todo: Vec<Id> = listed
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !files.contains_key(id) && !damaged.contains(id))
            .collect();
        let loaded: Vec<(Id, holdfast_repo::Result<IndexFile>)> = todo
            .par_iter()
            .map(|id| (*id, repo.load_index_file(id)))
            .collect();
        let mut vanished = false;
        for (id, r) in loaded {
            match r {
                Ok(f) => {
                    files.insert(id, f);
                }
                Err(Error::Missing { .. }) if round < 2 => vanished = true,
                Err(e) => {
                    problems.error("index", id, strip_prefix(&e, &id));
                    damaged.push(id);
                }
            }
        }
        if !vanished {
            break;
        }
    }
    let mut files: Vec<(Id, IndexFile)> = files.into_iter().collect();
    files.sort_by_key(|(id, _)| *id);
    Ok(IndexState { files, damaged })
}

/// What the index says about each pack: its blobs, and which index files name it.
#[derive(Default)]
struct PackInfo {
    entries: Vec<PackEntry>,
    named_by: Vec<Id>,
}

/// Everything an index entry says, hashable.
type EntryKey = (u8, u8, Id, u32, u32, u32);

fn entry_key(e: &PackEntry) -> EntryKey {
    (
        e.ty as u8,
        e.compression as u8,
        e.id,
        e.offset,
        e.stored_len,
        e.raw_len,
    )
}

fn packs_of(files: &[(Id, IndexFile)], superseded: &HashSet<Id>) -> HashMap<Id, PackInfo> {
    let mut m: HashMap<Id, PackInfo> = HashMap::new();
    for (fid, f) in files {
        if superseded.contains(fid) {
            continue;
        }
        for p in &f.packs {
            let info = m.entry(p.id).or_default();
            if info.named_by.is_empty() {
                info.entries.extend_from_slice(&p.blobs);
            } else {
                // Named twice (rare): merge without repeating entries.
                let have: HashSet<EntryKey> = info.entries.iter().map(entry_key).collect();
                let new: Vec<PackEntry> = p
                    .blobs
                    .iter()
                    .filter(|e| !have.contains(&entry_key(e)))
                    .copied()
                    .collect();
                info.entries.extend(new);
            }
            if !info.named_by.contains(fid) {
                info.named_by.push(*fid);
            }
        }
    }
    for info in m.values_mut() {
        info.entries.sort_by_key(|e| (e.offset, e.id));
    }
    m
}

/// Reads and decodes a pack's header with range reads: one read of the trailer and the
/// header size the index implies (`expect_n` blobs), and a second read only if the
/// trailer says otherwise.
fn read_pack_header(
    repo: &Repository,
    pack: &Id,
    size: u64,
    expect_n: usize,
) -> holdfast_repo::Result<Vec<PackEntry>> {
    if size < TRAILER_LEN as u64 {
        return Err(Error::corrupt(
            "pack",
            pack,
            format!("{size} bytes is too short to be a pack"),
        ));
    }
    let guess =
        (TRAILER_LEN as u64 + HEADER_FIXED + (HEADER_ENTRY_LEN * expect_n) as u64).min(size);
    let tail = repo
        .backend()
        .read_range(FileKind::Pack, pack, size - guess, guess)?;
    let trailer = &tail[tail.len() - TRAILER_LEN..];
    let hlen = u64::from(parse_trailer(pack, trailer, size)?);
    let need = hlen + TRAILER_LEN as u64;
    let sealed = if need <= guess {
        tail[(guess - need) as usize..tail.len() - TRAILER_LEN].to_vec()
    } else {
        repo.backend()
            .read_range(FileKind::Pack, pack, size - need, hlen)?
    };
    Ok(open_header(repo.key(), pack, &sealed, size)?.entries)
}

fn entry_desc(e: &PackEntry) -> String {
    format!(
        "{} blob {} at offset {} ({} bytes)",
        e.ty.name(),
        e.id,
        e.offset,
        e.stored_len
    )
}

/// Compares a pack's size and header with its index entries; returns what is wrong.
fn check_pack_structure(
    repo: &Repository,
    pack: &Id,
    size: u64,
    entries: &[PackEntry],
) -> Vec<String> {
    let mut out = Vec::new();
    let data: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
    let expect =
        data + HEADER_FIXED + (HEADER_ENTRY_LEN * entries.len()) as u64 + TRAILER_LEN as u64;
    let beyond: Vec<&PackEntry> = entries
        .iter()
        .filter(|e| {
            u64::from(e.offset) + u64::from(e.stored_len)
                > size.saturating_sub(TRAILER_LEN as u64 + HEADER_FIXED)
        })
        .collect();
    if !beyond.is_empty() {
        out.push(format!(
            "{} of its {} indexed blobs lie beyond its end ({} bytes): the pack is truncated or the index is wrong (first: {})",
            beyond.len(),
            entries.len(),
            size,
            entry_desc(beyond[0])
        ));
    } else if size != expect {
        out.push(format!(
            "it is {size} bytes, but its {} indexed blobs make a pack of {expect} bytes",
            entries.len()
        ));
    }
    match read_pack_header(repo, pack, size, entries.len()) {
        Err(e) => out.push(format!(
            "its header cannot be read: {}",
            strip_prefix(&e, pack)
        )),
        Ok(header) => {
            let h: HashSet<EntryKey> = header.iter().map(entry_key).collect();
            let i: HashSet<EntryKey> = entries.iter().map(entry_key).collect();
            let missing: Vec<&PackEntry> = entries
                .iter()
                .filter(|e| !h.contains(&entry_key(e)))
                .collect();
            let extra: Vec<&PackEntry> = header
                .iter()
                .filter(|e| !i.contains(&entry_key(e)))
                .collect();
            if !missing.is_empty() {
                out.push(format!(
                    "the index lists {} blobs the pack header does not hold as indexed (first: {})",
                    missing.len(),
                    entry_desc(missing[0])
                ));
            }
            if !extra.is_empty() {
                out.push(format!(
                    "the pack header lists {} blobs the index does not (first: {})",
                    extra.len(),
                    entry_desc(extra[0])
                ));
            }
        }
    }
    out
}

/// An error's message without the "pack <id> is corrupt:" prefix the problem already
/// carries.
fn strip_prefix(e: &Error, id: &Id) -> String {
    match e {
        Error::Corrupt { name, detail, .. } if *name == id.to_string() => detail.clone(),
        other => other.to_string(),
    }
}

/// What reading one pack in full found.
#[derive(Default)]
struct ReadResult {
    pack_detail: Vec<String>,
    bad_blobs: Vec<(PackEntry, String)>,
    bytes: u64,
    blobs: u64,
}

/// Reads a pack in windows of about [`READ_WINDOW`] bytes (never splitting a blob),
/// hashes it, and opens every indexed blob.
fn read_pack(
    repo: &Repository,
    pack: &Id,
    size: u64,
    entries: &[PackEntry],
    progress: &CheckProgress,
) -> ReadResult {
    let mut r = ReadResult::default();
    let mut hasher = blake3::Hasher::new();
    let mut sorted: Vec<&PackEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.offset);
    let mut scratch = Vec::new();
    let mut pos = 0u64;
    let mut i = 0usize;
    while pos < size {
        let mut end = (pos + READ_WINDOW).min(size);
        let mut j = i;
        while j < sorted.len() && u64::from(sorted[j].offset) < end {
            let e_end = u64::from(sorted[j].offset) + u64::from(sorted[j].stored_len);
            end = end.max(e_end.min(size));
            j += 1;
        }
        let mut buf = match repo
            .backend()
            .read_range(FileKind::Pack, pack, pos, end - pos)
        {
            Ok(b) => b,
            Err(e) => {
                r.pack_detail
                    .push(format!("reading bytes {pos}..{end} failed: {e}"));
                return r;
            }
        };
        hasher.update(&buf);
        r.bytes += buf.len() as u64;
        progress
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        for e in &sorted[i..j] {
            let (start, len) = (u64::from(e.offset), u64::from(e.stored_len));
            if start < pos || start + len > end {
                r.bad_blobs.push((
                    **e,
                    format!("lies beyond the end of pack {pack} ({size} bytes)"),
                ));
                continue;
            }
            // Decrypted where it lies (the pack's hash was taken above).
            let s = &mut buf[(start - pos) as usize..(start - pos + len) as usize];
            r.blobs += 1;
            if let Err(err) = open_blob_in_place(
                repo.key(),
                e.ty,
                e.compression,
                &e.id,
                e.raw_len,
                s,
                &mut scratch,
            ) {
                r.bad_blobs.push((
                    **e,
                    format!("{} (in pack {pack})", strip_prefix(&err, &e.id)),
                ));
            }
        }
        pos = end;
        i = j;
    }
    for e in &sorted[i..] {
        r.bad_blobs.push((
            **e,
            format!("lies beyond the end of pack {pack} ({size} bytes)"),
        ));
    }
    let actual = Id(*hasher.finalize().as_bytes());
    if actual != *pack {
        r.pack_detail.push(format!(
            "its content hashes to {} ({} bytes read): the pack is damaged",
            actual.short(),
            r.bytes
        ));
    }
    r
}

/// Problems found below one tree, by object, with the paths (relative to the tree) that
/// lead to them.
#[derive(Debug, Default)]
struct Hits(BTreeMap<Key, (Vec<Vec<u8>>, u64)>);

impl Hits {
    fn add(&mut self, key: Key, path: Vec<u8>) {
        let (paths, more) = self.0.entry(key).or_default();
        if paths.len() < MAX_PATHS {
            paths.push(path);
        } else {
            *more += 1;
        }
    }

    fn add_below(&mut self, name: &[u8], child: &Hits) {
        for (key, (paths, more)) in &child.0 {
            let (mine, m) = self.0.entry(*key).or_default();
            for p in paths {
                if mine.len() < MAX_PATHS {
                    let mut full = name.to_vec();
                    if !p.is_empty() {
                        full.push(b'/');
                        full.extend_from_slice(p);
                    }
                    mine.push(full);
                } else {
                    *m += 1;
                }
            }
            *m += more;
        }
    }
}

/// Pseudo-object collecting everything referenced but not indexed; attributed to the
/// damaged index files at the end.
const NOT_INDEXED: Key = ("(not indexed)", Id([0; 32]));

struct Walker<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    /// Blobs in damaged or missing packs, or that failed to verify: the problems they
    /// belong to.
    targets: HashMap<(BlobType, Id), Vec<Key>>,
    /// Packs known to be gone: their trees are not read.
    missing_packs: HashSet<Id>,
    /// Blobs in packs no index names.
    unindexed: HashMap<(BlobType, Id), Id>,
    problems: &'a Problems,
    memo: Mutex<HashMap<Id, Arc<Hits>>>,
    data_refs: AtomicU64,
    progress: &'a CheckProgress,
}

impl Walker<'_> {
    /// Records the problems of one referenced blob, at `path`.
    fn blob_hits(&self, ty: BlobType, id: &Id, path: &[u8], hits: &mut Hits) -> bool {
        let mut bad = false;
        if let Some(keys) = self.targets.get(&(ty, *id)) {
            for k in keys {
                hits.add(*k, path.to_vec());
            }
            bad = true;
        }
        if !self.index.contains(ty, id) {
            hits.add(NOT_INDEXED, path.to_vec());
            match self.unindexed.get(&(ty, *id)) {
                Some(pack) => hits.add(("pack", *pack), path.to_vec()),
                None => {
                    let kind = if ty == BlobType::Tree { "tree" } else { "blob" };
                    self.problems.error(
                        kind,
                        *id,
                        format!(
                            "{} blob is referenced but is in no index and no pack",
                            ty.name()
                        ),
                    );
                    hits.add((kind, *id), path.to_vec());
                }
            }
            bad = true;
        }
        bad
    }

    fn walk(&self, tree: Id) -> Arc<Hits> {
        if let Some(h) = self
            .memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tree)
        {
            return h.clone();
        }
        let hits = Arc::new(self.walk_uncached(tree));
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tree, hits.clone());
        hits
    }

    fn walk_uncached(&self, tree: Id) -> Hits {
        self.progress.trees.fetch_add(1, Ordering::Relaxed);
        let mut hits = Hits::default();
        let here: &[u8] = b"";
        if self.blob_hits(BlobType::Tree, &tree, here, &mut hits)
            && (!self.index.contains(BlobType::Tree, &tree)
                || self
                    .index
                    .get(BlobType::Tree, &tree)
                    .is_some_and(|l| self.missing_packs.contains(&l.pack)))
        {
            return hits;
        }
        let t = match self.repo.load_tree(self.index, &tree) {
            Ok(t) => t,
            Err(e) => {
                let detail = match &e {
                    Error::Corrupt { kind, detail, .. } if *kind == "tree" || *kind == "blob" => {
                        detail.clone()
                    }
                    other => other.to_string(),
                };
                self.problems.error("tree", tree, detail);
                hits.add(("tree", tree), Vec::new());
                return hits;
            }
        };
        let mut subtrees = Vec::new();
        for node in &t.nodes {
            for c in &node.content {
                if let ContentRef::Blob(id) = c {
                    self.data_refs.fetch_add(1, Ordering::Relaxed);
                    self.blob_hits(BlobType::Data, id, &node.name, &mut hits);
                }
            }
            if let Some(sub) = node.subtree {
                subtrees.push((node.name.clone(), sub));
            }
        }
        let children: Vec<(Vec<u8>, Arc<Hits>)> = subtrees
            .into_par_iter()
            .map(|(name, sub)| {
                let h = self.walk(sub);
                (name, h)
            })
            .collect();
        for (name, h) in children {
            hits.add_below(&name, &h);
        }
        hits
    }
}

/// Checks a repository. Returns the report; `Err` only when the repository cannot be
/// listed at all (problems with single objects are in the report).
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Result<CheckReport> {
    let problems = Problems::default();
    let mut counts = CheckCounts::default();
    let backend = repo.backend();

    // 1. Snapshots first (see the module documentation for why the order matters).
    let snapshot_ids = backend.list(FileKind::Snapshot)?;
    let loaded: Vec<(Id, holdfast_repo::Result<Snapshot>)> = snapshot_ids
        .par_iter()
        .map(|(id, _)| (*id, repo.load_snapshot(id)))
        .collect();
    let mut snapshots = Vec::new();
    for (id, r) in loaded {
        match r {
            Ok(s) => snapshots.push((id, s)),
            // Forgotten between listing and reading.
            Err(Error::Missing { .. }) => {}
            Err(e) => {
                problems.error("snapshot", id, strip_prefix(&e, &id));
                problems.affects(("snapshot", id), id, &[], 0);
            }
        }
    }
    counts.snapshots = snapshot_ids.len() as u64;

    // 2. Index files.
    let idx = load_indexes(repo, &problems)?;
    counts.index_files = (idx.files.len() + idx.damaged.len()) as u64;
    let superseded: HashSet<Id> = idx
        .files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    for (id, _) in &idx.files {
        if superseded.contains(id) {
            let by: Vec<&Id> = idx
                .files
                .iter()
                .filter(|(_, f)| f.supersedes.contains(id))
                .map(|(i, _)| i)
                .collect();
            problems.info(
                "index",
                *id,
                format!(
                    "superseded by index file {} and ignored (left by an interrupted compaction; the next prune deletes it)",
                    some_ids(by)
                ),
            );
        }
    }
    let master = MasterIndex::from_files(idx.files.iter().map(|(id, f)| (*id, f)));
    counts.indexed_blobs = master.len() as u64;
    let pack_info = packs_of(&idx.files, &superseded);

    // 3. Packs: existence, size, header.
    let listed: HashMap<Id, u64> = backend.list(FileKind::Pack)?.into_iter().collect();
    counts.packs = listed.len() as u64;
    counts.pack_bytes = listed.values().sum();
    let mut targets: HashMap<(BlobType, Id), Vec<Key>> = HashMap::new();
    let mut missing_packs: HashSet<Id> = HashSet::new();
    let mut missing: Vec<Id> = pack_info
        .keys()
        .filter(|p| !listed.contains_key(p))
        .copied()
        .collect();
    missing.sort();
    if !missing.is_empty() {
        missing = still_missing(repo, &idx, missing, &problems)?;
    }
    for p in &missing {
        problems.error(
            "pack",
            *p,
            format!(
                "is missing: index file {} names it, but it is not in the repository",
                some_ids(&pack_info[p].named_by)
            ),
        );
        missing_packs.insert(*p);
    }
    let mut present: Vec<(&Id, &PackInfo, u64)> = pack_info
        .iter()
        .filter_map(|(id, info)| listed.get(id).map(|s| (id, info, *s)))
        .collect();
    present.sort_by_key(|(id, _, _)| **id);
    let structure: Vec<(Id, Vec<String>)> = present
        .par_iter()
        .map(|(id, info, size)| {
            let r = check_pack_structure(repo, id, *size, &info.entries);
            progress.headers.fetch_add(1, Ordering::Relaxed);
            (**id, r)
        })
        .collect();
    let mut bad_structure: HashSet<Id> = HashSet::new();
    for (id, details) in structure {
        for d in &details {
            problems.error("pack", id, d.clone());
        }
        if !details.is_empty() {
            bad_structure.insert(id);
        }
    }
    for p in missing_packs.iter().chain(bad_structure.iter()) {
        for e in &pack_info[p].entries {
            targets.entry((e.ty, e.id)).or_default().push(("pack", *p));
        }
    }

    // Packs no index names: leftovers of interrupted backups (information), unless a
    // snapshot needs a blob only they hold (decided after the walk).
    let mut marked: HashSet<Id> = HashSet::new();
    for (mid, _) in backend.list(FileKind::GcMarker)? {
        match repo
            .load_object(ObjectKind::GcMarker, FileKind::GcMarker, &mid)
            .and_then(|p| GcMarker::decode(&p).map_err(|e| Error::decode("gc marker", mid, e)))
        {
            Ok(m) => marked.extend(m.packs),
            Err(Error::Missing { .. }) => {}
            Err(e) => problems.error("gc marker", mid, strip_prefix(&e, &mid)),
        }
    }
    counts.marked_packs = marked.len() as u64;
    let mut unindexed_packs: Vec<(Id, u64)> = listed
        .iter()
        .filter(|(id, _)| !pack_info.contains_key(id))
        .map(|(id, s)| (*id, *s))
        .collect();
    unindexed_packs.sort();
    counts.unindexed_packs = unindexed_packs.len() as u64;
    let headers: Vec<(Id, holdfast_repo::Result<Vec<PackEntry>>)> = unindexed_packs
        .par_iter()
        .map(|(id, size)| (*id, read_pack_header(repo, id, *size, 0)))
        .collect();
    let mut unindexed: HashMap<(BlobType, Id), Id> = HashMap::new();
    for (id, r) in headers {
        let mut d = if idx.damaged.is_empty() {
            "is in no index file: left by an interrupted backup (or one still running); the next prune removes it".to_string()
        } else {
            "is in no readable index file: left by an interrupted backup, or named by a damaged index file".to_string()
        };
        if marked.contains(&id) {
            d.push_str(" (already marked for deletion)");
        }
        match r {
            Ok(entries) => {
                for e in entries {
                    unindexed.entry((e.ty, e.id)).or_insert(id);
                }
            }
            Err(Error::Missing { .. }) => continue,
            Err(e) => d.push_str(&format!(
                "; its header cannot be read: {}",
                strip_prefix(&e, &id)
            )),
        }
        problems.info("pack", id, d);
    }

    // 4. Read data.
    if !opts.read_data.is_none() {
        let chosen: Vec<&(&Id, &PackInfo, u64)> = present
            .iter()
            .filter(|(id, _, _)| opts.read_data.selects(id))
            .collect();
        progress
            .bytes_to_read
            .store(chosen.iter().map(|(_, _, s)| *s).sum(), Ordering::Relaxed);
        let threads = if opts.read_threads == 0 {
            4
        } else {
            opts.read_threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| EngineError::Usage(format!("cannot start reader threads: {e}")))?;
        let results: Vec<(Id, ReadResult)> = pool.install(|| {
            chosen
                .par_iter()
                .map(|(id, info, size)| {
                    let r = read_pack(repo, id, *size, &info.entries, progress);
                    progress.packs_read.fetch_add(1, Ordering::Relaxed);
                    (**id, r)
                })
                .collect()
        });
        for (id, r) in results {
            counts.packs_read += 1;
            counts.bytes_read += r.bytes;
            counts.blobs_verified += r.blobs;
            for d in r.pack_detail {
                problems.error("pack", id, d);
            }
            for (e, d) in r.bad_blobs {
                let kind = if e.ty == BlobType::Tree {
                    "tree"
                } else {
                    "blob"
                };
                problems.error(kind, e.id, d);
                problems.error(
                    "pack",
                    id,
                    format!("holds damaged {} blobs (listed separately)", e.ty.name()),
                );
                let t = targets.entry((e.ty, e.id)).or_default();
                for k in [(kind, e.id), ("pack", id)] {
                    if !t.contains(&k) {
                        t.push(k);
                    }
                }
            }
        }
    }

    // 5. Trees, from every snapshot.
    let walker = Walker {
        repo,
        index: &master,
        targets,
        missing_packs,
        unindexed,
        problems: &problems,
        memo: Mutex::new(HashMap::new()),
        data_refs: AtomicU64::new(0),
        progress,
    };
    let per_snapshot: Vec<(Id, Arc<Hits>)> = snapshots
        .par_iter()
        .map(|(id, s)| (*id, walker.walk(s.tree)))
        .collect();
    counts.trees = walker.memo.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    counts.data_refs = walker.data_refs.load(Ordering::Relaxed);
    let unindexed_ids: HashSet<Id> = unindexed_packs.iter().map(|(id, _)| *id).collect();
    let mut needed_from_unindexed: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
    let mut not_indexed_snapshots: BTreeSet<Id> = BTreeSet::new();
    for (sid, hits) in &per_snapshot {
        for (key, (paths, more)) in &hits.0 {
            if *key == NOT_INDEXED {
                not_indexed_snapshots.insert(*sid);
                continue;
            }
            if key.0 == "pack" && !problems.has(key) {
                continue;
            }
            if key.0 == "pack" && unindexed_ids.contains(&key.1) {
                needed_from_unindexed.entry(key.1).or_default().insert(*sid);
            }
            problems.affects(*key, *sid, paths, *more);
        }
    }
    for pack in needed_from_unindexed.keys() {
        problems.replace_with_error(
            "pack",
            *pack,
            "holds blobs that snapshots need, but no index file names it: its index file is missing or damaged; run `holdfast repair index` (which rebuilds the index from the packs) before any prune",
        );
    }
    for d in &idx.damaged {
        for s in &not_indexed_snapshots {
            problems.affects(("index", *d), *s, &[], 0);
        }
    }
    Ok(problems.into_report(counts))
}

/// Of the packs the index names but the listing lacks, those still missing after the
/// index is listed again: a concurrent prune sweep deletes a pack only after superseding
/// every index file that names it (SPEC.md §12.3), so a pack whose naming files are gone
/// or superseded now was deleted on purpose.
fn still_missing(
    repo: &Repository,
    idx: &IndexState,
    missing: Vec<Id>,
    problems: &Problems,
) -> Result<Vec<Id>> {
    let relisted: HashSet<Id> = repo
        .backend()
        .list(FileKind::Index)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let known: HashSet<Id> = idx.files.iter().map(|(id, _)| *id).collect();
    let mut superseded: HashSet<Id> = idx
        .files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    for id in relisted.difference(&known) {
        if let Ok(f) = repo.load_index_file(id) {
            superseded.extend(f.supersedes);
        }
    }
    let mut out = Vec::new();
    for p in missing {
        let naming: Vec<Id> = idx
            .files
            .iter()
            .filter(|(fid, f)| !superseded.contains(fid) && f.packs.iter().any(|x| x.id == p))
            .map(|(fid, _)| *fid)
            .collect();
        let gone = naming
            .iter()
            .all(|f| !relisted.contains(f) || superseded.contains(f));
        if gone {
            problems.info(
                "pack",
                p,
                "was deleted by a prune running at the same time (its index files were superseded)",
            );
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, rest: u8) -> Id {
        let mut b = [rest; 32];
        b[0] = first;
        Id(b)
    }

    #[test]
    fn subset_parts_cover_every_pack_exactly_once() {
        for m in [1u32, 2, 3, 5, 7, 16, 255, 256] {
            for first in 0..=255u8 {
                let p = id(first, 7);
                let hits: Vec<u32> = (1..=m)
                    .filter(|&n| ReadData::Subset { n, m }.selects(&p))
                    .collect();
                assert_eq!(hits.len(), 1, "m={m} first={first}: {hits:?}");
                assert_eq!(hits[0], u32::from(first) % m + 1);
            }
        }
    }

    #[test]
    fn subset_selection_is_deterministic_and_depends_only_on_the_name() {
        let a = ReadData::parse_subset("2/5").unwrap();
        assert_eq!(a, ReadData::Subset { n: 2, m: 5 });
        // First byte 1, 6, 11, ... are part 2 of 5.
        assert!(a.selects(&id(1, 0)));
        assert!(a.selects(&id(6, 99)));
        assert!(!a.selects(&id(2, 0)));
        assert!(ReadData::All.selects(&id(2, 0)));
        assert!(!ReadData::None.selects(&id(2, 0)));
    }

    #[test]
    fn percent_selects_about_that_share_deterministically() {
        let p = ReadData::parse_subset("10%").unwrap();
        assert_eq!(p, ReadData::Percent(10.0));
        let ids: Vec<Id> = (0..20_000u32)
            .map(|i| Id(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let n = ids.iter().filter(|i| p.selects(i)).count();
        assert!((1_700..2_300).contains(&n), "{n} of 20000 selected");
        let again = ids.iter().filter(|i| p.selects(i)).count();
        assert_eq!(n, again);
        // A larger percentage selects a superset.
        let q = ReadData::Percent(25.0);
        assert!(ids.iter().filter(|i| p.selects(i)).all(|i| q.selects(i)));
        assert!(ids.iter().all(|i| ReadData::Percent(100.0).selects(i)));
        assert_eq!(
            ReadData::parse_subset("2.5%").unwrap(),
            ReadData::Percent(2.5)
        );
    }

    #[test]
    fn subset_parsing_rejects_nonsense() {
        for bad in [
            "0/5", "6/5", "1/0", "1/257", "x/5", "1/", "/5", "0%", "101%", "-5%", "abc", "",
            "1/5/7",
        ] {
            assert!(ReadData::parse_subset(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ReadData::parse_subset(" 5/5 ").unwrap(),
            ReadData::Subset { n: 5, m: 5 }
        );
        assert_eq!(
            ReadData::parse_subset("256/256").unwrap(),
            ReadData::Subset { n: 256, m: 256 }
        );
    }

    #[test]
    fn hits_cap_paths_and_prefix_names() {
        let mut child = Hits::default();
        let k: Key = ("blob", id(1, 1));
        for i in 0..(MAX_PATHS + 5) {
            child.add(k, format!("f{i}").into_bytes());
        }
        let mut parent = Hits::default();
        parent.add_below(b"dir", &child);
        let (paths, more) = &parent.0[&k];
        assert_eq!(paths.len(), MAX_PATHS);
        assert_eq!(*more, 5);
        assert_eq!(paths[0], b"dir/f0".to_vec());
        let mut root = Hits::default();
        let mut here = Hits::default();
        here.add(k, Vec::new());
        root.add_below(b"top", &here);
        assert_eq!(root.0[&k].0[0], b"top".to_vec());
    }
}
