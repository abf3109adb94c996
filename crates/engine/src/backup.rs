//! A backup job: the steps around [`archiver::backup`] that every caller needs, in the
//! order that makes them safe beside a concurrent prune: announce the write session, read
//! the index, choose the parent snapshot, walk the sources, write the snapshot.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use holdfast_repo::blob::CompressionLevel;
use holdfast_repo::repository::{Repository, SnapshotFilter};
use holdfast_repo::snapshot::{Snapshot, Summary};
use holdfast_repo::Id;
use serde::Serialize;

use crate::archiver::{self, BackupProgress};
use crate::error::Result;
use crate::feed::Feed;
use crate::filter::PathFilter;
use crate::highwater::{HighWater, Rollback};
use crate::listing::paths_text;

pub use crate::archiver::Source;

/// Which snapshot a backup compares with, so that unchanged files are not read again.
#[derive(Debug, Clone, Default)]
pub enum ParentChoice {
    /// The newest snapshot of the same host with the same recorded paths.
    #[default]
    Auto,
    /// The newest snapshot that passes the filter and has the same recorded paths. To
    /// require several tags at once, give them as one comma-separated entry of
    /// [`SnapshotFilter::tags`] (`"a,b"`); separate entries mean any of them.
    Matching(SnapshotFilter),
    /// This snapshot: `latest`, an ID or a unique ID prefix (as [`Repository::find_snapshot`]
    /// takes them).
    Id(String),
    /// None: every file is read.
    None,
}

/// What to back up and how; [`BackupRequest::new`] gives the usual defaults.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// What to read and where to record it.
    pub sources: Vec<Source>,
    /// Entries to leave out (patterns with a `/` match the recorded path).
    pub excludes: PathFilter,
    /// Do not descend into other filesystems.
    pub one_file_system: bool,
    /// Leave out the contents of directories marked as caches (a `CACHEDIR.TAG` with the
    /// standard signature); the directory and the tag are kept.
    pub exclude_caches: bool,
    /// How [`run`] chooses the snapshot to compare with for unchanged files
    /// ([`archiver::backup`] is given the chosen one).
    pub parent: ParentChoice,
    /// Read every file even if the parent has it unchanged.
    pub force: bool,
    /// Host name for the snapshot.
    pub host: String,
    /// User name for the snapshot.
    pub user: String,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Snapshot time, ns since the epoch.
    pub time_ns: i64,
    /// Local time offset from UTC, seconds.
    pub utc_offset_s: i32,
    /// Recorded program version.
    pub program_version: String,
    /// zstd level.
    pub compression: CompressionLevel,
    /// Where this machine keeps its high-water marks ([`crate::highwater`]); `None`:
    /// [`crate::highwater::default_dir`].
    pub state_dir: Option<PathBuf>,
}

impl BackupRequest {
    /// A backup of `sources` now, by this host and user, in the local time offset, with the
    /// automatic parent, no excludes and no tags.
    pub fn new(sources: Vec<Source>) -> BackupRequest {
        BackupRequest {
            sources,
            excludes: PathFilter::default(),
            one_file_system: false,
            exclude_caches: false,
            parent: ParentChoice::Auto,
            force: false,
            host: host_name(),
            user: user_name(),
            tags: Vec::new(),
            time_ns: now_ns(),
            utc_offset_s: chrono::Local::now().offset().local_minus_utc(),
            program_version: program_version(),
            compression: CompressionLevel::default(),
            state_dir: None,
        }
    }

    /// The paths the snapshot records, sorted, without duplicates, as bytes (what a parent
    /// must have).
    pub fn recorded_paths(&self) -> Result<Vec<Vec<u8>>> {
        let mut v = self
            .sources
            .iter()
            .map(|s| Ok(s.recorded_path()?.as_os_str().as_bytes().to_vec()))
            .collect::<Result<Vec<_>>>()?;
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// The paths to read (absolute, normalised), for a progress display's scan.
    pub fn read_paths(&self) -> Result<Vec<PathBuf>> {
        self.sources
            .iter()
            .map(|s| archiver::normalize_path(&s.path))
            .collect()
    }
}

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// ID of the new snapshot.
    pub snapshot_id: Id,
    /// The parent it was compared with.
    pub parent: Option<Id>,
    /// The paths it records.
    pub paths: Vec<String>,
    /// Its counters.
    pub summary: Summary,
    /// Source entries that could not be read (the snapshot was saved without them).
    pub warnings: Vec<String>,
    /// Things that cost time but lost nothing (a parent tree that could not be used).
    pub notices: Vec<String>,
    /// Signs that the repository went backwards since this machine last saw it
    /// ([`crate::highwater`]): to be shown loudly.
    pub rollbacks: Vec<Rollback>,
    /// The whole snapshot as written.
    #[serde(skip)]
    pub snapshot: Snapshot,
}

