//! Backup: walks source paths, chunks files, stores blobs and trees, writes a snapshot.
//!
//! Data flows one way: filesystem → chunker → blob store → backend. Directories are
//! processed with their entries in parallel (rayon work-stealing spreads a wide or deep
//! tree over every core); a file is read, chunked, hashed, compressed and sealed by the
//! thread that took it. A file whose size, mtime, ctime and inode match the parent
//! snapshot reuses its content list without being read.
//!
//! Problems with single source entries (vanished, unreadable, changed while read) are
//! warnings: the snapshot is still written, without that entry or with what was read,
//! and the caller reports them (exit code 3). Repository failures abort the backup.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use holdfast_chunker::{Chunker, ChunkerParams, GearTable};
use holdfast_repo::blob::BlobType;
use holdfast_repo::blob_store::BlobStore;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::snapshot::{Snapshot, SnapshotExt, Summary};
use holdfast_repo::tree::{ContentRef, Node, NodeKind, Tree};
use holdfast_repo::writer::Writer;
use holdfast_repo::Id;
use rayon::prelude::*;

mod feed_tree;

use crate::backup::{BackupRequest, Lineage};
use crate::error::{EngineError, Result};
use crate::feed::Feed;
use crate::fsmeta::{self, UserCache};
use crate::image::{self, BaseLayout, ImageBase, Resync};

/// One thing to back up: a path to read, and where the snapshot records it.
///
/// By default a source is recorded under its own absolute path. With `record_as` it is
/// read from `path` but recorded under `record_as`: the snapshot's `paths`, its trees (so
/// `ls` and `restore`), parent matching and exclude patterns with a `/` all see the
/// recorded path. The Kubernetes agent reads a volume from its kubelet directory (which
/// changes whenever the pod is recreated) and records it as `/<namespace>/<pvc>`.
/// Directories above a recorded source get synthetic metadata (see [`backup`]).
///
/// An image source ([`Source::image`]) reads the content of a block device or regular
/// file as one regular file (see [`SourceKind::Image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where to read (made absolute and normalised).
    pub path: PathBuf,
    /// Where to record it in the snapshot: an absolute path; `None` records `path`.
    pub record_as: Option<PathBuf>,
    /// A directory tree (the default) or an image.
    pub kind: SourceKind,
}

/// How a [`Source`] is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKind {
    /// Whatever is at the path (a directory and everything below it, a file, a symlink,
    /// ...), as it is: the usual backup.
    #[default]
    Tree,
    /// The content of a block device or regular file (symlinks followed), recorded as one
    /// regular file of the device's size: mode 0600, owner 0:0 and modified at the
    /// snapshot's time for a device; a regular file's own metadata. Holes and all-zero
    /// chunks become zero runs. It is always read, never skipped as unchanged by its
    /// metadata; with a `base` only around the changed extents (see [`crate::image`]).
    /// Directories above it get synthetic metadata, as above sources recorded elsewhere.
    Image {
        /// The snapshot with the previous image and the extents changed since, if known.
        base: Option<ImageBase>,
    },
    /// Entries a program hands out ([`crate::feed`]), recorded at the source's path: a
    /// stream (standard input, a dump) or a tree of files (objects, bucket keys). The
    /// feed is given to [`backup_feed`]; a request has at most one such source.
    Feed,
}

impl Source {
    /// A source recorded under its own path.
    pub fn new(path: impl Into<PathBuf>) -> Source {
        Source {
            path: path.into(),
            record_as: None,
            kind: SourceKind::Tree,
        }
    }

    /// The content of the block device or regular file at `path`, recorded as the regular
    /// file `record_as` (an absolute path; give `path` itself to record it where it is).
    pub fn image(path: impl Into<PathBuf>, record_as: impl Into<PathBuf>) -> Source {
        Source {
            path: path.into(),
            record_as: Some(record_as.into()),
            kind: SourceKind::Image { base: None },
        }
    }

    /// For an image source: read only around `base.extents` and reuse the content of the
    /// image at the same recorded path in `base.snapshot` elsewhere. Falls back to reading
    /// the whole image (with a notice in the report) when that snapshot or file cannot be
    /// used. No effect on a tree source.
    pub fn changed_since(mut self, base: ImageBase) -> Source {
        if let SourceKind::Image { base: b } = &mut self.kind {
            *b = Some(base);
        }
        self
    }

    /// The entries of the feed given to [`backup_feed`], recorded at `record_as` (an
    /// absolute path: the file of a stream, the directory of a tree).
    pub fn feed(record_as: impl Into<PathBuf>) -> Source {
        let at = record_as.into();
        Source {
            path: at.clone(),
            record_as: Some(at),
            kind: SourceKind::Feed,
        }
    }

    /// Whether this is an image source.
    pub fn is_image(&self) -> bool {
        matches!(self.kind, SourceKind::Image { .. })
    }

    /// A source read from `path` and recorded as `record_as`.
    pub fn recorded_as(path: impl Into<PathBuf>, record_as: impl Into<PathBuf>) -> Source {
        Source {
            path: path.into(),
            record_as: Some(record_as.into()),
            kind: SourceKind::Tree,
        }
    }

