//! The coverage audit: for every PVC of the cluster, how it is backed up, so that nothing
//! is missed silently (`holdfast coverage`, the metrics `holdfast_pvc_covered` and
//! `holdfast_pvcs_uncovered`, the UI's coverage page).
//!
//! A PVC is, in this order:
//! - backed up by holdfast: the agent's own rules select it ([`selection::resolve`] on its
//!   annotations and the configuration, the namespace filter, and for PVCs no pod mounts
//!   whether a VolumeSnapshot can be read, as the maintenance agent decides); its newest
//!   snapshot's age against its schedule gives `ok`, `stale` or `never`;
//! - `external`: `holdfast.io/covered-by: "<what>"` says something else backs it up. When
//!   `<what>` is a holdfast job (a configured command of that name, or a
//!   `holdfast.io/backup-command` dump of a workload that mounts the PVC), that job's own
//!   freshness is checked and the status is `ok`, `stale` or `never` with method
//!   `external`;
//! - `opted-out`: its schedule is empty (or its namespace is not the agent's) and
//!   `holdfast.io/reason` says why; an opt-out without a reason is `uncovered`, with a
//!   message asking for one;
//! - `uncovered`: nothing of the above.
//!
//! Stale means older than 1.1 × the schedule's interval + 2 hours: the threshold of the
//! HoldfastBackupStale alert in deploy/prometheus/holdfast-rules.yaml.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use serde::{Deserialize, Serialize};

use crate::commands::{self, Placement};
use crate::config::AgentConfig;
use crate::discovery;
use crate::dump;
use crate::error::Result;
use crate::kube_api::{self, Inventory};
use crate::repo::{Newest, RepoView};
use crate::schedule::Schedule;
use crate::selection::{self, Selection, SnapshotSource};
use crate::snapshot_api::{self, Class};
use crate::temporary;

/// Annotation: what else backs the PVC up (e.g. `postgres dump`).
pub const COVERED_BY: &str = "holdfast.io/covered-by";
/// Annotation: why the PVC is not backed up (required with an empty schedule).
pub const REASON: &str = "holdfast.io/reason";

/// Age allowed beyond the schedule's interval before a backup counts as stale: 10 % of
/// the interval plus this.
pub const STALE_GRACE_SECONDS: i64 = 2 * 3600;

/// How a PVC is covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoverageStatus {
    /// Backed up, and the newest backup is within its schedule.
    Ok,
    /// Backed up, but the newest backup is older than the schedule allows.
    Stale,
    /// Selected for backup, but there is no backup at all.
    Never,
    /// Declared backed up by something else (not verifiable by holdfast).
    External,
    /// Deliberately not backed up, with a reason.
    OptedOut,
    /// Nothing backs it up.
    Uncovered,
}

impl CoverageStatus {
    /// The serialized name (`ok`, `stale`, `never`, `external`, `opted-out`, `uncovered`).
    pub fn as_str(self) -> &'static str {
        match self {
            CoverageStatus::Ok => "ok",
            CoverageStatus::Stale => "stale",
            CoverageStatus::Never => "never",
            CoverageStatus::External => "external",
            CoverageStatus::OptedOut => "opted-out",
            CoverageStatus::Uncovered => "uncovered",
        }
    }

    /// Whether something is meant to back the PVC up (everything but `uncovered`).
    pub fn is_covered(self) -> bool {
        self != CoverageStatus::Uncovered
    }

    /// Whether it needs someone's attention (`stale`, `never`, `uncovered`): what makes
    /// `holdfast coverage` exit 3.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            CoverageStatus::Stale | CoverageStatus::Never | CoverageStatus::Uncovered
        )
    }
}

/// A snapshot named in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// Its time (RFC 3339, UTC).
    pub time: String,
    /// Its short ID (empty for a command job, whose snapshot is not tracked by ID).
    pub id: String,
}

/// One PVC's coverage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PvcCoverage {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub pvc: String,
    /// How it is covered.
    pub status: CoverageStatus,
    /// `live`/`snapshot`/`holdfast` (backed up by holdfast: the newest snapshot's read
    /// method), `external`, `opted-out` or `none`.
    pub method: String,
    /// A sentence: the covering job, the opt-out reason, or what to do.
    pub detail: String,
    /// The newest backup, when holdfast knows it.
    pub newest_snapshot: Option<SnapshotRef>,
    /// Its age, seconds.
    pub age_seconds: Option<i64>,
    /// The schedule's interval, seconds.
    pub schedule_interval_seconds: Option<i64>,
}

