//! Prune: delete data no snapshot needs, safely beside running backups, without a lock
//! (SPEC.md §12.3). Each run sweeps the packs marked by an earlier run at least the safety
//! margin ago (unless a writer that started before the mark is still running, or a snapshot
//! now references them), then marks what is unused now and repacks mostly-unused packs.
//! Nothing is ever decided and deleted in the same run.

use std::collections::{HashMap, HashSet};

use holdfast_repo::backend::{FileKind, StagedFile};
use holdfast_repo::blob::BlobType;
use holdfast_repo::gc::{GcMarker, Role};
use holdfast_repo::index::{IndexFile, IndexFileSummary, IndexPack, IndexedBlob, MasterIndex};
use holdfast_repo::pack::{read_header, PackEntry, PackWriter};
use holdfast_repo::repository::{GcState, Repository};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::ContentRef;
use holdfast_repo::{Error, Id};

use crate::error::{EngineError, Result};
use crate::session::{bad_is_stale, is_live, now_ns, SessionGuard, SKEW_NS};

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Report only; write and delete nothing.
    pub dry_run: bool,
    /// Minimum time between marking a pack and deleting it, ns.
    pub margin_ns: i64,
    /// Repack partly used packs until unused bytes are at most this share of all pack bytes.
    pub max_unused: f64,
    /// Host name for the prune's session.
    pub host: String,
    /// Most blob entries in one index file prune writes (the default,
    /// [`INDEX_FILE_ENTRIES`], bounds the memory to write or read one).
    pub index_file_entries: usize,
}

impl Default for PruneOptions {
    /// What `holdfast prune` does without options: a 2 h safety margin, repacking down to
    /// 10 % unused space, sessions named after this host, index files of the default size.
    fn default() -> PruneOptions {
        PruneOptions {
            dry_run: false,
            margin_ns: 2 * 3600 * 1_000_000_000,
            max_unused: 0.10,
            host: crate::backup::host_name(),
            index_file_entries: INDEX_FILE_ENTRIES,
        }
    }
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    /// Markers old enough to sweep.
    pub markers_due: usize,
    /// Why sweeping was postponed, if it was.
    pub sweep_postponed: Vec<String>,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Bytes freed.
    pub bytes_deleted: u64,
    /// Marked packs kept because a snapshot references them now.
    pub packs_rescued: usize,
    /// Packs newly marked for deletion (unused, repacked, or not indexed).
    pub packs_marked: usize,
    /// Bytes in newly marked packs.
    pub bytes_marked: u64,
    /// Packs that were not in any index (leftovers of interrupted backups) among the marked.
    pub orphans_marked: usize,
    /// Packs not in any index left alone because a backup is running (they may be its
    /// packs, not indexed yet); a later prune deals with them.
    pub orphans_deferred: usize,
    /// Partly used packs whose live blobs were copied into new packs.
    pub packs_repacked: usize,
    /// Blobs copied by repacking.
    pub blobs_repacked: usize,
    /// Index files rewritten by the sweep.
    pub index_files_superseded: usize,
    /// Small index files merged into few (compaction).
    pub index_files_compacted: usize,
    /// Stale session files removed.
    pub stale_sessions_removed: usize,
    /// Staging files of killed writers removed (local repositories' `tmp/`).
    pub temp_files_removed: usize,
    /// Files kept whose storage retention (S3 Object Lock) was extended because it would
    /// have ended within half the period.
    pub retention_extended: usize,
    /// Live blobs (referenced by some snapshot).
    pub live_blobs: usize,
    /// Packs named by the index that do not exist and that no snapshot needs: their
    /// entries were dropped from the index.
    pub missing_packs_dropped: usize,
}

/// The blobs snapshots reference: one bit per blob of the compact index, so prune's
/// memory does not grow beyond the index (issue 4), and by full ID the rare blobs the index
/// gives no position (see [`MasterIndex::position`]) or does not hold. Positions belong to
/// one index: every method takes the index the set was made for.
#[derive(Debug)]
pub struct LiveSet {
    bits: Vec<u64>,
    by_id: HashSet<(BlobType, Id)>,
    len: usize,
}

impl LiveSet {
    /// An empty set for blobs of `index`.
    pub fn new(index: &MasterIndex) -> LiveSet {
        LiveSet {
            bits: vec![0; index.position_count().div_ceil(64)],
            by_id: HashSet::new(),
            len: 0,
        }
    }

