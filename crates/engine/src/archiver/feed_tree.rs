//! Trees from a [`Feed`]: entries come in tree order and are stored as they come, one
//! directory per open level, so a feed's memory is its depth, not its length.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;

use holdfast_repo::blob::BlobType;
use holdfast_repo::tree::{ContentRef, Node, NodeKind, Tree, Xattr};
use holdfast_repo::Id;

use super::{bump, Ctx, ReadError};
use crate::error::{EngineError, Result};
use crate::feed::{display_path, Entry, EntryKind, Feed};

/// A directory being filled: its metadata, the entries finished so far, and its parent
/// snapshot's counterpart to reuse content from.
struct OpenDir {
    name: Vec<u8>,
    /// Metadata the feed gave, else made up when it is finished.
    given: Option<Node>,
    nodes: Vec<Node>,
    /// The name of the last child opened or added: the next must sort after it.
    last: Option<Vec<u8>>,
    parent: Option<Tree>,
    /// The parent snapshot's subtree ID (to count the directory changed or not).
    parent_id: Option<Id>,
}

impl OpenDir {
    fn parent_node(&self, name: &[u8]) -> Option<&Node> {
        let t = self.parent.as_ref()?;
        t.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &t.nodes[i])
    }
}

impl Ctx<'_, '_> {
    fn take_feed(&self) -> Result<Box<dyn Feed + '_>> {
        self.feed
            .lock()
            .expect("feed lock")
            .take()
            .ok_or_else(|| EngineError::Usage("the feed source was given no feed".into()))
    }

    /// The root tree from the feed (a feed recorded as `/`): its entries are the root's.
    pub(super) fn feed_root(&self, parent_root: Option<Id>) -> Result<Id> {
        let mut pseudo = Node::new(Vec::new(), NodeKind::Dir);
        pseudo.subtree = parent_root;
        let node = self.feed_node(Path::new("/"), b"", Some(&pseudo))?;
        match node {
            Some(n) if n.kind == NodeKind::Dir => Ok(n.subtree.expect("a dir node has a subtree")),
            _ => Err(EngineError::Usage(
                "a stream cannot be recorded as /: give it a file name".into(),
            )),
        }
    }

    /// The node recorded as `name` at `recorded` for the feed: a file (a stream) or a
    /// directory of its entries. `None` when its only file was left out.
    pub(super) fn feed_node(
        &self,
        recorded: &Path,
        name: &[u8],
        pnode: Option<&Node>,
    ) -> Result<Option<Node>> {
        let mut feed = self.take_feed()?;
        let at = recorded.display().to_string();
        let fail = |path: &[Vec<u8>], e: std::io::Error| EngineError::Feed {
            path: join(&at, path),
            source: e,
        };
        let mut pending = feed.next_entry().map_err(|e| fail(&[], e))?;
        if let Some(e) = pending.take_if(|e| e.path.is_empty() && e.kind == EntryKind::File) {
            let node = self.feed_file(&at, name.to_vec(), e, pnode)?;
            if let Some(extra) = feed.next_entry().map_err(|e| fail(&[], e))? {
                return Err(fail(
                    &extra.path,
                    std::io::Error::other("the feed gave entries below a file"),
                ));
            }
            return Ok(node);
        }
        let given = pending
            .take_if(|e| e.path.is_empty())
            .map(|e| self.entry_meta(name.to_vec(), &e));
        let root_parent_id = pnode
            .filter(|p| p.kind == NodeKind::Dir)
            .and_then(|p| p.subtree);
        let mut stack = vec![OpenDir {
            name: name.to_vec(),
            given,
            nodes: Vec::new(),
            last: None,
            parent: self.load_parent_tree(root_parent_id),
            parent_id: root_parent_id,
        }];
        loop {
            let entry = match pending.take() {
                Some(e) => e,
                None => match feed.next_entry().map_err(|e| fail(&[], e))? {
                    Some(e) => e,
                    None => break,
                },
            };
            let Some((leaf, dirs)) = entry.path.split_last() else {
                return Err(fail(
                    &[],
                    std::io::Error::other("the feed gave its root twice or after other entries"),
                ));
            };
            if let Some(bad) = entry
                .path
                .iter()
                .find(|c| !holdfast_repo::tree::is_safe_name(c))
            {
                return Err(fail(
                    &entry.path,
                    std::io::Error::other(format!(
                        "the name {:?} cannot be recorded",
                        String::from_utf8_lossy(bad)
                    )),
                ));
            }
            let mut common = 0;
            while common + 1 < stack.len()
                && common < dirs.len()
                && stack[common + 1].name == dirs[common]
            {
                common += 1;
            }
            while stack.len() > common + 1 {
                self.close_dir(&mut stack)?;
            }
            for comp in &dirs[common..] {
                self.open_dir(&mut stack, comp.clone(), None, &entry.path, &at)?;
            }
            let top = stack.last_mut().expect("root stays open");
            if top.last.as_deref().is_some_and(|l| l >= leaf.as_slice()) {
                return Err(out_of_order(&at, &entry.path));
            }
            match entry.kind {
                EntryKind::Dir => {
                    let meta = self.entry_meta(leaf.clone(), &entry);
                    self.open_dir(&mut stack, leaf.clone(), Some(meta), &entry.path, &at)?;
                }
                EntryKind::File => {
                    let leaf = leaf.clone();
                    let shown = join(&at, &entry.path);
                    let node =
                        self.feed_file(&shown, leaf.clone(), entry, top.parent_node(&leaf))?;
                    top.last = Some(leaf);
                    if let Some(n) = node {
                        top.nodes.push(n);
                    }
                }
            }
        }
        while stack.len() > 1 {
            self.close_dir(&mut stack)?;
        }
        let root = stack.pop().expect("root");
        Ok(Some(self.finish_dir(root)?))
    }

    fn open_dir(
        &self,
        stack: &mut Vec<OpenDir>,
        name: Vec<u8>,
        given: Option<Node>,
        path: &[Vec<u8>],
        at: &str,
    ) -> Result<()> {
        let top = stack.last_mut().expect("root stays open");
        if top.last.as_deref().is_some_and(|l| l >= name.as_slice()) {
            return Err(out_of_order(at, path));
        }
        top.last = Some(name.clone());
        let parent_id = top
            .parent_node(&name)
            .filter(|p| p.kind == NodeKind::Dir)
            .and_then(|p| p.subtree);
        let parent = self.load_parent_tree(parent_id);
        stack.push(OpenDir {
            name,
            given,
            nodes: Vec::new(),
            last: None,
            parent,
            parent_id,
        });
        Ok(())
    }

    fn close_dir(&self, stack: &mut Vec<OpenDir>) -> Result<()> {
        let dir = stack.pop().expect("an open directory");
        let node = self.finish_dir(dir)?;
        stack.last_mut().expect("root stays open").nodes.push(node);
        Ok(())
    }

    /// Stores a finished directory's tree and returns its node.
    fn finish_dir(&self, dir: OpenDir) -> Result<Node> {
        let newest = dir.nodes.iter().map(|n| n.mtime_ns).max().unwrap_or(0);
        let sub = self.store_tree(&Tree { nodes: dir.nodes })?;
        bump(match dir.parent_id {
            None => &self.counters.dirs_new,
            Some(p) if p == sub => &self.counters.dirs_unchanged,
            Some(_) => &self.counters.dirs_changed,
        });
        let mut node = dir
            .given
            .unwrap_or_else(|| self.synthetic_dir(&dir.name, newest));
        node.kind = NodeKind::Dir;
        node.subtree = Some(sub);
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        Ok(node)
    }

    /// An entry's metadata as a node named `name` (no content).
    fn entry_meta(&self, name: Vec<u8>, e: &Entry) -> Node {
        let kind = match e.kind {
            EntryKind::File => NodeKind::File,
            EntryKind::Dir => NodeKind::Dir,
        };
        let mut n = Node::new(name, kind);
        n.mode = e.mode & 0o7777;
        let (uid, gid) = e.owner.unwrap_or_else(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        n.uid = uid;
        n.gid = gid;
        n.user = self.users.user(uid);
        n.group = self.users.group(gid);
        n.mtime_ns = e.mtime_ns;
        n.ctime_ns = e.mtime_ns;
        n.links = 1;
        n.xattrs = e.xattrs.clone();
        n.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
        n.xattrs.dedup_by(|a, b| a.name == b.name);
        n
    }

    /// A file entry's node: the parent's content when it may stand for it, else the
    /// content read and stored. `None` when it was left out (with a warning).
    fn feed_file(
        &self,
        shown: &str,
        name: Vec<u8>,
        mut e: Entry,
        pnode: Option<&Node>,
    ) -> Result<Option<Node>> {
        let mut node = self.entry_meta(name, &e);
        // Attributes that come with the content are not the entry's to compare.
        let late_prefix = e.opened_xattrs.as_ref().map(|o| o.prefix.clone());
        let is_late = |x: &Xattr| late_prefix.as_ref().is_some_and(|p| x.name.starts_with(p));
        node.xattrs.retain(|x| !is_late(x));
        if let (true, false, Some(p), Some(size)) = (e.reusable, self.opts.force, pnode, e.size) {
            let same = p.kind == NodeKind::File
                && p.size == size
                && p.mtime_ns == node.mtime_ns
                && p.xattrs
                    .iter()
                    .filter(|x| !is_late(x))
                    .eq(node.xattrs.iter())
                && p.content.iter().all(|c| match c {
                    ContentRef::Blob(id) => self.store.has(BlobType::Data, id),
                    ContentRef::Zeros(_) => true,
                });
            if same {
                node.xattrs
                    .extend(p.xattrs.iter().filter(|x| is_late(x)).cloned());
                node.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
                node.content = p.content.clone();
                node.size = size;
                bump(&self.counters.files_unchanged);
                self.counters.bytes_total.fetch_add(size, Ordering::Relaxed);
                self.progress.bytes.fetch_add(size, Ordering::Relaxed);
                self.progress.entries.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(node));
            }
        }
        let skip = e.skip_on_error;
        let failed = |what: &str, err: std::io::Error| -> Result<Option<Node>> {
            if skip {
                self.warn(format!("{shown}: {what}: {err} (skipped)"));
                Ok(None)
            } else {
                Err(EngineError::Feed {
                    path: shown.to_string(),
                    source: err,
                })
            }
        };
        let Some(open) = e.content.take() else {
            return failed("no content", std::io::Error::other("the feed gave none"));
        };
        let reader = match open() {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.warn(format!("{shown}: vanished since it was listed (skipped)"));
                return Ok(None);
            }
            Err(err) => return failed("cannot open", err),
        };
        match self.chunk_stream(reader, &mut node.content, e.size) {
            Ok(len) => node.size = len,
            Err(ReadError::Repo(err)) => return Err(err.into()),
            Err(ReadError::Io(err)) => return failed("read failed", err),
        }
        if let Some(late) = &e.opened_xattrs {
            let told = late.slot.lock().map(|v| v.clone()).unwrap_or_default();
            node.xattrs.extend(told.into_iter().filter(|x| is_late(x)));
            node.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
            node.xattrs.dedup_by(|a, b| a.name == b.name);
        }
        self.count_file(pnode.filter(|p| p.kind == NodeKind::File), node.size);
        self.progress.entries.fetch_add(1, Ordering::Relaxed);
        Ok(Some(node))
    }

    /// Chunks a stream to its end, storing new chunks; all-zero chunks become zero runs.
    /// Returns the number of bytes read.
    fn chunk_stream(
        &self,
        reader: Box<dyn Read + Send>,
        content: &mut Vec<ContentRef>,
        size_hint: Option<u64>,
    ) -> Result<u64, ReadError> {
        let mut stream = self
            .chunker
            .stream(reader)
            .with_buffers(|| self.store.buffer());
        if let Some(n) = size_hint {
            stream = stream.with_size_hint(n);
        }
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
        };
        self.counters
            .bytes_read
            .fetch_add(stream.bytes_read(), Ordering::Relaxed);
        outcome.map(|()| done)
    }
}

