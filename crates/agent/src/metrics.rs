//! The agent's Prometheus metrics: what it knows about its volumes, the cluster's jobs, the
//! repository, drills and coverage, kept in one [`MetricsState`] and written out in the
//! text exposition format (0.0.4) on each scrape.
//!
//! A scrape only formats what is in memory: it never reads the repository or the API
//! server, so it is cheap and cannot hang on S3. The values are rebuilt from durable
//! sources (the repository's newest snapshots and the Leases' `holdfast.io/last-*`
//! annotations) when the agent starts and after every round ([`crate::runner::Agent::
//! refresh_metrics`]), so they survive a restart or a pod moving to another node; results
//! of the running round are added as they come in ([`MetricsState::record_volume`]).
//!
//! Labels: `kind` (`volume`, `dump`, `objects`, `etcd`, `bucket`, `command`) and `name`
//! (the dump's owner, the bucket's or etcd snapshot's name, the command's name) rather
//! than `job`, which Prometheus sets on every series to the scrape job; `namespace`,
//! `pvc` and `method` (`live`, `snapshot`, `command`). Scrape with `honor_labels: true`
//! (the ServiceMonitor in deploy/ does) so `namespace` is the PVC's, not the agent's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use holdfast_engine::archiver::BackupProgress;
use serde::Serialize;

use crate::coverage::CoverageReport;

/// A metric family: name, type and help text. [`FAMILIES`] lists every family the agent
/// exports, in the order they are written; tests check dashboards and alert rules against
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// `gauge` (every holdfast metric is a gauge: a value as of now, not a running count).
    pub kind: &'static str,
    /// The HELP text.
    pub help: &'static str,
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
    }
}

/// `holdfast_agent_info{version,node}`.
pub const AGENT_INFO: Family = gauge(
    "holdfast_agent_info",
    "Always 1; labels: the agent's version and node.",
);
/// Whether this agent exports the cluster-wide metrics.
pub const AGENT_ELECTED: Family = gauge(
    "holdfast_agent_elected",
    "1 when this agent holds the metrics Lease and exports the repository, cluster job, drill and coverage metrics.",
);
/// When the metrics were last rebuilt from the repository.
pub const REFRESH: Family = gauge(
    "holdfast_metrics_refresh_timestamp_seconds",
    "When this agent last rebuilt its metrics from the repository and the Leases (Unix time).",
);
/// Last success per volume/job.
pub const LAST_SUCCESS: Family = gauge(
    "holdfast_backup_last_success_timestamp_seconds",
    "Time of the newest snapshot of the volume or job in the repository (Unix time).",
);
/// Last attempt per volume/job.
pub const LAST_ATTEMPT: Family = gauge(
    "holdfast_backup_last_attempt_timestamp_seconds",
    "When the last backup of the volume or job started, successful or not (Unix time).",
);
/// Last status per volume/job.
pub const LAST_STATUS: Family = gauge(
    "holdfast_backup_last_status",
    "1 when the last backup attempt of the volume or job succeeded, 0 when it failed.",
);
/// Duration of the newest successful backup.
pub const DURATION: Family = gauge(
    "holdfast_backup_duration_seconds",
    "How long the newest successful backup of the volume or job took, seconds.",
);
/// Bytes added by the newest backup.
pub const BYTES_ADDED: Family = gauge(
    "holdfast_backup_bytes_added",
    "Bytes the newest successful backup added to the repository (after compression and encryption).",
);
/// Files in the newest backup.
pub const FILES: Family = gauge(
    "holdfast_backup_files",
    "Files in the newest successful backup (new, changed and unchanged).",
);
/// Unreadable entries in the newest backup.
pub const ERRORS: Family = gauge(
    "holdfast_backup_errors",
    "Entries the newest successful backup could not read (saved without them).",
);
/// Schedule interval per volume/job.
pub const INTERVAL: Family = gauge(
    "holdfast_schedule_interval_seconds",
    "Time between the schedule's last firing and its next one (a day for @daily), seconds.",
);
/// Backend reachability.
pub const REPO_UP: Family = gauge(
    "holdfast_repository_up",
    "1 when the repository's backend answered this agent's last listing, 0 when it did not.",
);
/// Snapshot count.
pub const REPO_SNAPSHOTS: Family = gauge(
    "holdfast_repository_snapshots",
    "Snapshots in the repository (every host).",
);
/// Repository size.
pub const REPO_SIZE: Family = gauge(
    "holdfast_repository_size_bytes",
    "Bytes of the repository's pack files.",
);
/// Last check time.
pub const REPO_LAST_CHECK: Family = gauge(
    "holdfast_repository_last_check_timestamp_seconds",
    "When the maintenance agent last checked the repository (Unix time).",
);
/// Last check result.
pub const REPO_LAST_CHECK_OK: Family = gauge(
    "holdfast_repository_last_check_success",
    "1 when the last check found no error, 0 when it found errors or could not run.",
);
/// Last prune time.
pub const REPO_LAST_PRUNE: Family = gauge(
    "holdfast_repository_last_prune_timestamp_seconds",
    "When the maintenance agent last ran forget and prune (Unix time).",
);
/// Drill last run.
pub const DRILL_LAST_RUN: Family = gauge(
    "holdfast_drill_last_run_timestamp_seconds",
    "When the newest record of the drill was written (Unix time).",
);
/// Drill last success.
pub const DRILL_LAST_SUCCESS: Family = gauge(
    "holdfast_drill_last_success_timestamp_seconds",
    "When the drill last passed (Unix time).",
);
/// Drill last status.
pub const DRILL_LAST_STATUS: Family = gauge(
    "holdfast_drill_last_status",
    "1 when the drill's newest record says pass, 0 when it says fail.",
);
/// Coverage per PVC.
pub const PVC_COVERED: Family = gauge(
    "holdfast_pvc_covered",
    "1 when the PVC is backed up by holdfast, declared covered elsewhere or opted out with a reason; 0 when nothing covers it.",
);
/// Uncovered count.
pub const PVCS_UNCOVERED: Family = gauge(
    "holdfast_pvcs_uncovered",
    "PVCs of the cluster that nothing covers (see holdfast coverage).",
);
/// A running job.
pub const JOB_RUNNING: Family = gauge(
    "holdfast_agent_job_running",
    "1 for each backup this agent is running now.",
);
/// Start of a running job.
pub const JOB_STARTED: Family = gauge(
    "holdfast_agent_job_started_timestamp_seconds",
    "When the running backup started (Unix time).",
);
/// Progress of a running job.
pub const JOB_BYTES_DONE: Family = gauge(
    "holdfast_agent_job_bytes_done",
    "File bytes the running backup has processed so far (read or reused).",
);
/// Expected size of a running job.
pub const JOB_BYTES_EXPECTED: Family = gauge(
    "holdfast_agent_job_bytes_expected",
    "File bytes of the volume's previous snapshot: what the running backup is expected to process.",
);

