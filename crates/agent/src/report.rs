//! Per-volume results: what the agent logs, puts in Events, prints for `--once`, and keeps
//! for metrics and the UI.

use serde::Serialize;

use holdfast_repo::snapshot::Summary;

/// How one volume's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A snapshot was saved (possibly with unreadable entries: see `warnings`).
    Succeeded,
    /// Nothing was saved.
    Failed,
    /// Deliberately not backed up (opted out, another agent has it, block volume, ...).
    Skipped,
    /// Not due yet by its schedule.
    NotDue,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::NotDue => "not due",
        })
    }
}

/// One volume's result.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeResult {
    /// The PVC's namespace.
    pub namespace: String,
    /// The PVC's name.
    pub pvc: String,
    /// Its PV.
    pub pv: String,
    /// The node whose agent handled it.
    pub node: String,
    /// How it ended.
    pub status: Status,
    /// Why (for failed and skipped volumes), or a one-line summary.
    pub reason: String,
    /// How it was read (`live`, `snapshot`), when it was backed up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The snapshot saved, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Its parent snapshot, if any (an incremental backup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The backup's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Source entries that could not be read (the snapshot was saved without them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When the turn started, seconds since the epoch.
    pub started: i64,
    /// How long it took, seconds.
    pub seconds: f64,
}

impl VolumeResult {
    /// `namespace/pvc`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pvc)
    }
}

/// One cluster job's result: a dump (`holdfast.io/backup-command`) or the objects backup.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    /// `dump` or `objects`.
    pub kind: String,
    /// `namespace/Kind/name` for a dump, `objects` for the objects backup.
    pub key: String,
    /// The pod the dump ran in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// How it ended.
    pub status: Status,
    /// Why (failed, skipped), or a one-line summary.
    pub reason: String,
    /// The snapshot saved, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The backup's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Entries left out with a reason (objects that could not be listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When it started, seconds since the epoch.
    pub started: i64,
    /// How long it took, seconds.
    pub seconds: f64,
}

/// What one `--once` run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// The node.
    pub node: String,
    /// Every volume considered, by key.
    pub volumes: Vec<VolumeResult>,
    /// PVCs that no running pod mounts and that cannot be read from a snapshot (reported
    /// by the maintenance agent).
    pub unmounted: Vec<String>,
    /// Leftovers of an earlier, killed run that this agent deleted at its start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub swept: Vec<String>,
    /// The scheduled commands this agent considered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<crate::commands::CommandResult>,
    /// Dumps and the objects backup, when this agent was elected for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobResult>,
    /// What maintenance did, if this agent did it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<serde_json::Value>,
}

impl RunReport {
    /// The exit code of `--once`: 0 when every volume that was attempted succeeded (or
    /// none needed backing up), 3 when some failed, 1 when every attempted one failed.
    pub fn exit_code(&self) -> i32 {
        use crate::commands::CommandStatus;
        let failed = self
            .volumes
            .iter()
            .map(|v| v.status)
            .chain(self.jobs.iter().map(|j| j.status))
            .filter(|s| *s == Status::Failed)
            .count()
            + self
                .commands
                .iter()
                .filter(|c| c.status == CommandStatus::Failed)
                .count();
        let ok = self
            .volumes
            .iter()
            .map(|v| v.status)
            .chain(self.jobs.iter().map(|j| j.status))
            .filter(|s| *s == Status::Succeeded)
            .count()
            + self
                .commands
                .iter()
                .filter(|c| c.status == CommandStatus::Succeeded)
                .count();
        match (failed, ok) {
            (0, _) => 0,
            (_, 0) => 1,
            _ => 3,
        }
    }
}

/// The one-line summary of a saved snapshot in a result's `reason`.
pub fn saved_line(rep: &holdfast_engine::backup::BackupReport) -> String {
    let sm = &rep.summary;
    format!(
        "snapshot {}: {} files new, {} changed, {} unchanged; {} bytes added",
        rep.snapshot_id.short(),
        sm.files_new,
        sm.files_changed,
        sm.files_unchanged,
        sm.bytes_added_stored
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: Status) -> VolumeResult {
        VolumeResult {
            namespace: "a".into(),
            pvc: "b".into(),
            pv: "p".into(),
            node: "n".into(),
            status,
            reason: String::new(),
            method: None,
            snapshot: None,
            parent: None,
            summary: None,
            warnings: vec![],
            started: 0,
            seconds: 0.0,
        }
    }

    #[test]
    fn exit_codes() {
        let rep = |v: Vec<VolumeResult>| RunReport {
            volumes: v,
            ..Default::default()
        };
        assert_eq!(rep(vec![]).exit_code(), 0);
        assert_eq!(
            rep(vec![r(Status::Succeeded), r(Status::Skipped)]).exit_code(),
            0
        );
        assert_eq!(
            rep(vec![r(Status::Succeeded), r(Status::Failed)]).exit_code(),
            3
        );
        assert_eq!(
            rep(vec![r(Status::Failed), r(Status::Skipped)]).exit_code(),
            1
        );
    }
}
