//! Restore: recreates a snapshot (or part of it) under a target directory.
//!
//! Safety: every name in a tree was checked by the decoder (no `/`, `.`, `..`, NUL), and
//! every path written is the target joined with such names. Nothing is ever written
//! through a symlink: an existing symlink where a file or directory is to be restored is
//! removed first, files are opened with `O_NOFOLLOW`, and metadata is applied with
//! no-follow calls. So a hostile tree cannot make restore write outside the target.
//!
//! Order: directories are created first (top-down), then file contents are written in
//! parallel with positioned writes (holes stay holes), then metadata is applied bottom-up
//! so a read-only directory is made read-only only after its children are in place.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::BlobType;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::pack::PackEntry;
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::{ContentRef, Node, NodeKind, Tree};
use holdfast_repo::Id;
use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::filter::PathFilter;
use crate::fsmeta::{self, ApplyOptions, FsError};

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory under which the snapshot's absolute paths are recreated.
    pub target: PathBuf,
    /// Restore only this path inside the snapshot (absolute, as stored); its last
    /// component is recreated directly under the target.
    pub subpath: Option<Vec<u8>>,
    /// Restore only entries matching these (and the directories leading to them).
    pub includes: PathFilter,
    /// Leave out entries matching these.
    pub excludes: PathFilter,
    /// Restore owners (needs root).
    pub owners: bool,
}

/// Live counters a UI can poll while a restore runs.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Entries finished.
    pub entries: AtomicU64,
    /// File bytes written.
    pub bytes: AtomicU64,
    /// Total file bytes to write (known after planning).
    pub bytes_total: AtomicU64,
}

/// What a restore did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreSummary {
    /// Regular files restored.
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Other entries (links, devices, fifos).
    pub others: u64,
    /// File bytes restored.
    pub bytes: u64,
    /// Problems that did not stop the restore (metadata that could not be set).
    pub warnings: Vec<String>,
}

/// What a restore of a snapshot did ([`restore_snapshot`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot_id: Id,
    /// Where to.
    pub target: PathBuf,
    /// What was restored.
    #[serde(flatten)]
    pub summary: RestoreSummary,
    /// How long it took, ns.
    pub duration_ns: u64,
}

impl RestoreReport {
    /// Whether everything was restored (no warnings).
    pub fn is_complete(&self) -> bool {
        self.summary.warnings.is_empty()
    }
}