    /// Adds a blob; whether it was not in the set yet.
    pub fn insert(&mut self, index: &MasterIndex, ty: BlobType, id: &Id) -> bool {
        let new = match index.position(ty, id) {
            Some(pos) => {
                let (word, bit) = (pos / 64, 1u64 << (pos % 64));
                let new = self.bits[word] & bit == 0;
                self.bits[word] |= bit;
                new
            }
            None => self.by_id.insert((ty, *id)),
        };
        self.len += usize::from(new);
        new
    }

    /// Whether a blob is in the set.
    pub fn contains(&self, index: &MasterIndex, ty: BlobType, id: &Id) -> bool {
        match index.position(ty, id) {
            Some(pos) => self.bits[pos / 64] & (1 << (pos % 64)) != 0,
            None => self.by_id.contains(&(ty, *id)),
        }
    }

    /// How many blobs are in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many blobs of the set `index` does not hold.
    fn missing(&self, index: &MasterIndex) -> usize {
        self.by_id
            .iter()
            .filter(|(ty, id)| !index.contains(*ty, id))
            .count()
    }

    /// Calls `f` with the location of every blob of the set that `index` holds.
    fn for_each_location(&self, index: &MasterIndex, mut f: impl FnMut(IndexedBlob)) {
        for (w, &word) in self.bits.iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                f(index.at_position(w * 64 + bit));
            }
        }
        for (ty, id) in &self.by_id {
            if let Some(l) = index.get(*ty, id) {
                f(IndexedBlob {
                    ty: *ty,
                    pack: l.pack,
                    compression: l.entry.compression,
                    offset: l.entry.offset,
                    stored_len: l.entry.stored_len,
                    raw_len: l.entry.raw_len,
                });
            }
        }
    }
}

/// Every (type, ID) referenced by any snapshot. Fails if any snapshot or tree cannot be
/// read, if a referenced blob is not in the index, or if its only copies are in packs that
/// do not exist: what a damaged repository needs is unknown (a lost index file leaves
/// needed packs looking unindexed), so nothing may be marked or deleted until `check` and
/// `repair` have run.
///
/// `snaps` must have been listed before `view` was loaded: a writer writes its index files
/// before its snapshot, so every listed snapshot's blobs are then in the index.
fn live_set(repo: &Repository, snaps: &[Snapshot], view: &IndexView) -> Result<LiveSet> {
    let index = &view.index;
    let live = referenced_blobs(repo, snaps, index, &view.missing)?;
    let missing = live.missing(index);
    if missing > 0 {
        return Err(EngineError::Usage(format!(
            "refusing to prune: {missing} blobs that snapshots need are not in the index (a lost or damaged index file?); run `holdfast check`, then `holdfast repair index`"
        )));
    }
    if !view.missing.is_empty() {
        // The index locates a blob in a missing pack only when it has no other copy.
        let mut lost: HashMap<Id, usize> = HashMap::new();
        live.for_each_location(index, |b| {
            if view.missing.contains(&b.pack) {
                *lost.entry(b.pack).or_default() += 1;
            }
        });
        if !lost.is_empty() {
            let blobs = lost.values().sum();
            let mut packs: Vec<Id> = lost.into_keys().collect();
            packs.sort();
            return Err(EngineError::MissingPacks { packs, blobs });
        }
    }
    Ok(live)
}

/// Every snapshot, or an error if any cannot be read (what it needs would be unknown).
pub fn load_snapshots(repo: &Repository) -> Result<Vec<Snapshot>> {
    let (snaps, bad) = repo.snapshots()?;
    if let Some(e) = bad.into_iter().next() {
        return Err(EngineError::Usage(format!(
            "refusing to prune: {e}; run `holdfast check` and repair or forget the damaged snapshot first"
        )));
    }
    Ok(snaps.into_iter().map(|(_, s)| s).collect())
}