    /// The absolute, normalised path the snapshot records: `record_as` (which must be
    /// absolute), else `path`.
    pub fn recorded_path(&self) -> Result<PathBuf> {
        match &self.record_as {
            None => normalize_path(&self.path),
            Some(r) if r.is_absolute() => normalize_path(r),
            Some(r) => Err(EngineError::Usage(format!(
                "the path to record {} for {} is not absolute",
                r.display(),
                self.path.display()
            ))),
        }
    }
}

impl From<PathBuf> for Source {
    fn from(path: PathBuf) -> Source {
        Source::new(path)
    }
}

/// Live counters a UI can poll while a backup runs.
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// Entries finished.
    pub entries: AtomicU64,
    /// File bytes processed (read or reused).
    pub bytes: AtomicU64,
}

/// The result of a backup.
#[derive(Debug)]
pub struct BackupOutcome {
    /// ID of the new snapshot.
    pub id: Id,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Problems with single source entries.
    pub warnings: Vec<String>,
    /// Things that cost this backup time but lost nothing (a parent tree that could not be
    /// used, so the files below it were read again): not source errors.
    pub notices: Vec<String>,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unchanged: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unchanged: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
    errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A file's content list and the number of bytes it covers.
type StoredContent = (Vec<ContentRef>, u64);

struct Ctx<'a, 's> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    store: &'s BlobStore<'a>,
    chunker: Chunker,
    users: UserCache,
    opts: &'a BackupRequest,
    progress: &'a BackupProgress,
    counters: Counters,
    warnings: Mutex<Vec<String>>,
    notices: Mutex<Vec<String>>,
    /// Content of multiply-linked files already stored, by (device, inode).
    hardlinks: Mutex<HashMap<(u64, u64), StoredContent>>,
    /// The entries of the request's feed source, taken when it is reached.
    feed: Mutex<Option<Box<dyn Feed + 'a>>>,
}

/// A directory of the virtual root: either backed up whole (read from its real path), or
/// only on the way to one.
enum VEntry {
    Source(Placed),
    Dir(BTreeMap<Vec<u8>, VEntry>),
}

/// One source after normalisation: where it is read, where it is recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Placed {
    recorded: PathBuf,
    real: PathBuf,
    kind: SourceKind,
}

impl Placed {
    /// Whether the directories above its recorded path are not the real ones: it is read
    /// from elsewhere, or it is an image (recorded as a file, whatever the path holds).
    fn is_moved(&self) -> bool {
        self.recorded != self.real || self.kind != SourceKind::Tree
    }
}

impl VEntry {
    /// Whether some source below this entry is read from where it is recorded (then the
    /// directories on the way exist on disk and their metadata is read from there).
    fn has_unmoved_source(&self, recorded: &Path, moved: &HashSet<PathBuf>) -> bool {
        match self {
            VEntry::Source(_) => !moved.contains(recorded),
            VEntry::Dir(m) => m
                .iter()
                .any(|(n, e)| e.has_unmoved_source(&recorded.join(OsStr::from_bytes(n)), moved)),
        }
    }
}

/// Makes a path absolute and removes `.` and `..` lexically (symlinks are not resolved:
/// the user named this path, so it is recorded as named).
pub fn normalize_path(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| EngineError::Source {
        path: p.to_path_buf(),
        source: e,
    })?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Runs a backup for `writer` and writes the snapshot. Every index file and the snapshot
/// are written under the writer's session lease: a backup that was stopped or cut off for
/// longer than the lease fails with [`holdfast_repo::Error::LeaseLost`] and saves nothing
/// (SPEC.md §12.2).
///
/// `lineage` names the snapshot to compare with and the host sequence number
/// (`opts.parent` is not looked at here: the caller has chosen, see
/// [`crate::backup::choose_lineage`]); [`crate::backup::run`] is the whole job around this.
pub fn backup<'a>(
    writer: &'a Writer<'a>,
    opts: &BackupRequest,
    lineage: Lineage,
    progress: &BackupProgress,
) -> Result<BackupOutcome> {
    backup_feed(writer, opts, lineage, None, progress)
}

