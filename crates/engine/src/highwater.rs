//! Rollback detection: what this machine has seen of a repository, kept outside it.
//!
//! Whoever can write the storage can delete the newest snapshots or put an old state back
//! (SPEC.md §14.2), and a repository alone cannot show that anything newer ever existed.
//! Each client therefore keeps a **high-water mark** per repository, as borg's security
//! directory does: for every host, the highest host sequence number (SPEC.md §9.1) it has
//! seen. When the repository's newest snapshot of a host numbers lower than that, snapshots
//! were removed or an old state was put back, and the client says so loudly. Retention
//! never removes a host's newest snapshot, so a `forget` by policy does not trip it; a
//! `forget` of the newest snapshot by this machine lowers the mark ([`HighWater::forgot`]).
//!
//! The mark lives in `$HOLDFAST_STATE_DIR`, else `$XDG_STATE_HOME/holdfast`, else
//! `~/.local/state/holdfast`, one JSON file per repository ID. A mark that cannot be read
//! or written is a warning, never a failed backup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;
use serde::{Deserialize, Serialize};

/// The directory of high-water marks (see the module documentation); `None` when no home
/// or state directory is known.
pub fn default_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|d| !d.is_empty());
    if let Some(d) = var("HOLDFAST_STATE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return Some(PathBuf::from(d).join("holdfast"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".local/state/holdfast"))
}

/// The newest snapshot of one host this machine has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Its host sequence number.
    pub seq: u64,
    /// Its ID (shortened in messages).
    pub snapshot: String,
    /// Its time, ns since the epoch.
    pub time_ns: i64,
}

/// What this machine has seen of one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    /// Highest host sequence number seen, by host.
    hosts: BTreeMap<String, Seen>,
}

/// A sign that the repository went backwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollback {
    /// The host whose snapshots went backwards.
    pub host: String,
    /// The newest snapshot of the host this machine had seen.
    pub seen: Seen,
    /// The highest sequence number of the host in the repository now (0: none left).
    pub now: u64,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.seen.snapshot.get(..8).unwrap_or(&self.seen.snapshot);
        write!(
            f,
            "the repository went backwards: host {:?}'s newest snapshot is number {} \
             ({}), but this machine saw number {} (snapshot {short}). Snapshots were \
             deleted, or an old copy of the repository was put back. If nobody forgot \
             them on purpose, treat the storage as tampered with and check your other \
             copies; the warning stops once the host has written a newer snapshot",
            self.host,
            self.now,
            if self.now == 0 { "none left" } else { "lower" },
            self.seen.seq,
        )
    }
}

/// The high-water mark of one repository, loaded from and saved to its file.
#[derive(Debug)]
pub struct HighWater {
    path: Option<PathBuf>,
    mark: Mark,
    /// Why the mark could not be read, if it could not (a warning for the caller).
    pub problem: Option<String>,
}

/// Highest own (not copied) host sequence number of each host among `snapshots`.
pub fn newest_by_host<'a>(
    snapshots: impl IntoIterator<Item = (&'a Id, &'a Snapshot)>,
) -> BTreeMap<String, Seen> {
    let mut out: BTreeMap<String, Seen> = BTreeMap::new();
    for (id, s) in snapshots {
        let (Some(seq), None) = (s.ext.host_seq, s.ext.origin) else {
            continue;
        };
        if out.get(&s.host).is_none_or(|cur| cur.seq < seq) {
            out.insert(
                s.host.clone(),
                Seen {
                    seq,
                    snapshot: id.to_hex(),
                    time_ns: s.time_ns,
                },
            );
        }
    }
    out
}

impl HighWater {
    /// The mark of repository `repo_id` in `dir` (or [`default_dir`]); an empty mark that
    /// is never saved when there is no directory.
    pub fn load(dir: Option<&Path>, repo_id: &Id) -> HighWater {
        let Some(dir) = dir.map(Path::to_path_buf).or_else(default_dir) else {
            return HighWater {
                path: None,
                mark: Mark::default(),
                problem: Some("no state directory (HOME unset): rollback detection is off".into()),
            };
        };
        let path = dir.join(format!("{}.json", repo_id.to_hex()));
        let (mark, problem) = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(m) => (m, None),
                Err(e) => (
                    Mark::default(),
                    Some(format!(
                        "the high-water mark {} is unreadable ({e}); starting a new one",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Mark::default(), None),
            Err(e) => (
                Mark::default(),
                Some(format!("cannot read {}: {e}", path.display())),
            ),
        };
        HighWater {
            path: Some(path),
            mark,
            problem,
        }
    }

    /// The highest sequence number of `host` this machine has seen (0: none).
    pub fn seen(&self, host: &str) -> u64 {
        self.mark.hosts.get(host).map_or(0, |s| s.seq)
    }

    /// Compares the repository's `snapshots` with the mark: every host whose newest
    /// sequence number is below the one seen. Then raises the mark to what is there now
    /// (a host that went backwards keeps its old mark, so the warning repeats until the
    /// host writes past it).
    pub fn observe<'a>(
        &mut self,
        snapshots: impl IntoIterator<Item = (&'a Id, &'a Snapshot)>,
    ) -> Vec<Rollback> {
        let now = newest_by_host(snapshots);
        let mut out = Vec::new();
        for (host, seen) in &self.mark.hosts {
            let have = now.get(host).map_or(0, |s| s.seq);
            if have < seen.seq {
                out.push(Rollback {
                    host: host.clone(),
                    seen: seen.clone(),
                    now: have,
                });
            }
        }
        for (host, s) in now {
            if self.seen(&host) < s.seq {
                self.mark.hosts.insert(host, s);
            }
        }
        out
    }