/// Restores snapshot `id` (found with [`Repository::find_snapshot`]) as `opts` says:
/// loads the index and restores its tree.
pub fn restore_snapshot(
    repo: &Repository,
    id: Id,
    snapshot: &holdfast_repo::snapshot::Snapshot,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport> {
    let index = repo.load_index()?;
    let started = std::time::Instant::now();
    let summary = restore(repo, &index, &snapshot.tree, opts, progress)?;
    Ok(RestoreReport {
        snapshot_id: id,
        target: opts.target.clone(),
        summary,
        duration_ns: started.elapsed().as_nanos() as u64,
    })
}

struct Planned {
    path: PathBuf,
    node: Node,
    /// Path of the first restored entry of this hardlink group, if this is a later one.
    link_to: Option<PathBuf>,
}

/// Finds the node at an absolute path inside a snapshot's root tree. `None` means the
/// root itself.
pub fn lookup(
    repo: &Repository,
    index: &MasterIndex,
    root: &Id,
    path: &[u8],
) -> Result<Option<Node>> {
    let mut tree = repo.load_tree(index, root)?;
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut found: Option<Node> = None;
    for (i, c) in comps.iter().enumerate() {
        let node = tree
            .nodes
            .iter()
            .find(|n| n.name == *c)
            .cloned()
            .ok_or_else(|| {
                EngineError::Usage(format!(
                    "{} is not in the snapshot",
                    String::from_utf8_lossy(path)
                ))
            })?;
        if i + 1 < comps.len() {
            let sub = node.subtree.ok_or_else(|| {
                EngineError::Usage(format!(
                    "{} is not a directory in the snapshot",
                    String::from_utf8_lossy(&comps[..=i].join(&b'/'))
                ))
            })?;
            tree = repo.load_tree(index, &sub)?;
        }
        found = Some(node);
    }
    Ok(found)
}

/// Restores a snapshot tree under `opts.target`.
pub fn restore(
    repo: &Repository,
    index: &MasterIndex,
    root: &Id,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreSummary> {
    fs::create_dir_all(&opts.target).map_err(|e| FsError::Io {
        op: "create target directory",
        path: opts.target.clone(),
        source: e,
    })?;
    let mut plan = Vec::new();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    match &opts.subpath {
        Some(sp) if sp.split(|&b| b == b'/').any(|c| !c.is_empty()) => {
            let node = lookup(repo, index, root, sp)?.expect("non-empty path has a node");
            let parent_abs: Vec<u8> = match sp.iter().rposition(|&b| b == b'/') {
                Some(i) => sp[..i].to_vec(),
                None => Vec::new(),
            };
            plan_node(
                repo,
                index,
                opts,
                &opts.target,
                &parent_abs,
                node,
                &mut plan,
                &mut links,
                true,
            )?;
        }
        _ => {
            let tree = repo.load_tree(index, root)?;
            plan_tree(
                repo,
                index,
                opts,
                &opts.target,
                b"",
                &tree,
                &mut plan,
                &mut links,
            )?;
        }
    }
    let total: u64 = plan
        .iter()
        .filter(|p| p.node.kind == NodeKind::File && p.link_to.is_none())
        .map(|p| p.node.size)
        .sum();
    progress.bytes_total.store(total, Ordering::Relaxed);

    let apply_opts = ApplyOptions {
        owners: opts.owners,
        xattrs: true,
    };
    let warnings = Mutex::new(Vec::new());
    let mut summary = RestoreSummary::default();

    // 1. Directories, top-down (the plan is in pre-order).
    for p in plan.iter().filter(|p| p.node.kind == NodeKind::Dir) {
        make_dir(&p.path)?;
        summary.dirs += 1;
    }
    // 2. Files and other entries: created in parallel (files empty, at their full size,
    //    so holes stay holes), file contents filled pack by pack, then their metadata;
    //    hardlinks after their first path exists.
    let leaves: Vec<&Planned> = plan
        .iter()
        .filter(|p| p.node.kind != NodeKind::Dir && p.link_to.is_none())
        .collect();
    let files: Vec<&Planned> = leaves
        .iter()
        .filter(|p| p.node.kind == NodeKind::File)
        .copied()
        .collect();
    // Where every blob goes, and that each file's content adds up, before anything is
    // written.
    let pieces = place_blobs(index, &files)?;
    // A file that is exactly one blob (most files) is created, written and given its
    // metadata in one go when its blob is read (`is_whole`); the others are created first
    // (at full size, so holes stay holes) and get their metadata after the fill.
    let needs_meta: Vec<bool> = leaves
        .par_iter()
        .map(|p| {
            if is_whole(p) {
                Ok(false)
            } else {
                create_leaf(p)
            }
        })
        .collect::<Result<_>>()?;
    let fill = Fill {
        repo,
        files: &files,
        apply: &apply_opts,
        warnings: &warnings,
        progress,
    };
    fill_files(&fill, &pieces)?;
    leaves
        .par_iter()
        .zip(needs_meta)
        .try_for_each(|(p, needs_meta)| -> Result<()> {
            if needs_meta {
                let w = if p.node.kind == NodeKind::File {
                    apply_to_file(&p.path, &p.node, &apply_opts)?
                } else {
                    fsmeta::apply(&p.path, &p.node, &apply_opts)?
                };
                warnings.lock().expect("lock").extend(w);
            }
            progress.entries.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })?;
    for p in plan.iter().filter(|p| p.link_to.is_some()) {
        remove_if_not_dir(&p.path)?;
        let first = p.link_to.as_ref().expect("filtered");
        fs::hard_link(first, &p.path).map_err(|e| FsError::Io {
            op: "hard link",
            path: p.path.clone(),
            source: e,
        })?;
    }
    for p in &plan {
        match p.node.kind {
            NodeKind::File => {
                summary.files += 1;
                if p.link_to.is_none() {
                    summary.bytes += p.node.size;
                }
            }
            NodeKind::Dir => {}
            _ => summary.others += 1,
        }
    }
    // 3. Directory metadata, bottom-up.
    for p in plan.iter().rev().filter(|p| p.node.kind == NodeKind::Dir) {
        let w = fsmeta::apply(&p.path, &p.node, &apply_opts)?;
        warnings.lock().expect("lock").extend(w);
    }
    summary.warnings = warnings.into_inner().unwrap_or_default();
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn plan_tree(
    repo: &Repository,
    index: &MasterIndex,
    opts: &RestoreOptions,
    dir: &Path,
    abs: &[u8],
    tree: &Tree,
    plan: &mut Vec<Planned>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<bool> {
    let mut any = false;
    for node in &tree.nodes {
        any |= plan_node(
            repo,
            index,
            opts,
            dir,
            abs,
            node.clone(),
            plan,
            links,
            false,
        )?;
    }
    Ok(any)
}

/// Adds a node (and, for directories, what is selected below it) to the plan. Returns
/// whether anything was planned.
#[allow(clippy::too_many_arguments)]
fn plan_node(
    repo: &Repository,
    index: &MasterIndex,
    opts: &RestoreOptions,
    dir: &Path,
    parent_abs: &[u8],
    node: Node,
    plan: &mut Vec<Planned>,
    links: &mut HashMap<(u64, u64), PathBuf>,
    forced: bool,
) -> Result<bool> {
    if !holdfast_repo::tree::is_safe_name(&node.name) {
        return Err(holdfast_repo::Error::corrupt(
            "tree",
            "entry",
            format!("unsafe name {:?}", String::from_utf8_lossy(&node.name)),
        )
        .into());
    }
    let mut abs = parent_abs.to_vec();
    abs.push(b'/');
    abs.extend_from_slice(&node.name);
    if !opts.excludes.is_empty() && opts.excludes.matches(&abs) {
        return Ok(false);
    }
    let selected = forced || opts.includes.is_empty() || opts.includes.matches(&abs);
    let path = dir.join(OsStr::from_bytes(&node.name));
    if node.kind == NodeKind::Dir {
        let sub = node.subtree.expect("decoder guarantees dirs have subtrees");
        let tree = repo.load_tree(index, &sub)?;
        let at = plan.len();
        plan.push(Planned {
            path: path.clone(),
            node,
            link_to: None,
        });
        // Below a selected directory everything is selected.
        let sub_opts;
        let o = if selected && !opts.includes.is_empty() {
            sub_opts = RestoreOptions {
                includes: PathFilter::default(),
                ..opts.clone()
            };
            &sub_opts
        } else {
            opts
        };
        let any = plan_tree(repo, index, o, &path, &abs, &tree, plan, links)?;
        if !selected && !any {
            plan.truncate(at);
            return Ok(false);
        }
        return Ok(true);
    }
    if !selected {
        return Ok(false);
    }
    let mut link_to = None;
    if node.kind == NodeKind::File && node.links > 1 {
        match links.get(&(node.device, node.inode)) {
            Some(first) => link_to = Some(first.clone()),
            None => {
                links.insert((node.device, node.inode), path.clone());
            }
        }
    }
    plan.push(Planned {
        path,
        node,
        link_to,
    });
    Ok(true)
}

fn fs_err(op: &'static str, path: &Path, e: std::io::Error) -> EngineError {
    FsError::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    }
    .into()
}

/// Creates a directory, replacing a non-directory (a symlink above all) in its way.
fn make_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(path).map_err(|e| fs_err("remove", path, e))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(fs_err("stat", path, e)),
    }
    fs::create_dir(path).map_err(|e| fs_err("create directory", path, e))
}

/// Removes whatever non-directory is at `path`, so a new entry can be created without
/// following a symlink.
fn remove_if_not_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| fs_err("remove", path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| fs_err("remove", path, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fs_err("stat", path, e)),
    }
}

