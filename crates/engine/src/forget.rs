//! Forgetting snapshots: by a retention policy applied to groups of snapshots, or by ID.
//!
//! Forgetting a snapshot deletes its file; the data only it referenced stays until a
//! [`crate::prune`]. [`plan`] decides and changes nothing; [`apply`] deletes what a plan
//! removes (unless it is a dry run) and reports. An empty policy is refused: it would keep
//! nothing by mistake rather than everything.

use std::collections::{HashMap, HashSet};

use holdfast_repo::backend::FileKind;
use holdfast_repo::repository::{Repository, SnapshotFilter};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::Id;
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::highwater::HighWater;
use crate::listing::{paths_text, SnapshotEntry};
use crate::retention::{self, GroupBy, GroupKey, Policy};

/// The reason given for a snapshot forgotten by ID.
pub const NAMED: &str = "named on the command line";

/// Which snapshots to forget.
#[derive(Debug, Clone)]
pub enum ForgetSelection {
    /// Those a retention policy does not keep, applied to each group of snapshots.
    Policy(Policy, GroupBy),
    /// These snapshots: `latest`, IDs or unique ID prefixes.
    Ids(Vec<String>),
}

/// What to forget.
#[derive(Debug, Clone)]
pub struct ForgetRequest {
    /// By policy or by ID.
    pub selection: ForgetSelection,
    /// Only snapshots that pass this filter are considered (and IDs resolved among them).
    pub filter: SnapshotFilter,
    /// Decide and report, but delete nothing.
    pub dry_run: bool,
}

/// One snapshot in a forget plan, with the reasons for keeping or removing it.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetEntry {
    /// The snapshot.
    #[serde(flatten)]
    pub snapshot: SnapshotEntry,
    /// Why it is kept or removed.
    pub reasons: Vec<String>,
}

/// One group's decisions.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetGroup {
    /// The group's host, when grouping by host.
    pub host: Option<String>,
    /// The group's paths, when grouping by paths.
    pub paths: Option<Vec<String>>,
    /// The group's tags, when grouping by tags.
    pub tags: Option<Vec<String>>,
    /// The snapshots kept, newest first.
    pub keep: Vec<ForgetEntry>,
    /// The snapshots removed, newest first.
    pub remove: Vec<ForgetEntry>,
    /// What the group's snapshots share (`None` for snapshots forgotten by ID).
    #[serde(skip)]
    pub key: Option<GroupKey>,
}

/// What a forget would do.
#[derive(Debug, Clone)]
pub struct ForgetPlan {
    /// Whether it is a dry run.
    pub dry_run: bool,
    /// The policy as a sentence, when forgetting by policy.
    pub policy: Option<String>,
    /// The decisions, group by group.
    pub groups: Vec<ForgetGroup>,
    /// Snapshot files that could not be read: left alone.
    pub unreadable: Vec<String>,
}

impl ForgetPlan {
    /// The snapshots the plan removes.
    pub fn to_remove(&self) -> Vec<Id> {
        removed_by(&self.groups)
    }
}

/// The snapshots that groups remove.
fn removed_by(groups: &[ForgetGroup]) -> Vec<Id> {
    groups
        .iter()
        .flat_map(|g| g.remove.iter().map(|e| e.snapshot.id))
        .collect()
}

/// What a forget did.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The policy as a sentence, when forgetting by policy.
    pub policy: Option<String>,
    /// The decisions, group by group.
    pub groups: Vec<ForgetGroup>,
    /// The snapshots removed.
    pub removed: Vec<Id>,
    /// The snapshots a dry run would have removed.
    pub would_remove: Vec<Id>,
    /// Snapshots that could not be removed, one message each.
    pub errors: Vec<String>,
    /// Snapshot files that could not be read: left alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

impl ForgetReport {
    /// The snapshots the plan removed or would remove.
    pub fn selected(&self) -> Vec<Id> {
        removed_by(&self.groups)
    }
}

fn entry((id, s, reasons): (Id, &Snapshot, Vec<String>)) -> ForgetEntry {
    ForgetEntry {
        snapshot: SnapshotEntry::new(&id, s),
        reasons,
    }
}

fn group_of(key: Option<GroupKey>) -> ForgetGroup {
    ForgetGroup {
        host: key.as_ref().and_then(|k| k.host.clone()),
        paths: key
            .as_ref()
            .and_then(|k| k.paths.as_deref().map(paths_text)),
        tags: key.as_ref().and_then(|k| k.tags.clone()),
        keep: Vec::new(),
        remove: Vec::new(),
        key,
    }
}

