//! The cluster's jobs that are no node's: database dumps (`holdfast.io/backup-command`,
//! see [`crate::dump`]) and the Kubernetes objects backup (see [`crate::objects`]).
//!
//! One agent of the cluster does them: the one holding the [`CLUSTER_JOBS_LEASE`], taken
//! each round as the Lease for PVCs no pod mounts is (so the work moves when its holder
//! goes away). Each job also takes a Lease of its own while it runs, so a holder that lost
//! the election mid-dump and its successor never run the same dump at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use holdfast_engine::backup::BackupReport;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use crate::dump::{self, DumpTarget};
use crate::error::{AgentError, Result};
use crate::kube_api;
use crate::lease::{Claim, Held};
use crate::objects;
use crate::repo::OBJECTS_KEY;
use crate::report::{JobResult, Status};
use crate::runner::Agent;
use crate::schedule::Schedule;

/// The Lease of the agent that runs the cluster's dumps and objects backup.
pub const CLUSTER_JOBS_LEASE: &str = "holdfast-cluster-jobs";

/// One job to run.
#[derive(Debug, Clone)]
pub enum Job {
    /// A database dump.
    Dump(Box<DumpTarget>),
    /// The objects backup.
    Objects,
}

impl Job {
    /// The key in reports and Leases.
    pub fn key(&self) -> String {
        match self {
            Job::Dump(t) => t.key(),
            Job::Objects => OBJECTS_KEY.to_string(),
        }
    }