/// The audit of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageReport {
    /// When it was made (RFC 3339, UTC).
    pub generated_at: String,
    /// The cluster's name (the snapshots' host).
    pub cluster: String,
    /// Every PVC, by namespace and name.
    pub pvcs: Vec<PvcCoverage>,
    /// PVCs per status.
    pub counts: BTreeMap<String, usize>,
    /// PVCs that nothing covers.
    pub uncovered: usize,
    /// PVCs needing attention (stale, never, uncovered).
    pub problems: usize,
}

impl CoverageReport {
    /// `holdfast coverage`'s exit code: 0 when everything is covered and fresh, 3 when
    /// something is uncovered, stale or never backed up.
    pub fn exit_code(&self) -> i32 {
        if self.problems == 0 {
            0
        } else {
            3
        }
    }
}

/// What the audit reads: the cluster's objects, the configuration, the repository's
/// newest snapshots and the command jobs' Lease annotations.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// Every pod, PVC, PV and namespace of the cluster.
    pub inventory: &'a Inventory,
    /// The agent's configuration.
    pub config: &'a AgentConfig,
    /// The VolumeSnapshotClasses (`None`: no snapshot API).
    pub classes: Option<&'a [Class]>,
    /// The repository's newest snapshots.
    pub view: &'a RepoView,
    /// The annotations of each elected command job's Lease, by command name.
    pub command_leases: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// The time to measure ages at.
    pub now: DateTime<Utc>,
    /// The cluster's name.
    pub cluster: &'a str,
}

/// Whether a PVC that no pod mounts is read from a VolumeSnapshot by the agent: snapshots
/// of unmounted PVCs are on, the selection allows a snapshot, and a class serves its CSI
/// driver. Shared by the maintenance agent (which warns about the others) and the audit.
pub fn unmounted_is_readable(
    config: &AgentConfig,
    sel: &Selection,
    classes: Option<&[Class]>,
    driver: Option<&str>,
) -> bool {
    config.snapshots.unmounted
        && sel.source != SnapshotSource::Live
        && match (classes, driver) {
            (Some(cl), Some(d)) => matches!(
                snapshot_api::choose_class(cl, d, sel.snapshot_class.as_deref()),
                Ok(Some(_))
            ),
            _ => false,
        }
}

/// The CSI driver of a PVC's bound PV.
pub fn driver_of(pvc: &PersistentVolumeClaim, inv: &Inventory) -> Option<String> {
    let pv = pvc.spec.as_ref()?.volume_name.as_deref()?;
    inv.pvs
        .iter()
        .find(|v| v.metadata.name.as_deref() == Some(pv))?
        .spec
        .as_ref()?
        .csi
        .as_ref()
        .map(|c| c.driver.clone())
}

/// Freshness of a backup whose newest copy is at `newest` under a schedule of `interval`.
fn freshness(
    newest: Option<DateTime<Utc>>,
    interval: Option<chrono::Duration>,
    now: DateTime<Utc>,
) -> (CoverageStatus, Option<i64>) {
    let Some(t) = newest else {
        return (CoverageStatus::Never, None);
    };
    let age = (now - t).num_seconds().max(0);
    let allowed = interval
        .map(|i| i.num_seconds() + i.num_seconds() / 10 + STALE_GRACE_SECONDS)
        .unwrap_or(i64::MAX);
    let status = if age > allowed {
        CoverageStatus::Stale
    } else {
        CoverageStatus::Ok
    };
    (status, Some(age))
}