/// Every blob the snapshots reference. A tree whose only copy is in a `missing` pack is
/// counted but not read (what is below it is unknown; [`live_set`] refuses then).
fn referenced_blobs(
    repo: &Repository,
    snaps: &[Snapshot],
    index: &MasterIndex,
    missing: &HashSet<Id>,
) -> Result<LiveSet> {
    let mut live = LiveSet::new(index);
    let mut todo: Vec<Id> = snaps.iter().map(|s| s.tree).collect();
    while let Some(t) = todo.pop() {
        if !live.insert(index, BlobType::Tree, &t) {
            continue;
        }
        if index
            .get(BlobType::Tree, &t)
            .is_some_and(|l| missing.contains(&l.pack))
        {
            continue;
        }
        let tree = repo.load_tree(index, &t)?;
        for n in tree.nodes {
            for c in n.content {
                if let ContentRef::Blob(id) = c {
                    live.insert(index, BlobType::Data, &id);
                }
            }
            if let Some(s) = n.subtree {
                todo.push(s);
            }
        }
    }
    Ok(live)
}

/// The index files as prune needs them, in the compact index plus O(packs) memory, and the
/// packs that exist (listed after the index: every pack an index file names was durable
/// before it, so an indexed pack that is not listed is missing).
struct IndexView {
    /// Every current file merged, each blob located outside the marked and the missing
    /// packs when it can be (SPEC.md §12.3: that is the copy writers see and keep using).
    index: MasterIndex,
    /// Every index file in brief.
    files: Vec<IndexFileSummary>,
    superseded: HashSet<Id>,
    /// Pack -> stored bytes of the blobs current files list in it.
    packs: HashMap<Id, u64>,
    /// Marked pack -> the blobs current files list in it.
    marked: HashMap<Id, Vec<PackEntry>>,
    /// The packs that exist, with their sizes.
    listed: HashMap<Id, u64>,
    /// The packs that exist, with the storage's time of writing where known.
    listed_times: Vec<(Id, Option<i64>)>,
    /// Packs current index files name that do not exist.
    missing: HashSet<Id>,
}

impl IndexView {
    /// The current index files that name any of `packs`.
    fn files_naming(&self, packs: &HashSet<Id>) -> Vec<Id> {
        self.files
            .iter()
            .filter(|f| {
                !self.superseded.contains(&f.name) && f.packs.iter().any(|p| packs.contains(&p.id))
            })
            .map(|f| f.name)
            .collect()
    }

    /// The superseded index files that still exist: a file that supersedes others lists
    /// these, not the long-deleted ones, so supersede lists do not grow without bound.
    fn existing_superseded(&self) -> HashSet<Id> {
        self.files
            .iter()
            .map(|f| f.name)
            .filter(|n| self.superseded.contains(n))
            .collect()
    }
}

fn index_view(repo: &Repository, marked: &HashSet<Id>) -> Result<IndexView> {
    let mut view = survey(repo, marked)?;
    if !view.missing.is_empty() {
        // Locate blobs outside the missing packs where they have another copy.
        let mut avoid = marked.clone();
        avoid.extend(view.missing.iter().copied());
        let again = survey(repo, &avoid)?;
        let missing = std::mem::take(&mut view.missing);
        view = IndexView {
            missing: again.missing.union(&missing).copied().collect(),
            ..again
        };
    }
    Ok(view)
}

fn survey(repo: &Repository, avoid: &HashSet<Id>) -> Result<IndexView> {
    let survey = repo.survey_index(avoid)?;
    let superseded: HashSet<Id> = survey
        .files
        .iter()
        .flat_map(|f| f.supersedes.iter().copied())
        .collect();
    let mut packs: HashMap<Id, u64> = HashMap::new();
    for f in survey
        .files
        .iter()
        .filter(|f| !superseded.contains(&f.name))
    {
        for p in &f.packs {
            // Two files listing one pack list the same header; take the fuller if not.
            let bytes = packs.entry(p.id).or_default();
            *bytes = (*bytes).max(p.stored_bytes);
        }
    }
    let mut marked_entries: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (file, p) in survey.marked {
        if !superseded.contains(&file) {
            marked_entries.entry(p.id).or_default().extend(p.blobs);
        }
    }
    let packs_listed = repo.backend().list_modified(FileKind::Pack)?;
    let listed: HashMap<Id, u64> = packs_listed
        .iter()
        .map(|(id, size, _)| (*id, *size))
        .collect();
    let listed_times: Vec<(Id, Option<i64>)> =
        packs_listed.into_iter().map(|(id, _, t)| (id, t)).collect();
    let missing = packs
        .keys()
        .filter(|p| !listed.contains_key(p))
        .copied()
        .collect();
    Ok(IndexView {
        index: survey.index,
        files: survey.files,
        superseded,
        packs,
        marked: marked_entries,
        listed,
        listed_times,
        missing,
    })
}