/// Creates a leaf entry: a regular file empty at its full size (its content is written by
/// [`fill_files`]), a symlink, or a special file. Returns whether it exists now and takes
/// metadata (sockets, and devices when not root, are skipped).
fn create_leaf(p: &Planned) -> Result<bool> {
    match p.node.kind {
        NodeKind::File => {
            let f = create_file(&p.path)?;
            // Extends over holes without writing them.
            f.set_len(p.node.size)
                .map_err(|e| fs_err("set length", &p.path, e))?;
        }
        NodeKind::Symlink => {
            remove_if_not_dir(&p.path)?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&p.node.link_target), &p.path)
                .map_err(|e| fs_err("create symlink", &p.path, e))?;
        }
        NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
            remove_if_not_dir(&p.path)?;
            if (p.node.kind == NodeKind::CharDevice || p.node.kind == NodeKind::BlockDevice)
                && !fsmeta::is_root()
            {
                return Ok(false);
            }
            return Ok(fsmeta::create_special(&p.path, &p.node)?);
        }
        NodeKind::Dir => {}
    }
    Ok(true)
}

/// Creates an empty regular file (mode 0600 until its metadata is applied), replacing
/// whatever non-directory is in the way; never follows a symlink.
fn create_file(path: &Path) -> Result<File> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
    };
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            remove_if_not_dir(path)?;
            create()
        }
        r => r,
    }
    .map_err(|e| fs_err("create", path, e))
}

