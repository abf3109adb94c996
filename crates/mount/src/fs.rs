//! The FUSE filesystem: requests answered from the inode table, the virtual layout and
//! the repository (trees and data blobs read on demand, kept in LRU caches).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use holdfast_repo::backend::FileKind;
use holdfast_repo::blob::BlobType;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::{Repository, SnapshotFilter};
use holdfast_repo::tree::{ContentRef, Node, NodeKind, Tree};
use holdfast_repo::Id;

use crate::cache::WeightedLru;
use crate::inodes::{ChildKey, Inode, Inodes, What};
use crate::layout::{FileLayout, Piece};
use crate::view::{SnapDir, VEntry, VPath, View};

/// How long the kernel may keep what it learnt of a snapshot's entries: they never change.
const TREE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the kernel may keep the virtual directories' entries: a refresh can change
/// them (`latest`, new snapshots).
const VIRTUAL_TTL: Duration = Duration::from_secs(1);

/// Sizes of the caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheSizes {
    /// Bytes of decoded data blobs kept.
    pub data: usize,
    /// Estimated bytes of decoded trees kept.
    pub trees: usize,
}

impl Default for CacheSizes {
    fn default() -> Self {
        CacheSizes {
            data: 64 << 20,
            trees: 64 << 20,
        }
    }
}

/// When the snapshot list was last read and which snapshots it had.
#[derive(Debug)]
struct Listed {
    at: Instant,
    ids: HashSet<Id>,
}

/// What the request threads share.
pub struct Shared {
    repo: Repository,
    filter: SnapshotFilter,
    refresh_interval: Duration,
    index: RwLock<Arc<MasterIndex>>,
    view: RwLock<Arc<View>>,
    listed: Mutex<Listed>,
    inodes: Inodes,
    trees: WeightedLru<Id, Arc<Tree>>,
    blobs: WeightedLru<Id, Arc<Vec<u8>>>,
    handles: Mutex<HashMap<u64, Arc<FileLayout>>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("repo", &self.repo)
            .field("inodes", &self.inodes.len())
            .finish()
    }
}