/// Compaction merges the small index files (under half of [`INDEX_FILE_ENTRIES`] entries)
/// once there are at least this many.
pub const COMPACT_MIN_FILES: usize = 8;

/// Most blob entries prune puts in one index file by default (see
/// [`holdfast_repo::index::INDEX_FILE_ENTRIES`]).
pub use holdfast_repo::index::INDEX_FILE_ENTRIES;

/// Runs one prune.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    // A dry run writes nothing, so it announces nothing either.
    let session = if opts.dry_run {
        None
    } else {
        // Writer-only credentials (a node agent's) fail here, before anything is written.
        repo.backend().check_delete_allowed()?;
        Some(repo.start_session(Role::Prune, &opts.host)?)
    };
    let clock = Clock(session.as_ref());
    let own = session.as_ref().map(|s| s.session.session_id);
    let (sessions, _) = repo.sessions()?;
    let now = clock.now();
    if let Some(other) = sessions.iter().find(|s| {
        s.session.role == Role::Prune && Some(s.session.session_id) != own && is_live(s, now)
    }) {
        return Err(EngineError::PruneRunning {
            host: other.session.host.clone(),
            pid: other.session.pid,
        });
    }

    // --- Sweep: markers old enough. ---
    let gc = repo.gc_markers()?;
    let due: Vec<&(Id, GcMarker)> = gc
        .current
        .iter()
        .filter(|(id, m)| now.saturating_sub(gc.marked_since(id, m)) >= opts.margin_ns)
        .collect();
    report.markers_due = due.len();
    // Snapshots, the index read after them, and their live set, when the sweep computed them.
    let mut known: Option<(IndexView, LiveSet)> = None;
    let mut swept_any = false;
    if !due.is_empty() {
        // Sessions first, snapshots after (SPEC.md §12.4): a writer that was running at the
        // mark has either ended (its snapshot is visible now) or holds the sweep back.
        let (sessions, bad) = repo.sessions()?;
        let now = clock.now();
        let unknown = bad.iter().filter(|b| !bad_is_stale(b, now)).count();
        let mut sweepable: Vec<&(Id, GcMarker)> = Vec::new();
        for m in due {
            // From when the marker could be seen: its own time, or when it landed if that
            // was later (its write was delayed after the time was read).
            let since = gc.marked_since(&m.0, &m.1);
            let blocker = sessions.iter().find(|s| {
                s.session.role == Role::Writer
                    && is_live(s, now)
                    && s.session.start_ns < since.saturating_add(SKEW_NS)
            });
            if let Some(s) = blocker {
                report.sweep_postponed.push(format!(
                    "marker {}: backup on {} (pid {}) started before it and is still running",
                    m.0.short(),
                    s.session.host,
                    s.session.pid
                ));
            } else if unknown > 0 {
                report.sweep_postponed.push(format!(
                    "marker {}: {unknown} session files are unreadable, so running backups are unknown (they expire an hour after they were written)",
                    m.0.short()
                ));
            } else {
                sweepable.push(m);
            }
        }
        if !sweepable.is_empty() {
            // Snapshots after sessions, the index after snapshots: a backup that finished
            // meanwhile is seen with every pack its snapshot needs (SPEC.md §12.3).
            let snaps = load_snapshots(repo)?;
            let view = index_view(repo, &gc.marked)?;
            let referenced = live_set(repo, &snaps, &view)?;
            let candidates: HashSet<Id> = sweepable
                .iter()
                .flat_map(|(_, m)| m.packs.iter().copied())
                .collect();
            // A marked pack is still needed if it holds a referenced blob that has no copy
            // outside every marked pack; the index locates a blob in a marked pack only
            // when it has no such copy.
            let needed = |p: &Id| {
                view.marked.get(p).is_some_and(|blobs| {
                    blobs.iter().any(|b| {
                        referenced.contains(&view.index, b.ty, &b.id)
                            && view
                                .index
                                .get(b.ty, &b.id)
                                .is_none_or(|l| gc.marked.contains(&l.pack))
                    })
                })
            };
            let mut delete: Vec<Id> = Vec::new();
            for p in &candidates {
                if needed(p) {
                    report.packs_rescued += 1;
                } else {
                    delete.push(*p);
                }
            }
            delete.sort();
            report.packs_deleted = delete.len();
            report.bytes_deleted = delete.iter().filter_map(|p| view.listed.get(p)).sum();
            if let Some(session) = &session {
                let delete_set: HashSet<Id> = delete.iter().copied().collect();
                let old_markers: Vec<Id> = sweepable.iter().map(|(id, _)| *id).collect();
                // 1. Rescued packs stop being marked before anything is deleted.
                let mut new_marker = None;
                if report.packs_rescued > 0 {
                    let mark_ns = sweepable
                        .iter()
                        .map(|(_, m)| m.mark_ns)
                        .min()
                        .unwrap_or(now);
                    // Also every marker already superseded that still exists: should a
                    // crash leave one behind, deleting this marker must not bring it back.
                    let mut supersedes = old_markers.clone();
                    supersedes.extend(existing_superseded_markers(repo, &gc)?);
                    supersedes.sort();
                    supersedes.dedup();
                    new_marker = Some(repo.save_gc_marker(
                        session,
                        &GcMarker {
                            mark_ns,
                            supersedes,
                            packs: delete.clone(),
                        },
                    )?);
                }
                // 2. No current index file may name a pack about to go.
                let naming = view.files_naming(&delete_set);
                if !naming.is_empty() {
                    report.index_files_superseded = naming.len();
                    rewrite_index_files(
                        repo,
                        session,
                        &naming,
                        &delete_set,
                        &view.existing_superseded(),
                        opts.index_file_entries,
                    )?;
                }
                // 3. Packs, then superseded index files, then the markers: the old ones
                // first and, once they are all gone, the rescue marker that supersedes
                // them (a batch delete has no order, and an old marker that outlived its
                // superseder would mark rescued packs again).
                session.check()?;
                repo.backend().remove_many(FileKind::Pack, &delete)?;
                session.check()?;
                repo.backend().remove_many(FileKind::Index, &naming)?;
                // A marker may go only once every marker it supersedes is gone (SPEC.md
                // §7.2): leftovers of a prune that stopped before its step 6 first.
                let left_over = existing_superseded_markers(repo, &gc)?;
                repo.backend().remove_many(FileKind::GcMarker, &left_over)?;
                repo.backend()
                    .remove_many(FileKind::GcMarker, &old_markers)?;
                if let Some(m) = new_marker {
                    repo.backend().remove(FileKind::GcMarker, &m)?;
                }
                swept_any = true;
            }
            if !swept_any {
                known = Some((view, referenced));
            }
        }
    }

    // --- Mark: what is unused now. ---
    let gc = if swept_any { repo.gc_markers()? } else { gc };
    let (view, live) = match known {
        Some(k) => k,
        None => {
            let snaps = load_snapshots(repo)?;
            let view = index_view(repo, &gc.marked)?;
            let live = live_set(repo, &snaps, &view)?;
            (view, live)
        }
    };
    report.live_blobs = live.len();
    // Index entries of packs that do not exist (and that no snapshot needs: `live_set`
    // refused otherwise) are dropped, so that nothing keeps pointing at them.
    if !view.missing.is_empty() {
        report.missing_packs_dropped = view.missing.len();
        if let Some(session) = &session {
            let naming = view.files_naming(&view.missing);
            rewrite_index_files(
                repo,
                session,
                &naming,
                &view.missing,
                &view.existing_superseded(),
                opts.index_file_entries,
            )?;
            session.check()?;
            repo.backend().remove_many(FileKind::Index, &naming)?;
        }
    }
    // Each live blob is kept where the index locates it, outside the marked packs when it
    // can be: the copy writers deduplicate against. Every other copy is unused.
    let mut used_bytes: HashMap<Id, u64> = HashMap::new();
    live.for_each_location(&view.index, |b| {
        *used_bytes.entry(b.pack).or_default() += u64::from(b.stored_len);
    });
    let mut to_mark: Vec<Id> = Vec::new();
    let mut partial: Vec<(Id, u64, u64)> = Vec::new(); // pack, unused bytes, size
    let mut total_bytes = 0u64;
    let mut unused_total = 0u64;
    for (p, listed) in &view.packs {
        let Some(&size) = view.listed.get(p) else {
            continue;
        };
        if gc.marked.contains(p) {
            continue;
        }
        total_bytes += size;
        let used = used_bytes.get(p).copied().unwrap_or(0);
        // Unused: blobs no snapshot needs (or duplicates). The pack's header and trailer are
        // not: a repacked pack has them too, so counting them would repack forever.
        let unused = listed.saturating_sub(used);
        if used == 0 {
            to_mark.push(*p);
        } else if unused > 0 {
            unused_total += unused;
            partial.push((*p, unused, size));
        }
    }
    drop(used_bytes);
    // Packs no index names. A running backup's packs look like that until it writes their
    // index file, and marking them would make every later backup upload their blobs again.
    // A pack may be a live writer's only if that writer started before the pack was
    // written (its session comes first), allowing for clock skew; the sessions are listed
    // after the packs, so a writer that wrote one of them is seen (SPEC.md §12.3).
    let orphans: Vec<(Id, Option<i64>)> = view
        .listed_times
        .iter()
        .filter(|(p, _)| !view.packs.contains_key(p) && !gc.marked.contains(p))
        .map(|(p, t)| (*p, *t))
        .collect();
    if !orphans.is_empty() {
        let writers = live_writers(repo, &clock)?;
        for (p, written) in orphans {
            let maybe_owned = match (&writers, written) {
                (LiveWriters::Unknown, _) => true,
                (LiveWriters::Starts(starts), Some(t)) => {
                    starts.iter().any(|&s| s < t.saturating_add(SKEW_NS))
                }
                (LiveWriters::Starts(starts), None) => !starts.is_empty(),
            };
            if maybe_owned {
                report.orphans_deferred += 1;
            } else {
                report.orphans_marked += 1;
                to_mark.push(p);
            }
        }
    }
    // Repack the emptiest packs until the unused share is within the limit.
    partial.sort_by(|a, b| (b.1 as f64 / b.2 as f64).total_cmp(&(a.1 as f64 / a.2 as f64)));
    let limit = (opts.max_unused * total_bytes as f64) as u64;
    let mut repack: Vec<Id> = Vec::new();
    for (p, unused, _) in &partial {
        if unused_total <= limit {
            break;
        }
        repack.push(*p);
        unused_total -= unused;
    }
    if let (false, Some(session)) = (repack.is_empty(), &session) {
        let copied = copy_live_blobs(
            repo,
            session,
            &repack,
            &view.index,
            &live,
            opts.index_file_entries,
        )?;
        report.blobs_repacked = copied;
    }
    report.packs_repacked = repack.len();
    to_mark.extend(repack);
    to_mark.sort();
    to_mark.dedup();
    report.packs_marked = to_mark.len();
    report.bytes_marked = to_mark.iter().filter_map(|p| view.listed.get(p)).sum();
    if let (false, Some(session)) = (to_mark.is_empty(), &session) {
        repo.save_gc_marker(
            session,
            &GcMarker {
                mark_ns: clock.now(),
                supersedes: vec![],
                packs: to_mark,
            },
        )?;
    }

    // --- Compact: many small index files (one or more per backup) into a few large ones,
    // so loading the index stays a few reads (SPEC.md §12.3 mark step 4). ---
    let small: Vec<Id> = view
        .files
        .iter()
        .filter(|f| {
            !view.superseded.contains(&f.name)
                && f.packs.iter().map(|p| p.blobs as usize).sum::<usize>()
                    < opts.index_file_entries / 2
        })
        .map(|f| f.name)
        .collect();
    if small.len() >= COMPACT_MIN_FILES {
        report.index_files_compacted = small.len();
        if let Some(session) = &session {
            rewrite_index_files(
                repo,
                session,
                &small,
                &HashSet::new(),
                &view.existing_superseded(),
                opts.index_file_entries,
            )?;
        }
    }

    // --- Housekeeping: stale sessions, superseded index files and markers. ---
    if let Some(session) = &session {
        session.check()?;
        remove_superseded(repo)?;
        let (sessions, bad) = repo.sessions()?;
        let now = clock.now();
        let stale: Vec<Id> = sessions
            .iter()
            .filter(|s| !is_live(s, now))
            .map(|s| s.id)
            .chain(bad.iter().filter(|b| bad_is_stale(b, now)).map(|b| b.id))
            .collect();
        session.check()?;
        repo.backend().remove_many(FileKind::Session, &stale)?;
        report.stale_sessions_removed = stale.len();
        // A killed backup leaves the packs it was writing in the staging area. Listed
        // after the sessions: with no writer running, anything older than the margin
        // there is nobody's.
        if matches!(live_writers(repo, &clock)?, LiveWriters::Starts(s) if s.is_empty()) {
            // Never younger than an hour, whatever the margin: a writer that started
            // after the listing has a fresh file there.
            let age =
                std::time::Duration::from_nanos(opts.margin_ns.max(0) as u64).max(STAGING_MIN_AGE);
            report.temp_files_removed = repo.backend().remove_stale_staging(age)?;
        }
        report.retention_extended = extend_retention(repo)?;
    }
    drop(session);
    Ok(report)
}

