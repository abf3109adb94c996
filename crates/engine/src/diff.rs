//! What changed between two snapshots: a walk of both trees side by side.
//!
//! Trees are content-addressed, so two directories with the same subtree ID hold the same
//! entries all the way down: the walk skips them without loading anything. That makes the
//! diff of two snapshots of a large, mostly unchanged volume cost about as much as the
//! changed directories, not the whole tree. Entries are compared by name (trees are sorted
//! by name as bytes), so the output comes in path order.

use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::{Node, NodeKind, Tree};
use holdfast_repo::Id;
use serde::Serialize;

use crate::error::Result;

/// How one path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// In both, with other content (or another kind of entry, or another link target).
    Modified,
    /// In both with the same content, but other metadata (mode, owner, mtime, xattrs).
    Metadata,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Absolute path in the snapshot, as bytes.
    #[serde(serialize_with = "ser_bytes")]
    pub path: Vec<u8>,
    /// What changed.
    pub kind: ChangeKind,
    /// The entry's kind in the older snapshot, if it is there.
    pub old_kind: Option<NodeKind>,
    /// The entry's kind in the newer snapshot, if it is there.
    pub new_kind: Option<NodeKind>,
    /// Size in the older snapshot (files: content length).
    pub old_size: Option<u64>,
    /// Size in the newer snapshot.
    pub new_size: Option<u64>,
}

fn ser_bytes<S: serde::Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// Counts of a diff, by kind of change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffCounts {
    /// Added entries.
    pub added: u64,
    /// Removed entries.
    pub removed: u64,
    /// Entries with other content.
    pub modified: u64,
    /// Entries with only other metadata.
    pub metadata: u64,
    /// Bytes of added files plus the growth of modified ones.
    pub bytes_added: u64,
    /// Bytes of removed files plus the shrinkage of modified ones.
    pub bytes_removed: u64,
}

impl DiffCounts {
    /// Counts `changes`.
    pub fn of(changes: &[Change]) -> DiffCounts {
        let mut c = DiffCounts::default();
        for ch in changes {
            let file = |k: Option<NodeKind>, s: Option<u64>| {
                if k == Some(NodeKind::File) {
                    s.unwrap_or(0)
                } else {
                    0
                }
            };
            let (old, new) = (
                file(ch.old_kind, ch.old_size),
                file(ch.new_kind, ch.new_size),
            );
            match ch.kind {
                ChangeKind::Added => c.added += 1,
                ChangeKind::Removed => c.removed += 1,
                ChangeKind::Modified => c.modified += 1,
                ChangeKind::Metadata => c.metadata += 1,
            }
            c.bytes_added += new.saturating_sub(old);
            c.bytes_removed += old.saturating_sub(new);
        }
        c
    }
}

/// The changes from tree `old` to tree `new` (two snapshots' root trees), in path order.
/// Directories whose subtree IDs are equal are skipped unread; an added or removed
/// directory is listed with everything below it.
pub fn diff(repo: &Repository, index: &MasterIndex, old: &Id, new: &Id) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(repo, index, Some(old), Some(new), b"", &mut out)?;
    Ok(out)
}

fn load(repo: &Repository, index: &MasterIndex, id: Option<&Id>) -> Result<Tree> {
    Ok(match id {
        Some(id) => repo.load_tree(index, id)?,
        None => Tree::default(),
    })
}

fn child(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
    p.extend_from_slice(prefix);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn change(path: Vec<u8>, kind: ChangeKind, old: Option<&Node>, new: Option<&Node>) -> Change {
    Change {
        path,
        kind,
        old_kind: old.map(|n| n.kind),
        new_kind: new.map(|n| n.kind),
        old_size: old.map(|n| n.size),
        new_size: new.map(|n| n.size),
    }
}

/// Whether two entries of the same kind hold different content.
fn content_differs(a: &Node, b: &Node) -> bool {
    a.size != b.size || a.content != b.content || a.link_target != b.link_target || a.rdev != b.rdev
}

/// Whether two entries differ in what a restore would set besides content.
fn metadata_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime_ns != b.mtime_ns
        || a.xattrs != b.xattrs
}

