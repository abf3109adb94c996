//! Prune: delete data no snapshot needs, safely beside running backups, without a lock
//! (SPEC.md §12.3). Each run sweeps the packs marked by an earlier run at least the safety
//! margin ago (unless a writer that started before the mark is still running, or a snapshot
//! now references them), then marks what is unused now and repacks mostly-unused packs.
//! Nothing is ever decided and deleted in the same run.

use std::collections::{HashMap, HashSet};

use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::{open_blob, BlobType, SealedBlob};
use holdfast_repo::gc::{GcMarker, Role};
use holdfast_repo::index::{IndexFile, IndexPack, MasterIndex};
use holdfast_repo::pack::{PackBuilder, PackEntry};
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::ContentRef;
use holdfast_repo::{Error, Id};

use crate::error::{EngineError, Result};
use crate::session::{is_live, now_ns, SessionGuard, SKEW_NS};

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
    /// Stale session files removed.
    pub stale_sessions_removed: usize,
    /// Live blobs (referenced by some snapshot).
    pub live_blobs: usize,
}

/// Every (type, ID) referenced by any snapshot. Fails if any snapshot or tree cannot be
/// read, or if a referenced blob is not in the index: what a damaged repository needs is
/// unknown (a lost index file leaves needed packs looking unindexed), so nothing may be
/// marked or deleted until `check` and `repair index` have run.
///
/// `snaps` must have been listed before `index` was loaded: a writer writes its index files
/// before its snapshot, so every listed snapshot's blobs are then in `index`.
pub fn live_set(
    repo: &Repository,
    snaps: &[Snapshot],
    index: &MasterIndex,
) -> Result<HashSet<(BlobType, Id)>> {
    let live = referenced_blobs(repo, snaps, index)?;
    let missing = live
        .iter()
        .filter(|(ty, id)| !index.contains(*ty, id))
        .count();
    if missing > 0 {
        return Err(EngineError::Usage(format!(
            "refusing to prune: {missing} blobs that snapshots need are not in the index (a lost or damaged index file?); run `holdfast check`, then `holdfast repair index`"
        )));
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

fn referenced_blobs(
    repo: &Repository,
    snaps: &[Snapshot],
    index: &MasterIndex,
) -> Result<HashSet<(BlobType, Id)>> {
    let mut live = HashSet::new();
    let mut todo: Vec<Id> = snaps.iter().map(|s| s.tree).collect();
    while let Some(t) = todo.pop() {
        if !live.insert((BlobType::Tree, t)) {
            continue;
        }
        let tree = repo.load_tree(index, &t)?;
        for n in tree.nodes {
            for c in n.content {
                if let ContentRef::Blob(id) = c {
                    live.insert((BlobType::Data, id));
                }
            }
            if let Some(s) = n.subtree {
                todo.push(s);
            }
        }
    }
    Ok(live)
}

/// The current index files and what they say, per pack.
struct IndexView {
    files: Vec<(Id, IndexFile)>,
    superseded: HashSet<Id>,
    /// Pack -> its blobs (from non-superseded files).
    packs: HashMap<Id, Vec<PackEntry>>,
    full: MasterIndex,
}

fn index_view(repo: &Repository) -> Result<IndexView> {
    let files = repo.index_files()?;
    let superseded: HashSet<Id> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut packs: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    for (id, f) in &files {
        if superseded.contains(id) {
            continue;
        }
        for p in &f.packs {
            packs
                .entry(p.id)
                .or_default()
                .extend(p.blobs.iter().copied());
        }
    }
    let full = MasterIndex::from_files(files.iter().map(|(id, f)| (*id, f)));
    Ok(IndexView {
        files,
        superseded,
        packs,
        full,
    })
}

/// Runs one prune.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let session = if opts.dry_run {
        None
    } else {
        Some(SessionGuard::start(repo, Role::Prune, &opts.host)?)
    };
    let own = session.as_ref().map(|s| s.session.session_id);
    let (sessions, bad_sessions) = repo.sessions()?;
    let now = now_ns();
    if let Some((_, other)) = sessions
        .iter()
        .find(|(_, s)| s.role == Role::Prune && Some(s.session_id) != own && is_live(s, now))
    {
        return Err(EngineError::Usage(format!(
            "another prune is running (host {}, pid {}): try again when it has finished",
            other.host, other.pid
        )));
    }

    // --- Sweep: markers old enough. ---
    let gc = repo.gc_markers()?;
    let due: Vec<&(Id, GcMarker)> = gc
        .current
        .iter()
        .filter(|(_, m)| now.saturating_sub(m.mark_ns) >= opts.margin_ns)
        .collect();
    report.markers_due = due.len();
    // Snapshots, the index read after them, and their live set, when the sweep computed them.
    let mut known: Option<(IndexView, HashSet<(BlobType, Id)>)> = None;
    let mut swept_any = false;
    if !due.is_empty() {
        // Sessions first, snapshots after (SPEC.md §12.4): a writer that was running at the
        // mark has either ended (its snapshot is visible now) or holds the sweep back.
        let (sessions, more_bad) = repo.sessions()?;
        let now = now_ns();
        let mut sweepable: Vec<&(Id, GcMarker)> = Vec::new();
        for m in due {
            let blocker = sessions.iter().find(|(_, s)| {
                s.role == Role::Writer && is_live(s, now) && s.start_ns < m.1.mark_ns + SKEW_NS
            });
            if let Some((_, s)) = blocker {
                report.sweep_postponed.push(format!(
                    "marker {}: backup on {} (pid {}) started before it and is still running",
                    m.0.short(),
                    s.host,
                    s.pid
                ));
            } else if !bad_sessions.is_empty() || !more_bad.is_empty() {
                report.sweep_postponed.push(format!(
                    "marker {}: a session file is unreadable, so running backups are unknown",
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
            let view = index_view(repo)?;
            let referenced = live_set(repo, &snaps, &view.full)?;
            let candidates: HashSet<Id> = sweepable
                .iter()
                .flat_map(|(_, m)| m.packs.iter().copied())
                .collect();
            // Where else each referenced blob lives, outside every marked pack.
            let mut safe_copy: HashSet<(BlobType, Id)> = HashSet::new();
            for (p, blobs) in &view.packs {
                if !gc.marked.contains(p) {
                    safe_copy.extend(blobs.iter().map(|b| (b.ty, b.id)));
                }
            }
            let mut delete: Vec<Id> = Vec::new();
            for p in &candidates {
                let needed = view.packs.get(p).is_some_and(|blobs| {
                    blobs.iter().any(|b| {
                        referenced.contains(&(b.ty, b.id)) && !safe_copy.contains(&(b.ty, b.id))
                    })
                });
                if needed {
                    report.packs_rescued += 1;
                } else {
                    delete.push(*p);
                }
            }
            delete.sort();
            let sizes: HashMap<Id, u64> =
                repo.backend().list(FileKind::Pack)?.into_iter().collect();
            report.packs_deleted = delete.len();
            report.bytes_deleted = delete.iter().filter_map(|p| sizes.get(p)).sum();
            if !opts.dry_run {
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
                    // Also every marker already superseded: should a crash leave one behind,
                    // deleting this marker must not bring it back.
                    let mut supersedes = old_markers.clone();
                    supersedes.extend(gc.superseded.iter().copied());
                    supersedes.sort();
                    supersedes.dedup();
                    new_marker = Some(repo.save_gc_marker(&GcMarker {
                        mark_ns,
                        supersedes,
                        packs: delete.clone(),
                    })?);
                }
                // 2. No current index file may name a pack about to go.
                let naming: Vec<&(Id, IndexFile)> = view
                    .files
                    .iter()
                    .filter(|(id, f)| {
                        !view.superseded.contains(id)
                            && f.packs.iter().any(|p| delete_set.contains(&p.id))
                    })
                    .collect();
                if !naming.is_empty() {
                    let packs: Vec<IndexPack> = naming
                        .iter()
                        .flat_map(|(_, f)| {
                            f.packs
                                .iter()
                                .filter(|p| !delete_set.contains(&p.id))
                                .cloned()
                        })
                        .collect();
                    let mut supersedes: Vec<Id> = naming.iter().map(|(id, _)| *id).collect();
                    report.index_files_superseded = supersedes.len();
                    // Also every file already superseded (by a file deleted below, perhaps):
                    // a leftover of a crash must stay superseded once its superseder is gone.
                    supersedes.extend(view.superseded.iter().copied());
                    supersedes.sort();
                    supersedes.dedup();
                    repo.save_index(&IndexFile { supersedes, packs })?;
                }
                // 3. Packs, then superseded index files, then markers.
                for p in &delete {
                    repo.backend().remove(FileKind::Pack, p)?;
                }
                for (id, _) in &naming {
                    repo.backend().remove(FileKind::Index, id)?;
                }
                for id in old_markers.iter().chain(new_marker.iter()) {
                    repo.backend().remove(FileKind::GcMarker, id)?;
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
            let view = index_view(repo)?;
            let live = live_set(repo, &snaps, &view.full)?;
            (view, live)
        }
    };
    report.live_blobs = live.len();
    let sizes: HashMap<Id, u64> = repo.backend().list(FileKind::Pack)?.into_iter().collect();
    // One keeper location per live blob: the one the master index picked among unmarked packs.
    let writer_view =
        MasterIndex::from_files_excluding(view.files.iter().map(|(id, f)| (*id, f)), &gc.marked);
    let is_keeper = |p: &Id, e: &PackEntry| {
        live.contains(&(e.ty, e.id)) && writer_view.get(e.ty, &e.id).is_some_and(|l| l.pack == *p)
    };
    let mut to_mark: Vec<Id> = Vec::new();
    let mut partial: Vec<(Id, u64, u64)> = Vec::new(); // pack, unused bytes, size
    let mut total_bytes = 0u64;
    let mut unused_total = 0u64;
    for (p, blobs) in &view.packs {
        if gc.marked.contains(p) || !sizes.contains_key(p) {
            continue;
        }
        let size = sizes[p];
        total_bytes += size;
        let used: u64 = blobs
            .iter()
            .filter(|e| is_keeper(p, e))
            .map(|e| e.stored_len as u64)
            .sum();
        // Unused: blobs no snapshot needs (or duplicates). The pack's header and trailer are
        // not: a repacked pack has them too, so counting them would repack forever.
        let unused: u64 = blobs
            .iter()
            .filter(|e| !is_keeper(p, e))
            .map(|e| e.stored_len as u64)
            .sum();
        if used == 0 {
            to_mark.push(*p);
        } else if unused > 0 {
            unused_total += unused;
            partial.push((*p, unused, size));
        }
    }
    // Packs no index names. A running backup's packs look like that until it writes their
    // index file; marking them would make every later backup upload their blobs again. The
    // sessions are listed after the packs, so a backup that wrote one of them is seen.
    let orphans: Vec<Id> = sizes
        .keys()
        .filter(|p| !view.packs.contains_key(p) && !gc.marked.contains(p))
        .copied()
        .collect();
    if !orphans.is_empty() {
        let (sessions, bad) = repo.sessions()?;
        let now = now_ns();
        let writing = !bad.is_empty()
            || sessions
                .iter()
                .any(|(_, s)| s.role == Role::Writer && is_live(s, now));
        if writing {
            report.orphans_deferred = orphans.len();
        } else {
            report.orphans_marked = orphans.len();
            to_mark.extend(orphans);
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
    if !repack.is_empty() && !opts.dry_run {
        let copied = copy_live_blobs(repo, &repack, &view, &is_keeper)?;
        report.blobs_repacked = copied;
    }
    report.packs_repacked = repack.len();
    to_mark.extend(repack);
    to_mark.sort();
    to_mark.dedup();
    report.packs_marked = to_mark.len();
    report.bytes_marked = to_mark.iter().filter_map(|p| sizes.get(p)).sum();
    if !to_mark.is_empty() && !opts.dry_run {
        repo.save_gc_marker(&GcMarker {
            mark_ns: now_ns(),
            supersedes: vec![],
            packs: to_mark,
        })?;
    }

    // --- Housekeeping: stale sessions, superseded index files and markers. ---
    if !opts.dry_run {
        remove_superseded(repo)?;
        let now = now_ns();
        for (id, _) in sessions.iter().filter(|(_, s)| !is_live(s, now)) {
            repo.backend().remove(FileKind::Session, id)?;
            report.stale_sessions_removed += 1;
        }
    }
    drop(session);
    Ok(report)
}

/// Deletes index files and gc markers that another existing file supersedes: leftovers of
/// a run that crashed between writing the superseding file and deleting the others. Safe at
/// any time: what they say is in their superseder (less what a sweep dropped on purpose).
fn remove_superseded(repo: &Repository) -> Result<()> {
    let files = repo.index_files()?;
    let present: HashSet<Id> = files.iter().map(|(id, _)| *id).collect();
    let superseded: HashSet<Id> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .filter(|id| present.contains(id))
        .collect();
    for id in &superseded {
        repo.backend().remove(FileKind::Index, id)?;
    }
    let gc = repo.gc_markers()?;
    let markers: HashSet<Id> = repo
        .backend()
        .list(FileKind::GcMarker)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for id in gc.superseded.iter().filter(|id| markers.contains(id)) {
        repo.backend().remove(FileKind::GcMarker, id)?;
    }
    Ok(())
}

/// Copies the live blobs of `packs` into new packs (verifying each on the way), then
/// writes an index file for them. Only after that may the old packs be marked.
fn copy_live_blobs(
    repo: &Repository,
    packs: &[Id],
    view: &IndexView,
    is_keeper: &dyn Fn(&Id, &PackEntry) -> bool,
) -> Result<usize> {
    let key = repo.key();
    let target = repo.config().pack_size as usize;
    let mut builders = [
        PackBuilder::new(BlobType::Data),
        PackBuilder::new(BlobType::Tree),
    ];
    let mut written: Vec<IndexPack> = Vec::new();
    let mut copied = 0;
    let flush = |b: PackBuilder, written: &mut Vec<IndexPack>| -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let f = b.finish(key)?;
        repo.backend().write(FileKind::Pack, &f.id, &f.bytes)?;
        written.push(IndexPack {
            id: f.id,
            blobs: f.header.entries,
        });
        Ok(())
    };
    for p in packs {
        let bytes = repo.read_checked(FileKind::Pack, p)?;
        for e in view
            .packs
            .get(p)
            .into_iter()
            .flatten()
            .filter(|e| is_keeper(p, e))
        {
            let start = e.offset as usize;
            let end = start + e.stored_len as usize;
            let sealed = bytes.get(start..end).ok_or_else(|| {
                Error::corrupt(
                    "pack",
                    p,
                    format!("blob {} lies beyond the end", e.id.short()),
                )
            })?;
            // Never copy damage: the blob must decrypt and hash to its ID.
            open_blob(key, e.ty, e.compression, &e.id, e.raw_len, sealed)?;
            let b = &mut builders[e.ty as usize];
            b.add(SealedBlob {
                id: e.id,
                ty: e.ty,
                compression: e.compression,
                raw_len: e.raw_len,
                bytes: sealed.to_vec(),
            })?;
            copied += 1;
            if b.size() >= target {
                let full = std::mem::replace(b, PackBuilder::new(e.ty));
                flush(full, &mut written)?;
            }
        }
    }
    for b in builders {
        flush(b, &mut written)?;
    }
    if !written.is_empty() {
        repo.save_index(&IndexFile {
            supersedes: vec![],
            packs: written,
        })?;
    }
    Ok(copied)
}