/// Where the storage locks files for a time (S3 Object Lock), extends the lock of every
/// file the repository keeps: config, keys, snapshots, index files, and the packs no
/// current marker lists (README "Object Lock"). Markers and sessions are short-lived and
/// are left to expire. Backends without retention do nothing with the listings.
fn extend_retention(repo: &Repository) -> Result<usize> {
    let b = repo.backend();
    let mut n = 0;
    for kind in [
        FileKind::Config,
        FileKind::Key,
        FileKind::Snapshot,
        FileKind::Index,
    ] {
        let ids: Vec<Id> = b.list(kind)?.into_iter().map(|(id, _)| id).collect();
        n += b.extend_retention(kind, &ids)?;
    }
    let marked = repo.gc_markers()?.marked;
    let packs: Vec<Id> = b
        .list(FileKind::Pack)?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !marked.contains(id))
        .collect();
    n += b.extend_retention(FileKind::Pack, &packs)?;
    Ok(n)
}

/// The prune's clock: the storage server's time where its session measured it (SPEC.md
/// §12.2), else this host's.
struct Clock<'a>(Option<&'a SessionGuard>);

impl Clock<'_> {
    fn now(&self) -> i64 {
        self.0.map_or_else(now_ns, |s| s.server_now_ns())
    }
}

