//! The virtual layout above the snapshots, built from the snapshot list:
//!
//! ```text
//! snapshots/<time>/   snapshots/latest -> <time>
//! ids/<short id>/
//! hosts/<host>/<time>/   hosts/<host>/latest
//! tags/<tag>/<time>/     tags/<tag>/latest
//! pvcs/<namespace>/<pvc>/<time>/   .../latest     (snapshots tagged namespace= and pvc=)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;

use crate::names::{escape, time_names};

/// A directory of the virtual layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VPath {
    /// The mount's root.
    Root,
    /// `snapshots/`.
    Snapshots,
    /// `ids/`.
    Ids,
    /// `hosts/`.
    Hosts,
    /// `hosts/<host>/`.
    Host(String),
    /// `tags/`.
    Tags,
    /// `tags/<tag>/`.
    Tag(String),
    /// `pvcs/`.
    Pvcs,
    /// `pvcs/<namespace>/`.
    Namespace(String),
    /// `pvcs/<namespace>/<pvc>/`.
    Pvc(String, String),
}

/// A snapshot as a directory of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapDir {
    /// Snapshot ID.
    pub id: Id,
    /// Its root tree.
    pub tree: Id,
    /// Its time, ns since the epoch.
    pub time_ns: i64,
}

/// One entry of a virtual directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VEntry {
    /// A virtual directory.
    Dir(VPath),
    /// A snapshot's root.
    Snapshot(SnapDir),
    /// A symlink with this target.
    Link(Vec<u8>),
}

/// Tag key of the agent's volume snapshots (crates/agent `repo::tags`).
const NAMESPACE_TAG: &str = "namespace";
/// Tag key of the PVC of a volume snapshot.
const PVC_TAG: &str = "pvc";

/// Every virtual directory's entries, sorted by name.
#[derive(Debug, Default)]
pub struct View {
    dirs: HashMap<VPath, Vec<(Vec<u8>, VEntry)>>,
    /// Time of the newest snapshot (the virtual directories' mtime), ns.
    pub newest_ns: i64,
    /// How many snapshots are shown.
    pub snapshots: usize,
}

/// The value of the tag `key=value` in `tags`.
fn tag<'a>(tags: &'a [String], key: &str) -> Option<&'a str> {
    tags.iter()
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// A directory of snapshots (oldest first): one per time name, and `latest`.
fn snapshot_dir(snaps: &[SnapDir]) -> Vec<(Vec<u8>, VEntry)> {
    let names = time_names(&snaps.iter().map(|s| (s.id, s.time_ns)).collect::<Vec<_>>());
    let mut out: Vec<(Vec<u8>, VEntry)> = names
        .iter()
        .zip(snaps)
        .map(|(n, s)| (n.clone().into_bytes(), VEntry::Snapshot(*s)))
        .collect();
    if let Some(last) = names.last() {
        out.push((b"latest".to_vec(), VEntry::Link(last.clone().into_bytes())));
    }
    out
}

impl View {
    /// The layout of `snaps` (in any order).
    pub fn build(snaps: &[(Id, Snapshot)]) -> View {
        let mut list: Vec<(SnapDir, &Snapshot)> = snaps
            .iter()
            .map(|(id, s)| {
                (
                    SnapDir {
                        id: *id,
                        tree: s.tree,
                        time_ns: s.time_ns,
                    },
                    s,
                )
            })
            .collect();
        list.sort_by(|a, b| a.0.time_ns.cmp(&b.0.time_ns).then(a.0.id.cmp(&b.0.id)));
        let all: Vec<SnapDir> = list.iter().map(|(d, _)| *d).collect();
        let mut hosts: BTreeMap<&str, Vec<SnapDir>> = BTreeMap::new();
        let mut tags: BTreeMap<&str, Vec<SnapDir>> = BTreeMap::new();
        let mut pvcs: BTreeMap<(&str, &str), Vec<SnapDir>> = BTreeMap::new();
        for (d, s) in &list {
            hosts.entry(s.host.as_str()).or_default().push(*d);
            for t in s.tags.iter().collect::<BTreeSet<_>>() {
                tags.entry(t.as_str()).or_default().push(*d);
            }
            if let (Some(ns), Some(pvc)) = (tag(&s.tags, NAMESPACE_TAG), tag(&s.tags, PVC_TAG)) {
                pvcs.entry((ns, pvc)).or_default().push(*d);
            }
        }
        let mut dirs: HashMap<VPath, Vec<(Vec<u8>, VEntry)>> = HashMap::new();
        dirs.insert(
            VPath::Root,
            vec![
                (b"hosts".to_vec(), VEntry::Dir(VPath::Hosts)),
                (b"ids".to_vec(), VEntry::Dir(VPath::Ids)),
                (b"pvcs".to_vec(), VEntry::Dir(VPath::Pvcs)),
                (b"snapshots".to_vec(), VEntry::Dir(VPath::Snapshots)),
                (b"tags".to_vec(), VEntry::Dir(VPath::Tags)),
            ],
        );
        dirs.insert(VPath::Snapshots, snapshot_dir(&all));
        let mut ids: Vec<(Vec<u8>, VEntry)> = Vec::new();
        let mut shorts: HashMap<String, usize> = HashMap::new();
        for d in &all {
            *shorts.entry(d.id.short()).or_default() += 1;
        }
        for d in &all {
            let short = d.id.short();
            let name = if shorts[&short] > 1 {
                d.id.to_hex()
            } else {
                short
            };
            ids.push((name.into_bytes(), VEntry::Snapshot(*d)));
        }
        dirs.insert(VPath::Ids, ids);
        let mut host_list = Vec::new();
        for (h, snaps) in &hosts {
            let p = VPath::Host((*h).to_string());
            host_list.push((escape(h), VEntry::Dir(p.clone())));
            dirs.insert(p, snapshot_dir(snaps));
        }
        dirs.insert(VPath::Hosts, host_list);
        let mut tag_list = Vec::new();
        for (t, snaps) in &tags {
            let p = VPath::Tag((*t).to_string());
            tag_list.push((escape(t), VEntry::Dir(p.clone())));
            dirs.insert(p, snapshot_dir(snaps));
        }
        dirs.insert(VPath::Tags, tag_list);
        let mut namespaces: BTreeMap<&str, Vec<(Vec<u8>, VEntry)>> = BTreeMap::new();
        for ((ns, pvc), snaps) in &pvcs {
            let p = VPath::Pvc((*ns).to_string(), (*pvc).to_string());
            namespaces
                .entry(ns)
                .or_default()
                .push((escape(pvc), VEntry::Dir(p.clone())));
            dirs.insert(p, snapshot_dir(snaps));
        }
        let mut ns_list = Vec::new();
        for (ns, entries) in namespaces {
            let p = VPath::Namespace(ns.to_string());
            ns_list.push((escape(ns), VEntry::Dir(p.clone())));
            dirs.insert(p, entries);
        }
        dirs.insert(VPath::Pvcs, ns_list);
        for entries in dirs.values_mut() {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
        }
        View {
            dirs,
            newest_ns: all.last().map_or(0, |d| d.time_ns),
            snapshots: all.len(),
        }
    }

