//! The cluster's maintenance, done by the one agent holding the maintenance Lease: forget
//! each PVC's snapshots by its retention, prune (safe beside running backups, SPEC.md §12),
//! check a share of the data on its own schedule, and report PVCs no pod mounts. State
//! that must outlive the agent (when maintenance and the last check ran) is kept in the
//! Lease's annotations, not in the agent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::discovery;
use crate::error::Result;
use crate::kube_api;
use crate::lease::{Claim, MAINTENANCE};
use crate::runner::Agent;
use crate::schedule::Schedule;
use crate::selection;

/// Annotation on the maintenance Lease: when forget and prune last ran (RFC 3339).
pub const LAST_MAINTENANCE: &str = "holdfast.io/last-maintenance";
/// Annotation on the maintenance Lease: when the last check ran (RFC 3339).
pub const LAST_CHECK: &str = "holdfast.io/last-check";
/// Annotation on the maintenance Lease: the last check's outcome, `ok` or
/// `errors: <count>: <first>` or `failed: <why>` (for the metrics).
pub const LAST_CHECK_RESULT: &str = "holdfast.io/last-check-result";

/// One volume's forget.
#[derive(Debug, Clone, Serialize)]
pub struct Forgotten {
    /// `namespace/pvc`.
    pub volume: String,
    /// Snapshots kept.
    pub kept: usize,
    /// Snapshots removed.
    pub removed: usize,
}

/// What a check found, in short.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    /// Whether no error was found.
    pub ok: bool,
    /// The subset read.
    pub subset: String,
    /// The errors, one line each.
    pub errors: Vec<String>,
}

/// What maintenance did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintenanceReport {
    /// Forgets, per volume that had something to decide.
    pub forgotten: Vec<Forgotten>,
    /// Volumes whose forget failed, with the reason.
    pub errors: Vec<String>,
    /// PVCs that no running pod mounts, so not backed up (`namespace/pvc`).
    pub unmounted: Vec<String>,
    /// Temporary objects a day old of any node (one whose agent is gone), deleted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub swept: Vec<String>,
    /// The prune's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<holdfast_engine::prune::PruneReport>,
    /// The check, when one was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSummary>,
}