/// [`backup`] of a request that may have a [`SourceKind::Feed`] source, whose entries
/// `feed` gives. A feed that fails, or a feed source without a feed, writes no snapshot.
pub fn backup_feed<'a>(
    writer: &'a Writer<'a>,
    opts: &BackupRequest,
    lineage: Lineage,
    feed: Option<Box<dyn Feed + '_>>,
    progress: &BackupProgress,
) -> Result<BackupOutcome> {
    let parent = lineage.parent;
    let feeds = opts
        .sources
        .iter()
        .filter(|s| s.kind == SourceKind::Feed)
        .count();
    if feeds > 1 || (feeds == 1 && feed.is_none()) || (feeds == 0 && feed.is_some()) {
        return Err(EngineError::Usage(format!(
            "a backup reads at most one stream or feed, given with its source \
             ({feeds} feed sources, {} feed)",
            if feed.is_some() { "a" } else { "no" }
        )));
    }
    let (repo, index) = (writer.repo(), writer.index());
    let started = Instant::now();
    let cfg = repo.config();
    let params = ChunkerParams {
        min: cfg.chunk_min,
        avg: cfg.chunk_avg,
        max: cfg.chunk_max,
    };
    let chunker = Chunker::new(params, GearTable::from_key(&repo.key().chunker))
        .map_err(|e| holdfast_repo::Error::corrupt("config", "chunker parameters", e))?;
    let sealers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let ((root_tree, kept, counters, warnings, notices), totals) =
        BlobStore::pipelined(writer, opts.compression, sealers, |store| {
            run_walk(repo, index, store, chunker, opts, parent, feed, progress)
        })?;
    let c = &counters;
    let summary = Summary {
        files_new: c.files_new.load(Ordering::Relaxed),
        files_changed: c.files_changed.load(Ordering::Relaxed),
        files_unchanged: c.files_unchanged.load(Ordering::Relaxed),
        dirs_new: c.dirs_new.load(Ordering::Relaxed),
        dirs_changed: c.dirs_changed.load(Ordering::Relaxed),
        dirs_unchanged: c.dirs_unchanged.load(Ordering::Relaxed),
        data_blobs_added: totals.data_blobs,
        tree_blobs_added: totals.tree_blobs,
        bytes_read: c.bytes_read.load(Ordering::Relaxed),
        bytes_total: c.bytes_total.load(Ordering::Relaxed),
        bytes_added_raw: totals.raw_bytes,
        bytes_added_stored: totals.stored_bytes,
        errors: c.errors.load(Ordering::Relaxed),
        duration_ns: started.elapsed().as_nanos() as u64,
    };
    let mut tags = opts.tags.clone();
    tags.sort();
    tags.dedup();
    let snapshot = Snapshot {
        time_ns: opts.time_ns,
        utc_offset_s: opts.utc_offset_s,
        host: opts.host.clone(),
        user: opts.user.clone(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        paths: kept.iter().map(|p| path_bytes(p).to_vec()).collect(),
        tags,
        tree: root_tree,
        parent,
        program_version: opts.program_version.clone(),
        summary,
        ext: SnapshotExt {
            host_seq: lineage.host_seq,
            ..Default::default()
        },
    };
    let id = writer.save_snapshot(&snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        warnings,
        notices,
    })
}

/// What the walk produced: root tree, the source paths kept, counters, warnings and notices.
type WalkResult = (Id, Vec<PathBuf>, Counters, Vec<String>, Vec<String>);

/// Walks the sources and stores every blob and tree; the snapshot is written by the caller
/// once the store has flushed.
#[allow(clippy::too_many_arguments)] // the walk's inputs, each used once to build its context
fn run_walk<'a>(
    repo: &'a Repository,
    index: &'a MasterIndex,
    store: &BlobStore<'a>,
    chunker: Chunker,
    opts: &'a BackupRequest,
    parent: Option<Id>,
    feed: Option<Box<dyn Feed + 'a>>,
    progress: &'a BackupProgress,
) -> Result<WalkResult> {
    let ctx = Ctx {
        repo,
        index,
        store,
        chunker,
        users: UserCache::new(),
        opts,
        progress,
        counters: Counters::default(),
        warnings: Mutex::new(Vec::new()),
        notices: Mutex::new(Vec::new()),
        hardlinks: Mutex::new(HashMap::new()),
        feed: Mutex::new(feed),
    };

    // Build the virtual root from the recorded paths; a path inside another is covered by
    // it (when both are read from where they are recorded).
    let mut placed: Vec<Placed> = opts
        .sources
        .iter()
        .map(|src| {
            Ok(Placed {
                recorded: src.recorded_path()?,
                real: normalize_path(&src.path)?,
                kind: src.kind.clone(),
            })
        })
        .collect::<Result<_>>()?;
    placed.sort();
    placed.dedup();
    let mut kept: Vec<Placed> = Vec::new();
    for p in placed {
        if let Some(k) = kept.iter().find(|k| p.recorded.starts_with(&k.recorded)) {
            if k.is_moved() || p.is_moved() || k.recorded == p.recorded {
                return Err(EngineError::Usage(format!(
                    "{} and {} would both be recorded at {} in the snapshot",
                    k.real.display(),
                    p.real.display(),
                    p.recorded.display()
                )));
            }
            continue;
        }
        kept.push(p);
    }
    let mut present = Vec::new();
    let mut unreadable = Vec::new();
    for p in &kept {
        if p.kind == SourceKind::Feed {
            present.push(p.clone());
            continue;
        }
        match std::fs::symlink_metadata(&p.real) {
            Ok(_) => present.push(p.clone()),
            Err(e) => {
                let msg = format!("{}: {e}", p.real.display());
                ctx.warn(format!("{msg} (skipped)"));
                unreadable.push(msg);
            }
        }
    }
    if present.is_empty() {
        return Err(EngineError::Usage(format!(
            "none of the paths to back up could be read ({}); no snapshot was written",
            unreadable.join("; ")
        )));
    }
    // The recorded paths of the sources read from elsewhere.
    let moved: HashSet<PathBuf> = present
        .iter()
        .filter(|p| p.is_moved())
        .map(|p| p.recorded.clone())
        .collect();
    let mut root: BTreeMap<Vec<u8>, VEntry> = BTreeMap::new();
    for p in &present {
        let comps: Vec<Vec<u8>> = p
            .recorded
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        if comps.is_empty() && p.kind != SourceKind::Tree && p.kind != SourceKind::Feed {
            return Err(EngineError::Usage(format!(
                "the image {} cannot be recorded as /: give it a file path",
                p.real.display()
            )));
        }
        if comps.is_empty() {
            // Backing up "/" (or recording a source as "/"): its entries become the
            // root's entries.
            root = BTreeMap::new();
            root.insert(Vec::new(), VEntry::Source(p.clone()));
            break;
        }
        let mut level = &mut root;
        for (i, c) in comps.iter().enumerate() {
            if i + 1 == comps.len() {
                level.insert(c.clone(), VEntry::Source(p.clone()));
            } else {
                let e = level
                    .entry(c.clone())
                    .or_insert_with(|| VEntry::Dir(BTreeMap::new()));
                match e {
                    VEntry::Dir(m) => level = m,
                    VEntry::Source(_) => unreachable!("nested sources were removed above"),
                }
            }
        }
    }

    let parent_root = match parent {
        Some(pid) => match repo.load_snapshot(&pid) {
            Ok(s) => Some(s.tree),
            Err(e) => {
                ctx.notice(format!(
                    "parent snapshot {}: {e}; reading every file",
                    pid.short()
                ));
                None
            }
        },
        None => None,
    };

    let root_tree = match root.get(&Vec::new()) {
        Some(VEntry::Source(p)) if p.kind == SourceKind::Feed => ctx.feed_root(parent_root)?,
        Some(VEntry::Source(p)) => ctx.dir_tree(&p.real, Path::new("/"), parent_root, None)?,
        _ => {
            ctx.virtual_tree(Path::new("/"), &root, &moved, parent_root)?
                .0
        }
    };
    let warnings = ctx.warnings.into_inner().unwrap_or_default();
    let notices = ctx.notices.into_inner().unwrap_or_default();
    let kept = kept.into_iter().map(|p| p.recorded).collect();
    Ok((root_tree, kept, ctx.counters, warnings, notices))
}

