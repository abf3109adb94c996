//! Trees: one blob per directory, listing its entries with full metadata (SPEC.md §8).
//!
//! Names are raw bytes (non-UTF-8 names survive). Entries are sorted by name as bytes
//! and unique; a decoder rejects anything else, and rejects names a restore could be
//! tricked by (empty, `.`, `..`, containing `/` or NUL).

use crate::codec::{invalid, DecodeError, Reader, Writer};
use crate::id::Id;

/// Tree encoding version byte.
pub const TREE_VERSION: u8 = 1;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file.
    File = 1,
    /// Directory; its entries are in the subtree blob.
    Dir = 2,
    /// Symbolic link.
    Symlink = 3,
    /// Named pipe.
    Fifo = 4,
    /// Character device.
    CharDevice = 5,
    /// Block device.
    BlockDevice = 6,
    /// Unix socket (restored as nothing; recorded for completeness).
    Socket = 7,
}

impl NodeKind {
    fn from_u8(v: u8) -> Result<NodeKind, DecodeError> {
        Ok(match v {
            1 => NodeKind::File,
            2 => NodeKind::Dir,
            3 => NodeKind::Symlink,
            4 => NodeKind::Fifo,
            5 => NodeKind::CharDevice,
            6 => NodeKind::BlockDevice,
            7 => NodeKind::Socket,
            _ => return Err(invalid("node kind", format!("unknown kind {v}"))),
        })
    }
}

/// One piece of a file's content, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentRef {
    /// A data blob.
    Blob(Id),
    /// A run of zero bytes that is stored as nothing (a hole, or all-zero data).
    Zeros(u64),
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Xattr {
    /// Attribute name (bytes, e.g. `user.comment`).
    #[serde(serialize_with = "ser_bytes")]
    pub name: Vec<u8>,
    /// Attribute value.
    #[serde(serialize_with = "ser_bytes")]
    pub value: Vec<u8>,
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// File name within the directory, as bytes.
    #[serde(serialize_with = "ser_bytes")]
    pub name: Vec<u8>,
    /// Entry kind.
    pub kind: NodeKind,
    /// Permission and special bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user ID.
    pub uid: u32,
    /// Owner group ID.
    pub gid: u32,
    /// Owner user name, empty if unknown.
    pub user: String,
    /// Owner group name, empty if unknown.
    pub group: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
    /// Size in bytes (files: content length; symlinks: target length).
    pub size: u64,
    /// Inode number at backup time (change detection, hardlinks).
    pub inode: u64,
    /// Device ID of the containing filesystem at backup time.
    pub device: u64,
    /// Hard link count at backup time; >1 groups entries with equal (device, inode).
    pub links: u64,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// Symlink target, as bytes.
    #[serde(serialize_with = "ser_bytes")]
    pub link_target: Vec<u8>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// File content, in order.
    pub content: Vec<ContentRef>,
    /// Subtree blob of a directory.
    pub subtree: Option<Id>,
}

fn ser_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

impl Node {
    /// An entry of the given kind and name with all other fields zero/empty.
    pub fn new(name: impl Into<Vec<u8>>, kind: NodeKind) -> Node {
        Node {
            name: name.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: String::new(),
            group: String::new(),
            mtime_ns: 0,
            ctime_ns: 0,
            size: 0,
            inode: 0,
            device: 0,
            links: 1,
            rdev: 0,
            link_target: Vec::new(),
            xattrs: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }
}

/// A directory's entries.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Tree {
    /// Entries sorted by name as bytes, unique.
    pub nodes: Vec<Node>,
}