/// Every family the agent exports, in exposition order.
pub const FAMILIES: &[Family] = &[
    AGENT_INFO,
    AGENT_ELECTED,
    REFRESH,
    LAST_SUCCESS,
    LAST_ATTEMPT,
    LAST_STATUS,
    DURATION,
    BYTES_ADDED,
    FILES,
    ERRORS,
    INTERVAL,
    REPO_UP,
    REPO_SNAPSHOTS,
    REPO_SIZE,
    REPO_LAST_CHECK,
    REPO_LAST_CHECK_OK,
    REPO_LAST_PRUNE,
    DRILL_LAST_RUN,
    DRILL_LAST_SUCCESS,
    DRILL_LAST_STATUS,
    PVC_COVERED,
    PVCS_UNCOVERED,
    JOB_RUNNING,
    JOB_STARTED,
    JOB_BYTES_DONE,
    JOB_BYTES_EXPECTED,
];

/// Which backup a series is about: a volume (`kind=volume`, namespace and PVC) or another
/// job (`kind` dump/objects/etcd/bucket/command, with its `name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct JobKey {
    /// `volume`, `dump`, `objects`, `etcd`, `bucket` or `command`.
    pub kind: String,
    /// Namespace of the PVC or dumped workload (empty when none applies).
    pub namespace: String,
    /// The PVC (empty for other jobs).
    pub pvc: String,
    /// The job's name within its kind (empty for volumes).
    pub name: String,
}

impl JobKey {
    /// The key of volume `namespace/pvc`.
    pub fn volume(namespace: &str, pvc: &str) -> JobKey {
        JobKey {
            kind: "volume".into(),
            namespace: namespace.into(),
            pvc: pvc.into(),
            name: String::new(),
        }
    }