fn walk(
    repo: &Repository,
    index: &MasterIndex,
    old: Option<&Id>,
    new: Option<&Id>,
    prefix: &[u8],
    out: &mut Vec<Change>,
) -> Result<()> {
    if old.is_some() && old == new {
        return Ok(());
    }
    let (a, b) = (load(repo, index, old)?, load(repo, index, new)?);
    let (mut i, mut j) = (0, 0);
    while i < a.nodes.len() || j < b.nodes.len() {
        let order = match (a.nodes.get(i), b.nodes.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let x = &a.nodes[i];
                let p = child(prefix, &x.name);
                out.push(change(p.clone(), ChangeKind::Removed, Some(x), None));
                if let Some(sub) = &x.subtree {
                    walk(repo, index, Some(sub), None, &p, out)?;
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let y = &b.nodes[j];
                let p = child(prefix, &y.name);
                out.push(change(p.clone(), ChangeKind::Added, None, Some(y)));
                if let Some(sub) = &y.subtree {
                    walk(repo, index, None, Some(sub), &p, out)?;
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&a.nodes[i], &b.nodes[j]);
                let p = child(prefix, &x.name);
                if x.kind != y.kind {
                    out.push(change(p.clone(), ChangeKind::Modified, Some(x), Some(y)));
                    walk(repo, index, x.subtree.as_ref(), y.subtree.as_ref(), &p, out)?;
                } else if x.kind == NodeKind::Dir {
                    // A directory's own mtime changes with its entries: only what is below
                    // it is reported.
                    walk(repo, index, x.subtree.as_ref(), y.subtree.as_ref(), &p, out)?;
                } else if content_differs(x, y) {
                    out.push(change(p, ChangeKind::Modified, Some(x), Some(y)));
                } else if metadata_differs(x, y) {
                    out.push(change(p, ChangeKind::Metadata, Some(x), Some(y)));
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::archiver::BackupProgress;
    use crate::backup::{self, BackupRequest, ParentChoice, Source};
    use crate::testing::repo;

    fn snap(r: &Repository, src: &Path, t: i64) -> Id {
        let req = BackupRequest {
            parent: ParentChoice::Auto,
            host: "h".into(),
            time_ns: t,
            ..BackupRequest::new(vec![Source::new(src)])
        };
        let rep = backup::run(r, &req, &BackupProgress::default()).unwrap();
        r.load_snapshot(&rep.snapshot_id).unwrap().tree
    }

    fn rel(src: &Path, c: &Change) -> (String, ChangeKind) {
        let p = String::from_utf8_lossy(&c.path).into_owned();
        let base = src.display().to_string();
        (p.strip_prefix(&base).unwrap_or(&p).to_string(), c.kind)
    }

    #[test]
    fn reports_added_removed_modified_and_metadata_and_skips_equal_subtrees() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(&d.path().join("repo"));
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("same/deep")).unwrap();
        std::fs::create_dir_all(src.join("gone")).unwrap();
        std::fs::write(src.join("same/deep/x"), b"x").unwrap();
        std::fs::write(src.join("gone/y"), b"yy").unwrap();
        std::fs::write(src.join("edit"), b"one").unwrap();
        std::fs::write(src.join("chmod"), b"c").unwrap();
        let t1 = snap(&r, &src, 1);

        std::fs::remove_dir_all(src.join("gone")).unwrap();
        std::fs::write(src.join("edit"), b"three").unwrap();
        std::fs::write(src.join("new"), b"n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("chmod"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let t2 = snap(&r, &src, 2);

        let index = r.load_index().unwrap();
        let changes = diff(&r, &index, &t1, &t2).unwrap();
        let got: Vec<_> = changes.iter().map(|c| rel(&src, c)).collect();
        assert_eq!(
            got,
            vec![
                ("/chmod".to_string(), ChangeKind::Metadata),
                ("/edit".to_string(), ChangeKind::Modified),
                ("/gone".to_string(), ChangeKind::Removed),
                ("/gone/y".to_string(), ChangeKind::Removed),
                ("/new".to_string(), ChangeKind::Added),
            ]
        );
        let edit = &changes[1];
        assert_eq!((edit.old_size, edit.new_size), (Some(3), Some(5)));
        let c = DiffCounts::of(&changes);
        assert_eq!((c.added, c.removed, c.modified, c.metadata), (1, 2, 1, 1));
        assert_eq!((c.bytes_added, c.bytes_removed), (1 + 2, 2));
        // The same tree against itself: nothing, and nothing loaded.
        assert!(diff(&r, &index, &t2, &t2).unwrap().is_empty());
        // Reversed: additions become removals.
        let back = diff(&r, &index, &t2, &t1).unwrap();
        assert!(back
            .iter()
            .any(|c| c.kind == ChangeKind::Added && c.path.ends_with(b"/gone/y")));
    }

    #[test]
    fn an_unchanged_subtree_is_not_loaded() {
        // A subtree ID that is not in the index would fail to load: equal IDs never are.
        let d = tempfile::tempdir().unwrap();
        let r = repo(&d.path().join("repo"));
        let index = r.load_index().unwrap();
        let bogus = Id([7; 32]);
        assert!(diff(&r, &index, &bogus, &bogus).unwrap().is_empty());
        assert!(diff(&r, &index, &bogus, &Id([8; 32])).is_err());
    }
}
