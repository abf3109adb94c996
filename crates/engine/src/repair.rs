//! Repair: rebuild the index from pack headers, and rewrite snapshots whose data is
//! partly lost so the rest stays restorable. Every change is reported; a repaired snapshot
//! carries the tag `repaired` and names the damaged snapshot as its parent.

use std::collections::{HashMap, HashSet};

use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::BlobType;
use holdfast_repo::blob::CompressionLevel;
use holdfast_repo::blob_store::BlobStore;
use holdfast_repo::gc::Role;
use holdfast_repo::index::{IndexFile, IndexPack, MasterIndex};
use holdfast_repo::pack::{open_header, parse_trailer, TRAILER_LEN};
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::{ContentRef, NodeKind, Tree};
use holdfast_repo::writer::Writer;
use holdfast_repo::Id;
use rayon::prelude::*;

use crate::error::Result;

/// What `repair index` found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct IndexRepair {
    /// Packs whose header was read.
    pub packs_read: usize,
    /// Blobs listed by those headers.
    pub blobs: usize,
    /// Packs whose header could not be read (each with the reason); left in place.
    pub damaged_packs: Vec<String>,
    /// Packs that were not in the old index.
    pub packs_added: usize,
    /// Index entries that pointed at packs that no longer exist or are damaged.
    pub packs_dropped: usize,
    /// Old index files replaced.
    pub index_files_replaced: usize,
    /// The new index file, unless dry run.
    pub new_index: Option<Id>,
}

/// Rebuilds the index from the headers of every pack. Runs as a writer session for `host`
/// (SPEC.md §12.2): the new index file is written under its lease.
pub fn repair_index(repo: &Repository, host: &str, dry_run: bool) -> Result<IndexRepair> {
    let session = if dry_run {
        None
    } else {
        Some(repo.start_session(Role::Writer, host)?)
    };
    let packs = repo.backend().list(FileKind::Pack)?;
    let key = repo.key();
    let results: Vec<(Id, std::result::Result<IndexPack, String>)> = packs
        .par_iter()
        .map(|(id, size)| {
            let r = (|| -> holdfast_repo::Result<IndexPack> {
                let trailer = repo.backend().read_range(
                    FileKind::Pack,
                    id,
                    size.saturating_sub(TRAILER_LEN as u64),
                    TRAILER_LEN as u64,
                )?;
                let hlen = parse_trailer(id, &trailer, *size)? as u64;
                let sealed = repo.backend().read_range(
                    FileKind::Pack,
                    id,
                    size - TRAILER_LEN as u64 - hlen,
                    hlen,
                )?;
                let header = open_header(key, id, &sealed, *size)?;
                Ok(IndexPack {
                    id: *id,
                    blobs: header.entries,
                })
            })();
            (*id, r.map_err(|e| e.to_string()))
        })
        .collect();
    let old_files = repo.backend().list(FileKind::Index)?;
    let old_packs: HashSet<Id> = match repo.index_files() {
        Ok(files) => files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
            .collect(),
        Err(_) => HashSet::new(),
    };
    let mut report = IndexRepair::default();
    let mut good = Vec::new();
    for (id, r) in results {
        match r {
            Ok(p) => {
                report.packs_read += 1;
                report.blobs += p.blobs.len();
                if !old_packs.contains(&id) {
                    report.packs_added += 1;
                }
                good.push(p);
            }
            Err(e) => report.damaged_packs.push(e),
        }
    }
    let good_ids: HashSet<Id> = good.iter().map(|p| p.id).collect();
    report.packs_dropped = old_packs.iter().filter(|p| !good_ids.contains(p)).count();
    report.index_files_replaced = old_files.len();
    if let Some(session) = &session {
        let supersedes: Vec<Id> = old_files.iter().map(|(id, _)| *id).collect();
        let new = repo.save_index(
            session,
            &IndexFile {
                supersedes: supersedes.clone(),
                packs: good,
            },
        )?;
        let old: Vec<Id> = supersedes.into_iter().filter(|id| *id != new).collect();
        session.check()?;
        repo.backend().remove_many(FileKind::Index, &old)?;
        report.new_index = Some(new);
    }
    Ok(report)
}

/// One snapshot `repair snapshots` changed (or would change).
#[derive(Debug, Default, serde::Serialize)]
pub struct SnapshotRepair {
    /// The damaged snapshot.
    pub snapshot: Id,
    /// Its replacement, unless dry run.
    pub replaced_by: Option<Id>,
    /// Paths removed because their data is missing or their tree cannot be read.
    pub removed: Vec<String>,
}