fn time_of(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

fn snapshot_ref(n: &Newest) -> SnapshotRef {
    SnapshotRef {
        time: time_of(n.time_ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        id: n.id.clone(),
    }
}

fn claims_of(p: &Pod) -> impl Iterator<Item = &str> {
    p.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// The audit (a pure function of its sources; sorted by namespace and PVC).
pub fn audit(src: &Sources) -> CoverageReport {
    let inv = src.inventory;
    let now = src.now;
    let empty = BTreeMap::new();
    let ns_ann: HashMap<&str, &BTreeMap<String, String>> = inv
        .namespaces
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.as_deref()?,
                n.metadata.annotations.as_ref().unwrap_or(&empty),
            ))
        })
        .collect();
    let unmounted = discovery::unmounted(&inv.pods, &inv.pvcs);
    let (dumps, _) = dump::targets(
        &inv.pods,
        &inv.namespaces,
        &src.config.namespaces,
        &src.config.defaults.schedule,
    );
    let mut out = Vec::new();
    for pvc in &inv.pvcs {
        let (Some(ns), Some(name)) = (&pvc.metadata.namespace, &pvc.metadata.name) else {
            continue;
        };
        if temporary::is_temporary(&pvc.metadata) {
            continue;
        }
        let key = format!("{ns}/{name}");
        let anns = pvc.metadata.annotations.as_ref().unwrap_or(&empty);
        let nsa = ns_ann.get(ns.as_str()).copied().unwrap_or(&empty);
        let mut row = PvcCoverage {
            namespace: ns.clone(),
            pvc: name.clone(),
            status: CoverageStatus::Uncovered,
            method: "none".into(),
            detail: String::new(),
            newest_snapshot: None,
            age_seconds: None,
            schedule_interval_seconds: None,
        };
        // 1. The agent's own rules.
        let mut opt_out = None;
        if !src.config.namespaces.allows(ns) {
            opt_out = Some(
                "its namespace is excluded by the agent's configuration (namespaces)".to_string(),
            );
        } else {
            match selection::resolve(&key, ns, anns, nsa, &src.config.defaults) {
                Err(e) => {
                    row.method = "holdfast".into();
                    row.detail = format!("the agent cannot back it up: {e}");
                    out.push(row);
                    continue;
                }
                Ok(sel) => match &sel.schedule {
                    None => {
                        opt_out = Some(format!(
                            "{} is empty (on the {})",
                            selection::SCHEDULE,
                            origin_name(sel.schedule_origin)
                        ))
                    }
                    Some(sched) => {
                        let mounted = unmounted.binary_search(&key).is_err();
                        let readable = mounted
                            || unmounted_is_readable(
                                src.config,
                                &sel,
                                src.classes,
                                driver_of(pvc, inv).as_deref(),
                            );
                        if readable {
                            holdfast_row(&mut row, src.view.volumes.get(&key), sched, now);
                            if let Some(by) = anns.get(COVERED_BY).filter(|v| !v.is_empty()) {
                                row.detail.push_str(&format!("; also covered by {by}"));
                            }
                            out.push(row);
                            continue;
                        }
                        if anns.get(COVERED_BY).is_none_or(|v| v.is_empty()) {
                            row.method = "holdfast".into();
                            row.detail = "selected, but no running pod mounts it and it cannot \
                                be read from a VolumeSnapshot (no snapshot API, no class for its \
                                driver, snapshots.unmounted off, or snapshot-source live)"
                                .into();
                            out.push(row);
                            continue;
                        }
                    }
                },
            }
        }
        // 2. Declared covered by something else.
        if let Some(by) = anns.get(COVERED_BY).filter(|v| !v.trim().is_empty()) {
            row.method = "external".into();
            external_row(&mut row, by, pvc, src, &dumps);
            out.push(row);
            continue;
        }
        // 3. Opted out, with or without a reason.
        let why = opt_out.unwrap_or_default();
        let reason = anns
            .get(REASON)
            .or_else(|| nsa.get(REASON))
            .map(|r| r.trim())
            .filter(|r| !r.is_empty());
        match reason {
            Some(r) => {
                row.status = CoverageStatus::OptedOut;
                row.method = "opted-out".into();
                row.detail = format!("{r} ({why})");
            }
            None => {
                row.detail = format!(
                    "not backed up: {why}, and no {REASON} says why: add {REASON}, or \
                     {COVERED_BY} if something else backs it up, or a schedule"
                );
            }
        }
        out.push(row);
    }
    out.sort_by(|a, b| (&a.namespace, &a.pvc).cmp(&(&b.namespace, &b.pvc)));
    let mut counts = BTreeMap::new();
    for r in &out {
        *counts.entry(r.status.as_str().to_string()).or_insert(0) += 1;
    }
    CoverageReport {
        generated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cluster: src.cluster.to_string(),
        uncovered: out.iter().filter(|r| !r.status.is_covered()).count(),
        problems: out.iter().filter(|r| r.status.is_problem()).count(),
        counts,
        pvcs: out,
    }
}

fn origin_name(o: selection::Origin) -> &'static str {
    match o {
        selection::Origin::Pvc => "PVC",
        selection::Origin::Namespace => "namespace",
        selection::Origin::Config => "agent's configuration (defaults.schedule)",
    }
}