    /// The key of a job that is not a volume.
    pub fn job(kind: &str, namespace: &str, name: &str) -> JobKey {
        JobKey {
            kind: kind.into(),
            namespace: namespace.into(),
            pvc: String::new(),
            name: name.into(),
        }
    }
}

/// What is known about one volume's or job's backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobState {
    /// `live`, `snapshot`, `command` (how the newest snapshot was read), or empty.
    pub method: String,
    /// Newest snapshot time, seconds.
    pub last_success: Option<f64>,
    /// Last attempt's start, seconds.
    pub last_attempt: Option<f64>,
    /// Whether the last attempt succeeded.
    pub last_ok: Option<bool>,
    /// Wall time of the newest successful backup, seconds.
    pub duration_seconds: Option<f64>,
    /// Stored bytes it added.
    pub bytes_added: Option<u64>,
    /// Files in it.
    pub files: Option<u64>,
    /// Unreadable entries.
    pub errors: Option<u64>,
    /// File bytes in it.
    pub bytes_total: Option<u64>,
    /// The schedule's interval, seconds.
    pub interval_seconds: Option<f64>,
}

/// Repository-wide values (from the elected agent).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepositoryState {
    /// Snapshots.
    pub snapshots: u64,
    /// Bytes of pack files.
    pub size_bytes: u64,
    /// Last check, seconds.
    pub last_check: Option<f64>,
    /// Whether it found no error.
    pub last_check_ok: Option<bool>,
    /// Last forget and prune, seconds.
    pub last_prune: Option<f64>,
}

/// One drill's newest records.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrillState {
    /// Newest record, seconds.
    pub last_run: Option<f64>,
    /// Newest passing record, seconds.
    pub last_success: Option<f64>,
    /// Whether the newest record passed.
    pub last_ok: Option<bool>,
}

/// A backup running now, with its live progress counters.
#[derive(Debug, Clone)]
pub struct Running {
    /// Which.
    pub key: JobKey,
    /// Start, seconds.
    pub started: f64,
    /// The engine's counters (shared with the running backup).
    pub progress: Arc<BackupProgress>,
    /// The previous snapshot's file bytes, if known.
    pub bytes_expected: Option<u64>,
}

/// Everything a scrape shows, replaced piece by piece by the agent.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// The agent's node.
    pub node: String,
    /// Whether this agent exports the cluster-wide part.
    pub elected: bool,
    /// When the metrics were last rebuilt, seconds.
    pub refreshed: Option<f64>,
    /// Per volume and job.
    pub jobs: BTreeMap<JobKey, JobState>,
    /// Whether the backend answered the last listing (`None`: not tried yet).
    pub repository_up: Option<bool>,
    /// Repository-wide (elected agent only).
    pub repository: Option<RepositoryState>,
    /// Drills by name (elected agent only).
    pub drills: BTreeMap<String, DrillState>,
    /// The coverage audit (elected agent only).
    pub coverage: Option<CoverageReport>,
    /// Running backups by key.
    pub running: BTreeMap<JobKey, Running>,
}

/// The agent's metrics, shared between the agent (writer) and the HTTP server (reader).
#[derive(Debug, Default)]
pub struct MetricsState {
    values: RwLock<Values>,
}

impl MetricsState {
    /// Empty metrics of the agent on `node`.
    pub fn new(node: &str) -> MetricsState {
        MetricsState {
            values: RwLock::new(Values {
                node: node.to_string(),
                ..Default::default()
            }),
        }
    }