    /// The entries of a virtual directory, sorted by name (none if it no longer exists:
    /// its last snapshot was forgotten).
    pub fn entries(&self, dir: &VPath) -> &[(Vec<u8>, VEntry)] {
        self.dirs.get(dir).map_or(&[], Vec::as_slice)
    }

    /// The entry `name` of a virtual directory.
    pub fn lookup(&self, dir: &VPath, name: &[u8]) -> Option<&VEntry> {
        let e = self.entries(dir);
        e.binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| &e[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_repo::snapshot::Summary;

    fn snap(b: u8, secs: i64, host: &str, tags: &[&str]) -> (Id, Snapshot) {
        (
            Id([b; 32]),
            Snapshot {
                time_ns: secs * 1_000_000_000,
                utc_offset_s: 0,
                host: host.into(),
                user: "u".into(),
                uid: 0,
                gid: 0,
                paths: vec![b"/x".to_vec()],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tree: Id([b + 100; 32]),
                parent: None,
                program_version: "t".into(),
                summary: Summary::default(),
                ext: Default::default(),
            },
        )
    }

    fn names(v: &View, p: &VPath) -> Vec<String> {
        v.entries(p)
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    #[test]
    fn layout() {
        let t0 = 1_796_321_175;
        let v = View::build(&[
            snap(2, t0 + 60, "b", &["namespace=ns", "pvc=data"]),
            snap(1, t0, "a", &["x", "owner=Deployment/web"]),
            snap(3, t0 + 60, "a", &[]),
        ]);
        assert_eq!(
            names(&v, &VPath::Root),
            ["hosts", "ids", "pvcs", "snapshots", "tags"]
        );
        assert_eq!(
            names(&v, &VPath::Snapshots),
            [
                "2026-12-03T18:06:15Z",
                "2026-12-03T18:07:15Z-02020202",
                "2026-12-03T18:07:15Z-03030303",
                "latest"
            ]
        );
        assert_eq!(
            v.lookup(&VPath::Snapshots, b"latest"),
            Some(&VEntry::Link(b"2026-12-03T18:07:15Z-03030303".to_vec()))
        );
        assert_eq!(names(&v, &VPath::Ids), ["01010101", "02020202", "03030303"]);
        assert_eq!(names(&v, &VPath::Hosts), ["a", "b"]);
        assert_eq!(
            names(&v, &VPath::Host("a".into())),
            ["2026-12-03T18:06:15Z", "2026-12-03T18:07:15Z", "latest"]
        );
        assert_eq!(
            names(&v, &VPath::Tags),
            ["namespace=ns", "owner=Deployment%2Fweb", "pvc=data", "x"]
        );
        assert_eq!(
            v.lookup(&VPath::Tags, b"owner=Deployment%2Fweb"),
            Some(&VEntry::Dir(VPath::Tag("owner=Deployment/web".into())))
        );
        assert_eq!(names(&v, &VPath::Pvcs), ["ns"]);
        assert_eq!(names(&v, &VPath::Namespace("ns".into())), ["data"]);
        let pvc = VPath::Pvc("ns".into(), "data".into());
        assert_eq!(names(&v, &pvc), ["2026-12-03T18:07:15Z", "latest"]);
        match v.lookup(&pvc, b"2026-12-03T18:07:15Z") {
            Some(VEntry::Snapshot(d)) => assert_eq!((d.id, d.tree), (Id([2; 32]), Id([102; 32]))),
            other => panic!("{other:?}"),
        }
        assert!(v.lookup(&VPath::Host("zz".into()), b"latest").is_none());
        assert_eq!((v.snapshots, v.newest_ns), (3, (t0 + 60) * 1_000_000_000));
    }

    #[test]
    fn empty_repository() {
        let v = View::build(&[]);
        assert!(v.entries(&VPath::Snapshots).is_empty());
        assert_eq!(names(&v, &VPath::Root).len(), 5);
    }
}