/// The file that marks a cache directory (https://bford.info/cachedir/).
const CACHEDIR_TAG: &str = "CACHEDIR.TAG";

/// Whether the directory at `path`, whose entries are `names`, holds a cache directory tag
/// that starts with the standard signature.
fn is_cache_dir(path: &Path, names: &[Vec<u8>]) -> bool {
    const SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";
    if !names
        .iter()
        .any(|n| n.as_slice() == CACHEDIR_TAG.as_bytes())
    {
        return false;
    }
    let mut head = [0u8; SIGNATURE.len()];
    std::fs::File::open(path.join(CACHEDIR_TAG))
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| head == SIGNATURE)
}

impl Ctx<'_, '_> {
    fn warn(&self, msg: String) {
        tracing::debug!("{msg}");
        bump(&self.counters.errors);
        self.warnings.lock().expect("lock").push(msg);
    }

    /// Something the user may want to know that costs this backup time but no data: not
    /// a source error (exit status 3 is for unread source files only).
    fn notice(&self, msg: String) {
        tracing::debug!("{msg}");
        self.notices.lock().expect("lock").push(msg);
    }

    fn load_parent_tree(&self, id: Option<Id>) -> Option<Tree> {
        let id = id?;
        match self.repo.load_tree(self.index, &id) {
            Ok(t) => Some(t),
            // Normal beside a prune: a tree in a pack marked for deletion is absent from
            // the index a writer uses (SPEC.md §12.3), and so is damage; either way the
            // files below are read again and nothing is lost.
            Err(e) => {
                self.notice(format!(
                    "parent tree {}: {e}; reading the files below it again",
                    id.short()
                ));
                None
            }
        }
    }

    fn store_tree(&self, tree: &Tree) -> Result<Id> {
        let bytes = tree.encode().map_err(|e| holdfast_repo::Error::Encode {
            what: "tree",
            detail: e.to_string(),
        })?;
        let id = self.store.id_of(&bytes);
        self.store.add_owned(BlobType::Tree, id, bytes)?;
        Ok(id)
    }