/// The writers that may be running now.
enum LiveWriters {
    /// Their start times.
    Starts(Vec<i64>),
    /// A session file that cannot be read and has not expired: it might be any writer.
    Unknown,
}

fn live_writers(repo: &Repository, clock: &Clock<'_>) -> Result<LiveWriters> {
    let (sessions, bad) = repo.sessions()?;
    let now = clock.now();
    if bad.iter().any(|b| !bad_is_stale(b, now)) {
        return Ok(LiveWriters::Unknown);
    }
    Ok(LiveWriters::Starts(
        sessions
            .iter()
            .filter(|s| s.session.role == Role::Writer && is_live(s, now))
            .map(|s| s.session.start_ns)
            .collect(),
    ))
}

/// The superseded gc markers that still exist: a marker that supersedes others lists these
/// (a leftover must stay superseded) and not the long-deleted ones, so the lists do not
/// grow with every sweep.
fn existing_superseded_markers(repo: &Repository, gc: &GcState) -> Result<Vec<Id>> {
    let present: HashSet<Id> = repo
        .backend()
        .list(FileKind::GcMarker)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    Ok(gc
        .superseded
        .iter()
        .filter(|id| present.contains(id))
        .copied()
        .collect())
}

/// Youngest leftover staging file a prune deletes, whatever its margin.
const STAGING_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes index files and gc markers that another existing file supersedes: leftovers of
/// a run that crashed between writing the superseding file and deleting the others. Safe at
/// any time: what they say is in their superseder (less what a sweep dropped on purpose).
fn remove_superseded(repo: &Repository) -> Result<()> {
    let files = repo.index_summaries()?;
    let present: HashSet<Id> = files.iter().map(|f| f.name).collect();
    let mut superseded: Vec<Id> = files
        .iter()
        .flat_map(|f| f.supersedes.iter().copied())
        .filter(|id| present.contains(id))
        .collect();
    superseded.sort();
    superseded.dedup();
    repo.backend().remove_many(FileKind::Index, &superseded)?;
    let gc = repo.gc_markers()?;
    let markers: HashSet<Id> = repo
        .backend()
        .list(FileKind::GcMarker)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let stale: Vec<Id> = gc
        .superseded
        .iter()
        .filter(|id| markers.contains(id))
        .copied()
        .collect();
    repo.backend().remove_many(FileKind::GcMarker, &stale)?;
    Ok(())
}

