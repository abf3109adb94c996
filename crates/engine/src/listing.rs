//! Results that describe what a repository holds: snapshot listings, tree entries and
//! statistics, as `Serialize` structs (the command-line tool prints them with `--json`,
//! the agent reports them).

use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::BlobType;
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::{Origin, Snapshot, Summary};
use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::Id;
use serde::Serialize;

use crate::error::Result;
use crate::highwater::{HighWater, Rollback};

/// A time as RFC 3339 in the given offset from UTC, to the second (a snapshot's time in
/// its host's local time); `@SECONDS` if it cannot be shown.
pub fn format_time(ns: i64, offset_s: i32) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nsec = ns.rem_euclid(1_000_000_000) as u32;
    let off = chrono::FixedOffset::east_opt(offset_s)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
    match chrono::DateTime::from_timestamp(secs, nsec) {
        Some(t) => t
            .with_timezone(&off)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => format!("@{secs}"),
    }
}

/// Paths stored as bytes, as text (invalid UTF-8 replaced).
pub fn paths_text(paths: &[Vec<u8>]) -> Vec<String> {
    paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// One snapshot in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotEntry {
    /// Its ID.
    pub id: Id,
    /// The ID's first digits, as shown in tables.
    pub short_id: String,
    /// Its time, RFC 3339 in the backup host's offset ([`format_time`]).
    pub time: String,
    /// Its time, ns since the epoch.
    pub time_ns: i64,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// The recorded paths.
    pub paths: Vec<String>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// Root tree.
    pub tree: Id,
    /// The snapshot it was made incrementally from.
    pub parent: Option<Id>,
    /// Version of the program that wrote it.
    pub program_version: String,
    /// The backup's counters.
    pub summary: Summary,
    /// Its host sequence number (SPEC.md §9.1), where it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_seq: Option<u64>,
    /// Where it was copied from, for a copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl SnapshotEntry {
    /// The entry for snapshot `id`.
    pub fn new(id: &Id, s: &Snapshot) -> SnapshotEntry {
        SnapshotEntry {
            id: *id,
            short_id: id.short(),
            time: format_time(s.time_ns, s.utc_offset_s),
            time_ns: s.time_ns,
            host: s.host.clone(),
            user: s.user.clone(),
            paths: paths_text(&s.paths),
            tags: s.tags.clone(),
            tree: s.tree,
            parent: s.parent,
            program_version: s.program_version.clone(),
            summary: s.summary.clone(),
            host_seq: s.ext.host_seq,
            origin: s.ext.origin,
        }
    }
}

/// The snapshots of a repository, oldest first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotListing {
    /// The snapshots that passed the filter.
    pub snapshots: Vec<SnapshotEntry>,
    /// Snapshot files that could not be read (damaged, or unreadable), one message each.
    pub unreadable: Vec<String>,
    /// Signs that the repository went backwards since this machine last listed it.
    pub rollbacks: Vec<Rollback>,
}

/// Lists the snapshots that `filter` passes, oldest first; damaged ones are named in
/// [`SnapshotListing::unreadable`] (one bad file does not hide the others).
pub fn snapshots(
    repo: &Repository,
    filter: &holdfast_repo::repository::SnapshotFilter,
) -> Result<SnapshotListing> {
    let (all, bad) = repo.snapshots()?;
    let mut marks = HighWater::load(None, &repo.config().repo_id);
    let rollbacks = marks.observe(all.iter().map(|(i, s)| (i, s)));
    // Best effort: a listing must work on a read-only home too.
    let _ = marks.save();
    Ok(SnapshotListing {
        rollbacks,
        snapshots: all
            .iter()
            .filter(|(_, s)| filter.matches(s))
            .map(|(id, s)| SnapshotEntry::new(id, s))
            .collect(),
        unreadable: bad.iter().map(ToString::to_string).collect(),
    })
}

/// How big a repository is and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepoStats {
    /// Snapshots that could be read.
    pub snapshots: usize,
    /// Snapshot files that could not be read.
    pub damaged_snapshots: usize,
    /// Pack files.
    pub packs: usize,
    /// Their total size.
    pub pack_bytes: u64,
    /// Data blobs in the index.
    pub data_blobs: u64,
    /// Tree blobs in the index.
    pub tree_blobs: u64,
    /// Their size before compression and encryption.
    pub blob_raw_bytes: u64,
    /// Their size as stored.
    pub blob_stored_bytes: u64,
    /// The size of the files of all snapshots together (before deduplication).
    pub snapshot_file_bytes: u64,
}

/// Counts what the repository holds.
pub fn stats(repo: &Repository) -> Result<RepoStats> {
    let index = repo.load_index()?;
    let (snaps, bad) = repo.snapshots()?;
    let packs = repo.backend().list(FileKind::Pack)?;
    let mut st = RepoStats {
        snapshots: snaps.len(),
        damaged_snapshots: bad.len(),
        packs: packs.len(),
        pack_bytes: packs.iter().map(|(_, s)| s).sum(),
        snapshot_file_bytes: snaps.iter().map(|(_, s)| s.summary.bytes_total).sum(),
        ..RepoStats::default()
    };
    for b in index.blobs() {
        match b.ty {
            BlobType::Data => st.data_blobs += 1,
            BlobType::Tree => st.tree_blobs += 1,
        }
        st.blob_raw_bytes += b.raw_len as u64;
        st.blob_stored_bytes += b.stored_len as u64;
    }
    Ok(st)
}

/// One entry of a snapshot's tree at its absolute path in the snapshot, as `ls` lists
/// it. Serialized as the path, the node's name, `type`, size, mode, owner (`uid`, `gid`,
/// `user`, `group`), `mtime_ns`, `links` and a symlink's `link_target` (null for other
/// kinds); names and paths as text, invalid UTF-8 replaced.
#[derive(Debug, Clone, Copy)]
pub struct NodeEntry<'a> {
    /// The absolute path in the snapshot, as bytes.
    pub path: &'a [u8],
    /// The node.
    pub node: &'a Node,
}

impl Serialize for NodeEntry<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let n = self.node;
        let mut st = s.serialize_struct("NodeEntry", 12)?;
        st.serialize_field("path", &String::from_utf8_lossy(self.path))?;
        st.serialize_field("name", &String::from_utf8_lossy(&n.name))?;
        st.serialize_field("type", &n.kind)?;
        st.serialize_field("size", &n.size)?;
        st.serialize_field("mode", &n.mode)?;
        st.serialize_field("uid", &n.uid)?;
        st.serialize_field("gid", &n.gid)?;
        st.serialize_field("user", &n.user)?;
        st.serialize_field("group", &n.group)?;
        st.serialize_field("mtime_ns", &n.mtime_ns)?;
        st.serialize_field("links", &n.links)?;
        st.serialize_field(
            "link_target",
            &(n.kind == NodeKind::Symlink).then(|| String::from_utf8_lossy(&n.link_target)),
        )?;
        st.end()
    }
}