impl BackupReport {
    /// Whether every source entry was read.
    pub fn is_complete(&self) -> bool {
        self.warnings.is_empty()
    }
}

/// Runs a backup into `repo`: starts the write session, chooses the parent, walks the
/// sources and writes the snapshot, updating `progress` as it goes.
pub fn run(
    repo: &Repository,
    req: &BackupRequest,
    progress: &BackupProgress,
) -> Result<BackupReport> {
    run_feed(repo, req, None, progress)
}

/// [`run`] for a request whose source is a [`Source::feed`]: its entries come from `feed`
/// (standard input, a command's output, objects, bucket keys). If the feed fails, no
/// snapshot is written and the error says what failed ([`crate::EngineError::Feed`]).
pub fn run_feed(
    repo: &Repository,
    req: &BackupRequest,
    feed: Option<Box<dyn Feed + '_>>,
    progress: &BackupProgress,
) -> Result<BackupReport> {
    // The session is announced before the index is read, so a concurrent prune waits for it
    // (SPEC.md §12.2): `begin_write` does both, in that order.
    let writer = repo.begin_write(&req.host)?;
    let (all, _) = repo.snapshots()?;
    let mut marks = HighWater::load(req.state_dir.as_deref(), &repo.config().repo_id);
    let rollbacks = marks.observe(all.iter().map(|(i, s)| (i, s)));
    let lineage = choose_lineage(repo, req, &all, marks.seen(&req.host))?;
    let outcome = archiver::backup_feed(&writer, req, lineage, feed, progress);
    // The session ends here, whatever the outcome.
    drop(writer);
    let mut outcome = outcome?;
    marks.wrote(&outcome.id, &outcome.snapshot);
    if let Some(problem) = marks.problem.take() {
        outcome.notices.push(problem);
    }
    if let Err(e) = marks.save() {
        outcome.notices.push(format!(
            "could not save the high-water mark (rollback detection): {e}"
        ));
    }
    Ok(BackupReport {
        rollbacks,
        snapshot_id: outcome.id,
        parent: outcome.snapshot.parent,
        paths: paths_text(&outcome.snapshot.paths),
        summary: outcome.snapshot.summary.clone(),
        warnings: outcome.warnings,
        notices: outcome.notices,
        snapshot: outcome.snapshot,
    })
}

/// Where a new snapshot stands among its host's: its parent and its host sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The snapshot to compare with (unchanged files are not read again).
    pub parent: Option<Id>,
    /// The snapshot's host sequence number (SPEC.md §9.1): one more than the highest of
    /// the host's snapshots in the repository.
    pub host_seq: Option<u64>,
}

impl Lineage {
    /// A snapshot made from `parent`, with no host sequence number (tests, tools).
    pub fn from_parent(parent: Option<Id>) -> Lineage {
        Lineage {
            parent,
            host_seq: None,
        }
    }
}

/// The parent `req.parent` chooses among the repository's snapshots `all`, and the next
/// host sequence number for `req.host`: one above both the highest in `all` and `seen`,
/// the highest this machine has seen (so a number is never reused after a rollback, and
/// the gap stays visible). The number is given only where the repository has the feature
/// `snapshot-v2` (SPEC.md §13): without it the snapshot stays version 1, which every
/// holdfast reads. Call it after the session started (`begin_write`), which reads the
/// config again.
pub fn choose_lineage(
    repo: &Repository,
    req: &BackupRequest,
    all: &[(Id, Snapshot)],
    seen: u64,
) -> Result<Lineage> {
    let newest = all
        .iter()
        .filter(|(_, s)| s.host == req.host && s.ext.origin.is_none())
        .filter_map(|(_, s)| s.ext.host_seq)
        .max()
        .unwrap_or(0);
    Ok(Lineage {
        parent: choose_parent_in(repo, req, all)?,
        host_seq: newest
            .max(seen)
            .checked_add(1)
            .filter(|_| repo.has_feature(holdfast_repo::config::SNAPSHOT_V2)),
    })
}