/// Writes what the index files `naming` say, less the packs in `drop`, as new index
/// files; the last one written supersedes `naming` and every file `already` superseded (a
/// leftover of a crash must stay superseded once its superseder is gone). One named file
/// is in memory at a time, and the files written hold at most [`INDEX_FILE_ENTRIES`]
/// entries each (plus one pack's): those before the last supersede nothing, so a crash between them leaves
/// duplicate claims, which are harmless (SPEC.md §7.2), and never a pack unindexed.
///
/// Every piece is written under the prune's lease. Pieces that landed are kept when the
/// lease is lost: another prune may already have deleted the files they supersede, and
/// entries of packs swept meanwhile are ignored by every reader (SPEC.md §7.2).
fn rewrite_index_files(
    repo: &Repository,
    session: &SessionGuard,
    naming: &[Id],
    drop: &HashSet<Id>,
    already: &HashSet<Id>,
    max_entries: usize,
) -> Result<()> {
    let mut out = IndexFile::default();
    let mut entries = 0;
    for id in naming {
        let f = repo.load_index_file(id)?;
        for p in f.packs.into_iter().filter(|p| !drop.contains(&p.id)) {
            entries += p.blobs.len();
            out.packs.push(p);
            if entries >= max_entries {
                repo.save_index(session, &std::mem::take(&mut out))?;
                entries = 0;
            }
        }
    }
    let mut supersedes = naming.to_vec();
    supersedes.extend(already.iter().copied());
    supersedes.sort();
    supersedes.dedup();
    out.supersedes = supersedes;
    repo.save_index(session, &out)?;
    Ok(())
}