/// Rewrites every snapshot that references missing or unreadable trees or data: entries
/// whose data is gone are removed (and listed), the rest is kept. Old trees are read and
/// data is judged present through `index`, the full (reader's) index; new trees are
/// stored through `writer` and the new snapshots written under its lease.
pub fn repair_snapshots(
    writer: &Writer<'_>,
    index: &MasterIndex,
    dry_run: bool,
) -> Result<Vec<SnapshotRepair>> {
    let repo = writer.repo();
    let (snaps, _) = repo.snapshots()?;
    let mut out = Vec::new();
    BlobStore::pipelined(
        writer,
        CompressionLevel::default(),
        1,
        |store| -> Result<()> {
            let mut memo: HashMap<Id, (Id, Vec<String>)> = HashMap::new();
            for (id, snap) in &snaps {
                let (new_root, removed) =
                    match rewrite(repo, index, store, &snap.tree, &mut memo, dry_run) {
                        Ok(r) => r,
                        Err(e) => (
                            empty_tree(store, dry_run)?,
                            vec![format!("/ (the root tree is unreadable: {e})")],
                        ),
                    };
                if removed.is_empty() {
                    continue;
                }
                let mut rep = SnapshotRepair {
                    snapshot: *id,
                    replaced_by: None,
                    removed,
                };
                if !dry_run {
                    let mut s = snap.clone();
                    s.tree = new_root;
                    s.parent = Some(*id);
                    if !s.tags.iter().any(|t| t == "repaired") {
                        s.tags.push("repaired".into());
                        s.tags.sort();
                    }
                    rep.replaced_by = Some(*id); // filled in after the store has flushed
                    out.push((rep, s));
                    continue;
                }
                out.push((rep, snap.clone()));
            }
            Ok(())
        },
    )?;
    let mut reports = Vec::new();
    for (mut rep, s) in out {
        if !dry_run {
            // The trees are durable now (the pipelined store flushed): write, then delete.
            let new = writer.save_snapshot(&s)?;
            repo.backend().remove(FileKind::Snapshot, &rep.snapshot)?;
            rep.replaced_by = Some(new);
        }
        reports.push(rep);
    }
    Ok(reports)
}

fn rewrite(
    repo: &Repository,
    index: &MasterIndex,
    store: &BlobStore<'_>,
    tree_id: &Id,
    memo: &mut HashMap<Id, (Id, Vec<String>)>,
    dry_run: bool,
) -> Result<(Id, Vec<String>)> {
    if let Some(done) = memo.get(tree_id) {
        return Ok(done.clone());
    }
    let tree = repo.load_tree(index, tree_id)?;
    let mut removed_rel: Vec<String> = Vec::new();
    let mut nodes = Vec::new();
    for mut n in tree.nodes {
        let name = String::from_utf8_lossy(&n.name).into_owned();
        match n.kind {
            NodeKind::File => {
                let missing = n.content.iter().any(
                    |c| matches!(c, ContentRef::Blob(b) if !index.contains(BlobType::Data, b)),
                );
                if missing {
                    removed_rel.push(format!("/{name}"));
                    continue;
                }
            }
            NodeKind::Dir => {
                let sub = n.subtree.expect("decoded dirs have subtrees");
                match rewrite(repo, index, store, &sub, memo, dry_run) {
                    Ok((new, removed)) => {
                        removed_rel.extend(removed.into_iter().map(|r| format!("/{name}{r}")));
                        n.subtree = Some(new);
                    }
                    Err(e) => {
                        removed_rel.push(format!("/{name}/ (directory contents unreadable: {e})"));
                        n.subtree = Some(empty_tree(store, dry_run)?);
                    }
                }
            }
            _ => {}
        }
        nodes.push(n);
    }
    let new_id = if removed_rel.is_empty() {
        *tree_id
    } else {
        store_tree(store, &Tree { nodes }, dry_run)?
    };
    memo.insert(*tree_id, (new_id, removed_rel.clone()));
    Ok((new_id, removed_rel))
}

/// Stores (unless dry run) and returns the empty tree, standing in for an unreadable one.
fn empty_tree(store: &BlobStore<'_>, dry_run: bool) -> Result<Id> {
    store_tree(store, &Tree::default(), dry_run)
}

/// Stores a tree (unless dry run) and returns its ID.
fn store_tree(store: &BlobStore<'_>, tree: &Tree, dry_run: bool) -> Result<Id> {
    let bytes = tree.encode().map_err(|e| holdfast_repo::Error::Encode {
        what: "tree",
        detail: e.to_string(),
    })?;
    let id = store.id_of(&bytes);
    if !dry_run {
        store.add_owned(BlobType::Tree, id, bytes)?;
    }
    Ok(id)
}