fn holdfast_row(
    row: &mut PvcCoverage,
    newest: Option<&Newest>,
    sched: &Schedule,
    now: DateTime<Utc>,
) {
    let interval = sched.period(now);
    row.schedule_interval_seconds = interval.map(|i| i.num_seconds());
    let (status, age) = freshness(newest.map(|n| time_of(n.time_ns)), interval, now);
    row.status = status;
    row.age_seconds = age;
    row.newest_snapshot = newest.map(snapshot_ref);
    row.method = newest
        .and_then(|n| n.method.clone())
        .unwrap_or_else(|| "holdfast".into());
    row.detail = match status {
        CoverageStatus::Never => format!("backed up by holdfast ({sched}), but it has no snapshot yet"),
        CoverageStatus::Stale => format!(
            "backed up by holdfast ({sched}), but its newest snapshot is older than its schedule allows: see the agent's Events on the PVC"
        ),
        _ => format!("backed up by holdfast ({sched})"),
    };
}

/// A PVC declared covered by `by`: checked when `by` names a holdfast job.
fn external_row(
    row: &mut PvcCoverage,
    by: &str,
    pvc: &PersistentVolumeClaim,
    src: &Sources,
    dumps: &[dump::DumpTarget],
) {
    let now = src.now;
    let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
    let name = pvc.metadata.name.as_deref().unwrap_or_default();
    // A configured command of that name.
    if let Some(job) = src
        .config
        .commands
        .iter()
        .find(|c| c.name == by.trim() && c.placement == Placement::Elected)
    {
        let interval = job.schedule().ok().and_then(|s| s.period(now));
        let anns = src.command_leases.get(&job.name);
        let last = anns
            .and_then(|a| a.get(commands::LAST_SUCCESS))
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc));
        let (status, age) = freshness(last, interval, now);
        row.status = status;
        row.age_seconds = age;
        row.schedule_interval_seconds = interval.map(|i| i.num_seconds());
        row.newest_snapshot = last.map(|t| SnapshotRef {
            time: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            id: String::new(),
        });
        row.detail = format!("covered by the holdfast command {by:?}");
        return;
    }
    // A dump of a workload whose pods mount this PVC.
    let owners_mounting: Vec<(String, String)> = src
        .inventory
        .pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .filter(|p| claims_of(p).any(|c| c == name))
        .map(dump::owner_of)
        .collect();
    if let Some(t) = dumps.iter().find(|t| {
        t.namespace == ns
            && owners_mounting
                .iter()
                .any(|(k, n)| *k == t.owner_kind && *n == t.owner_name)
    }) {
        let newest = src
            .view
            .jobs
            .get(&format!("dump/{}/{}", t.namespace, t.owner()));
        let interval = t
            .parsed_schedule()
            .ok()
            .flatten()
            .and_then(|s| s.period(now));
        let (status, age) = freshness(newest.map(|n| time_of(n.time_ns)), interval, now);
        row.status = status;
        row.age_seconds = age;
        row.schedule_interval_seconds = interval.map(|i| i.num_seconds());
        row.newest_snapshot = newest.map(snapshot_ref);
        row.detail = format!("covered by {by} (the holdfast dump {})", t.key());
        return;
    }
    row.status = CoverageStatus::External;
    row.detail = format!("covered by {by} (declared; not a holdfast job, so not checked)");
}

/// Reads what the audit needs from the cluster: every pod, PVC, PV and namespace, the
/// VolumeSnapshotClasses, and the elected command jobs' Lease annotations (in
/// `lease_namespace`).
pub async fn read_cluster(
    client: &Client,
    config: &AgentConfig,
    lease_namespace: &str,
) -> Result<(
    Inventory,
    Option<Vec<Class>>,
    BTreeMap<String, BTreeMap<String, String>>,
)> {
    let inv = kube_api::inventory(client, None).await?;
    let classes = snapshot_api::classes(client).await?;
    let mut leases = BTreeMap::new();
    if !config.commands.is_empty() {
        let api = Api::<Lease>::namespaced(client.clone(), lease_namespace);
        let lp = ListParams::default();
        let all = kube_api::retry("list the agent's Leases", || api.list(&lp))
            .await?
            .items;
        for job in config
            .commands
            .iter()
            .filter(|c| c.placement == Placement::Elected)
        {
            let lease_name = job.lease_name("");
            if let Some(l) = all
                .iter()
                .find(|l| l.metadata.name.as_deref() == Some(lease_name.as_str()))
            {
                leases.insert(
                    job.name.clone(),
                    l.metadata.annotations.clone().unwrap_or_default(),
                );
            }
        }
    }
    Ok((inv, classes, leases))
}