    /// A directory on the way to the sources (`path` is where it is recorded): only the
    /// named children. Its metadata is read from `path` on disk when a source below it is
    /// read from where it is recorded; above sources recorded elsewhere only, it is
    /// [`Self::synthetic_dir`].
    fn virtual_tree(
        &self,
        path: &Path,
        children: &BTreeMap<Vec<u8>, VEntry>,
        moved: &HashSet<PathBuf>,
        parent: Option<Id>,
    ) -> Result<(Id, i64)> {
        let parent_tree = self.load_parent_tree(parent);
        let find = |name: &[u8]| {
            parent_tree
                .as_ref()
                .and_then(|t| t.nodes.iter().find(|n| n.name == name))
        };
        let mut nodes = Vec::new();
        for (name, entry) in children {
            let child = path.join(OsStr::from_bytes(name));
            let pnode = find(name);
            match entry {
                VEntry::Source(p) if p.kind == SourceKind::Feed => {
                    if let Some(n) = self.feed_node(&child, name, pnode)? {
                        nodes.push(n);
                    }
                }
                VEntry::Source(p) if p.kind != SourceKind::Tree => {
                    if let Some(n) = self.image_entry(p, name, pnode)? {
                        nodes.push(n);
                    }
                }
                VEntry::Source(p) => {
                    let dev = std::fs::symlink_metadata(&p.real)
                        .map(|m| m.dev())
                        .unwrap_or(0);
                    if let Some(n) = self.entry(&p.real, &child, name, pnode, dev)? {
                        nodes.push(n);
                    }
                }
                VEntry::Dir(grand) => {
                    let (subtree, newest) =
                        self.virtual_tree(&child, grand, moved, pnode.and_then(|n| n.subtree))?;
                    let mut node = if entry.has_unmoved_source(&child, moved) {
                        let meta =
                            std::fs::symlink_metadata(&child).map_err(|e| EngineError::Source {
                                path: child.clone(),
                                source: e,
                            })?;
                        fsmeta::capture(&child, name, &meta, &self.users).map_err(|e| {
                            EngineError::Source {
                                path: child.clone(),
                                source: std::io::Error::other(e.to_string()),
                            }
                        })?
                    } else {
                        self.synthetic_dir(name, newest)
                    };
                    node.kind = NodeKind::Dir;
                    node.link_target.clear();
                    node.size = 0;
                    node.subtree = Some(subtree);
                    nodes.push(node);
                }
            }
        }
        let newest = nodes.iter().map(|n| n.mtime_ns).max().unwrap_or(0);
        Ok((self.store_tree(&Tree { nodes })?, newest))
    }

    /// A directory that exists only in the snapshot, above sources recorded away from
    /// where they are read: mode 0755, owned by this process's user and group, modified
    /// at `mtime_ns` (the newest entry below it), no inode, device or attributes. Only
    /// values that stay the same while the sources do, so that an unchanged source gives
    /// an unchanged tree.
    fn synthetic_dir(&self, name: &[u8], mtime_ns: i64) -> Node {
        let mut node = Node::new(name.to_vec(), NodeKind::Dir);
        node.mode = 0o755;
        node.uid = nix::unistd::geteuid().as_raw();
        node.gid = nix::unistd::getegid().as_raw();
        node.user = self.users.user(node.uid);
        node.group = self.users.group(node.gid);
        node.mtime_ns = mtime_ns;
        node.ctime_ns = mtime_ns;
        node.links = 1;
        node
    }

    /// A real directory: every entry, in parallel. `path` is where it is read, `recorded`
    /// where the snapshot records it (what exclude patterns see).
    fn dir_tree(
        &self,
        path: &Path,
        recorded: &Path,
        parent: Option<Id>,
        root_dev: Option<u64>,
    ) -> Result<Id> {
        let mut names: Vec<Vec<u8>> = match std::fs::read_dir(path) {
            Ok(rd) => {
                let mut v = Vec::new();
                for e in rd {
                    match e {
                        Ok(e) => v.push(e.file_name().as_bytes().to_vec()),
                        Err(err) => {
                            self.warn(format!("{}: reading directory: {err}", path.display()))
                        }
                    }
                }
                v
            }
            Err(e) => {
                self.warn(format!(
                    "{}: cannot list directory: {e} (stored as empty)",
                    path.display()
                ));
                Vec::new()
            }
        };
        names.sort();
        if self.opts.exclude_caches && is_cache_dir(path, &names) {
            names.retain(|n| n.as_slice() == CACHEDIR_TAG.as_bytes());
        }
        let parent_tree = self.load_parent_tree(parent);
        let parent_nodes: HashMap<&[u8], &Node> = parent_tree
            .iter()
            .flat_map(|t| t.nodes.iter())
            .map(|n| (n.name.as_slice(), n))
            .collect();
        let nodes: Vec<Option<Node>> = names
            .par_iter()
            .map(|name| {
                let child = path.join(OsStr::from_bytes(name));
                let recorded_child = recorded.join(OsStr::from_bytes(name));
                if !self.opts.excludes.is_empty()
                    && self.opts.excludes.matches(path_bytes(&recorded_child))
                {
                    return Ok(None);
                }
                self.entry(
                    &child,
                    &recorded_child,
                    name,
                    parent_nodes.get(name.as_slice()).copied(),
                    root_dev.unwrap_or(0),
                )
            })
            .collect::<Result<_>>()?;
        let tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        self.store_tree(&tree)
    }