/// Whether `name` is acceptable as one path component in a tree.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Sorts entries by name (the encoder requires sorted input).
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Encodes the tree; fails on unsorted, duplicate or unsafe names or oversize fields.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut w = Writer::new();
        w.u8(TREE_VERSION);
        w.u32(self.nodes.len() as u32);
        let mut prev: Option<&[u8]> = None;
        for n in &self.nodes {
            check_name(&n.name, prev)?;
            prev = Some(&n.name);
            if n.user.len() > u16::MAX as usize
                || n.group.len() > u16::MAX as usize
                || n.name.len() > u16::MAX as usize
            {
                return Err(invalid(
                    "node",
                    "name, user or group longer than 65535 bytes",
                ));
            }
            w.bytes16(&n.name);
            w.u8(n.kind as u8);
            w.u32(n.mode);
            w.u32(n.uid);
            w.u32(n.gid);
            w.str16(&n.user);
            w.str16(&n.group);
            w.i64(n.mtime_ns);
            w.i64(n.ctime_ns);
            w.u64(n.size);
            w.u64(n.inode);
            w.u64(n.device);
            w.u64(n.links);
            w.u64(n.rdev);
            w.bytes32(&n.link_target);
            w.u32(n.xattrs.len() as u32);
            for x in &n.xattrs {
                if x.name.len() > u16::MAX as usize {
                    return Err(invalid("xattr", "name longer than 65535 bytes"));
                }
                w.bytes16(&x.name);
                w.bytes32(&x.value);
            }
            w.u32(n.content.len() as u32);
            for c in &n.content {
                match c {
                    ContentRef::Blob(id) => {
                        w.u8(0);
                        w.id(id);
                    }
                    ContentRef::Zeros(len) => {
                        w.u8(1);
                        w.u64(*len);
                    }
                }
            }
            match &n.subtree {
                None => w.u8(0),
                Some(id) => {
                    w.u8(1);
                    w.id(id);
                }
            }
        }
        Ok(w.finish())
    }

    /// Decodes and validates a tree.
    pub fn decode(buf: &[u8]) -> Result<Tree, DecodeError> {
        let mut r = Reader::new(buf);
        r.version("tree", TREE_VERSION)?;
        let count = r.count("node count", 80)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.bytes16()?.to_vec();
            check_name(&name, nodes.last().map(|n| n.name.as_slice()))?;
            let kind = NodeKind::from_u8(r.u8()?)?;
            let mode = r.u32()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let user = r.str16("user")?;
            let group = r.str16("group")?;
            let mtime_ns = r.i64()?;
            let ctime_ns = r.i64()?;
            let size = r.u64()?;
            let inode = r.u64()?;
            let device = r.u64()?;
            let links = r.u64()?;
            let rdev = r.u64()?;
            let link_target = r.bytes32()?.to_vec();
            let nx = r.count("xattr count", 6)?;
            let mut xattrs = Vec::with_capacity(nx);
            for _ in 0..nx {
                let name = r.bytes16()?.to_vec();
                let value = r.bytes32()?.to_vec();
                xattrs.push(Xattr { name, value });
            }
            let nc = r.count("content count", 9)?;
            let mut content = Vec::with_capacity(nc);
            for _ in 0..nc {
                content.push(match r.u8()? {
                    0 => ContentRef::Blob(r.id()?),
                    1 => ContentRef::Zeros(r.u64()?),
                    t => return Err(invalid("content tag", format!("unknown tag {t}"))),
                });
            }
            let subtree = match r.u8()? {
                0 => None,
                1 => Some(r.id()?),
                t => return Err(invalid("subtree flag", format!("{t}"))),
            };
            if kind == NodeKind::Dir && subtree.is_none() {
                return Err(invalid("node", "directory without a subtree"));
            }
            if kind != NodeKind::Dir && subtree.is_some() {
                return Err(invalid("node", "non-directory with a subtree"));
            }
            if kind != NodeKind::File && !content.is_empty() {
                return Err(invalid("node", "content on a non-file entry"));
            }
            nodes.push(Node {
                name,
                kind,
                mode,
                uid,
                gid,
                user,
                group,
                mtime_ns,
                ctime_ns,
                size,
                inode,
                device,
                links,
                rdev,
                link_target,
                xattrs,
                content,
                subtree,
            });
        }
        r.finish()?;
        Ok(Tree { nodes })
    }
}

