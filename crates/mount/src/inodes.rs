//! The inode table: numbers allocated lazily and stable for the life of a mount.
//!
//! Each inode is a path in the mount, keyed by its parent's inode and either its index in
//! the parent's tree (entries of a snapshot) or its name (the virtual directories). A
//! subtree that two snapshots share still gets one inode per path: the kernel must never
//! see one directory under two parents.

use std::collections::HashMap;
use std::sync::RwLock;

use fuser::FileAttr;

use crate::view::VPath;
use holdfast_repo::Id;

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// How an inode's child is found again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChildKey {
    /// Entry number `n` of the parent's tree.
    Index(u32),
    /// A named entry of a virtual directory.
    Name(Box<[u8]>),
}

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A directory of the virtual layout (`snapshots/`, `hosts/<host>/`, ...).
    Virtual(VPath),
    /// A symlink of the virtual layout (`latest`), with its target.
    Link(Box<[u8]>),
    /// A snapshot's root directory: the contents of its root tree.
    Root {
        /// The root tree.
        tree: Id,
    },
    /// Entry `index` of the tree `parent_tree`; `subtree` for a directory.
    Node {
        /// The tree holding the entry.
        parent_tree: Id,
        /// Its position there.
        index: u32,
        /// Its own tree, for a directory.
        subtree: Option<Id>,
    },
}

/// One inode: where it is, its attributes and what it stands for.
#[derive(Debug, Clone)]
pub struct Inode {
    /// The parent directory's inode (the root is its own parent).
    pub parent: u64,
    /// The name in the parent.
    pub name: Box<[u8]>,
    /// Attributes, `ino` filled in.
    pub attr: FileAttr,
    /// What it is.
    pub what: What,
}

#[derive(Debug, Default)]
struct Table {
    /// Inode `n` is at `nodes[n - 1]`.
    nodes: Vec<Inode>,
    children: HashMap<(u64, ChildKey), u64>,
}

/// The table, shared by the filesystem's threads.
#[derive(Debug)]
pub struct Inodes {
    inner: RwLock<Table>,
}

impl Inodes {
    /// A table holding only the root, with these attributes.
    pub fn new(mut root_attr: FileAttr) -> Inodes {
        root_attr.ino = fuser::INodeNo(ROOT);
        let root = Inode {
            parent: ROOT,
            name: Box::default(),
            attr: root_attr,
            what: What::Virtual(VPath::Root),
        };
        Inodes {
            inner: RwLock::new(Table {
                nodes: vec![root],
                children: HashMap::new(),
            }),
        }
    }

    /// The inode numbered `ino`, if allocated.
    pub fn get(&self, ino: u64) -> Option<Inode> {
        let t = self.inner.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(ino)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| t.nodes.get(i))
            .cloned()
    }

    /// The attributes of `ino`, if allocated.
    pub fn attr(&self, ino: u64) -> Option<FileAttr> {
        let t = self.inner.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(ino)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| t.nodes.get(i))
            .map(|n| n.attr)
    }

    /// The child of `parent` under `key`: the existing inode if there is one (with
    /// `what` and the attributes replaced when `update`: a virtual entry may change on a
    /// refresh), else a new one made by `make`. Returns its number and attributes.
    pub fn child(
        &self,
        parent: u64,
        key: ChildKey,
        update: bool,
        make: impl FnOnce() -> (Box<[u8]>, FileAttr, What),
    ) -> (u64, FileAttr) {
        {
            let t = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if let Some(&ino) = t.children.get(&(parent, key.clone())) {
                if !update {
                    return (ino, t.nodes[(ino - 1) as usize].attr);
                }
            }
        }
        let (name, mut attr, what) = make();
        let mut t = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(&ino) = t.children.get(&(parent, key.clone())) {
            let node = &mut t.nodes[(ino - 1) as usize];
            if update {
                attr.ino = fuser::INodeNo(ino);
                node.attr = attr;
                node.what = what;
            }
            return (ino, node.attr);
        }
        let ino = t.nodes.len() as u64 + 1;
        attr.ino = fuser::INodeNo(ino);
        t.nodes.push(Inode {
            parent,
            name,
            attr,
            what,
        });
        t.children.insert((parent, key), ino);
        (ino, attr)
    }

    /// How many inodes are allocated (the root included).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .len()
    }

    /// Whether only... never: the root is always there. For clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The path of `ino` below the mount point, for messages.
    pub fn path(&self, ino: u64) -> String {
        let t = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let Some(n) = t.nodes.get((at - 1) as usize) else {
                break;
            };
            parts.push(String::from_utf8_lossy(&n.name).into_owned());
            at = n.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn attr(size: u64) -> FileAttr {
        FileAttr {
            ino: fuser::INodeNo(0),
            size,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: fuser::FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn node(t: u8, i: u32) -> What {
        What::Node {
            parent_tree: Id([t; 32]),
            index: i,
            subtree: None,
        }
    }

    #[test]
    fn numbers_are_stable_and_distinct_per_path() {
        let table = Inodes::new(attr(0));
        let (a, _) = table.child(ROOT, ChildKey::Index(0), false, || {
            ("a".as_bytes().into(), attr(1), node(1, 0))
        });
        let (b, _) = table.child(ROOT, ChildKey::Index(1), false, || {
            ("b".as_bytes().into(), attr(2), node(1, 1))
        });
        assert_eq!((a, b), (2, 3));
        // The same path again: the same number, `make` not called.
        let (a2, at) = table.child(ROOT, ChildKey::Index(0), false, || unreachable!());
        assert_eq!((a2, at.size, at.ino.0), (a, 1, a));
        // The same tree entry under another parent is another inode.
        let (c, _) = table.child(b, ChildKey::Index(0), false, || {
            ("a".as_bytes().into(), attr(1), node(1, 0))
        });
        assert_ne!(c, a);
        assert_eq!(table.path(c), "/b/a");
        assert_eq!(table.path(ROOT), "/");
        assert_eq!(table.len(), 4);
        assert!(table.get(99).is_none() && table.get(0).is_none());
        assert_eq!(table.get(c).unwrap().parent, b);
    }

    #[test]
    fn virtual_entries_are_updated_in_place() {
        let table = Inodes::new(attr(0));
        let key = || ChildKey::Name(b"latest".as_slice().into());
        let (l, _) = table.child(ROOT, key(), true, || {
            (
                "latest".as_bytes().into(),
                attr(3),
                What::Link(b"old".as_slice().into()),
            )
        });
        let (l2, a) = table.child(ROOT, key(), true, || {
            (
                "latest".as_bytes().into(),
                attr(5),
                What::Link(b"newer".as_slice().into()),
            )
        });
        assert_eq!((l, a.size, a.ino.0), (l2, 5, l));
        assert_eq!(
            table.get(l).unwrap().what,
            What::Link(b"newer".as_slice().into())
        );
    }

    #[test]
    fn concurrent_allocation_gives_one_number_per_path() {
        let table = std::sync::Arc::new(Inodes::new(attr(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = table.clone();
                std::thread::spawn(move || {
                    (0..1000u32)
                        .map(|i| {
                            t.child(ROOT, ChildKey::Index(i), false, || {
                                ("x".as_bytes().into(), attr(i as u64), node(0, i))
                            })
                            .0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<u64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(table.len(), 1001);
        for (i, ino) in results[0].iter().enumerate() {
            assert_eq!(table.attr(*ino).unwrap().size, i as u64);
        }
    }
}
