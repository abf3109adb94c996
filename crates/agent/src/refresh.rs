//! Rebuilds the agent's metrics from what survives it: the repository (each volume's and
//! job's newest snapshot with its counters, drill records, the snapshot count and size)
//! and the Leases (`holdfast.io/last-attempt`, `last-status`, `last-success` of volumes,
//! jobs and commands; the maintenance Lease's last check and prune). Run when the agent
//! starts and after every round, so a restarted agent, or one on another node, shows
//! the same values as the one before it.
//!
//! Every agent exports the volumes mounted on its node and its each-node commands; the
//! agent holding [`METRICS_LEASE`] (taken every round, so it moves when its holder goes
//! away) also exports the PVCs no pod mounts, the cluster's jobs (dumps, objects, etcd,
//! bucket, elected commands), the repository, the drills and the coverage audit.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;

use crate::commands::{self, Placement};
use crate::coverage::{self, Sources};
use crate::discovery;
use crate::dump;
use crate::error::Result;
use crate::kube_api::{self, Inventory};
use crate::lease::{Claim, MAINTENANCE};
use crate::maintenance::{LAST_CHECK, LAST_CHECK_RESULT, LAST_MAINTENANCE};
use crate::metrics::{self, JobKey, JobState, RepositoryState, Values};
use crate::repo::{RepoView, OBJECTS_KEY};
use crate::runner::Agent;
use crate::schedule::Schedule;
use crate::selection;

/// The Lease of the agent that exports the cluster-wide metrics.
pub const METRICS_LEASE: &str = "holdfast-metrics";
/// How often the repository's size (a listing of every pack file) is measured.
pub const SIZE_EVERY: Duration = Duration::from_secs(15 * 60);

fn rfc3339(v: Option<&String>) -> Option<f64> {
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(v?).ok()?.with_timezone(&Utc);
    Some(t.timestamp_millis() as f64 / 1000.0)
}

/// A job's state from its Lease's annotations (attempt and status) and its newest
/// snapshot (success and counters).
fn state_of(
    anns: Option<&BTreeMap<String, String>>,
    newest: Option<&crate::repo::Newest>,
    interval: Option<f64>,
) -> JobState {
    let mut st = JobState {
        interval_seconds: interval,
        ..Default::default()
    };
    if let Some(n) = newest {
        st.last_success = Some(n.time_ns as f64 / 1e9);
        st.method = n.method.clone().unwrap_or_default();
        metrics::set_summary(&mut st, &n.summary);
    }
    if let Some(a) = anns {
        st.last_attempt = rfc3339(a.get(commands::LAST_ATTEMPT));
        st.last_ok = a
            .get(commands::LAST_STATUS)
            .map(|s| s.starts_with("succeeded"));
        // A command's success is only on its Lease (its snapshot is not tied to it).
        if st.last_success.is_none() {
            st.last_success = rfc3339(a.get(commands::LAST_SUCCESS));
        }
    }
    if st.last_ok.is_none() && st.last_success.is_some() {
        // Written before attempts were recorded: the snapshot is the last word.
        st.last_ok = Some(true);
        st.last_attempt = st.last_attempt.or(st.last_success);
    }
    st
}

fn interval_of(s: &Schedule) -> Option<f64> {
    s.period(Utc::now()).map(|d| d.num_seconds() as f64)
}