    /// A copy of the current values (for the UI and tests).
    pub fn values(&self) -> Values {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Values> {
        // A panic while writing leaves plain data behind: use it.
        self.values.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the values under the lock.
    pub fn update<T>(&self, f: impl FnOnce(&mut Values) -> T) -> T {
        let mut g = self.values.write().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Adds the outcome of an attempt that just ended (before the next rebuild reads it
    /// back from the repository and the Lease).
    pub fn record_attempt(&self, key: JobKey, attempt: Attempt) {
        self.update(|v| {
            let st = v.jobs.entry(key).or_default();
            apply_attempt(st, &attempt);
        });
    }

    /// Marks a backup as running; the returned guard removes it when dropped.
    pub fn start(self: &Arc<Self>, key: JobKey, progress: Arc<BackupProgress>) -> RunningGuard {
        let started = now_s();
        self.update(|v| {
            let bytes_expected = v.jobs.get(&key).and_then(|s| s.bytes_total);
            v.running.insert(
                key.clone(),
                Running {
                    key: key.clone(),
                    started,
                    progress,
                    bytes_expected,
                },
            );
        });
        RunningGuard {
            state: self.clone(),
            key,
        }
    }

    /// The exposition text (format 0.0.4).
    pub fn render(&self) -> String {
        render(&self.read())
    }
}

/// Removes a running backup from the metrics when dropped.
#[derive(Debug)]
pub struct RunningGuard {
    state: Arc<MetricsState>,
    key: JobKey,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let key = self.key.clone();
        self.state.update(|v| v.running.remove(&key));
    }
}

/// One attempt's outcome, as a result reports it.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// Start, seconds.
    pub started: f64,
    /// Whether it saved a snapshot.
    pub ok: bool,
    /// The saved snapshot's time, seconds.
    pub snapshot_time: Option<f64>,
    /// `live`, `snapshot`, `command`.
    pub method: Option<String>,
    /// The saved snapshot's counters.
    pub summary: Option<holdfast_repo::snapshot::Summary>,
    /// The schedule's interval, seconds.
    pub interval_seconds: Option<f64>,
}

fn apply_attempt(st: &mut JobState, a: &Attempt) {
    if st.last_attempt.is_none_or(|t| a.started >= t) {
        st.last_attempt = Some(a.started);
        st.last_ok = Some(a.ok);
    }
    if let Some(m) = &a.method {
        st.method = m.clone();
    }
    if a.interval_seconds.is_some() {
        st.interval_seconds = a.interval_seconds;
    }
    if a.ok {
        let t = a.snapshot_time.unwrap_or(a.started);
        if st.last_success.is_none_or(|s| t >= s) {
            st.last_success = Some(t);
            if let Some(sm) = &a.summary {
                set_summary(st, sm);
            }
        }
    }
}

/// Sets the newest snapshot's counters.
pub fn set_summary(st: &mut JobState, sm: &holdfast_repo::snapshot::Summary) {
    st.duration_seconds = Some(sm.duration_ns as f64 / 1e9);
    st.bytes_added = Some(sm.bytes_added_stored);
    st.files = Some(sm.files_new + sm.files_changed + sm.files_unchanged);
    st.errors = Some(sm.errors);
    st.bytes_total = Some(sm.bytes_total);
}

/// Now, seconds since the epoch.
pub fn now_s() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// Escapes a label value: backslash, double quote and newline (format 0.0.4).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: finite numbers as Rust writes them (integers without a fraction),
/// the special values as Prometheus spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Samples collected per family before writing.
#[derive(Default)]
struct Out {
    samples: BTreeMap<&'static str, String>,
}

impl Out {
    fn add(&mut self, f: Family, labels: &[(&str, &str)], v: f64) {
        let s = self.samples.entry(f.name).or_default();
        s.push_str(f.name);
        if !labels.is_empty() {
            s.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{k}=\"{}\"", escape_label(val));
            }
            s.push('}');
        }
        let _ = writeln!(s, " {}", number(v));
    }
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// Writes `v` in the text exposition format: every family's HELP and TYPE, then its
/// samples (families without samples have only the two comment lines).
pub fn render(v: &Values) -> String {
    let mut o = Out::default();
    o.add(
        AGENT_INFO,
        &[("version", env!("CARGO_PKG_VERSION")), ("node", &v.node)],
        1.0,
    );
    o.add(AGENT_ELECTED, &[], b(v.elected));
    if let Some(t) = v.refreshed {
        o.add(REFRESH, &[], t);
    }
    for (k, st) in &v.jobs {
        let l = [
            ("kind", k.kind.as_str()),
            ("namespace", k.namespace.as_str()),
            ("pvc", k.pvc.as_str()),
            ("name", k.name.as_str()),
            ("method", st.method.as_str()),
        ];
        let mut opt = |f: Family, x: Option<f64>| {
            if let Some(x) = x {
                o.add(f, &l, x);
            }
        };
        opt(LAST_SUCCESS, st.last_success);
        opt(LAST_ATTEMPT, st.last_attempt);
        opt(LAST_STATUS, st.last_ok.map(b));
        opt(DURATION, st.duration_seconds);
        opt(BYTES_ADDED, st.bytes_added.map(|x| x as f64));
        opt(FILES, st.files.map(|x| x as f64));
        opt(ERRORS, st.errors.map(|x| x as f64));
        opt(INTERVAL, st.interval_seconds);
    }
    if let Some(up) = v.repository_up {
        o.add(REPO_UP, &[], b(up));
    }
    if let Some(r) = &v.repository {
        o.add(REPO_SNAPSHOTS, &[], r.snapshots as f64);
        o.add(REPO_SIZE, &[], r.size_bytes as f64);
        if let Some(t) = r.last_check {
            o.add(REPO_LAST_CHECK, &[], t);
        }
        if let Some(ok) = r.last_check_ok {
            o.add(REPO_LAST_CHECK_OK, &[], b(ok));
        }
        if let Some(t) = r.last_prune {
            o.add(REPO_LAST_PRUNE, &[], t);
        }
    }
    for (name, d) in &v.drills {
        let l = [("drill", name.as_str())];
        if let Some(t) = d.last_run {
            o.add(DRILL_LAST_RUN, &l, t);
        }
        if let Some(t) = d.last_success {
            o.add(DRILL_LAST_SUCCESS, &l, t);
        }
        if let Some(ok) = d.last_ok {
            o.add(DRILL_LAST_STATUS, &l, b(ok));
        }
    }
    if let Some(c) = &v.coverage {
        for p in &c.pvcs {
            o.add(
                PVC_COVERED,
                &[
                    ("namespace", &p.namespace),
                    ("pvc", &p.pvc),
                    ("method", &p.method),
                    ("status", p.status.as_str()),
                ],
                b(p.status.is_covered()),
            );
        }
        o.add(PVCS_UNCOVERED, &[], c.uncovered as f64);
    }
    for (k, r) in &v.running {
        let l = [
            ("kind", k.kind.as_str()),
            ("namespace", k.namespace.as_str()),
            ("pvc", k.pvc.as_str()),
            ("name", k.name.as_str()),
        ];
        o.add(JOB_RUNNING, &l, 1.0);
        o.add(JOB_STARTED, &l, r.started);
        o.add(
            JOB_BYTES_DONE,
            &l,
            r.progress.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
        if let Some(e) = r.bytes_expected {
            o.add(JOB_BYTES_EXPECTED, &l, e as f64);
        }
    }
    let mut text = String::with_capacity(o.samples.values().map(String::len).sum::<usize>() + 8192);
    for f in FAMILIES {
        let _ = writeln!(text, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(text, "# TYPE {} {}", f.name, f.kind);
        if let Some(s) = o.samples.get(f.name) {
            text.push_str(s);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn numbers_are_prometheus_numbers() {
        assert_eq!(number(1.7e9), "1700000000");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[test]
    fn every_family_is_declared_once_and_samples_follow_their_type() {
        let mut v = Values {
            node: "n\"1".into(),
            ..Default::default()
        };
        v.jobs.insert(
            JobKey::volume("app", "db"),
            JobState {
                method: "live".into(),
                last_success: Some(100.0),
                last_attempt: Some(200.0),
                last_ok: Some(false),
                ..Default::default()
            },
        );
        let text = render(&v);
        for f in FAMILIES {
            assert_eq!(
                text.matches(&format!("# TYPE {} gauge\n", f.name)).count(),
                1,
                "{}",
                f.name
            );
        }
        assert!(text.contains(
            "holdfast_backup_last_status{kind=\"volume\",namespace=\"app\",pvc=\"db\",name=\"\",method=\"live\"} 0\n"
        ));
        assert!(text.contains("node=\"n\\\"1\""));
        let names: std::collections::HashSet<_> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FAMILIES.len());
    }

    #[test]
    fn a_newer_failure_keeps_the_older_success() {
        let mut st = JobState::default();
        apply_attempt(
            &mut st,
            &Attempt {
                started: 10.0,
                ok: true,
                snapshot_time: Some(10.5),
                ..Default::default()
            },
        );
        apply_attempt(
            &mut st,
            &Attempt {
                started: 20.0,
                ok: false,
                ..Default::default()
            },
        );
        assert_eq!(st.last_success, Some(10.5));
        assert_eq!(st.last_attempt, Some(20.0));
        assert_eq!(st.last_ok, Some(false));
    }
}
