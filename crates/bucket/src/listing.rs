//! A bucket's keys in tree order with bounded memory.
//!
//! Each directory level is listed on its own (ListObjectsV2 with `delimiter=/`), page by
//! page, and a directory's level is listed when the directory comes up, so only the open
//! levels are held. Within a level, S3's order (the order of keys, a directory `d` listed
//! as `d/`) is the snapshot's order (by name) except in a few places: a directory `a`
//! sorts before `a-c` and `a.txt` by name but after them as `a/`, and the escaped names
//! (`%`, `%2E`, `a%`: see `names`) sort elsewhere than their keys. So each level keeps a
//! buffer of listed entries, ordered by name, and hands out the first one only once
//! nothing not yet listed can sort before it. What could is known exactly: a directory
//! whose name is a prefix of the entry's followed by a byte below `/`, or one of the five
//! special keys (`/`, `.`, `./`, `..`, `../`). While the buffer is small, more pages are
//! listed; once it holds [`BUFFER`] entries, the one key in doubt is looked up directly
//! (a listing of at most one key), and what is found is handed out in its place and
//! skipped when the listing reaches it. A level thus holds at most [`BUFFER`] entries plus
//! a page, whatever the number of keys, with one exception: a level with an empty piece
//! (a directory marker `dir/`, or `dir//x`) holds its keys that start with a byte below
//! `%` (space, `!`, `"`, `#`, `$`, control characters) until the listing passes them,
//! since the empty piece's name `%` sorts after them.

use std::collections::{BTreeMap, BTreeSet};

use crate::names;
use crate::BucketError;

/// Entries a level holds before it looks keys up instead of listing further.
pub const BUFFER: usize = 2000;

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its full key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (LastModified), ns since the epoch.
    pub mtime_ns: i64,
    /// Its ETag as listed (without quotes).
    pub etag: String,
}

/// One page of a level: objects and common prefixes (full keys), each in key order.
#[derive(Debug, Default)]
pub struct Page {
    /// Objects directly at the level.
    pub objects: Vec<Listed>,
    /// Common prefixes (ending in `/`).
    pub prefixes: Vec<String>,
    /// Continuation token of the next page, if any.
    pub next: Option<String>,
}

/// What lists a bucket (S3, or a map in tests).
pub trait Lister {
    /// The page after `token` of the keys starting with `prefix`, grouped at the next `/`.
    fn page(&self, prefix: &str, token: Option<&str>) -> Result<Page, BucketError>;
    /// The first object whose key starts with `prefix`, if any (a key lookup).
    fn first(&self, prefix: &str) -> Result<Option<Listed>, BucketError>;
}

/// An entry of a level, handed out in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An object; `name` is its recorded name.
    Object {
        /// Recorded name.
        name: Vec<u8>,
        /// The object.
        obj: Listed,
    },
    /// A directory (a common prefix).
    Dir {
        /// Recorded name.
        name: Vec<u8>,
        /// Its full key prefix, ending in `/`.
        prefix: String,
    },
}

/// A key that may exist and, if it does, sorts before the first buffered entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Doubt {
    /// A directory with this piece (level key `piece/`).
    Dir(String),
    /// An object with this piece.
    Object(String),
    /// Any key below this one: settled only by listing on.
    Below(String),
}

impl Doubt {
    fn key(&self) -> String {
        match self {
            Doubt::Dir(p) => format!("{p}/"),
            Doubt::Object(p) | Doubt::Below(p) => p.clone(),
        }
    }
}

/// One directory level being listed.
pub struct Level {
    /// The key prefix ("" or ending in `/`).
    pub prefix: String,
    token: Option<String>,
    started: bool,
    exhausted: bool,
    /// The last level key (piece, or piece + `/`) listed.
    last: Option<String>,
    buf: BTreeMap<Vec<u8>, Item>,
    /// Objects listed whose piece may still turn out to be a directory too.
    live: BTreeSet<String>,
    /// Level keys looked up and found, to skip when the listing reaches them.
    early: BTreeSet<String>,
    /// Level keys looked up and not found.
    absent: BTreeSet<String>,
    /// Key lookups made (for tests and figures).
    pub lookups: u64,
}