/// Applies a regular file's metadata through a descriptor (one path lookup instead of
/// one per step). Something else found under its name (swapped in since it was
/// created) is left alone with a warning.
fn apply_to_file(path: &Path, node: &Node, opts: &ApplyOptions) -> Result<Vec<String>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let f = match f {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        Err(e) if std::fs::symlink_metadata(path).is_err() => {
            return Err(fs_err("open", path, e));
        }
        _ => {
            return Ok(vec![format!(
                "{}: expected a file but found something else; metadata not set",
                path.display()
            )]);
        }
    };
    Ok(fsmeta::apply_file(&f, path, node, opts)?)
}

/// Plaintext a dump reads ahead of what it has written: the blobs of the next window are
/// read in parallel (hiding storage latency), then written in order.
const DUMP_WINDOW: u64 = 32 * 1024 * 1024;

/// Writes a file's content to `out`, in order: blobs window by window, each window's
/// blobs read in parallel; zero runs as zeros. Returns the bytes written.
pub fn dump(
    repo: &Repository,
    index: &MasterIndex,
    node: &Node,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let zeros = vec![0u8; 1 << 16];
    let mut written = 0u64;
    for_each_piece(repo, index, node, |_, piece| {
        match piece {
            ContentPiece::Data(b) => {
                out.write_all(b).map_err(EngineError::Output)?;
                written += b.len() as u64;
            }
            ContentPiece::Zeros(z) => {
                let mut left = z;
                while left > 0 {
                    let k = left.min(zeros.len() as u64) as usize;
                    out.write_all(&zeros[..k]).map_err(EngineError::Output)?;
                    left -= k as u64;
                }
                written += z;
            }
        }
        Ok(())
    })?;
    Ok(written)
}

/// One piece of a file's content, as [`for_each_piece`] hands it out.
#[derive(Debug)]
pub enum ContentPiece<'a> {
    /// Data (a blob's plaintext).
    Data(&'a [u8]),
    /// This many zero bytes.
    Zeros(u64),
}

/// One piece of a file's content, read: a blob's plaintext or a run of zeros.
#[derive(Debug)]
pub enum ReadPiece {
    /// A blob's plaintext.
    Data(Vec<u8>),
    /// This many zero bytes.
    Zeros(u64),
}