    /// One entry: metadata, and content or subtree. Read from `path`, recorded at
    /// `recorded`.
    fn entry(
        &self,
        path: &Path,
        recorded: &Path,
        name: &[u8],
        pnode: Option<&Node>,
        root_dev: u64,
    ) -> Result<Option<Node>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!(
                    "{}: {e} (vanished or unreadable; skipped)",
                    path.display()
                ));
                return Ok(None);
            }
        };
        let mut node = match fsmeta::capture(path, name, &meta, &self.users) {
            Ok(n) => n,
            Err(e) => {
                self.warn(format!("{e} (skipped)"));
                return Ok(None);
            }
        };
        if node.kind == NodeKind::File && !self.file(path, &mut node, pnode)? {
            return Ok(None);
        }
        if node.kind == NodeKind::Dir {
            let cross = self.opts.one_file_system && root_dev != 0 && meta.dev() != root_dev;
            let sub = if cross {
                self.store_tree(&Tree::default())?
            } else {
                let dev = if root_dev == 0 { meta.dev() } else { root_dev };
                self.dir_tree(path, recorded, pnode.and_then(|p| p.subtree), Some(dev))?
            };
            let prev = pnode
                .filter(|p| p.kind == NodeKind::Dir)
                .and_then(|p| p.subtree);
            bump(match prev {
                None => &self.counters.dirs_new,
                Some(p) if p == sub => &self.counters.dirs_unchanged,
                Some(_) => &self.counters.dirs_changed,
            });
            node.subtree = Some(sub);
        }
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        Ok(Some(node))
    }

    /// Fills a file node's content. Returns false if the file is to be left out.
    fn file(&self, path: &Path, node: &mut Node, pnode: Option<&Node>) -> Result<bool> {
        if let Some(p) = pnode {
            let same = p.kind == NodeKind::File
                && p.size == node.size
                && p.mtime_ns == node.mtime_ns
                && p.ctime_ns == node.ctime_ns
                && p.inode == node.inode
                && p.content.iter().all(|c| match c {
                    ContentRef::Blob(id) => self.store.has(BlobType::Data, id),
                    ContentRef::Zeros(_) => true,
                });
            if same && !self.opts.force {
                node.content = p.content.clone();
                bump(&self.counters.files_unchanged);
                self.counters
                    .bytes_total
                    .fetch_add(node.size, Ordering::Relaxed);
                self.progress.bytes.fetch_add(node.size, Ordering::Relaxed);
                return Ok(true);
            }
        }
        let key = (node.device, node.inode);
        if node.links > 1 {
            if let Some((content, size)) = self.hardlinks.lock().expect("lock").get(&key) {
                node.content = content.clone();
                node.size = *size;
                self.count_file(pnode, node.size);
                return Ok(true);
            }
        }
        let file = match open_for_reading(path, nix::libc::O_NOFOLLOW) {
            Ok(f) => f,
            Err(e) => {
                self.warn(format!("{}: cannot open: {e} (skipped)", path.display()));
                return Ok(false);
            }
        };
        match self.read_content(&file, node) {
            Ok((content, len)) => {
                node.content = content;
                node.size = len;
            }
            Err(ReadError::Repo(e)) => return Err(e.into()),
            Err(ReadError::Io(e)) => {
                self.warn(format!("{}: read failed: {e} (skipped)", path.display()));
                return Ok(false);
            }
        }
        // Compare with the state after reading: a file written meanwhile may be torn.
        if let Ok(after) = file.metadata() {
            let after_mtime = after
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(after.mtime_nsec());
            if after.len() != node.size || after_mtime != node.mtime_ns {
                self.warn(format!(
                    "{}: changed while it was read (the stored copy may mix old and new data)",
                    path.display()
                ));
            }
        }
        if node.links > 1 {
            self.hardlinks
                .lock()
                .expect("lock")
                .insert(key, (node.content.clone(), node.size));
        }
        self.count_file(pnode, node.size);
        Ok(true)
    }

    fn count_file(&self, pnode: Option<&Node>, size: u64) {
        bump(if pnode.is_some() {
            &self.counters.files_changed
        } else {
            &self.counters.files_new
        });
        self.counters.bytes_total.fetch_add(size, Ordering::Relaxed);
    }

    /// Reads a file's data ranges, chunks them, stores new chunks; holes and all-zero
    /// chunks become zero runs. Returns the content and the number of bytes covered.
    fn read_content(&self, file: &File, node: &Node) -> Result<(Vec<ContentRef>, u64), ReadError> {
        let mut content: Vec<ContentRef> = Vec::new();
        let ranges = fsmeta::data_ranges(file, node.size)
            .map_err(|e| ReadError::Io(std::io::Error::other(e.to_string())))?;
        let (mut pos, _) = self.chunk_ranges(file, 0, &ranges, &mut content, &mut |_| false)?;
        // Trailing hole (only if the file still has that size; a device's is its size).
        if pos < node.size {
            let now = match file.metadata() {
                Ok(m) if m.file_type().is_block_device() => node.size,
                Ok(m) => m.len(),
                Err(_) => pos,
            };
            let end = now.min(node.size);
            if end > pos {
                image::push_zeros(&mut content, end - pos);
                pos = end;
            }
        }
        Ok((content, pos))
    }

    /// Chunks the data `ranges` of `file` (sorted, disjoint, at or after `from`; what lies
    /// between them is a hole), appending content refs to `content`: holes and all-zero
    /// chunks as zero runs, new chunks stored. After each chunk and each hole, `stop` is
    /// asked whether to end there, given the position reached. Returns the position
    /// reached and whether `stop` ended the read; a range that ends early (the file shrank
    /// while being read) ends it too.
    fn chunk_ranges(
        &self,
        file: &File,
        from: u64,
        ranges: &[(u64, u64)],
        content: &mut Vec<ContentRef>,
        stop: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(u64, bool), ReadError> {
        let mut pos = from;
        let mut f = file;
        for &(off, len) in ranges {
            if off > pos {
                image::push_zeros(content, off - pos);
                pos = off;
                if stop(pos) {
                    return Ok((pos, true));
                }
            }
            f.seek(SeekFrom::Start(off)).map_err(ReadError::Io)?;
            // Chunks are read straight into recycled buffers that travel to the sealers.
            let mut stream = self
                .chunker
                .stream(f.take(len))
                .with_size_hint(len)
                .with_buffers(|| self.store.buffer());
            let mut stopped = false;
            let mut done = 0u64;
            let outcome = loop {
                let chunk = match stream.next_chunk() {
                    Ok(Some(c)) => c,
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(ReadError::Io(e)),
                };
                done += chunk.len() as u64;
                if let Err(e) = self.store_chunk(chunk, content) {
                    break Err(e);
                }
                if stop(off + done) {
                    stopped = true;
                    break Ok(());
                }
            };
            // Every byte taken from the file counts, also what was read past a stop.
            self.counters
                .bytes_read
                .fetch_add(stream.bytes_read(), Ordering::Relaxed);
            outcome?;
            pos = off + done;
            if stopped {
                return Ok((pos, true));
            }
            if done < len {
                // The file shrank while being read: keep what was there.
                break;
            }
        }
        Ok((pos, false))
    }

    /// Appends one chunk read from a source to `content`: a zero run if it is all zeros,
    /// else its blob, stored if new.
    fn store_chunk(&self, chunk: Vec<u8>, content: &mut Vec<ContentRef>) -> Result<(), ReadError> {
        let n = chunk.len() as u64;
        self.progress.bytes.fetch_add(n, Ordering::Relaxed);
        if is_zero(&chunk) {
            image::push_zeros(content, n);
            self.store.recycle(chunk);
        } else {
            let id = self.store.id_of(&chunk);
            self.store
                .add_owned(BlobType::Data, id, chunk)
                .map_err(ReadError::Repo)?;
            content.push(ContentRef::Blob(id));
        }
        Ok(())
    }

    /// An image source's node: a block device's or regular file's content as one regular
    /// file (see [`SourceKind::Image`]). `None` (with a warning) if it cannot be read.
    fn image_entry(&self, p: &Placed, name: &[u8], pnode: Option<&Node>) -> Result<Option<Node>> {
        let SourceKind::Image { base } = &p.kind else {
            unreachable!("called for image sources")
        };
        let path = &p.real;
        let file = match open_for_reading(path, 0) {
            Ok(f) => f,
            Err(e) => {
                self.warn(format!("{}: cannot open: {e} (skipped)", path.display()));
                return Ok(None);
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e} (skipped)", path.display()));
                return Ok(None);
            }
        };
        let device = meta.file_type().is_block_device();
        let mut node = if device {
            let size = match image::image_size(&file) {
                Ok(s) => s,
                Err(e) => {
                    self.warn(format!(
                        "{}: cannot find the device's size: {e} (skipped)",
                        path.display()
                    ));
                    return Ok(None);
                }
            };
            let mut n = Node::new(name.to_vec(), NodeKind::File);
            n.mode = 0o600;
            n.user = self.users.user(0);
            n.group = self.users.group(0);
            n.mtime_ns = self.opts.time_ns;
            n.ctime_ns = self.opts.time_ns;
            n.links = 1;
            n.size = size;
            n
        } else if meta.is_file() {
            // The file's own metadata, without extended attributes: an image's are not
            // part of the volume (and FUSE images such as rbd-fuse's refuse to list them).
            match fsmeta::capture_stat(path, name, &meta, &self.users) {
                Ok(n) => n,
                Err(e) => {
                    self.warn(format!("{e} (skipped)"));
                    return Ok(None);
                }
            }
        } else {
            self.warn(format!(
                "{}: not a block device or regular file; cannot read it as an image (skipped)",
                path.display()
            ));
            return Ok(None);
        };
        let read = match base {
            Some(b) => match self.read_changed(&file, &node, b, &p.recorded) {
                Ok(Some(c)) => Ok(c),
                Ok(None) => self.read_content(&file, &node),
                Err(e) => Err(e),
            },
            None => self.read_content(&file, &node),
        };
        match read {
            Ok((content, len)) => {
                node.content = content;
                node.size = len;
            }
            Err(ReadError::Repo(e)) => return Err(e.into()),
            Err(ReadError::Io(e)) => {
                self.warn(format!("{}: read failed: {e} (skipped)", path.display()));
                return Ok(None);
            }
        }
        // An image is meant to be read from a snapshot or a quiesced device; only a change
        // of size is noticed (FUSE images such as rbd-fuse's report a new mtime on every
        // stat, so the mtime cannot tell).
        if !device && file.metadata().is_ok_and(|after| after.len() != node.size) {
            self.warn(format!(
                "{}: its size changed while it was read (the stored copy may mix old and new data)",
                path.display()
            ));
        }
        self.count_file(pnode, node.size);
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        Ok(Some(node))
    }

    /// Reads an image only around the changed extents of `base`, reusing the content refs
    /// of the image at `recorded` in the base snapshot elsewhere (see [`crate::image`]).
    /// `Ok(None)` (with a notice) when the base cannot be used: the caller reads it all.
    fn read_changed(
        &self,
        file: &File,
        node: &Node,
        base: &ImageBase,
        recorded: &Path,
    ) -> Result<Option<StoredContent>, ReadError> {
        let size = node.size;
        let fallback = |why: String| {
            self.notice(format!(
                "{}: the changed extents since snapshot {} cannot be used ({why}); reading the whole image",
                recorded.display(),
                base.snapshot.short()
            ));
            Ok(None)
        };
        let bnode = match image::base_node(self.repo, self.index, &base.snapshot, recorded) {
            Ok(n) => n,
            Err(why) => return fallback(why),
        };
        if bnode.size != size {
            return fallback(format!(
                "the image there has {} bytes, this one {size}",
                bnode.size
            ));
        }
        let max = self.chunker.params().max as usize;
        let zero_chunk = self.chunker.find_cut(&vec![0u8; max], false).unwrap_or(max) as u64;
        let layout = match BaseLayout::new(&bnode.content, size, zero_chunk, |id| {
            if self.store.has(BlobType::Data, id) {
                image::blob_len(self.index, id)
            } else {
                None
            }
        }) {
            Ok(l) => l,
            Err(why) => return fallback(why),
        };
        let extents = image::normalize_extents(&base.extents, size);
        let ranges = fsmeta::data_ranges(file, size)
            .map_err(|e| ReadError::Io(std::io::Error::other(e.to_string())))?;
        let mut content = Vec::new();
        let mut pos = 0u64;
        let mut resync = Resync::new(&extents);
        // Where reading goes on after skipping part of a zero run, within a region.
        let mut skipped_to: Option<u64> = None;
        loop {
            let start = match skipped_to.take() {
                Some(q) => q,
                None => {
                    let Some(e) = resync.start_region() else {
                        break;
                    };
                    // Every extent still to come starts after `pos`, a base boundary.
                    let restart = layout.restart_before(e.offset).max(pos);
                    layout.copy(pos, restart, &mut content);
                    self.progress
                        .bytes
                        .fetch_add(restart - pos, Ordering::Relaxed);
                    restart
                }
            };
            let region: Vec<(u64, u64)> = ranges
                .iter()
                .filter(|r| r.0 + r.1 > start)
                .map(|&(o, l)| (o.max(start), o + l - o.max(start)))
                .collect();
            let (reached, stopped) =
                self.chunk_ranges(file, start, &region, &mut content, &mut |p| {
                    resync.can_end_at(p, &layout)
                })?;
            if !stopped {
                let data_end = region.last().map_or(start, |r| r.0 + r.1);
                if reached < data_end {
                    return Err(ReadError::Io(std::io::Error::other(
                        "the image shrank while it was read",
                    )));
                }
                // No resynchronisation before the end: the rest is a hole.
                image::push_zeros(&mut content, size - reached);
                pos = size;
                break;
            }
            pos = reached;
            if !layout.is_boundary(pos) {
                // Inside an unchanged zero run: skip the zero chunks a full read would cut.
                let q = layout
                    .zero_skip(pos, resync.next_offset(size))
                    .expect("the stop was for a zero run");
                image::push_zeros(&mut content, q - pos);
                self.progress.bytes.fetch_add(q - pos, Ordering::Relaxed);
                pos = q;
                skipped_to = Some(q);
            }
        }
        layout.copy(pos, size, &mut content);
        self.progress.bytes.fetch_add(size - pos, Ordering::Relaxed);
        Ok(Some((content, size)))
    }
}

/// Opens a file to read its content, without updating its access time where allowed,
/// with `flags` added (`O_NOFOLLOW`).
fn open_for_reading(path: &Path, flags: i32) -> std::io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc_noatime() | flags)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {
            OpenOptions::new().read(true).custom_flags(flags).open(path)
        }
        r => r,
    }
}

enum ReadError {
    Repo(holdfast_repo::Error),
    Io(std::io::Error),
}

fn libc_noatime() -> i32 {
    nix::libc::O_NOATIME
}

/// Whether a buffer is all zero bytes, compared eight bytes at a time.
pub fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(8);
    let rest = words.remainder();
    rest.iter().all(|&x| x == 0)
        && words
            .into_iter()
            .all(|w| u64::from_ne_bytes(w.try_into().expect("8 bytes")) == 0)
}