impl Level {
    /// The level of the keys starting with `prefix` ("" or ending in `/`).
    pub fn new(prefix: String) -> Level {
        Level {
            prefix,
            token: None,
            started: false,
            exhausted: false,
            last: None,
            buf: BTreeMap::new(),
            live: BTreeSet::new(),
            early: BTreeSet::new(),
            absent: BTreeSet::new(),
            lookups: 0,
        }
    }

    fn passed(&self, key: &str) -> bool {
        self.exhausted || self.last.as_deref().is_some_and(|l| key <= l)
    }

    fn bad_key(&self, key: &str) -> BucketError {
        BucketError::UnsupportedKey {
            key: key.to_string(),
            why: "it holds a NUL byte",
        }
    }

    fn dir_name(&self, piece: &str) -> Result<Vec<u8>, BucketError> {
        names::encode_dir(piece.as_bytes(), self.live.contains(piece))
            .ok_or_else(|| self.bad_key(&format!("{}{piece}/", self.prefix)))
    }

    /// The next entry in name order, `None` at the level's end.
    pub fn next(&mut self, lister: &dyn Lister) -> Result<Option<Item>, BucketError> {
        loop {
            let Some((first, item)) = self.buf.first_key_value() else {
                if self.started && self.exhausted {
                    return Ok(None);
                }
                self.fetch(lister)?;
                continue;
            };
            let piece = match item {
                Item::Object { obj, .. } => obj.key[self.prefix.len()..].to_string(),
                Item::Dir { prefix, .. } => prefix[self.prefix.len()..prefix.len() - 1].to_string(),
            };
            let doubts = self.doubts(&piece, first);
            if doubts.is_empty() {
                return Ok(self.buf.pop_first().map(|(_, i)| i));
            }
            let must_list = doubts.iter().any(|d| matches!(d, Doubt::Below(_)));
            if !self.exhausted && (must_list || self.buf.len() < BUFFER) {
                self.fetch(lister)?;
            } else {
                self.look_up(lister, &doubts[0])?;
            }
        }
    }

    /// The keys not yet listed that would sort before `name` (the entry for `piece`).
    fn doubts(&self, piece: &str, name: &[u8]) -> Vec<Doubt> {
        let mut v = Vec::new();
        let unresolved = |d: &Doubt| {
            let k = d.key();
            !self.passed(&k) && !self.early.contains(&k) && !self.absent.contains(&k)
        };
        for d in [
            Doubt::Object(".".into()),
            Doubt::Object("..".into()),
            Doubt::Dir("".into()),
            Doubt::Dir(".".into()),
            Doubt::Dir("..".into()),
        ] {
            let p = match &d {
                Doubt::Dir(p) | Doubt::Object(p) | Doubt::Below(p) => p,
            };
            let special = names::encode(p.as_bytes()).unwrap_or_default();
            if special.as_slice() < name && unresolved(&d) {
                v.push(d);
            }
        }
        // A directory `d` sorts before `d-x` by name, after it as `d/`.
        for (i, b) in piece.bytes().enumerate() {
            if b < b'/' {
                let d = Doubt::Dir(piece[..i].to_string());
                if unresolved(&d) && !v.contains(&d) {
                    v.push(d);
                }
            }
        }
        // The empty piece (a marker `dir/`, or `//`) is named `%`, which sorts after the
        // pieces that start with a byte below `%`, though its key comes first.
        if piece.is_empty() && !self.passed("%") {
            v.push(Doubt::Below("%".into()));
        }
        v.sort_by_key(Doubt::key);
        v
    }

    fn look_up(&mut self, lister: &dyn Lister, d: &Doubt) -> Result<(), BucketError> {
        self.lookups += 1;
        let k = d.key();
        match d {
            Doubt::Dir(p) => {
                let prefix = format!("{}{k}", self.prefix);
                if lister.first(&prefix)?.is_some() {
                    let name = self.dir_name(p)?;
                    self.buf.insert(name.clone(), Item::Dir { name, prefix });
                    self.early.insert(k);
                } else {
                    self.absent.insert(k);
                }
            }
            Doubt::Object(p) => {
                let full = format!("{}{p}", self.prefix);
                match lister.first(&full)? {
                    Some(obj) if obj.key == full => {
                        let name =
                            names::encode(p.as_bytes()).ok_or_else(|| self.bad_key(&full))?;
                        self.buf.insert(name.clone(), Item::Object { name, obj });
                        self.live.insert(p.clone());
                        self.early.insert(k);
                    }
                    _ => {
                        self.absent.insert(k);
                    }
                }
            }
            Doubt::Below(_) => {}
        }
        Ok(())
    }