/// The parent snapshot `req.parent` chooses among `all`, if any.
fn choose_parent_in(
    repo: &Repository,
    req: &BackupRequest,
    all: &[(Id, Snapshot)],
) -> Result<Option<Id>> {
    let newest_with_paths = |filter: &dyn Fn(&Snapshot) -> bool| -> Result<Option<Id>> {
        let paths = req.recorded_paths()?;
        Ok(all
            .iter()
            .rev()
            .find(|(_, s)| {
                filter(s) && {
                    let mut p = s.paths.clone();
                    p.sort();
                    p == paths
                }
            })
            .map(|(id, _)| *id))
    };
    match &req.parent {
        ParentChoice::Auto => newest_with_paths(&|s| s.host == req.host),
        ParentChoice::Matching(f) => newest_with_paths(&|s| f.matches(s)),
        ParentChoice::Id(spec) => Ok(Some(repo.find_snapshot(spec, &Default::default())?.0)),
        ParentChoice::None => Ok(None),
    }
}

pub use holdfast_repo::session::now_ns;

/// The host name recorded in new snapshots: `HOLDFAST_HOST` when set (the agent sets it
/// to the cluster's name for the commands it runs, whose pod names change), else this
/// machine's host name (`unknown` if it has none).
pub fn host_name() -> String {
    if let Some(h) = std::env::var("HOLDFAST_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
    {
        return h;
    }
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The name of the user this process runs as (its uid if it has no name).
pub fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

/// The program version recorded in snapshots: `holdfast VERSION`.
pub fn program_version() -> String {
    format!("holdfast {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use holdfast_repo::backend::FileKind;
    use holdfast_repo::tree::NodeKind;

    use super::*;
    use crate::testing::repo;

    /// A request on host "h" at `time_ns`, no tags.
    fn request(sources: Vec<Source>, parent: ParentChoice, time_ns: i64) -> BackupRequest {
        BackupRequest {
            parent,
            host: "h".into(),
            user: "u".into(),
            time_ns,
            utc_offset_s: 0,
            ..BackupRequest::new(sources)
        }
    }

    /// Runs `req`, which must succeed.
    fn backup(r: &Repository, req: &BackupRequest) -> BackupReport {
        run(r, req, &BackupProgress::default()).unwrap()
    }

    fn fill(dir: &Path) {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), b"alpha").unwrap();
        std::fs::write(dir.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    }

    /// A repository and two filled source directories in `dir`.
    fn two_sources(dir: &Path) -> (Repository, PathBuf, PathBuf) {
        let r = repo(&dir.join("repo"));
        let (a, b) = (dir.join("a"), dir.join("b"));
        fill(&a);
        fill(&b);
        (r, a, b)
    }

    /// The names in the tree `id`, and their kinds.
    fn names(r: &Repository, id: &Id) -> Vec<(String, NodeKind)> {
        let index = r.load_index().unwrap();
        r.load_tree(&index, id)
            .unwrap()
            .nodes
            .iter()
            .map(|n| (String::from_utf8_lossy(&n.name).into_owned(), n.kind))
            .collect()
    }

    fn subtree(r: &Repository, id: &Id, name: &str) -> Id {
        let index = r.load_index().unwrap();
        r.load_tree(&index, id)
            .unwrap()
            .nodes
            .into_iter()
            .find(|n| n.name == name.as_bytes())
            .and_then(|n| n.subtree)
            .unwrap_or_else(|| panic!("no directory {name}"))
    }

    #[test]
    fn record_as_gives_a_logical_path_and_a_fully_incremental_second_backup() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(&d.path().join("repo"));
        let first_home = d.path().join("pods/uid-1/volumes/pv/mount");
        fill(&first_home);
        let src = |real: &Path| vec![Source::recorded_as(real, "/ns/pvc")];

        let one = backup(&r, &request(src(&first_home), ParentChoice::Auto, 1));
        assert_eq!(one.paths, ["/ns/pvc"]);
        assert_eq!(one.snapshot.paths, [b"/ns/pvc".to_vec()]);
        assert_eq!(one.parent, None);
        assert!(one.is_complete(), "{:?}", one.warnings);
        assert_eq!(
            names(&r, &one.snapshot.tree),
            [("ns".into(), NodeKind::Dir)]
        );
        let ns = subtree(&r, &one.snapshot.tree, "ns");
        assert_eq!(names(&r, &ns), [("pvc".into(), NodeKind::Dir)]);
        let pvc = subtree(&r, &ns, "pvc");
        assert_eq!(
            names(&r, &pvc),
            [
                ("a.txt".into(), NodeKind::File),
                ("sub".into(), NodeKind::Dir)
            ]
        );
        // The synthetic directory: 0755, this process's owner.
        let index = r.load_index().unwrap();
        let root = r.load_tree(&index, &one.snapshot.tree).unwrap();
        assert_eq!(root.nodes[0].mode, 0o755);
        assert_eq!(root.nodes[0].uid, nix::unistd::geteuid().as_raw());

        // The pod was recreated: the same volume, at another kubelet path.
        let second_home = d.path().join("pods/uid-2/volumes/pv/mount");
        std::fs::create_dir_all(second_home.parent().unwrap()).unwrap();
        std::fs::rename(&first_home, &second_home).unwrap();
        let filter = SnapshotFilter {
            hosts: vec!["h".into()],
            ..SnapshotFilter::default()
        };
        let two = backup(
            &r,
            &request(src(&second_home), ParentChoice::Matching(filter), 2),
        );
        assert_eq!(two.parent, Some(one.snapshot_id));
        assert_eq!(two.paths, ["/ns/pvc"]);
        let s = &two.summary;
        assert_eq!((s.files_new, s.files_changed, s.files_unchanged), (0, 0, 2));
        assert_eq!(s.bytes_read, 0);
        assert_eq!(s.data_blobs_added, 0);
        // The file trees below the source are the same.
        let pvc2 = subtree(&r, &subtree(&r, &two.snapshot.tree, "ns"), "pvc");
        assert_eq!(subtree(&r, &pvc2, "sub"), subtree(&r, &pvc, "sub"));
    }

    #[test]
    fn restore_and_excludes_see_the_recorded_path() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(&d.path().join("repo"));
        let home = d.path().join("kubelet/mount");
        fill(&home);
        let mut req = request(
            vec![Source::recorded_as(&home, "/ns/pvc")],
            ParentChoice::Auto,
            1,
        );
        req.excludes = PathFilter::new(&["/ns/pvc/sub"]).unwrap();
        let one = backup(&r, &req);
        let target = d.path().join("restored");
        let opts = crate::restorer::RestoreOptions {
            target: target.clone(),
            subpath: None,
            includes: PathFilter::default(),
            excludes: PathFilter::default(),
            owners: false,
        };
        let (id, snap) = r.find_snapshot("latest", &Default::default()).unwrap();
        assert_eq!(id, one.snapshot_id);
        let report =
            crate::restorer::restore_snapshot(&r, id, &snap, &opts, &Default::default()).unwrap();
        assert!(report.is_complete(), "{:?}", report.summary.warnings);
        assert_eq!(
            std::fs::read(target.join("ns/pvc/a.txt")).unwrap(),
            b"alpha"
        );
        assert!(
            !target.join("ns/pvc/sub").exists(),
            "excluded by its recorded path"
        );
        assert!(!target.join("kubelet").exists());
    }

    #[test]
    fn unchanged_recorded_source_gives_the_same_tree() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(&d.path().join("repo"));
        let home = d.path().join("vol");
        fill(&home);
        let req = |t| {
            request(
                vec![Source::recorded_as(&home, "/ns/pvc/data")],
                ParentChoice::Auto,
                t,
            )
        };
        let one = backup(&r, &req(1));
        let two = backup(&r, &req(2));
        assert_eq!(two.parent, Some(one.snapshot_id));
        assert_eq!(two.snapshot.tree, one.snapshot.tree);
        assert_eq!(two.summary.tree_blobs_added, 0);
    }

    #[test]
    fn recorded_paths_must_be_absolute_and_must_not_collide() {
        let d = tempfile::tempdir().unwrap();
        let (r, a, b) = two_sources(d.path());
        let relative = request(
            vec![Source::recorded_as(&a, "ns/pvc")],
            ParentChoice::Auto,
            1,
        );
        assert!(matches!(
            run(&r, &relative, &BackupProgress::default()),
            Err(crate::EngineError::Usage(_))
        ));
        let twice = request(
            vec![
                Source::recorded_as(&a, "/x"),
                Source::recorded_as(&b, "/x/y"),
            ],
            ParentChoice::Auto,
            1,
        );
        assert!(matches!(
            run(&r, &twice, &BackupProgress::default()),
            Err(crate::EngineError::Usage(_))
        ));
    }

    #[test]
    fn plain_paths_are_recorded_as_they_are() {
        let d = tempfile::tempdir().unwrap();
        let r = repo(&d.path().join("repo"));
        let src = d.path().join("src");
        fill(&src);
        let one = backup(&r, &request(vec![Source::new(&src)], ParentChoice::None, 1));
        assert_eq!(one.paths, [src.display().to_string()]);
        // The directories on the way carry the real metadata.
        let index = r.load_index().unwrap();
        let root = r.load_tree(&index, &one.snapshot.tree).unwrap();
        let first = src.components().nth(1).unwrap().as_os_str();
        let meta = std::fs::symlink_metadata(Path::new("/").join(first)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(root.nodes[0].inode, meta.ino());
    }

    #[test]
    fn host_sequence_numbers_count_each_hosts_own_snapshots() {
        let d = tempfile::tempdir().unwrap();
        let (r, a, b) = two_sources(d.path());
        let run_as = |host: &str, src: &Path, t: i64, state: &str| {
            let mut req = request(vec![Source::new(src)], ParentChoice::Auto, t);
            req.host = host.into();
            req.state_dir = Some(d.path().join(state));
            let out = backup(&r, &req);
            assert_eq!(r.load_snapshot(&out.snapshot_id).unwrap(), out.snapshot);
            out
        };
        let seq =
            |host: &str, src: &Path, t: i64| run_as(host, src, t, "state").snapshot.ext.host_seq;
        assert_eq!(seq("h", &a, 1), Some(1));
        assert_eq!(seq("h", &b, 2), Some(2), "any paths of the host count");
        assert_eq!(seq("other", &a, 3), Some(1));
        assert_eq!(seq("h", &a, 4), Some(3));
        // The newest snapshot of "h" disappears (not forgotten by this machine).
        let (all, _) = r.snapshots().unwrap();
        let newest = all.iter().rev().find(|(_, s)| s.host == "h").unwrap().0;
        r.backend().remove(FileKind::Snapshot, &newest).unwrap();
        // This machine saw number 3: it says so, and numbers past it (the gap stays).
        let out = run_as("h", &a, 5, "state");
        assert_eq!(out.snapshot.ext.host_seq, Some(4));
        assert_eq!(out.rollbacks.len(), 1, "{:?}", out.rollbacks);
        assert_eq!((out.rollbacks[0].seen.seq, out.rollbacks[0].now), (3, 2));
        // Written past it: quiet again.
        assert!(run_as("h", &a, 6, "state").rollbacks.is_empty());
        // A machine without a mark sees nothing to compare with.
        let fresh = run_as("other", &a, 7, "fresh-state");
        assert!(fresh.rollbacks.is_empty());
        assert_eq!(fresh.snapshot.ext.host_seq, Some(2));
    }

    #[test]
    fn parent_choices() {
        let d = tempfile::tempdir().unwrap();
        let (r, a, b) = two_sources(d.path());
        let go = |req: BackupRequest| backup(&r, &req);
        let tagged = |mut req: BackupRequest, tags: &[&str]| {
            req.tags = tags.iter().map(|t| t.to_string()).collect();
            req
        };
        let a1 = go(tagged(
            request(vec![Source::new(&a)], ParentChoice::Auto, 1),
            &["x"],
        ));
        assert_eq!(a1.parent, None);
        let a2 = go(tagged(
            request(vec![Source::new(&a)], ParentChoice::Auto, 2),
            &["y"],
        ));
        let b1 = go(request(vec![Source::new(&b)], ParentChoice::Auto, 3));
        // Auto: same host and paths, newest first.
        assert_eq!(a2.parent, Some(a1.snapshot_id));
        assert_eq!(b1.parent, None, "other paths are no parent");
        let mut other_host = request(vec![Source::new(&a)], ParentChoice::Auto, 4);
        other_host.host = "elsewhere".into();
        assert_eq!(go(other_host).parent, None);
        // Matching: the filter (here a tag) and the same paths.
        let by_tag = |tag: &str| {
            ParentChoice::Matching(SnapshotFilter {
                tags: vec![tag.into()],
                ..SnapshotFilter::default()
            })
        };
        assert_eq!(
            go(request(vec![Source::new(&a)], by_tag("x"), 5)).parent,
            Some(a1.snapshot_id)
        );
        assert_eq!(
            go(request(vec![Source::new(&b)], by_tag("x"), 6)).parent,
            None
        );
        // Id: that snapshot, by prefix, whatever its paths.
        let short = a1.snapshot_id.to_hex()[..10].to_string();
        assert_eq!(
            go(request(vec![Source::new(&b)], ParentChoice::Id(short), 7)).parent,
            Some(a1.snapshot_id)
        );
        // None: no parent, every file read.
        let none = go(request(vec![Source::new(&a)], ParentChoice::None, 8));
        assert_eq!(none.parent, None);
        assert_eq!(none.summary.files_new, 2);
    }
}