/// Rebuilds the metrics. `inv`: this node's pods and every PVC, PV and namespace (the
/// daemon's watch caches). The repository and the API are read here, never on a scrape.
pub async fn refresh(agent: &Agent, inv: &Inventory) -> Result<()> {
    let s = agent.settings().clone();
    let leases = agent.leases();
    let role = BTreeMap::from([(
        "holdfast.io/role".to_string(),
        "exports the cluster-wide metrics".to_string(),
    )]);
    let elected = matches!(
        kube_api::retry("take the metrics Lease", || {
            leases.try_acquire(METRICS_LEASE, &role)
        })
        .await,
        Ok(Claim::Acquired(_))
    );
    let want_size = elected
        && agent
            .size_cache
            .lock()
            .expect("size cache")
            .is_none_or(|(at, _)| at.elapsed() >= SIZE_EVERY);
    let cluster = s.cluster.clone();
    let view = agent.with_repo(move |r| r.view(&cluster, want_size)).await;
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the repository for the metrics");
            agent.metrics().update(|v| v.repository_up = Some(false));
            return Err(e);
        }
    };
    if let Some(size) = view.size_bytes {
        *agent.size_cache.lock().expect("size cache") = Some((Instant::now(), size));
    }
    let all_leases = kube_api::retry("list the agent's Leases", || leases.list()).await?;
    let by_ann = |key: &str| -> HashMap<String, BTreeMap<String, String>> {
        all_leases
            .iter()
            .filter_map(|l| {
                let a = l.metadata.annotations.as_ref()?;
                Some((a.get(key)?.clone(), a.clone()))
            })
            .collect()
    };
    let volume_leases = by_ann("holdfast.io/volume");
    let mut jobs: BTreeMap<JobKey, JobState> = BTreeMap::new();

    // This node's volumes (and, on the elected agent, those no pod mounts).
    let found =
        discovery::volumes_on_node(&s.node, &inv.pods, &inv.pvcs, &inv.pvs, &inv.namespaces);
    let mut volumes = found.volumes;
    let mut cluster_inv = None;
    if elected {
        let (cinv, classes, cmd_leases) =
            coverage::read_cluster(agent.client(), &s.config, &s.lease_namespace).await?;
        for v in discovery::unmounted_volumes(&cinv.pods, &cinv.pvcs, &cinv.pvs, &cinv.namespaces) {
            if !volumes.iter().any(|x| x.key() == v.key()) {
                volumes.push(v);
            }
        }
        cluster_inv = Some((cinv, classes, cmd_leases));
    }
    for v in &volumes {
        if !s.config.namespaces.allows(&v.namespace) {
            continue;
        }
        let key = v.key();
        let sel = selection::resolve(
            &key,
            &v.namespace,
            &v.pvc_annotations,
            &v.namespace_annotations,
            &s.config.defaults,
        );
        let interval = match &sel {
            Ok(sel) => match &sel.schedule {
                Some(sc) => interval_of(sc),
                None => continue, // opted out: in the coverage, not a backup series
            },
            Err(_) => None,
        };
        jobs.insert(
            JobKey::volume(&v.namespace, &v.pvc),
            state_of(volume_leases.get(&key), view.volumes.get(&key), interval),
        );
    }

    // Commands: each-node ones of this node everywhere, elected ones on the elected agent.
    let by_name: HashMap<&str, &Lease> = all_leases
        .iter()
        .filter_map(|l| Some((l.metadata.name.as_deref()?, l)))
        .collect();
    for c in &s.config.commands {
        let here = match c.placement {
            Placement::Elected => elected,
            Placement::EachNode => c.if_exists.as_ref().is_some_and(|p| p.exists()),
        };
        if !here {
            continue;
        }
        let lease = by_name.get(c.lease_name(&s.node).as_str());
        let name = match c.placement {
            Placement::Elected => c.name.clone(),
            Placement::EachNode => format!("{}@{}", c.name, s.node),
        };
        let mut st = state_of(
            lease.and_then(|l| l.metadata.annotations.as_ref()),
            None,
            c.schedule().ok().as_ref().and_then(interval_of),
        );
        st.method = "command".into();
        jobs.insert(JobKey::job("command", "", &name), st);
    }

    let mut repository = None;
    let mut coverage_report = None;
    if let Some((cinv, classes, cmd_leases)) = &cluster_inv {
        cluster_jobs(agent, &mut jobs, &view, cinv, &by_ann("holdfast.io/job"));
        let maint = by_name
            .get(MAINTENANCE)
            .and_then(|l| l.metadata.annotations.clone())
            .unwrap_or_default();
        repository = Some(RepositoryState {
            snapshots: view.snapshots,
            size_bytes: agent
                .size_cache
                .lock()
                .expect("size cache")
                .map(|(_, n)| n)
                .unwrap_or(0),
            last_check: rfc3339(maint.get(LAST_CHECK)),
            last_check_ok: maint.get(LAST_CHECK_RESULT).map(|r| r == "ok"),
            last_prune: rfc3339(maint.get(LAST_MAINTENANCE)),
        });
        coverage_report = Some(coverage::audit(&Sources {
            inventory: cinv,
            config: &s.config,
            classes: classes.as_deref(),
            view: &view,
            command_leases: cmd_leases,
            now: Utc::now(),
            cluster: &s.cluster,
        }));
    }
    agent.metrics().update(|v: &mut Values| {
        // An attempt recorded in memory that the Lease does not show yet (its write
        // failed) stays.
        for (k, st) in jobs.iter_mut() {
            if let Some(old) = v.jobs.get(k) {
                if old.last_attempt > st.last_attempt {
                    st.last_attempt = old.last_attempt;
                    st.last_ok = old.last_ok;
                }
            }
        }
        v.jobs = jobs;
        v.elected = elected;
        v.repository_up = Some(true);
        v.refreshed = Some(metrics::now_s());
        v.repository = repository;
        v.drills = if elected {
            view.drills.clone()
        } else {
            Default::default()
        };
        v.coverage = coverage_report;
    });
    Ok(())
}