    /// Records a snapshot this machine has just written.
    pub fn wrote(&mut self, id: &Id, s: &Snapshot) {
        self.observe([(id, s)]);
    }

    /// After this machine forgot the snapshots `removed`: a host whose newest seen
    /// snapshot is among them gets the newest of `remaining` as its mark, so removing a
    /// newest snapshot on purpose is not reported here as a rollback. Other hosts keep
    /// their marks (a forget does not hide an earlier rollback).
    pub fn forgot<'a>(
        &mut self,
        removed: &[Id],
        remaining: impl IntoIterator<Item = (&'a Id, &'a Snapshot)>,
    ) {
        let removed: std::collections::HashSet<String> = removed.iter().map(Id::to_hex).collect();
        let now = newest_by_host(remaining);
        let lowered: Vec<String> = self
            .mark
            .hosts
            .iter()
            .filter(|(_, seen)| removed.contains(&seen.snapshot))
            .map(|(h, _)| h.clone())
            .collect();
        for host in lowered {
            match now.get(&host) {
                Some(s) => self.mark.hosts.insert(host, s.clone()),
                None => self.mark.hosts.remove(&host),
            };
        }
    }

    /// Writes the mark (atomically: a temporary file renamed over the old one).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.mark).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_repo::snapshot::{Origin, SnapshotExt, Summary};

    fn snap(host: &str, seq: Option<u64>, copied: bool) -> Snapshot {
        Snapshot {
            time_ns: seq.unwrap_or(0) as i64,
            utc_offset_s: 0,
            host: host.into(),
            user: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec![],
            tags: vec![],
            tree: Id([0; 32]),
            parent: None,
            program_version: "t".into(),
            summary: Summary::default(),
            ext: SnapshotExt {
                host_seq: seq,
                origin: copied.then_some(Origin {
                    repo_id: Id([1; 32]),
                    snapshot: Id([2; 32]),
                }),
                unknown: vec![],
            },
        }
    }

    fn list(v: &[(u8, Snapshot)]) -> Vec<(Id, Snapshot)> {
        v.iter().map(|(i, s)| (Id([*i; 32]), s.clone())).collect()
    }

    fn refs(v: &[(Id, Snapshot)]) -> Vec<(&Id, &Snapshot)> {
        v.iter().map(|(i, s)| (i, s)).collect()
    }

    #[test]
    fn a_removed_newest_snapshot_is_reported_until_the_host_writes_past_it() {
        let d = tempfile::tempdir().unwrap();
        let repo = Id([9; 32]);
        let full = list(&[
            (1, snap("a", Some(1), false)),
            (2, snap("a", Some(2), false)),
            (3, snap("b", Some(1), false)),
            (4, snap("a", Some(7), true)), // a copy: not counted
            (5, snap("old", None, false)), // version 1: not counted
        ]);
        let mut hw = HighWater::load(Some(d.path()), &repo);
        assert!(hw.observe(refs(&full)).is_empty());
        assert_eq!((hw.seen("a"), hw.seen("b"), hw.seen("old")), (2, 1, 0));
        hw.save().unwrap();

        // Another process, later: the newest of "a" and all of "b" are gone.
        let mut hw = HighWater::load(Some(d.path()), &repo);
        assert_eq!(hw.problem, None);
        let rolled = list(&[(1, snap("a", Some(1), false))]);
        let got = hw.observe(refs(&rolled));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0].host.as_str(), got[0].now, got[0].seen.seq),
            ("a", 1, 2)
        );
        assert_eq!((got[1].host.as_str(), got[1].now), ("b", 0));
        assert!(got[0].to_string().contains("went backwards"));
        // Still reported next time: the mark did not drop.
        assert_eq!(hw.observe(refs(&rolled)).len(), 2);
        // Host "a" writes number 3: "a" is fine again, "b" still missing.
        let mut more = rolled.clone();
        more.extend(list(&[(6, snap("a", Some(3), false))]));
        let got = hw.observe(refs(&more));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].host, "b");
    }

    #[test]
    fn forgetting_on_purpose_lowers_the_mark() {
        let d = tempfile::tempdir().unwrap();
        let mut hw = HighWater::load(Some(d.path()), &Id([9; 32]));
        let full = list(&[
            (1, snap("a", Some(1), false)),
            (2, snap("a", Some(2), false)),
        ]);
        hw.observe(refs(&full));
        let after = list(&[(1, snap("a", Some(1), false))]);
        // Forgetting an older snapshot does not lower the mark...
        hw.forgot(&[Id([1; 32])], refs(&after));
        assert_eq!(hw.observe(refs(&after)).len(), 1);
        // ...forgetting the newest one does.
        hw.forgot(&[Id([2; 32])], refs(&after));
        assert!(hw.observe(refs(&after)).is_empty());
    }

    #[test]
    fn an_unreadable_mark_is_a_problem_not_a_failure() {
        let d = tempfile::tempdir().unwrap();
        let repo = Id([9; 32]);
        std::fs::write(d.path().join(format!("{}.json", repo.to_hex())), b"{nope").unwrap();
        let mut hw = HighWater::load(Some(d.path()), &repo);
        assert!(hw.problem.as_deref().unwrap().contains("unreadable"));
        let full = list(&[(1, snap("a", Some(4), false))]);
        assert!(hw.observe(refs(&full)).is_empty());
        hw.save().unwrap();
        assert_eq!(HighWater::load(Some(d.path()), &repo).seen("a"), 4);
    }
}