/// A time in ns since the epoch as a `SystemTime`.
fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_nanos(ns.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// glibc's `dev_t` (as `st_rdev` records it) in the kernel's 32-bit encoding that FUSE
/// attributes carry (`new_encode_dev`).
pub fn fuse_rdev(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

fn attr_base(kind: FileType, perm: u16, mtime_ns: i64, uid: u32, gid: u32) -> FileAttr {
    let t = system_time(mtime_ns);
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink: 1,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The attributes of a snapshot entry, as recorded.
pub fn node_attr(n: &Node) -> FileAttr {
    let kind = match n.kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
    };
    let mut a = attr_base(kind, (n.mode & 0o7777) as u16, n.mtime_ns, n.uid, n.gid);
    a.ctime = system_time(n.ctime_ns);
    a.size = match n.kind {
        NodeKind::File => n.size,
        NodeKind::Symlink => n.link_target.len() as u64,
        _ => 0,
    };
    a.blocks = a.size.div_ceil(512);
    a.nlink = match n.kind {
        NodeKind::Dir => 2,
        _ => u32::try_from(n.links.max(1)).unwrap_or(u32::MAX),
    };
    if matches!(n.kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
        a.rdev = fuse_rdev(n.rdev);
    }
    a
}

/// A rough size of a decoded tree in memory, for the tree cache's budget.
fn tree_weight(t: &Tree) -> usize {
    t.nodes
        .iter()
        .map(|n| {
            std::mem::size_of::<Node>()
                + n.name.len()
                + n.link_target.len()
                + n.user.len()
                + n.group.len()
                + n.xattrs
                    .iter()
                    .map(|x| x.name.len() + x.value.len() + 48)
                    .sum::<usize>()
                + n.content.len() * std::mem::size_of::<ContentRef>()
        })
        .sum::<usize>()
        + 64
}

/// What a directory lists.
enum Listing {
    Virtual(Arc<View>, VPath),
    Tree(Id, Arc<Tree>),
}

impl Shared {
    /// Reads the snapshot list and the index, and allocates the root.
    pub fn new(
        repo: Repository,
        filter: SnapshotFilter,
        refresh_interval: Duration,
        caches: CacheSizes,
    ) -> holdfast_repo::Result<Shared> {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let mut root = attr_base(FileType::Directory, 0o555, 0, uid, gid);
        root.nlink = 2;
        let s = Shared {
            repo,
            filter,
            refresh_interval,
            index: RwLock::new(Arc::new(MasterIndex::new())),
            view: RwLock::new(Arc::new(View::default())),
            listed: Mutex::new(Listed {
                at: Instant::now(),
                ids: HashSet::new(),
            }),
            inodes: Inodes::new(root),
            trees: WeightedLru::new(caches.trees),
            blobs: WeightedLru::new(caches.data),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid,
            gid,
        };
        let mut listed = s.listed.lock().unwrap_or_else(|p| p.into_inner());
        s.reload(&mut listed)?;
        drop(listed);
        Ok(s)
    }

    /// How many snapshots the mount shows.
    pub fn snapshot_count(&self) -> usize {
        self.current_view().snapshots
    }

    fn current_view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn current_index(&self) -> Arc<MasterIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the snapshot list again if it changed: the index too, then the layout.
    fn reload(&self, listed: &mut Listed) -> holdfast_repo::Result<()> {
        listed.at = Instant::now();
        let ids: HashSet<Id> = self
            .repo
            .backend()
            .list(FileKind::Snapshot)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if ids == listed.ids && !ids.is_empty() {
            return Ok(());
        }
        let (snaps, bad) = self.repo.snapshots()?;
        for e in bad {
            tracing::warn!("a snapshot cannot be shown: {e}");
        }
        let index = self.repo.load_index()?;
        let shown: Vec<_> = snaps
            .into_iter()
            .filter(|(_, s)| self.filter.matches(s))
            .collect();
        let view = View::build(&shown);
        // The index first: a new snapshot's blobs must be found once it is visible.
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        tracing::debug!("snapshot list read: {} shown", shown.len());
        listed.ids = ids;
        Ok(())
    }

    /// Reads the snapshot list again now (SIGHUP), waiting for a refresh under way.
    pub fn refresh(&self) {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.reload(&mut listed) {
            tracing::warn!("cannot read the snapshot list again: {e}");
        }
    }

    /// Reads the snapshot list again if it is older than the refresh interval (and no
    /// other thread is at it).
    fn maybe_refresh(&self) {
        let Ok(mut listed) = self.listed.try_lock() else {
            return;
        };
        if listed.at.elapsed() < self.refresh_interval {
            return;
        }
        if let Err(e) = self.reload(&mut listed) {
            tracing::warn!("cannot read the snapshot list again: {e}");
        }
    }

    /// A decoded tree, from the cache or the repository; an error is logged (naming the
    /// tree and the directory) and becomes EIO.
    fn tree(&self, id: &Id, ino: u64) -> Result<Arc<Tree>, Errno> {
        if let Some(t) = self.trees.get(id) {
            return Ok(t);
        }
        let index = self.current_index();
        match self.repo.load_tree(&index, id) {
            Ok(t) => {
                let t = Arc::new(t);
                self.trees.put(*id, t.clone(), tree_weight(&t));
                Ok(t)
            }
            Err(e) => {
                tracing::error!(
                    "cannot read directory {}: tree {}: {e}",
                    self.inodes.path(ino),
                    id.short()
                );
                Err(Errno::EIO)
            }
        }
    }

    /// A decoded data blob, from the cache or the repository.
    fn blob(&self, id: &Id) -> holdfast_repo::Result<Arc<Vec<u8>>> {
        if let Some(b) = self.blobs.get(id) {
            return Ok(b);
        }
        let index = self.current_index();
        let b = Arc::new(self.repo.read_blob(&index, BlobType::Data, id)?);
        self.blobs.put(*id, b.clone(), b.len());
        Ok(b)
    }

    fn inode(&self, ino: INodeNo) -> Result<Inode, Errno> {
        self.inodes.get(ino.0).ok_or(Errno::ENOENT)
    }

    /// The snapshot entry an inode stands for.
    fn node(&self, ino: u64, what: &What) -> Result<Option<(Arc<Tree>, usize)>, Errno> {
        match what {
            What::Node {
                parent_tree, index, ..
            } => {
                let t = self.tree(parent_tree, ino)?;
                let i = *index as usize;
                if i >= t.nodes.len() {
                    return Err(Errno::EIO);
                }
                Ok(Some((t, i)))
            }
            _ => Ok(None),
        }
    }

    fn virtual_attr(&self, newest_ns: i64) -> FileAttr {
        let mut a = attr_base(FileType::Directory, 0o555, newest_ns, self.uid, self.gid);
        a.nlink = 2;
        a
    }

    /// The inode of a virtual directory's entry (its attributes brought up to date).
    fn virtual_child(&self, parent: u64, view: &View, name: &[u8], e: &VEntry) -> (u64, FileAttr) {
        let (key, attr, what) = match e {
            VEntry::Dir(p) => (
                ChildKey::Name(name.into()),
                self.virtual_attr(view.newest_ns),
                What::Virtual(p.clone()),
            ),
            VEntry::Snapshot(SnapDir { id, tree, time_ns }) => {
                // The snapshot's ID is part of the key: its subtree inodes hang off this
                // one, so a name that comes to mean another snapshot is another inode.
                let mut k = name.to_vec();
                k.push(0);
                k.extend_from_slice(&id.0);
                let mut a = attr_base(FileType::Directory, 0o555, *time_ns, self.uid, self.gid);
                a.nlink = 2;
                (ChildKey::Name(k.into()), a, What::Root { tree: *tree })
            }
            VEntry::Link(target) => {
                let mut a = attr_base(FileType::Symlink, 0o777, view.newest_ns, self.uid, self.gid);
                a.size = target.len() as u64;
                (
                    ChildKey::Name(name.into()),
                    a,
                    What::Link(target.as_slice().into()),
                )
            }
        };
        self.inodes
            .child(parent, key, true, || (name.into(), attr, what))
    }

    /// The inode of entry `i` of the tree `tree_id` listed by directory `parent`.
    fn tree_child(&self, parent: u64, tree_id: &Id, tree: &Tree, i: usize) -> (u64, FileAttr) {
        self.inodes
            .child(parent, ChildKey::Index(i as u32), false, || {
                let n = &tree.nodes[i];
                (
                    n.name.as_slice().into(),
                    node_attr(n),
                    What::Node {
                        parent_tree: *tree_id,
                        index: i as u32,
                        subtree: n.subtree,
                    },
                )
            })
    }

    /// What directory `ino` lists.
    fn listing(&self, ino: u64, what: &What, refresh: bool) -> Result<Listing, Errno> {
        match what {
            What::Virtual(p) => {
                if refresh {
                    self.maybe_refresh();
                }
                Ok(Listing::Virtual(self.current_view(), p.clone()))
            }
            What::Root { tree }
            | What::Node {
                subtree: Some(tree),
                ..
            } => Ok(Listing::Tree(*tree, self.tree(tree, ino)?)),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn ttl(what: &What) -> Duration {
        match what {
            What::Virtual(_) | What::Link(_) => VIRTUAL_TTL,
            What::Root { .. } | What::Node { .. } => TREE_TTL,
        }
    }

    /// Calls `add(ino, offset, name, attr)` for the entries of directory `ino` from
    /// `offset` on (`.` is offset 0, `..` 1, entry `i` is `i + 2`; each entry's offset
    /// passed on is the one after it) until it returns true (the reply is full).
    fn list_from(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, &[u8], &FileAttr, Duration) -> bool,
    ) -> Result<(), Errno> {
        let inode = self.inodes.get(ino).ok_or(Errno::ENOENT)?;
        let listing = self.listing(ino, &inode.what, offset == 0)?;
        let ttl = Self::ttl(&inode.what);
        let mut k = offset;
        if k == 0 {
            if add(ino, 1, b".", &inode.attr, ttl) {
                return Ok(());
            }
            k = 1;
        }
        if k == 1 {
            let pattr = self.inodes.attr(inode.parent).unwrap_or(inode.attr);
            if add(inode.parent, 2, b"..", &pattr, ttl) {
                return Ok(());
            }
            k = 2;
        }
        let start = usize::try_from(k - 2).unwrap_or(usize::MAX);
        match listing {
            Listing::Virtual(view, p) => {
                for (i, (name, e)) in view.entries(&p).iter().enumerate().skip(start) {
                    let (cino, attr) = self.virtual_child(ino, &view, name, e);
                    if add(cino, i as u64 + 3, name, &attr, VIRTUAL_TTL) {
                        break;
                    }
                }
            }
            Listing::Tree(id, tree) => {
                for i in start..tree.nodes.len() {
                    let (cino, attr) = self.tree_child(ino, &id, &tree, i);
                    if add(cino, i as u64 + 3, &tree.nodes[i].name, &attr, TREE_TTL) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds the offset table of file `ino` (entry `i` of `tree`).
    fn layout(&self, ino: u64, node: &Node) -> Result<FileLayout, Errno> {
        let index = self.current_index();
        let mut pieces = Vec::with_capacity(node.content.len());
        for c in &node.content {
            pieces.push(match c {
                ContentRef::Zeros(n) => Piece::Zeros(*n),
                ContentRef::Blob(id) => match index.get(BlobType::Data, id) {
                    Some(loc) => Piece::Blob(*id, u64::from(loc.entry.raw_len)),
                    None => {
                        tracing::error!(
                            "cannot open {}: data blob {} is not in the index (its pack is \
                             missing: run `holdfast check`)",
                            self.inodes.path(ino),
                            id
                        );
                        return Err(Errno::EIO);
                    }
                },
            });
        }
        Ok(FileLayout::new(pieces))
    }

    fn read_range(
        &self,
        ino: u64,
        layout: &FileLayout,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let spans = layout.spans(offset, u64::from(size));
        let mut out = Vec::with_capacity(spans.iter().map(|s| (s.to - s.from) as usize).sum());
        for s in spans {
            match layout.piece(s.piece) {
                Piece::Zeros(_) => out.resize(out.len() + (s.to - s.from) as usize, 0),
                Piece::Blob(id, len) => {
                    let data = match self.blob(&id) {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::error!(
                                "cannot read {} at offset {offset}: data blob {id}: {e}",
                                self.inodes.path(ino)
                            );
                            return Err(Errno::EIO);
                        }
                    };
                    if data.len() as u64 != len {
                        tracing::error!(
                            "cannot read {}: data blob {id} holds {} bytes, the index says {len}",
                            self.inodes.path(ino),
                            data.len()
                        );
                        return Err(Errno::EIO);
                    }
                    out.extend_from_slice(&data[s.from as usize..s.to as usize]);
                }
            }
        }
        Ok(out)
    }
}

/// The filesystem handed to fuser: a handle on the shared state.
#[derive(Debug)]
pub struct HoldfastFs {
    /// The state its request threads share (and the signal thread refreshes).
    pub shared: Arc<Shared>,
}

fn xattr_reply(data: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for HoldfastFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for what helps; a kernel without it works, only slower.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.shared;
        let inode = match s.inode(parent) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let name = name.as_bytes();
        match s.listing(parent.0, &inode.what, true) {
            Err(e) => reply.error(e),
            Ok(Listing::Virtual(view, p)) => match view.lookup(&p, name) {
                None => reply.error(Errno::ENOENT),
                Some(e) => {
                    let (_, attr) = s.virtual_child(parent.0, &view, name, e);
                    reply.entry(&VIRTUAL_TTL, &attr, Generation(0));
                }
            },
            Ok(Listing::Tree(id, tree)) => {
                match tree.nodes.binary_search_by(|n| n.name.as_slice().cmp(name)) {
                    Err(_) => reply.error(Errno::ENOENT),
                    Ok(i) => {
                        let (_, attr) = s.tree_child(parent.0, &id, &tree, i);
                        reply.entry(&TREE_TTL, &attr, Generation(0));
                    }
                }
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.shared.inode(ino) {
            Ok(i) => reply.attr(&Shared::ttl(&i.what), &i.attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = &self.shared;
        let inode = match s.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match &inode.what {
            What::Link(t) => reply.data(t),
            w => match s.node(ino.0, w) {
                Ok(Some((t, i))) if t.nodes[i].kind == NodeKind::Symlink => {
                    reply.data(&t.nodes[i].link_target)
                }
                Ok(_) => reply.error(Errno::EINVAL),
                Err(e) => reply.error(e),
            },
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let s = &self.shared;
        let inode = match s.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let layout = match s.node(ino.0, &inode.what) {
            Ok(Some((t, i))) if t.nodes[i].kind == NodeKind::File => s.layout(ino.0, &t.nodes[i]),
            Ok(_) => Err(Errno::EACCES),
            Err(e) => Err(e),
        };
        match layout {
            Ok(l) => {
                let fh = s.next_fh.fetch_add(1, Ordering::Relaxed);
                s.handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fh, Arc::new(l));
                // The content never changes: the page cache may keep it across opens.
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = &self.shared;
        let layout = s
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned();
        let Some(layout) = layout else {
            return reply.error(Errno::EBADF);
        };
        match s.read_range(ino.0, &layout, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.shared.inode(ino) {
            // A snapshot's directories never change: the kernel may cache their listing.
            Ok(Inode {
                what: What::Root { .. } | What::Node { .. },
                ..
            }) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self
            .shared
            .list_from(ino.0, offset, |cino, off, name, attr, _| {
                reply.add(INodeNo(cino), off, attr.kind, OsStr::from_bytes(name))
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self
            .shared
            .list_from(ino.0, offset, |cino, off, name, attr, ttl| {
                reply.add(
                    INodeNo(cino),
                    off,
                    OsStr::from_bytes(name),
                    &ttl,
                    attr,
                    Generation(0),
                )
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let s = &self.shared;
        let inode = match s.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match s.node(ino.0, &inode.what) {
            Ok(Some((t, i))) => {
                match t.nodes[i].xattrs.iter().find(|x| x.name == name.as_bytes()) {
                    Some(x) => xattr_reply(&x.value, size, reply),
                    None => reply.error(Errno::NO_XATTR),
                }
            }
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let s = &self.shared;
        let inode = match s.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        match s.node(ino.0, &inode.what) {
            Ok(Some((t, i))) => {
                let mut names = Vec::new();
                for x in &t.nodes[i].xattrs {
                    names.extend_from_slice(&x.name);
                    names.push(0);
                }
                xattr_reply(&names, size, reply)
            }
            Ok(None) => xattr_reply(&[], size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Read-only: writing is refused; reading is checked by the kernel
        // (default_permissions).
        if mask.contains(fuser::AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.shared.inode(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdev_is_reencoded_for_the_kernel() {
        // /dev/null is 1:3; glibc's dev_t for it is 0x103, the kernel's encoding too.
        assert_eq!(fuse_rdev(0x103), 0x103);
        // 259:65536 (major over 255, minor over 255).
        let major: u64 = 259;
        let minor: u64 = 65_536;
        let glibc = ((major & 0xfff) << 8)
            | ((major & !0xfff) << 32)
            | (minor & 0xff)
            | ((minor & !0xff) << 12);
        assert_eq!(
            fuse_rdev(glibc),
            ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
        );
    }

    #[test]
    fn node_attributes() {
        let mut n = Node::new("f", NodeKind::File);
        n.mode = 0o4755;
        n.size = 1000;
        n.links = 3;
        n.uid = 7;
        n.mtime_ns = -1_500_000_000;
        let a = node_attr(&n);
        assert_eq!(
            (a.kind, a.perm, a.size, a.blocks, a.nlink, a.uid),
            (FileType::RegularFile, 0o4755, 1000, 2, 3, 7)
        );
        assert_eq!(a.mtime, UNIX_EPOCH - Duration::from_millis(1500));
        let mut l = Node::new("l", NodeKind::Symlink);
        l.link_target = b"../x".to_vec();
        assert_eq!(
            (node_attr(&l).size, node_attr(&l).kind),
            (4, FileType::Symlink)
        );
        let d = Node::new("d", NodeKind::Dir);
        assert_eq!(node_attr(&d).nlink, 2);
    }
}
