//! Sources that are not a filesystem: a stream of entries a program produces, recorded
//! as files and directories of a snapshot (standard input, a command's output, a dump
//! streamed from a pod, Kubernetes objects, the keys of a bucket).
//!
//! A [`Feed`] hands out [`Entry`] values in tree order (see [`Feed`]); the archiver builds
//! the snapshot's trees from them as they come, holding only the open directories, so a
//! feed of millions of entries needs no more memory than the deepest path. A file entry's
//! content is opened only when the parent snapshot does not already hold it unchanged
//! ([`Entry::reusable`]): a bucket backup downloads only changed objects.
//!
//! A feed that fails ([`Feed::next_entry`] or a content read returning an error) fails the
//! backup: no snapshot is written. That is what a dump needs: a `pg_dumpall` that exits
//! non-zero half-way must not leave a snapshot that looks complete. Entries that may be
//! left out instead (an object deleted between listing and reading) say so with
//! [`Entry::skip_on_error`].

use std::io::Read;

use holdfast_repo::tree::Xattr;

/// Opens a file entry's content: `Ok(None)` when the thing vanished since it was listed
/// (the entry is left out with a warning).
pub type Opener = Box<dyn FnOnce() -> std::io::Result<Option<Box<dyn Read + Send>>> + Send>;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its content comes from the entry's [`Opener`].
    File,
    /// A directory; the entries below it follow it.
    Dir,
}

/// One file or directory of a feed.
pub struct Entry {
    /// Where it is, below the feed's recorded path: one name per component (no `/`, not
    /// `.` or `..`, not empty). Empty for the feed's root itself.
    pub path: Vec<Vec<u8>>,
    /// File or directory.
    pub kind: EntryKind,
    /// Permission bits; 0o644 for files and 0o755 for directories unless set.
    pub mode: u32,
    /// Owner; this process's user and group unless set.
    pub owner: Option<(u32, u32)>,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// The size the source announces (a listing's size), compared with the parent's entry
    /// to decide whether the content can be reused; the size recorded is what was read.
    pub size: Option<u64>,
    /// Extended attributes recorded with it (sorted by name when stored); compared with
    /// the parent's entry too, so a changed ETag kept as an attribute means "changed".
    pub xattrs: Vec<Xattr>,
    /// Whether the parent's content may stand for this entry's when size, modification
    /// time and attributes match (false: always read, as for standard input).
    pub reusable: bool,
    /// Whether a failure to open or read this entry leaves it out with a warning instead
    /// of failing the backup.
    pub skip_on_error: bool,
    /// How to read a file's content (files only).
    pub content: Option<Opener>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("path", &display_path(&self.path))
            .field("kind", &self.kind)
            .field("mtime_ns", &self.mtime_ns)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// A file at `path` modified at `mtime_ns`, read through `open` (always read unless
    /// made [`Entry::reusable`]).
    pub fn file(path: Vec<Vec<u8>>, mtime_ns: i64, open: Opener) -> Entry {
        Entry {
            path,
            kind: EntryKind::File,
            mode: 0o644,
            owner: None,
            mtime_ns,
            size: None,
            xattrs: Vec::new(),
            reusable: false,
            skip_on_error: false,
            content: Some(open),
        }
    }

    /// A file whose content is in memory (a rendered YAML object); reusable, since its
    /// content is known: the parent's is taken when the size and time match.
    pub fn bytes(path: Vec<Vec<u8>>, mtime_ns: i64, data: Vec<u8>) -> Entry {
        let size = data.len() as u64;
        let mut e = Entry::file(
            path,
            mtime_ns,
            Box::new(move || {
                Ok(Some(
                    Box::new(std::io::Cursor::new(data)) as Box<dyn Read + Send>
                ))
            }),
        );
        e.size = Some(size);
        e
    }

    /// A file read from `reader` (standard input, a command's output).
    pub fn reader(path: Vec<Vec<u8>>, mtime_ns: i64, reader: impl Read + Send + 'static) -> Entry {
        Entry::file(
            path,
            mtime_ns,
            Box::new(move || Ok(Some(Box::new(reader) as Box<dyn Read + Send>))),
        )
    }