/// Reads the next window of a file's content `rest` (blobs adding up to about `window`
/// bytes, at least one reference), the window's blobs in parallel; returns its pieces in
/// order and the references left. Bounds memory for whoever streams a file (dumps, the web
/// UI's downloads).
pub fn read_window<'c>(
    repo: &Repository,
    index: &MasterIndex,
    rest: &'c [ContentRef],
    window: u64,
) -> Result<(Vec<ReadPiece>, &'c [ContentRef])> {
    let mut planned = 0u64;
    let n = rest
        .iter()
        .position(|c| {
            let over = planned >= window;
            if let ContentRef::Blob(id) = c {
                planned += index
                    .get(BlobType::Data, id)
                    .map_or(0, |l| u64::from(l.entry.raw_len));
            }
            over
        })
        .unwrap_or(rest.len())
        .max(1)
        .min(rest.len());
    let (win, tail) = rest.split_at(n);
    let pieces = win
        .par_iter()
        .map(|c| match c {
            ContentRef::Blob(id) => repo
                .read_blob(index, BlobType::Data, id)
                .map(ReadPiece::Data),
            ContentRef::Zeros(z) => Ok(ReadPiece::Zeros(*z)),
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok((pieces, tail))
}

/// Calls `f` with each piece of a file's content and its offset, in order: blobs window
/// by window, each window's blobs read in parallel.
pub fn for_each_piece(
    repo: &Repository,
    index: &MasterIndex,
    node: &Node,
    mut f: impl FnMut(u64, ContentPiece<'_>) -> Result<()>,
) -> Result<()> {
    let mut at = 0u64;
    let mut rest = node.content.as_slice();
    while !rest.is_empty() {
        let (ready, tail) = read_window(repo, index, rest, DUMP_WINDOW)?;
        for r in ready {
            match r {
                ReadPiece::Data(b) => {
                    f(at, ContentPiece::Data(&b))?;
                    at += b.len() as u64;
                }
                ReadPiece::Zeros(z) => {
                    f(at, ContentPiece::Zeros(z))?;
                    at += z;
                }
            }
        }
        rest = tail;
    }
    Ok(())
}

/// Bytes of a pack read at once by a restore: blobs lying within this span are fetched in
/// one read. Bounds memory (one span per reading thread) while keeping reads few.
const RESTORE_SPAN: u64 = 4 * 1024 * 1024;

/// One place a blob goes: file (index into the files) and offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    file: u32,
    at: u64,
}

/// A blob's place: its pack and entry, and where it goes.
type Piece = (Id, PackEntry, Target);

/// Every blob of `files` with the place it goes, sorted by pack and offset in the pack.
/// Fails if a blob is not indexed or a file's content does not add up to its size.
fn place_blobs(index: &MasterIndex, files: &[&Planned]) -> Result<Vec<Piece>> {
    let mut pieces: Vec<Piece> = Vec::new();
    for (i, p) in files.iter().enumerate() {
        let file = u32::try_from(i).expect("fewer than 2^32 files");
        let mut at = 0u64;
        for c in &p.node.content {
            match c {
                ContentRef::Zeros(n) => at += n,
                ContentRef::Blob(id) => {
                    let loc = index
                        .get(BlobType::Data, id)
                        .ok_or(holdfast_repo::Error::BlobNotIndexed(*id))?;
                    pieces.push((loc.pack, loc.entry, Target { file, at }));
                    at += loc.entry.raw_len as u64;
                }
            }
        }
        if at != p.node.size {
            return Err(holdfast_repo::Error::corrupt(
                "tree",
                String::from_utf8_lossy(&p.node.name),
                format!(
                    "content adds up to {at} bytes but the file size is {}",
                    p.node.size
                ),
            )
            .into());
        }
    }
    pieces.sort_unstable_by_key(|w| (w.0, w.1.offset, w.2));
    Ok(pieces)
}

/// Whether a leaf is a regular file of exactly one blob: the fill creates it, writes it
/// and applies its metadata when that blob is read.
fn is_whole(p: &Planned) -> bool {
    p.node.kind == NodeKind::File && matches!(p.node.content.as_slice(), [ContentRef::Blob(_)])
}

/// What the fill needs besides the blobs: the files, metadata options (for whole files),
/// and where warnings and progress go.
struct Fill<'a> {
    repo: &'a Repository,
    files: &'a [&'a Planned],
    apply: &'a ApplyOptions,
    warnings: &'a Mutex<Vec<String>>,
    progress: &'a RestoreProgress,
}