fn join(at: &str, path: &[Vec<u8>]) -> String {
    if path.is_empty() {
        return at.to_string();
    }
    format!("{}/{}", at.trim_end_matches('/'), display_path(path))
}

fn out_of_order(at: &str, path: &[Vec<u8>]) -> EngineError {
    EngineError::Feed {
        path: join(at, path),
        source: std::io::Error::other(
            "the feed gave this entry out of tree order (a bug in the feed)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use holdfast_repo::repository::Repository;

    use crate::archiver::{BackupProgress, Source};
    use crate::backup::{run_feed, BackupReport, BackupRequest};
    use crate::feed::{self, components, Entry, Feed, IterFeed};
    use crate::restorer::{restore_snapshot, RestoreOptions, RestoreProgress};
    use crate::testing::repo;
    use crate::EngineError;

    fn request(at: &str) -> BackupRequest {
        BackupRequest {
            host: "h".into(),
            user: "u".into(),
            time_ns: 1_700_000_000_000_000_000,
            utc_offset_s: 0,
            ..BackupRequest::new(vec![Source::feed(at)])
        }
    }

    fn run(r: &Repository, at: &str, feed: impl Feed + 'static) -> crate::Result<BackupReport> {
        run_feed(
            r,
            &request(at),
            Some(Box::new(feed)),
            &BackupProgress::default(),
        )
    }

    fn restored(r: &Repository, rep: &BackupReport, dir: &std::path::Path) {
        let opts = RestoreOptions {
            target: dir.to_path_buf(),
            subpath: None,
            includes: Default::default(),
            excludes: Default::default(),
            owners: false,
        };
        restore_snapshot(
            r,
            rep.snapshot_id,
            &rep.snapshot,
            &opts,
            &RestoreProgress::default(),
        )
        .unwrap();
    }

    /// A reader that gives `n` pseudo-random bytes, then fails if `fail` is set.
    struct Gen {
        left: u64,
        state: u64,
        fail: bool,
    }

    impl Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return if self.fail {
                    Err(std::io::Error::other("the dump broke off"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(self.left as usize);
            for b in &mut buf[..n] {
                self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1);
                *b = (self.state >> 33) as u8;
            }
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn a_stream_is_one_file_and_a_failing_stream_saves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let r = repo(&t.path().join("repo"));
        let stream = Gen {
            left: 3 << 20,
            state: 1,
            fail: false,
        };
        let rep = run(
            &r,
            "/db/dump.sql",
            feed::single_file(Entry::reader(vec![], 5, stream)),
        )
        .unwrap();
        assert_eq!(rep.paths, ["/db/dump.sql"]);
        assert_eq!(rep.summary.bytes_read, 3 << 20);
        restored(&r, &rep, &t.path().join("out"));
        let mut want = Vec::new();
        Gen {
            left: 3 << 20,
            state: 1,
            fail: false,
        }
        .read_to_end(&mut want)
        .unwrap();
        assert_eq!(
            std::fs::read(t.path().join("out/db/dump.sql")).unwrap(),
            want
        );

        let before = r.snapshots().unwrap().0.len();
        let broken = Gen {
            left: 2 << 20,
            state: 1,
            fail: true,
        };
        let err = run(
            &r,
            "/db/dump.sql",
            feed::single_file(Entry::reader(vec![], 6, broken)),
        )
        .unwrap_err();
        assert!(matches!(err, EngineError::Feed { .. }), "{err}");
        assert!(err.to_string().contains("the dump broke off"), "{err}");
        assert!(err.to_string().contains("/db/dump.sql"), "{err}");
        assert_eq!(
            r.snapshots().unwrap().0.len(),
            before,
            "no snapshot for a failed stream"
        );
    }

    #[test]
    fn a_changed_stream_adds_only_new_chunks() {
        let t = tempfile::tempdir().unwrap();
        let r = repo(&t.path().join("repo"));
        let mut data = Vec::new();
        Gen {
            left: 16 << 20,
            state: 9,
            fail: false,
        }
        .read_to_end(&mut data)
        .unwrap();
        let first = run(
            &r,
            "/dump",
            feed::single_file(Entry::reader(vec![], 1, std::io::Cursor::new(data.clone()))),
        )
        .unwrap();
        // A small edit in the middle: a few chunks change, the rest dedup.
        data[8 << 20..(8 << 20) + 100].fill(0xAB);
        let second = run(
            &r,
            "/dump",
            feed::single_file(Entry::reader(vec![], 2, std::io::Cursor::new(data))),
        )
        .unwrap();
        assert_eq!(second.parent, Some(first.snapshot_id));
        assert!(
            second.summary.bytes_added_raw < (4 << 20),
            "added {} of 16 MiB",
            second.summary.bytes_added_raw
        );
    }

    /// Entries of a small tree whose content openings are counted.
    fn tree(opened: &Arc<AtomicUsize>, etag_b: &str) -> Vec<Entry> {
        let file = |p: &str, data: &'static [u8], etag: &str| {
            let o = opened.clone();
            Entry::file(
                components(p).unwrap(),
                1_000,
                Box::new(move || {
                    o.fetch_add(1, Ordering::SeqCst);
                    Ok(Some(Box::new(data) as Box<dyn Read + Send>))
                }),
            )
            .with_size(data.len() as u64)
            .with_xattr("user.etag", etag)
            .reusable()
        };
        vec![
            Entry::dir(components("ns").unwrap(), 10).with_mode(0o750),
            file("ns/apps/deployment/web.yaml", b"kind: Deployment\n", "e1"),
            file("ns/b", b"bee", etag_b),
            file("a-c", b"dash", "e3"),
            file("a/x", b"under a", "e4"),
        ]
    }

    #[test]
    fn a_tree_feed_restores_and_its_unchanged_files_are_not_opened_again() {
        let t = tempfile::tempdir().unwrap();
        let r = repo(&t.path().join("repo"));
        let opened = Arc::new(AtomicUsize::new(0));
        let first = run(&r, "/", feed::sorted(tree(&opened, "e2"))).unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 4);
        let out = t.path().join("out");
        restored(&r, &first, &out);
        assert_eq!(
            std::fs::read(out.join("ns/apps/deployment/web.yaml")).unwrap(),
            b"kind: Deployment\n"
        );
        assert_eq!(std::fs::read(out.join("a/x")).unwrap(), b"under a");
        assert_eq!(std::fs::read(out.join("a-c")).unwrap(), b"dash");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(out.join("ns"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o750
        );

        opened.store(0, Ordering::SeqCst);
        let same = run(&r, "/", feed::sorted(tree(&opened, "e2"))).unwrap();
        assert_eq!(
            opened.load(Ordering::SeqCst),
            0,
            "nothing changed, nothing opened"
        );
        assert_eq!(
            same.snapshot.tree, first.snapshot.tree,
            "same entries, same tree"
        );
        assert_eq!(same.summary.files_unchanged, 4);

        // A changed attribute (a new ETag) is a change, even with the same size and time.
        opened.store(0, Ordering::SeqCst);
        let changed = run(&r, "/", feed::sorted(tree(&opened, "e2-new"))).unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(changed.summary.files_changed, 1);
    }

    #[test]
    fn out_of_order_and_unsafe_entries_fail_without_a_snapshot() {
        let t = tempfile::tempdir().unwrap();
        let r = repo(&t.path().join("repo"));
        let e = |p: &str| Ok(Entry::bytes(components(p).unwrap(), 0, b"x".to_vec()));
        let err = run(&r, "/", IterFeed(vec![e("b"), e("a")].into_iter())).unwrap_err();
        assert!(err.to_string().contains("out of tree order"), "{err}");
        let err = run(
            &r,
            "/",
            IterFeed(vec![e("d/x"), e("c"), e("d/y")].into_iter()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("out of tree order"), "{err}");
        let bad = Ok(Entry::bytes(vec![b"..".to_vec()], 0, vec![]));
        let err = run(&r, "/", IterFeed(vec![bad].into_iter())).unwrap_err();
        assert!(err.to_string().contains("cannot be recorded"), "{err}");
        assert!(r.snapshots().unwrap().0.is_empty());
    }

    #[test]
    fn skippable_entries_are_left_out_with_a_warning() {
        let t = tempfile::tempdir().unwrap();
        let r = repo(&t.path().join("repo"));
        let gone = Entry::file(components("gone").unwrap(), 0, Box::new(|| Ok(None)));
        let broken = Entry::file(
            components("broken").unwrap(),
            0,
            Box::new(|| Err(std::io::Error::other("503 slow down"))),
        )
        .skip_on_error();
        let ok = Entry::bytes(components("ok").unwrap(), 0, b"fine".to_vec());
        let rep = run(&r, "/bucket", feed::sorted(vec![gone, broken, ok])).unwrap();
        assert_eq!(rep.warnings.len(), 2, "{:?}", rep.warnings);
        assert!(rep
            .warnings
            .iter()
            .any(|w| w.contains("/bucket/broken") && w.contains("503")));
        assert_eq!(rep.summary.files_new, 1);
    }

    #[test]
    fn a_feed_source_needs_its_feed() {
        let t = tempfile::tempdir().unwrap();
        let r = repo(&t.path().join("repo"));
        let err = run_feed(&r, &request("/x"), None, &BackupProgress::default()).unwrap_err();
        assert!(matches!(err, EngineError::Usage(_)), "{err}");
        let err = run(&r, "/", feed::single_file(Entry::bytes(vec![], 0, vec![]))).unwrap_err();
        assert!(err.to_string().contains("file name"), "{err}");
    }

    #[test]
    fn opened_attributes_are_recorded_but_not_compared() {
        use holdfast_repo::tree::Xattr;
        use std::sync::Mutex;
        let t = tempfile::tempdir().unwrap();
        let r = repo(&t.path().join("repo"));
        let opened = Arc::new(AtomicUsize::new(0));
        // The opener tells the content type, as a GET response does.
        let entry = |etag: &str, ctype: &'static str| {
            let slot = Arc::new(Mutex::new(Vec::new()));
            let (s2, o2) = (slot.clone(), opened.clone());
            Entry::file(
                components("obj").unwrap(),
                7,
                Box::new(move || {
                    o2.fetch_add(1, Ordering::SeqCst);
                    s2.lock().unwrap().push(Xattr {
                        name: b"user.t.late.type".to_vec(),
                        value: ctype.as_bytes().to_vec(),
                    });
                    Ok(Some(Box::new(std::io::Cursor::new(b"data".to_vec())) as _))
                }),
            )
            .with_size(4)
            .with_xattr("user.t.etag", etag)
            .with_opened_xattrs("user.t.late.", slot)
            .reusable()
        };
        let names = |rep: &BackupReport| {
            let index = r.load_index().unwrap();
            let node = crate::restorer::lookup(&r, &index, &rep.snapshot.tree, b"/b/obj")
                .unwrap()
                .unwrap();
            node.xattrs
                .iter()
                .map(|x| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(&x.name),
                        String::from_utf8_lossy(&x.value)
                    )
                })
                .collect::<Vec<_>>()
        };
        let first = run(&r, "/b", feed::sorted(vec![entry("e1", "text/plain")])).unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(
            names(&first),
            ["user.t.etag=e1", "user.t.late.type=text/plain"]
        );
        // Unchanged: not opened, the parent's late attribute kept.
        let same = run(&r, "/b", feed::sorted(vec![entry("e1", "other")])).unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1, "reused without opening");
        assert_eq!(same.summary.files_unchanged, 1);
        assert_eq!(
            names(&same),
            ["user.t.etag=e1", "user.t.late.type=text/plain"]
        );
        // Changed: read again, the new late attribute recorded.
        let changed = run(&r, "/b", feed::sorted(vec![entry("e2", "image/png")])).unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        assert_eq!(
            names(&changed),
            ["user.t.etag=e2", "user.t.late.type=image/png"]
        );
    }
}