    fn fetch(&mut self, lister: &dyn Lister) -> Result<(), BucketError> {
        let page = lister.page(&self.prefix, self.token.as_deref())?;
        self.started = true;
        let mut objects = page.objects.into_iter().peekable();
        let mut prefixes = page.prefixes.into_iter().peekable();
        loop {
            let take_object = match (objects.peek(), prefixes.peek()) {
                (Some(o), Some(p)) => o.key < *p,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_object {
                let Some(obj) = objects.next() else { break };
                let Some(piece) = obj.key.strip_prefix(&self.prefix).map(str::to_string) else {
                    return Err(BucketError::Listing {
                        prefix: self.prefix.clone(),
                        why: format!("the server listed {:?}, outside the prefix", obj.key),
                    });
                };
                self.last = Some(piece.clone());
                if self.early.remove(&piece) {
                    continue;
                }
                let name = names::encode(piece.as_bytes()).ok_or_else(|| self.bad_key(&obj.key))?;
                self.live.insert(piece);
                self.buf.insert(name.clone(), Item::Object { name, obj });
            } else {
                let Some(prefix) = prefixes.next() else { break };
                let Some(k) = prefix.strip_prefix(&self.prefix).map(str::to_string) else {
                    return Err(BucketError::Listing {
                        prefix: self.prefix.clone(),
                        why: format!("the server listed {prefix:?}, outside the prefix"),
                    });
                };
                self.last = Some(k.clone());
                if self.early.remove(&k) {
                    continue;
                }
                let piece = k.strip_suffix('/').unwrap_or(&k);
                let name = self.dir_name(piece)?;
                self.buf.insert(name.clone(), Item::Dir { name, prefix });
            }
        }
        self.token = page.next;
        if self.token.is_none() {
            self.exhausted = true;
        }
        // What the listing has passed needs no remembering.
        if let Some(last) = self.last.clone() {
            self.live.retain(|x| format!("{x}/") > last);
            self.early.retain(|k| *k > last);
            self.absent.retain(|k| *k > last);
        }
        if self.exhausted {
            self.live.clear();
            self.early.clear();
            self.absent.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;

    /// A bucket in memory, listed `page_size` keys at a time.
    pub struct MapLister {
        pub keys: BTreeSet<String>,
        pub page_size: usize,
        pub pages: Cell<u64>,
    }

    impl Lister for MapLister {
        fn page(&self, prefix: &str, token: Option<&str>) -> Result<Page, BucketError> {
            self.pages.set(self.pages.get() + 1);
            let mut page = Page::default();
            let mut n = 0;
            let start = token.unwrap_or("");
            let mut last_prefix: Option<String> = None;
            for k in self.keys.range(prefix.to_string()..) {
                if !k.starts_with(prefix) {
                    break;
                }
                if token.is_some() && k.as_str() <= start {
                    continue;
                }
                let rest = &k[prefix.len()..];
                if let Some(i) = rest.find('/') {
                    let cp = format!("{prefix}{}", &rest[..=i]);
                    if token.is_some_and(|t| cp.as_str() <= t) || last_prefix.as_ref() == Some(&cp)
                    {
                        continue;
                    }
                    if n == self.page_size {
                        page.next = Some(k.clone());
                        break;
                    }
                    last_prefix = Some(cp.clone());
                    page.prefixes.push(cp);
                } else {
                    if n == self.page_size {
                        page.next = Some(k.clone());
                        break;
                    }
                    page.objects.push(Listed {
                        key: k.clone(),
                        size: k.len() as u64,
                        mtime_ns: 0,
                        etag: String::new(),
                    });
                }
                n += 1;
            }
            // The token is the last key handed out (a prefix counts as its last key).
            if page.next.is_some() {
                let last_obj = page.objects.last().map(|o| o.key.clone());
                let last_cp = page.prefixes.last().map(|p| format!("{p}\u{10FFFF}"));
                page.next = last_obj.into_iter().chain(last_cp).max();
            }
            Ok(page)
        }

        fn first(&self, prefix: &str) -> Result<Option<Listed>, BucketError> {
            Ok(self
                .keys
                .range(prefix.to_string()..)
                .next()
                .filter(|k| k.starts_with(prefix))
                .map(|k| Listed {
                    key: k.clone(),
                    size: k.len() as u64,
                    mtime_ns: 0,
                    etag: String::new(),
                }))
        }
    }

    /// All object keys in the order the levels hand them out, with their recorded paths.
    pub fn walk(l: &MapLister, root: &str) -> Vec<(Vec<Vec<u8>>, String)> {
        let mut out = Vec::new();
        let mut stack = vec![(Level::new(root.to_string()), Vec::<Vec<u8>>::new())];
        while let Some((level, path)) = stack.last_mut() {
            match level.next(l).unwrap() {
                None => {
                    stack.pop();
                }
                Some(Item::Object { name, obj }) => {
                    let mut p = path.clone();
                    p.push(name);
                    out.push((p, obj.key));
                }
                Some(Item::Dir { name, prefix }) => {
                    let mut p = path.clone();
                    p.push(name);
                    stack.push((Level::new(prefix), p));
                }
            }
        }
        out
    }

    fn check(keys: &[&str], page_size: usize) {
        let l = MapLister {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            page_size,
            pages: Cell::new(0),
        };
        let got = walk(&l, "");
        let paths: Vec<_> = got.iter().map(|(p, _)| p.clone()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "tree order for {keys:?}");
        let mut listed: Vec<String> = got.iter().map(|(_, k)| k.clone()).collect();
        listed.sort();
        let mut want: Vec<String> = l.keys.iter().cloned().collect();
        want.sort();
        assert_eq!(listed, want, "every key once");
        for (p, k) in &got {
            assert_eq!(names::path_to_key(p).as_deref(), Some(k.as_str()));
        }
    }

    #[test]
    fn directories_come_before_names_that_extend_them() {
        for ps in [1, 2, 1000] {
            check(&["a-c", "a/b", "a", "a.txt", "a!/x", "a/", "b"], ps);
            check(
                &[
                    "dir/", "dir//x", "x//y", "./z", ".", "..", "../q", "/lead", "é/ü", "sp ace/x",
                ],
                ps,
            );
            check(&["%", "%/x", "a%", "a%/b", "a%25", "!", " /x", "-/y"], ps);
        }
    }

    #[test]
    fn a_large_level_is_held_in_bounded_memory() {
        // Every key extends `f` with a byte below `/`: without look-ups, all of them would
        // wait for a directory `f/` that sorts after them as a key.
        let mut keys: Vec<String> = (0..3 * BUFFER).map(|i| format!("f-{i:06}")).collect();
        keys.push("f/inside".into());
        let l = MapLister {
            keys: keys.iter().cloned().collect(),
            page_size: 1000,
            pages: Cell::new(0),
        };
        let mut level = Level::new(String::new());
        let first = level.next(&l).unwrap().unwrap();
        assert!(
            matches!(first, Item::Dir { ref name, .. } if name == b"f"),
            "{first:?}"
        );
        assert!(level.buf.len() <= BUFFER + 1000, "{}", level.buf.len());
        assert!(level.lookups >= 1);
        let mut n = 0;
        while let Some(i) = level.next(&l).unwrap() {
            assert!(level.buf.len() <= BUFFER + 1000);
            assert!(matches!(i, Item::Object { .. }));
            n += 1;
        }
        assert_eq!(n, 3 * BUFFER);
    }

    proptest! {
        #[test]
        fn any_key_set_comes_out_in_tree_order(
            keys in proptest::collection::btree_set("[a./%\\- ]{1,5}", 1..40),
            page_size in 1usize..5,
        ) {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            check(&keys, page_size);
        }
    }
}