/// `holdfast coverage`: connects as `holdfast agent` does (KUBECONFIG or the in-cluster
/// service account), opens the repository, and audits the cluster.
pub fn run(
    args: &crate::args::CoverageArgs,
    repo: crate::repo::RepoSettings,
) -> Result<CoverageReport> {
    use crate::error::AgentError;
    let config = AgentConfig::load_or_default(args.config.as_deref())?;
    let location = repo
        .location
        .clone()
        .or_else(|| config.repository.clone())
        .ok_or_else(|| {
            AgentError::Usage(
                "no repository: -r, HOLDFAST_REPOSITORY, or `repository` in --config".into(),
            )
        })?;
    let cluster = args
        .cluster_name
        .clone()
        .or_else(|| config.cluster_name.clone())
        .unwrap_or_else(|| "kubernetes".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let client = Client::try_default().await.map_err(|e| AgentError::Kube {
            what: "connect (KUBECONFIG, ~/.kube/config or the in-cluster service account)".into(),
            source: e,
        })?;
        let cl = cluster.clone();
        let view = tokio::task::spawn_blocking(move || {
            crate::repo::Repo::open(&location, &repo)?.view(&cl, false)
        })
        .await
        .map_err(|e| AgentError::Usage(format!("repository task failed: {e}")))??;
        audit_cluster(&client, &config, &args.lease_namespace, &view, &cluster).await
    })
}

/// Reads the cluster ([`read_cluster`]) and audits it against `view` now: `holdfast
/// coverage` and an agent that is not elected (the web UI's coverage page).
pub async fn audit_cluster(
    client: &Client,
    config: &AgentConfig,
    lease_namespace: &str,
    view: &RepoView,
    cluster: &str,
) -> Result<CoverageReport> {
    let (inv, classes, leases) = read_cluster(client, config, lease_namespace).await?;
    Ok(audit(&Sources {
        inventory: &inv,
        config,
        classes: classes.as_deref(),
        view,
        command_leases: &leases,
        now: Utc::now(),
        cluster,
    }))
}

/// A human duration: `3d4h`, `5h12m`, `42m`, `17s`.
pub fn short_age(s: i64) -> String {
    let (d, h, m) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

/// The report as a table (namespace, PVC, how, status, newest, age, detail) and a summary
/// line, for `holdfast coverage`.
pub fn table(r: &CoverageReport) -> String {
    let rows: Vec<[String; 7]> = r
        .pvcs
        .iter()
        .map(|p| {
            [
                p.namespace.clone(),
                p.pvc.clone(),
                p.method.clone(),
                p.status.as_str().to_string(),
                p.newest_snapshot
                    .as_ref()
                    .map(|s| {
                        if s.id.is_empty() {
                            s.time.clone()
                        } else {
                            format!("{} {}", s.id, s.time)
                        }
                    })
                    .unwrap_or_else(|| "-".into()),
                p.age_seconds.map(short_age).unwrap_or_else(|| "-".into()),
                p.detail.clone(),
            ]
        })
        .collect();
    let head = [
        "NAMESPACE",
        "PVC",
        "HOW",
        "STATUS",
        "NEWEST",
        "AGE",
        "DETAIL",
    ];
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate().take(6) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            if i < 6 {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            } else {
                out.push_str(c);
            }
        }
        out.push('\n');
    };
    line(&head, &mut out);
    for row in &rows {
        line(
            &row.iter().map(String::as_str).collect::<Vec<_>>(),
            &mut out,
        );
    }
    let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    out.push_str(&format!(
        "{} PVCs: {}; {}\n",
        r.pvcs.len(),
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts.join(", ")
        },
        if r.problems == 0 {
            "everything is covered and fresh".to_string()
        } else {
            format!("{} need attention", r.problems)
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_ten_percent_and_two_hours_past_the_interval() {
        let now = Utc::now();
        let day = Some(chrono::Duration::days(1));
        let at = |h: i64| Some(now - chrono::Duration::hours(h));
        assert_eq!(freshness(at(26), day, now).0, CoverageStatus::Ok);
        assert_eq!(freshness(at(29), day, now).0, CoverageStatus::Stale);
        assert_eq!(freshness(None, day, now).0, CoverageStatus::Never);
    }

    #[test]
    fn statuses_serialize_as_documented() {
        for s in [
            CoverageStatus::Ok,
            CoverageStatus::Stale,
            CoverageStatus::Never,
            CoverageStatus::External,
            CoverageStatus::OptedOut,
            CoverageStatus::Uncovered,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        assert!(!CoverageStatus::OptedOut.is_problem());
        assert!(CoverageStatus::Never.is_problem());
    }
}