/// Decides what to forget, deleting nothing. `now_ns` is the current time (snapshots
/// dated later do not anchor `within` durations).
pub fn plan(repo: &Repository, req: &ForgetRequest, now_ns: i64) -> Result<ForgetPlan> {
    if !req.dry_run {
        // Removing snapshots is a write: refused where a feature forbids this build to
        // write (SPEC.md §13).
        repo.check_writable()?;
    }
    let mut groups = Vec::new();
    let mut unreadable = Vec::new();
    let policy = match &req.selection {
        ForgetSelection::Ids(specs) => {
            let mut seen = HashSet::new();
            let mut g = group_of(None);
            for spec in specs {
                let (id, s) = repo.find_snapshot(spec, &req.filter)?;
                if seen.insert(id) {
                    g.remove.push(entry((id, &s, vec![NAMED.to_string()])));
                }
            }
            groups.push(g);
            None
        }
        ForgetSelection::Policy(policy, group_by) => {
            if policy.is_empty() {
                return Err(EngineError::Usage(
                    "no retention policy given: an empty policy would decide nothing; nothing was removed"
                        .into(),
                ));
            }
            let (all, bad) = repo.snapshots()?;
            unreadable = bad.iter().map(ToString::to_string).collect();
            let list: Vec<(Id, Snapshot)> = all
                .into_iter()
                .filter(|(_, s)| req.filter.matches(s))
                .collect();
            for (key, snaps) in retention::group(&list, *group_by) {
                let by_id: HashMap<Id, &Snapshot> = snaps.iter().map(|(id, s)| (*id, s)).collect();
                let mut g = group_of(Some(key));
                for d in retention::apply_at(policy, &snaps, Some(now_ns)) {
                    let e = entry((d.id, by_id[&d.id], d.reasons));
                    if d.keep {
                        g.keep.push(e);
                    } else {
                        g.remove.push(e);
                    }
                }
                groups.push(g);
            }
            Some(policy.to_string())
        }
    };
    Ok(ForgetPlan {
        dry_run: req.dry_run,
        policy,
        groups,
        unreadable,
    })
}

/// Carries out a plan: deletes the snapshot files it removes (none in a dry run). A file
/// that cannot be deleted is reported in [`ForgetReport::errors`]; the others are still
/// deleted.
pub fn apply(repo: &Repository, plan: &ForgetPlan) -> ForgetReport {
    let to_remove = plan.to_remove();
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    if !plan.dry_run {
        for id in &to_remove {
            match repo.backend().remove(FileKind::Snapshot, id) {
                Ok(()) => removed.push(*id),
                Err(e) => errors.push(format!("cannot remove snapshot {id}: {e}")),
            }
        }
    }
    if !removed.is_empty() {
        // This machine forgot them on purpose: not a rollback for its next backups.
        if let Ok((left, _)) = repo.snapshots() {
            let mut marks = HighWater::load(None, &repo.config().repo_id);
            marks.forgot(&removed, left.iter().map(|(i, s)| (i, s)));
            if let Err(e) = marks.save() {
                errors.push(format!("could not save the high-water mark: {e}"));
            }
        }
    }
    ForgetReport {
        dry_run: plan.dry_run,
        policy: plan.policy.clone(),
        groups: plan.groups.clone(),
        removed,
        would_remove: if plan.dry_run { to_remove } else { Vec::new() },
        errors,
        unreadable: plan.unreadable.clone(),
    }
}

/// Fails with [`holdfast_repo::Error::DeleteDenied`] unless the credentials may delete
/// (writer-only credentials may not), so that a forget fails before deleting anything
/// rather than once per snapshot. Nothing to check for a dry run.
pub fn check_allowed(repo: &Repository, plan: &ForgetPlan) -> Result<()> {
    if plan.dry_run || plan.to_remove().is_empty() {
        return Ok(());
    }
    Ok(repo.backend().check_delete_allowed()?)
}