/// Copies the live blobs of `packs` (those whose kept copy `index` locates there) into new
/// packs, verifying each on the way, then writes index files for them. Only after that may
/// the old packs be marked. The blobs are found from each pack's own header.
fn copy_live_blobs(
    repo: &Repository,
    session: &SessionGuard,
    packs: &[Id],
    index: &MasterIndex,
    live: &LiveSet,
    max_entries: usize,
) -> Result<usize> {
    let key = repo.key();
    let target = repo.config().pack_size as u64;
    let mut writers: [Option<PackWriter<Box<dyn StagedFile + '_>>>; 2] = [None, None];
    let mut written = IndexFile::default();
    let mut entries = 0;
    let mut copied = 0;
    let mut flush = |w: Option<PackWriter<Box<dyn StagedFile + '_>>>, last: bool| -> Result<()> {
        if let Some(w) = w.filter(|w| !w.is_empty()) {
            let f = w.finish(key)?;
            f.sink.commit(&f.id)?;
            entries += f.header.entries.len();
            written.packs.push(IndexPack {
                id: f.id,
                blobs: f.header.entries,
            });
        }
        if !written.packs.is_empty() && (last || entries >= max_entries) {
            repo.save_index(session, &std::mem::take(&mut written))?;
            entries = 0;
        }
        Ok(())
    };
    for p in packs {
        let bytes = repo.read_checked(FileKind::Pack, p)?;
        let header = read_header(key, p, &bytes)?;
        for e in header.entries.iter().filter(|e| {
            live.contains(index, e.ty, &e.id)
                && index.get(e.ty, &e.id).is_some_and(|l| l.pack == *p)
        }) {
            let start = e.offset as usize;
            let end = start + e.stored_len as usize;
            let sealed = bytes.get(start..end).ok_or_else(|| {
                Error::corrupt(
                    "pack",
                    p,
                    format!("blob {} lies beyond the end", e.id.short()),
                )
            })?;
            // Never copy damage: the blob must decrypt and hash to its ID (on a copy: the
            // sealed bytes are what goes into the new pack).
            repo.open_stored_blob(p, e, sealed.to_vec())?;
            let slot = &mut writers[e.ty as usize];
            let w = match slot {
                Some(w) => w,
                None => slot.insert(PackWriter::new(e.ty, repo.backend().stage(FileKind::Pack)?)),
            };
            w.add(e.id, e.ty, e.compression, e.raw_len, &[sealed])?;
            copied += 1;
            if w.size() >= target {
                flush(slot.take(), false)?;
            }
        }
    }
    let [data, tree] = writers;
    flush(data, false)?;
    flush(tree, true)?;
    Ok(copied)
}