/// The cluster's jobs: dumps (with their schedules from the pods' annotations), the
/// objects backup, and etcd and bucket snapshots written by commands.
fn cluster_jobs(
    agent: &Agent,
    jobs: &mut BTreeMap<JobKey, JobState>,
    view: &RepoView,
    inv: &Inventory,
    job_leases: &HashMap<String, BTreeMap<String, String>>,
) {
    let s = agent.settings();
    let (targets, _) = dump::targets(
        &inv.pods,
        &inv.namespaces,
        &s.config.namespaces,
        &s.config.defaults.schedule,
    );
    let mut seen = std::collections::HashSet::new();
    for t in &targets {
        let Ok(Some(sched)) = t.parsed_schedule() else {
            continue;
        };
        let vkey = format!("dump/{}/{}", t.namespace, t.owner());
        seen.insert(vkey.clone());
        jobs.insert(
            JobKey::job("dump", &t.namespace, &t.owner()),
            state_of(
                job_leases.get(&t.key()),
                view.jobs.get(&vkey),
                interval_of(&sched),
            ),
        );
    }
    let o = &s.config.objects;
    let objects_interval = (o.enabled && !o.schedule.trim().is_empty())
        .then(|| Schedule::parse(&o.schedule, OBJECTS_KEY).ok())
        .flatten()
        .as_ref()
        .and_then(interval_of);
    let okey = format!("objects/{OBJECTS_KEY}");
    if objects_interval.is_some() || view.jobs.contains_key(&okey) {
        seen.insert(okey.clone());
        jobs.insert(
            JobKey::job("objects", "", OBJECTS_KEY),
            state_of(
                job_leases.get(OBJECTS_KEY),
                view.jobs.get(&okey),
                objects_interval,
            ),
        );
    }
    // Snapshots of jobs that are gone (a removed workload) are not exported: their
    // staleness is nobody's to fix. etcd and bucket snapshots come from commands, whose
    // own series carry the schedule; these carry the data's counters.
    for (k, n) in &view.jobs {
        if seen.contains(k) {
            continue;
        }
        let (kind, name) = k.split_once('/').unwrap_or((k.as_str(), ""));
        if kind == "etcd" || kind == "bucket" {
            jobs.insert(JobKey::job(kind, "", name), state_of(None, Some(n), None));
        }
    }
}