/// [`plan`], [`check_allowed`], then [`apply`].
pub fn forget(repo: &Repository, req: &ForgetRequest, now_ns: i64) -> Result<ForgetReport> {
    let p = plan(repo, req, now_ns)?;
    check_allowed(repo, &p)?;
    Ok(apply(repo, &p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{run, BackupRequest, ParentChoice, Source};
    use crate::testing::repo;

    const HOUR: i64 = 3_600_000_000_000;

    /// Four snapshots of one directory, an hour apart (oldest first), and one of another.
    fn setup(dir: &std::path::Path) -> (Repository, Vec<Id>, Id) {
        let r = repo(&dir.join("repo"));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("f"), b"x").unwrap();
        let backup = |src: &std::path::Path, t: i64| {
            let req = BackupRequest {
                host: "h".into(),
                time_ns: t,
                utc_offset_s: 0,
                parent: ParentChoice::None,
                ..BackupRequest::new(vec![Source::new(src)])
            };
            run(&r, &req, &Default::default()).unwrap().snapshot_id
        };
        let ids: Vec<Id> = (1..=4).map(|i| backup(&a, i * HOUR)).collect();
        let other = backup(&b, HOUR);
        (r, ids, other)
    }

    fn keep_last(n: u32) -> ForgetSelection {
        ForgetSelection::Policy(
            Policy {
                last: n,
                ..Policy::default()
            },
            GroupBy::default(),
        )
    }

    fn request(selection: ForgetSelection, dry_run: bool) -> ForgetRequest {
        ForgetRequest {
            selection,
            filter: SnapshotFilter::default(),
            dry_run,
        }
    }

    fn count(r: &Repository) -> usize {
        r.snapshots().unwrap().0.len()
    }

    #[test]
    fn dry_run_removes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (r, ids, _) = setup(d.path());
        let report = forget(&r, &request(keep_last(1), true), 10 * HOUR).unwrap();
        assert!(report.dry_run && report.removed.is_empty());
        let mut would = report.would_remove.clone();
        would.sort();
        let mut expected = ids[..3].to_vec();
        expected.sort();
        assert_eq!(would, expected);
        assert_eq!(count(&r), 5);
    }

    #[test]
    fn policy_keeps_what_it_says_in_each_group() {
        let d = tempfile::tempdir().unwrap();
        let (r, ids, other) = setup(d.path());
        let p = plan(&r, &request(keep_last(2), false), 10 * HOUR).unwrap();
        assert_eq!(p.policy.as_deref(), Some("keep 2 latest snapshots"));
        assert_eq!(p.groups.len(), 2, "one group per set of paths");
        let report = apply(&r, &p);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let mut removed = report.removed.clone();
        removed.sort();
        let mut expected = ids[..2].to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        let left: Vec<Id> = r
            .snapshots()
            .unwrap()
            .0
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(left.len(), 3);
        assert!(left.contains(&ids[2]) && left.contains(&ids[3]) && left.contains(&other));
        // The JSON form keeps the command-line tool's fields.
        let v = serde_json::to_value(&report).unwrap();
        for k in [
            "dry_run",
            "policy",
            "groups",
            "removed",
            "would_remove",
            "errors",
        ] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
        assert!(v.get("unreadable").is_none());
        let g = &v["groups"][0];
        for k in ["host", "paths", "tags", "keep", "remove"] {
            assert!(g.get(k).is_some(), "{k} in {g}");
        }
        assert!(g["keep"][0]["reasons"].is_array() && g["keep"][0]["short_id"].is_string());
    }

    #[test]
    fn unreadable_snapshots_are_reported_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let (r, ids, _) = setup(d.path());
        let damaged = d.path().join("repo").join(FileKind::Snapshot.path(&ids[0]));
        std::fs::write(&damaged, b"not a snapshot").unwrap();
        let report = forget(&r, &request(keep_last(1), false), 10 * HOUR).unwrap();
        assert_eq!(report.unreadable.len(), 1, "{:?}", report.unreadable);
        assert!(!report.selected().contains(&ids[0]));
        assert_eq!(report.removed.len(), 2);
        assert!(damaged.exists());
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["unreadable"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn by_id_and_empty_policy() {
        let d = tempfile::tempdir().unwrap();
        let (r, ids, _) = setup(d.path());
        let spec = ids[0].to_hex()[..12].to_string();
        let report = forget(
            &r,
            &request(ForgetSelection::Ids(vec![spec, ids[0].to_hex()]), false),
            0,
        )
        .unwrap();
        assert_eq!(report.removed, [ids[0]]);
        assert_eq!(report.groups[0].remove[0].reasons, [NAMED]);
        assert!(report.policy.is_none());
        assert_eq!(count(&r), 4);
        let empty = ForgetSelection::Policy(Policy::default(), GroupBy::default());
        assert!(matches!(
            forget(&r, &request(empty, false), 0),
            Err(EngineError::Usage(_))
        ));
        assert_eq!(count(&r), 4);
    }
}