fn check_name(name: &[u8], prev: Option<&[u8]>) -> Result<(), DecodeError> {
    if !is_safe_name(name) {
        return Err(invalid(
            "entry name",
            format!(
                "{:?} is not a safe path component",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    if let Some(p) = prev {
        if p >= name {
            return Err(invalid("entry name", "entries are not sorted and unique"));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn arb_node() -> impl Strategy<Value = Node> {
        let name =
            proptest::collection::vec(1u8..=255, 1..20).prop_filter("safe", |n| is_safe_name(n));
        let content = proptest::collection::vec(
            prop_oneof![
                any::<[u8; 32]>().prop_map(|a| ContentRef::Blob(Id(a))),
                any::<u64>().prop_map(ContentRef::Zeros)
            ],
            0..4,
        );
        let xattrs = proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 1..10),
                proptest::collection::vec(any::<u8>(), 0..20),
            )
                .prop_map(|(name, value)| Xattr { name, value }),
            0..3,
        );
        (
            name,
            1u8..=7,
            any::<(u32, u32, u32, i64, i64, u64, u64, u64)>(),
            "[a-z]{0,8}",
            content,
            xattrs,
            proptest::collection::vec(any::<u8>(), 0..30),
            any::<[u8; 32]>(),
        )
            .prop_map(
                |(
                    name,
                    k,
                    (mode, uid, gid, mt, ct, size, inode, dev),
                    user,
                    content,
                    xattrs,
                    target,
                    sub,
                )| {
                    let kind = NodeKind::from_u8(k).unwrap();
                    let mut n = Node::new(name, kind);
                    n.mode = mode;
                    n.uid = uid;
                    n.gid = gid;
                    n.mtime_ns = mt;
                    n.ctime_ns = ct;
                    n.size = size;
                    n.inode = inode;
                    n.device = dev;
                    n.user = user.clone();
                    n.group = user;
                    n.xattrs = xattrs;
                    n.link_target = target;
                    if kind == NodeKind::File {
                        n.content = content;
                    }
                    if kind == NodeKind::Dir {
                        n.subtree = Some(Id(sub));
                    }
                    n
                },
            )
    }

    pub fn arb_tree() -> impl Strategy<Value = Tree> {
        proptest::collection::vec(arb_node(), 0..8).prop_map(|mut nodes| {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            Tree { nodes }
        })
    }

    proptest! {
        #[test]
        fn tree_round_trip(t in arb_tree()) {
            let enc = t.encode().unwrap();
            prop_assert_eq!(Tree::decode(&enc).unwrap(), t);
            for cut in 0..enc.len() {
                prop_assert!(Tree::decode(&enc[..cut]).is_err());
            }
        }
    }

    #[test]
    fn unsafe_and_unsorted_names_are_rejected() {
        for bad in [&b".."[..], b".", b"", b"a/b", b"a\0"] {
            let t = Tree {
                nodes: vec![Node::new(bad.to_vec(), NodeKind::File)],
            };
            assert!(t.encode().is_err(), "{bad:?}");
        }
        let t = Tree {
            nodes: vec![
                Node::new("b", NodeKind::File),
                Node::new("a", NodeKind::File),
            ],
        };
        assert!(t.encode().is_err());
        let t = Tree {
            nodes: vec![
                Node::new("a", NodeKind::File),
                Node::new("a", NodeKind::File),
            ],
        };
        assert!(t.encode().is_err());
        // A decoder sees the same checks even if an encoder was bypassed.
        let good = Tree {
            nodes: vec![
                Node::new("a", NodeKind::File),
                Node::new("b", NodeKind::File),
            ],
        };
        let mut enc = good.encode().unwrap();
        let pos = enc.windows(3).position(|w| w == [1, 0, b'b']).unwrap();
        enc[pos + 2] = b'a';
        assert!(Tree::decode(&enc).is_err());
    }

    #[test]
    fn non_utf8_and_newline_names_survive() {
        let mut t = Tree {
            nodes: vec![
                Node::new(vec![0xff, 0xfe, b'\n', b'x'], NodeKind::File),
                Node::new("a\nb", NodeKind::File),
            ],
        };
        t.sort();
        assert_eq!(Tree::decode(&t.encode().unwrap()).unwrap(), t);
    }
}