    /// A directory at `path` modified at `mtime_ns`. Directories a feed does not give
    /// (the ones above its files) are recorded with mode 0755, this process's owner and
    /// the newest modification time below them.
    pub fn dir(path: Vec<Vec<u8>>, mtime_ns: i64) -> Entry {
        Entry {
            path,
            kind: EntryKind::Dir,
            mode: 0o755,
            owner: None,
            mtime_ns,
            size: None,
            xattrs: Vec::new(),
            reusable: false,
            skip_on_error: false,
            content: None,
        }
    }

    /// Sets the announced size.
    pub fn with_size(mut self, size: u64) -> Entry {
        self.size = Some(size);
        self
    }

    /// Adds an extended attribute.
    pub fn with_xattr(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Entry {
        self.xattrs.push(Xattr {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Sets the permission bits.
    pub fn with_mode(mut self, mode: u32) -> Entry {
        self.mode = mode & 0o7777;
        self
    }

    /// Lets the parent's content stand for this one when size, time and attributes match.
    pub fn reusable(mut self) -> Entry {
        self.reusable = true;
        self
    }

    /// Leaves the entry out with a warning when it cannot be read, instead of failing.
    pub fn skip_on_error(mut self) -> Entry {
        self.skip_on_error = true;
        self
    }
}

/// A stream of entries in tree order: every entry's parent directories before it (or not
/// at all: missing ones are made up), and the entries of one directory in increasing order
/// of their names as bytes, a directory's whole content before its next sibling. (For
/// paths as byte strings, that is their order compared component by component.) An entry
/// out of that order fails the backup with a message naming it: it is a bug in the feed.
///
/// The first entry may be the feed's root (an empty path): a file makes the source a file
/// (standard input), a directory sets the root's metadata; otherwise the root is a made-up
/// directory.
pub trait Feed: Send {
    /// The next entry, `None` at the end; an error fails the backup.
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>>;
}

/// A feed from an iterator of entries that are already in tree order.
pub struct IterFeed<I>(pub I);

impl<I: Iterator<Item = std::io::Result<Entry>> + Send> Feed for IterFeed<I> {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        self.0.next().transpose()
    }
}

/// A feed of entries in any order, sorted here (all held in memory: for small feeds such
/// as a cluster's objects).
pub fn sorted(mut entries: Vec<Entry>) -> VecFeed {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    VecFeed(entries.into_iter())
}

/// The feed [`sorted`] makes.
pub struct VecFeed(std::vec::IntoIter<Entry>);

impl Feed for VecFeed {
    fn next_entry(&mut self) -> std::io::Result<Option<Entry>> {
        Ok(self.0.next())
    }
}

/// A feed of one file: the source itself is the file (standard input, a dump).
pub fn single_file(entry: Entry) -> IterFeed<std::option::IntoIter<std::io::Result<Entry>>> {
    IterFeed(Some(Ok(entry)).into_iter())
}

/// A path as text for messages (`a/b/c`).
pub fn display_path(path: &[Vec<u8>]) -> String {
    path.iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Splits a relative path given as text into components, refusing empty, `.` and `..`
/// components and NUL bytes (what a tree could not hold or a restore could be tricked by).
pub fn components(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let parts: Vec<Vec<u8>> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect();
    if parts.is_empty() {
        return Err(format!("{path:?} names no file"));
    }
    match parts.iter().find(|c| !holdfast_repo::tree::is_safe_name(c)) {
        Some(bad) => Err(format!(
            "{path:?} has the component {:?}, which a snapshot cannot record",
            String::from_utf8_lossy(bad)
        )),
        None => Ok(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_what_a_tree_cannot_hold() {
        assert_eq!(
            components("/a//b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(components("a/../b").is_err());
        assert!(components("./x").is_err());
        assert!(components("").is_err());
        assert!(components("a\0b").is_err());
    }

    #[test]
    fn sorted_orders_component_wise() {
        // "a-c" sorts before "a/b" as text but after "a" component-wise.
        let f = |p: &str| Entry::bytes(components(p).unwrap(), 0, vec![]);
        let mut feed = sorted(vec![f("a-c"), f("a/b"), f("a")]);
        let mut got = Vec::new();
        while let Some(e) = feed.next_entry().unwrap() {
            got.push(display_path(&e.path));
        }
        assert_eq!(got, ["a", "a/b", "a-c"]);
    }
}