/// Writes the content of the files pack by pack: each pack is read in a few spans in
/// order, each blob decrypted once and written at every place that needs it
/// (deduplicated data, repeated chunks), with positioned writes.
fn fill_files(fill: &Fill<'_>, wanted: &[Piece]) -> Result<()> {
    // Spans: runs of one pack's blobs that fit in RESTORE_SPAN (or one larger blob).
    let mut spans: Vec<&[Piece]> = Vec::new();
    let mut rest = wanted;
    while let Some(first) = rest.first() {
        let start = first.1.offset as u64;
        let n = rest
            .iter()
            .position(|w| {
                w.0 != first.0
                    || (w.1.offset as u64 + w.1.stored_len as u64 - start > RESTORE_SPAN
                        && w.1.offset != first.1.offset)
            })
            .unwrap_or(rest.len());
        let (span, tail) = rest.split_at(n);
        spans.push(span);
        rest = tail;
    }
    // One reader per core; over a network more, since most of a read is waiting. Memory:
    // one span and its decrypted blobs per reader.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let threads = if fill.repo.backend().is_remote() {
        cores.max(8)
    } else {
        cores
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| EngineError::Usage(format!("cannot start restore threads: {e}")))?;
    pool.install(|| spans.par_iter().try_for_each(|span| fill_span(fill, span)))
}

/// Reads one span of a pack and writes its blobs where they go.
fn fill_span(fill: &Fill<'_>, span: &[Piece]) -> Result<()> {
    let repo = fill.repo;
    let pack = span[0].0;
    let start = span[0].1.offset as u64;
    let end = span
        .iter()
        .map(|w| w.1.offset as u64 + w.1.stored_len as u64)
        .max()
        .unwrap_or(start);
    let mut bytes = repo
        .backend()
        .read_range(FileKind::Pack, &pack, start, end - start)?;
    // Blobs are decrypted where they lie in the span and decompressed into one buffer.
    let mut scratch = Vec::new();
    // Consecutive blobs of a span mostly go to one file: keep it open.
    let mut open: Option<(u32, File)> = None;
    for same in span.chunk_by(|a, b| a.1.offset == b.1.offset) {
        let e = &same[0].1;
        let from = (e.offset as u64 - start) as usize;
        let stored = &mut bytes[from..from + e.stored_len as usize];
        let data = repo.open_stored_blob_in_place(&pack, e, stored, &mut scratch)?;
        for (_, _, t) in same {
            let p = fill.files[t.file as usize];
            if is_whole(p) {
                let f = create_file(&p.path)?;
                f.write_all_at(data, 0)
                    .map_err(|err| fs_err("write", &p.path, err))?;
                let w = fsmeta::apply_file(&f, &p.path, &p.node, fill.apply)?;
                if !w.is_empty() {
                    fill.warnings.lock().expect("lock").extend(w);
                }
            } else {
                let f = match &mut open {
                    Some((n, f)) if *n == t.file => &*f,
                    slot => {
                        let f = OpenOptions::new()
                            .write(true)
                            .custom_flags(nix::libc::O_NOFOLLOW)
                            .open(&p.path)
                            .map_err(|err| fs_err("open", &p.path, err))?;
                        &slot.insert((t.file, f)).1
                    }
                };
                f.write_all_at(data, t.at)
                    .map_err(|err| fs_err("write", &p.path, err))?;
            }
            fill.progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}