fn parse_time(v: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Runs maintenance if this agent wins the Lease and the last maintenance (by any agent) is
/// at least `maintenance.intervalHours` old; `None` when another agent has it or it is not
/// time yet. So of the agents of a cluster, started at once or one after another, one does
/// it.
pub async fn run(agent: &Agent) -> Result<Option<MaintenanceReport>> {
    let s = agent.settings().clone();
    let leases = agent.leases();
    let anns = BTreeMap::from([("holdfast.io/role".to_string(), "maintenance".to_string())]);
    let mut held = match kube_api::retry("take the maintenance Lease", || {
        leases.try_acquire(MAINTENANCE, &anns)
    })
    .await?
    {
        Claim::Acquired(h) => *h,
        Claim::Busy { holder } => {
            tracing::debug!(%holder, "maintenance is another agent's");
            return Ok(None);
        }
    };
    let now = Utc::now();
    let last = parse_time(held.annotation(LAST_MAINTENANCE));
    let interval = chrono::Duration::hours(i64::from(s.config.maintenance.interval_hours));
    if last.is_some_and(|t| now - t < interval) {
        leases.release(held).await;
        return Ok(None);
    }
    let outcome = maintain(agent, &mut held, now).await;
    leases.release(held).await;
    outcome.map(Some)
}

async fn maintain(
    agent: &Agent,
    held: &mut crate::lease::Held,
    now: DateTime<Utc>,
) -> Result<MaintenanceReport> {
    let s = agent.settings().clone();
    let leases = agent.leases();
    let mut report = MaintenanceReport::default();
    let inv = kube_api::inventory(agent.client(), None).await?;
    let ns_ann: BTreeMap<String, BTreeMap<String, String>> = inv
        .namespaces
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.clone()?,
                n.metadata.annotations.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let empty = BTreeMap::new();

    // Leftovers of agents that are gone (a removed node): each agent sweeps only its own
    // node at start, so the cluster's day-old temporary objects are swept here.
    let day_ago = now - chrono::Duration::hours(24);
    match crate::temporary::sweep_matching(
        agent.client(),
        &crate::temporary::any_node_selector(),
        day_ago,
    )
    .await
    {
        Ok(s) => report.swept = s.deleted,
        Err(e) => report
            .errors
            .push(format!("sweeping old temporary objects: {e}")),
    }

    // PVCs no pod mounts: backed up from snapshots where a class serves their driver (by
    // the agent holding the unmounted-PVC Lease); the others are reported.
    let unmounted = discovery::unmounted(&inv.pods, &inv.pvcs);
    let classes = crate::snapshot_api::classes(agent.client()).await?;
    for pvc in &inv.pvcs {
        let (Some(ns), Some(name)) = (&pvc.metadata.namespace, &pvc.metadata.name) else {
            continue;
        };
        let key = format!("{ns}/{name}");
        if !s.config.namespaces.allows(ns) {
            continue;
        }
        let sel = selection::resolve(
            &key,
            ns,
            pvc.metadata.annotations.as_ref().unwrap_or(&empty),
            ns_ann.get(ns).unwrap_or(&empty),
            &s.config.defaults,
        );
        let Ok(sel) = sel else { continue };
        let from_snapshot = crate::coverage::unmounted_is_readable(
            &s.config,
            &sel,
            classes.as_deref(),
            crate::coverage::driver_of(pvc, &inv).as_deref(),
        );
        if sel.schedule.is_some() && unmounted.contains(&key) && !from_snapshot {
            tracing::warn!(volume = %key, "no running pod mounts this PVC and it cannot be read from a snapshot: it is not backed up");
            agent
                .warn_pvc(
                    pvc,
                    "NotBackedUp",
                    "no running pod mounts this PVC, and it cannot be read from a VolumeSnapshot \
                     (no snapshot API, no VolumeSnapshotClass for its driver, or \
                     snapshots.unmounted is off): it is not backed up"
                        .into(),
                )
                .await;
            report.unmounted.push(key.clone());
        }
        let Some(policy) = sel.keep else { continue };
        let (cluster, ns2, name2) = (s.cluster.clone(), ns.clone(), name.clone());
        match agent
            .with_maintenance_repo(move |r| r.forget_volume(&cluster, &ns2, &name2, &policy))
            .await
        {
            Ok(f) => {
                let kept: usize = f.groups.iter().map(|g| g.keep.len()).sum();
                if kept + f.removed.len() > 0 {
                    report.forgotten.push(Forgotten {
                        volume: key.clone(),
                        kept,
                        removed: f.removed.len(),
                    });
                }
                report
                    .errors
                    .extend(f.errors.iter().map(|e| format!("{key}: {e}")));
            }
            Err(e) => report.errors.push(format!("{key}: {e}")),
        }
    }
    let _ = leases.renew(held).await;

    if s.config.maintenance.prune {
        let host = s.identity.clone();
        match agent.with_maintenance_repo(move |r| r.prune(&host)).await {
            Ok(p) => report.prune = Some(p),
            Err(e) => report.errors.push(format!("prune: {e}")),
        }
    }
    let _ = leases.renew(held).await;

    let check_schedule = s.config.maintenance.check_schedule.trim().to_string();
    if !check_schedule.is_empty() {
        match Schedule::parse(&check_schedule, "holdfast/check") {
            Ok(sched) if sched.is_due(parse_time(held.annotation(LAST_CHECK)), now) => {
                let subset = s.config.maintenance.check_read_data_subset.clone();
                let sub2 = subset.clone();
                match agent.with_repo(move |r| r.check(&sub2)).await {
                    Ok(c) => {
                        let errors: Vec<String> = c
                            .errors
                            .iter()
                            .map(|p| {
                                format!("{} {}: {}", p.kind, p.id.short(), p.details.join("; "))
                            })
                            .collect();
                        if errors.is_empty() {
                            tracing::info!(%subset, "check found no errors");
                        } else {
                            tracing::error!(%subset, errors = errors.len(), first = %errors[0], "check found errors: run `holdfast check` and see README (repair)");
                        }
                        let outcome = match errors.first() {
                            None => "ok".to_string(),
                            Some(first) => format!("errors: {}: {first}", errors.len()),
                        };
                        report.check = Some(CheckSummary {
                            ok: errors.is_empty(),
                            subset,
                            errors,
                        });
                        record_check(agent, held, now, &outcome).await;
                    }
                    Err(e) => {
                        record_check(agent, held, now, &format!("failed: {e}")).await;
                        report.errors.push(format!("check: {e}"))
                    }
                }
            }
            Ok(_) => {}
            Err(e) => report
                .errors
                .push(format!("maintenance.checkSchedule: {e}")),
        }
    }
    let _ = leases.renew(held).await;
    if let Err(e) = leases
        .annotate(held, LAST_MAINTENANCE, &now.to_rfc3339())
        .await
    {
        tracing::warn!(error = %e, "cannot record the maintenance time");
    }
    for e in &report.errors {
        tracing::error!("maintenance: {e}");
    }
    Ok(report)
}

/// Records a check's time and outcome on the maintenance Lease (one write).
async fn record_check(
    agent: &Agent,
    held: &mut crate::lease::Held,
    now: DateTime<Utc>,
    outcome: &str,
) {
    let leases = agent.leases();
    let _ = leases.renew(held).await;
    let mut short = outcome.to_string();
    crate::lease::truncate_value(&mut short);
    let values = [
        (LAST_CHECK.to_string(), now.to_rfc3339()),
        (LAST_CHECK_RESULT.to_string(), short),
    ];
    if let Err(e) = leases.annotate_all(held, &values).await {
        tracing::warn!(error = %e, "cannot record the check's time and outcome");
    }
}