    /// Its series in the metrics: `dump` with the namespace and `Kind/name`, or
    /// `objects`.
    pub fn metrics_key(&self) -> crate::metrics::JobKey {
        match self {
            Job::Dump(t) => crate::metrics::JobKey::job("dump", &t.namespace, &t.owner()),
            Job::Objects => crate::metrics::JobKey::job("objects", "", OBJECTS_KEY),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Job::Dump(_) => "dump",
            Job::Objects => "objects",
        }
    }
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn job_result(
    kind: &str,
    key: String,
    pod: Option<String>,
    status: Status,
    reason: String,
) -> JobResult {
    JobResult {
        kind: kind.into(),
        key,
        pod,
        status,
        reason,
        snapshot: None,
        summary: None,
        warnings: Vec::new(),
        started: now_s(),
        seconds: 0.0,
    }
}

/// The Lease name of a job: a hash of its key (keys can be longer than a name allows).
pub fn job_lease_name(key: &str) -> String {
    let h = blake3::hash(format!("job:{key}").as_bytes());
    format!("holdfast-job-{}", &h.to_hex()[..20])
}

/// Takes the cluster-jobs Lease and, if this agent holds it, decides which jobs are due
/// (`once`: every job that is not opted out). Returns results for jobs not run now, the
/// jobs to run, and the Lease held (`None`: another agent has the jobs).
pub async fn plan(agent: &Agent, once: bool) -> Result<(Vec<JobResult>, Vec<Job>, Option<Held>)> {
    let s = agent.settings();
    // What there is to do comes first: with no annotated pod and the objects backup off,
    // no Lease is taken at all.
    let pods = kube_api::all_pods(agent.client()).await?;
    let ns_api = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(agent.client().clone());
    let lp = kube::api::ListParams::default();
    let namespaces = kube_api::retry("list namespaces", || ns_api.list(&lp))
        .await?
        .items;
    let (targets, not) = dump::targets(
        &pods,
        &namespaces,
        &s.config.namespaces,
        &s.config.defaults.schedule,
    );
    let o = &s.config.objects;
    let objects_on = o.enabled && !o.schedule.trim().is_empty();
    if targets.is_empty() && not.is_empty() && !objects_on {
        return Ok(Default::default());
    }
    let anns = BTreeMap::from([(
        "holdfast.io/role".to_string(),
        "runs database dumps and the objects backup".to_string(),
    )]);
    let claim = kube_api::retry("take the Lease for the cluster's jobs", || {
        agent.leases().try_acquire(CLUSTER_JOBS_LEASE, &anns)
    })
    .await?;
    let Claim::Acquired(held) = claim else {
        return Ok(Default::default());
    };
    let cluster = s.cluster.clone();
    let newest: HashMap<String, i64> = if once {
        HashMap::new()
    } else {
        agent.with_repo(move |r| r.newest_by_job(&cluster)).await?
    };
    let now = chrono::Utc::now();
    let due = |sched: &Schedule, key: &str| {
        once || {
            let last = newest
                .get(key)
                .and_then(|ns| chrono::DateTime::from_timestamp_nanos(*ns).into());
            sched.is_due(last, now)
        }
    };
    let (mut done, mut jobs) = (Vec::new(), Vec::new());
    for n in not {
        done.push(job_result("dump", n.key, None, Status::Skipped, n.reason));
    }
    for t in targets {
        match t.parsed_schedule() {
            Err(e) => done.push(job_result(
                "dump",
                t.key(),
                Some(t.pod.clone()),
                Status::Failed,
                e,
            )),
            Ok(None) => done.push(job_result(
                "dump",
                t.key(),
                Some(t.pod.clone()),
                Status::Skipped,
                format!("opted out: {} is empty", dump::SCHEDULE),
            )),
            Ok(Some(sched)) if !due(&sched, &t.key()) => done.push(job_result(
                "dump",
                t.key(),
                Some(t.pod.clone()),
                Status::NotDue,
                format!("next at {:?}", sched.next_fire(now)),
            )),
            Ok(Some(_)) => jobs.push(Job::Dump(Box::new(t))),
        }
    }
    if objects_on {
        match Schedule::parse(&o.schedule, OBJECTS_KEY) {
            Err(e) => done.push(job_result(
                "objects",
                OBJECTS_KEY.into(),
                None,
                Status::Failed,
                format!("objects.schedule: {e}"),
            )),
            Ok(sched) if !due(&sched, OBJECTS_KEY) => done.push(job_result(
                "objects",
                OBJECTS_KEY.into(),
                None,
                Status::NotDue,
                format!("next at {:?}", sched.next_fire(now)),
            )),
            Ok(_) => jobs.push(Job::Objects),
        }
    }
    Ok((done, jobs, Some(*held)))
}

/// Runs one job under its own Lease (renewed while it runs) and reports it: logged, and a
/// dump's outcome as an Event on its pod (`BackupSucceeded`/`BackupFailed`).
pub async fn run(agent: &Agent, job: Job) -> JobResult {
    let (t0, started) = (Instant::now(), now_s());
    let key = job.key();
    let pod = match &job {
        Job::Dump(t) => Some(t.pod.clone()),
        Job::Objects => None,
    };
    let mut r = job_result(
        job.kind(),
        key.clone(),
        pod,
        Status::Succeeded,
        String::new(),
    );
    r.started = started;
    let anns = BTreeMap::from([("holdfast.io/job".to_string(), key.clone())]);
    let name = job_lease_name(&key);
    let mut held = match kube_api::retry("take the job's Lease", || {
        agent.leases().try_acquire(&name, &anns)
    })
    .await
    {
        Ok(Claim::Acquired(h)) => *h,
        Ok(Claim::Busy { holder }) => {
            r.status = Status::Skipped;
            r.reason = format!("another agent ({holder}) is running it");
            return r;
        }
        Err(e) => {
            r.status = Status::Failed;
            r.reason = e.to_string();
            return r;
        }
    };
    let renewer = agent.leases().keep_renewed(&held, "job");
    let attempt = chrono::Utc::now();
    let running = agent.metrics().start(
        job.metrics_key(),
        std::sync::Arc::new(holdfast_engine::archiver::BackupProgress::default()),
    );
    let outcome = match &job {
        Job::Dump(t) => {
            tracing::info!(dump = %key, pod = %t.pod, "dumping");
            run_dump(agent, t).await.map(|rep| (rep, Vec::new()))
        }
        Job::Objects => {
            tracing::info!("backing up the cluster's objects");
            run_objects(agent).await
        }
    };
    renewer.abort();
    drop(running);
    let failure = outcome.as_ref().err().map(|e| e.to_string());
    agent
        .leases()
        .record_outcome(&mut held, attempt, failure.as_deref())
        .await;
    agent.leases().release(held).await;
    agent.metrics().record_attempt(
        job.metrics_key(),
        crate::metrics::Attempt {
            started: attempt.timestamp_millis() as f64 / 1000.0,
            ok: failure.is_none(),
            snapshot_time: None,
            method: Some(match &job {
                Job::Dump(_) => crate::repo::METHOD_COMMAND.to_string(),
                Job::Objects => String::new(),
            }),
            summary: outcome.as_ref().ok().map(|(rep, _)| rep.summary.clone()),
            interval_seconds: None,
        },
    );
    match outcome {
        Ok((rep, warnings)) => {
            r.reason = crate::report::saved_line(&rep);
            r.snapshot = Some(rep.snapshot_id.to_string());
            r.summary = Some(rep.summary.clone());
            r.warnings = warnings;
            tracing::info!(job = %key, "{}", r.reason);
        }
        Err(e) => {
            r.status = Status::Failed;
            r.reason = e.to_string();
            tracing::error!(job = %key, "backup failed: {}", r.reason);
        }
    }
    r.seconds = t0.elapsed().as_secs_f64();
    if let Job::Dump(t) = &job {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(t.pod.clone()),
            namespace: Some(t.namespace.clone()),
            uid: t.pod_uid.clone(),
            ..Default::default()
        };
        let (type_, reason) = match r.status {
            Status::Succeeded => (EventType::Normal, "BackupSucceeded"),
            _ => (EventType::Warning, "BackupFailed"),
        };
        agent
            .publish(&reference, type_, reason, r.reason.clone())
            .await;
    }
    r
}

