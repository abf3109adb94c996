//! Drill outcomes as snapshots: one small snapshot per drill, holding
//! `/drills/<name>/result.json` (a [`DrillRecord`]), on the drilled snapshot's host, tagged
//! `kind=drill`, `drill=<name>` and `result=pass` or `result=fail` (SPEC.md, "Drill
//! records"). A snapshot is the one thing every holdfast reader already lists, keeps
//! under retention and copies with the repository: nothing new in the format.

use holdfast_engine::archiver::BackupProgress;
use holdfast_engine::backup::{self, BackupRequest, ParentChoice, Source};
use holdfast_engine::feed::{self, Entry};
use holdfast_engine::restorer;
use holdfast_repo::repository::{Repository, SnapshotFilter};
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::NodeKind;
use holdfast_repo::Id;
use serde::{Deserialize, Serialize};

use crate::{DrillError, Result};

/// The tag every drill record carries.
pub const KIND_TAG: &str = "kind=drill";

/// A drill's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillResult {
    /// Everything restored and every check held.
    Pass,
    /// Something did not: see [`DrillRecord::failure`].
    Fail,
}

impl DrillResult {
    /// `pass` or `fail`, as in the `result=` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillResult::Pass => "pass",
            DrillResult::Fail => "fail",
        }
    }
}

/// The snapshot a drill restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// Its ID (hex).
    pub id: String,
    /// When it was taken (RFC 3339, UTC).
    pub time: String,
    /// Its host.
    pub host: String,
    /// The paths it records.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl SnapshotRef {
    /// The reference to snapshot `id`.
    pub fn of(id: &Id, s: &Snapshot) -> SnapshotRef {
        SnapshotRef {
            id: id.to_hex(),
            time: rfc3339(s.time_ns),
            host: s.host.clone(),
            paths: s
                .paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
            tags: s.tags.clone(),
        }
    }
}

/// One thing a drill checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// What was checked (`restore`, `content`, `counts`, or a check's SQL).
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was found (`10000 files, 1.2 GB re-hashed`; `returned 3, expected >= 100`).
    pub detail: String,
}

/// The outcome of one drill, as stored in `/drills/<name>/result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The kind of drill (`volume`, `postgres`).
    pub kind: String,
    /// Its name (the `drill=` tag).
    pub name: String,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// How long it took in all, seconds.
    pub duration_s: f64,
    /// The snapshot drilled.
    pub snapshot: SnapshotRef,
    /// Where it was restored (a directory; a scratch PostgreSQL on 127.0.0.1:PORT).
    pub target: String,
    /// What was checked, in order.
    pub checks: Vec<CheckOutcome>,
    /// Files restored.
    pub files_restored: u64,
    /// File bytes restored.
    pub bytes_restored: u64,
    /// The time to restore (the RTO figure), seconds: for a volume, the restore; for a
    /// database, getting the dump out of the repository and loading it.
    pub restore_s: f64,
    /// `bytes_restored / restore_s`.
    pub bytes_per_s: f64,
    /// The verdict.
    pub result: DrillResult,
    /// Why it failed (the first check that did not hold, or what stopped the restore).
    pub failure: Option<String>,
    /// The program that ran it.
    pub program_version: String,
}

impl DrillRecord {
    /// Sets the verdict from the checks: pass only if there is at least one check and all
    /// held; the failure message is that of the first that did not.
    pub fn conclude(&mut self) {
        match self.checks.iter().find(|c| !c.passed) {
            Some(c) => {
                self.result = DrillResult::Fail;
                self.failure = Some(format!("{}: {}", c.name, c.detail));
            }
            None if self.checks.is_empty() => {
                self.result = DrillResult::Fail;
                self.failure = Some("nothing was checked".into());
            }
            None => {
                self.result = DrillResult::Pass;
                self.failure = None;
            }
        }
    }
}

/// A time in ns since the epoch as RFC 3339 in UTC (seconds precision).
pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ns.to_string())
}

/// The path a drill's record is stored at.
pub fn record_path(name: &str) -> String {
    format!("/drills/{name}/result.json")
}

/// Stores `rec` as a drill record snapshot; returns its ID.
pub fn store(repo: &Repository, rec: &DrillRecord) -> Result<Id> {
    if crate::safe_name(&rec.name) != rec.name {
        return Err(DrillError::Usage(format!(
            "the drill name {:?} cannot be a path component and a tag (use letters, digits, \
             '.', '_' and '-')",
            rec.name
        )));
    }
    let body = serde_json::to_vec_pretty(rec)
        .map_err(|e| DrillError::Usage(format!("cannot encode the drill record: {e}")))?;
    let mut req = BackupRequest::new(vec![Source::feed(record_path(&rec.name))]);
    req.host = rec.snapshot.host.clone();
    req.tags = vec![
        KIND_TAG.to_string(),
        format!("drill={}", rec.name),
        format!("result={}", rec.result.as_str()),
    ];
    // Every record stands alone: nothing to compare with.
    req.parent = ParentChoice::None;
    let now = backup::now_ns();
    req.time_ns = now;
    let feed = feed::single_file(Entry::bytes(vec![], now, body));
    let report = backup::run_feed(repo, &req, Some(Box::new(feed)), &BackupProgress::default())?;
    Ok(report.snapshot_id)
}

/// A stored drill record with the snapshot holding it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRecord {
    /// The record snapshot's ID (hex).
    pub record_snapshot: String,
    /// The record.
    #[serde(flatten)]
    pub record: DrillRecord,
}

/// The drill records in the repository, oldest first, of drill `name` if given. A record
/// snapshot whose file cannot be read or decoded is an error naming it.
pub fn history(repo: &Repository, name: Option<&str>) -> Result<Vec<StoredRecord>> {
    let mut tags = KIND_TAG.to_string();
    if let Some(n) = name {
        tags.push_str(&format!(",drill={n}"));
    }
    let filter = SnapshotFilter {
        tags: vec![tags],
        ..Default::default()
    };
    let (all, _) = repo.snapshots()?;
    let wanted: Vec<_> = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let index = repo.load_index()?;
    let mut out = Vec::new();
    for (id, s) in wanted {
        let bad = |why: String| {
            DrillError::Usage(format!(
                "drill record snapshot {} cannot be read: {why}",
                id.short()
            ))
        };
        let Some(path) = s.paths.first() else {
            return Err(bad("it records no path".into()));
        };
        let node = restorer::lookup(repo, &index, &s.tree, path)?
            .filter(|n| n.kind == NodeKind::File)
            .ok_or_else(|| bad("it holds no result file".into()))?;
        let mut body = Vec::new();
        restorer::dump(repo, &index, &node, &mut body)?;
        let record: DrillRecord =
            serde_json::from_slice(&body).map_err(|e| bad(format!("its JSON: {e}")))?;
        out.push(StoredRecord {
            record_snapshot: id.to_hex(),
            record,
        });
    }
    Ok(out)
}