/// A dump: the command's output streamed into a snapshot; its failure (the pump's
/// message: pod, exit code, error output) wins over the engine's.
async fn run_dump(agent: &Agent, t: &DumpTarget) -> Result<BackupReport> {
    let started = dump::start(agent.client(), t).await?;
    let (reader, done) = (started.reader, started.done);
    let (cluster, target) = (agent.settings().cluster.clone(), t.clone());
    let backup = agent.with_repo(move |r| r.backup_dump(&cluster, &target, reader));
    let (b, d) = tokio::join!(backup, done);
    let pump = d.unwrap_or_else(|e| Err(format!("the dump's stream task failed: {e}")));
    match (b, pump) {
        (Ok(rep), Ok(())) => Ok(rep),
        (Ok(rep), Err(msg)) => Err(AgentError::Dump {
            target: t.key(),
            // Not expected: the failure reaches the reader before its end.
            detail: format!(
                "{msg} (snapshot {} was written anyway)",
                rep.snapshot_id.short()
            ),
        }),
        (Err(_), Err(msg)) => Err(AgentError::Dump {
            target: t.key(),
            detail: format!("{msg}; no snapshot was written"),
        }),
        (Err(e), Ok(())) => Err(e),
    }
}

/// The objects backup: discovery, every object listed, one snapshot.
async fn run_objects(agent: &Agent) -> Result<(BackupReport, Vec<String>)> {
    let cfg = agent.settings().config.objects.clone();
    let types = objects::discover(agent.client(), &cfg).await?;
    let c = objects::collect(agent.client(), &cfg, &types).await?;
    tracing::info!(
        types = c.types,
        objects = c.objects,
        "listed the cluster's objects"
    );
    let (cluster, entries) = (agent.settings().cluster.clone(), c.entries);
    let rep = agent
        .with_repo(move |r| r.backup_objects(&cluster, entries))
        .await?;
    Ok((rep, c.warnings))
}
