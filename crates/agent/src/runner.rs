//! The agent's run: find this node's volumes, decide which are due, take each one's Lease,
//! back it up, report it; then, on the elected agent, the cluster's maintenance.
//! `--once` does one round over every volume and exits; the daemon keeps watch caches of
//! the objects and looks again every minute.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::config::AgentConfig;
use crate::discovery::{self, Volume};
use crate::error::{AgentError, Result};
use crate::kube_api::{self, Inventory};
use crate::kubelet::{self, LocateError};
use crate::lease::{self, Claim, Leases};
use crate::maintenance;
use crate::repo::{Repo, RepoSettings, VolumeJob};
use crate::report::{RunReport, Status, VolumeResult};
use crate::selection;

/// Everything a run needs to know, resolved from flags, environment and configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub node: String,
    /// Recorded as the snapshots' host.
    pub cluster: String,
    /// The kubelet's root directory.
    pub kubelet_dir: PathBuf,
    /// Namespace of the agent's Leases.
    pub lease_namespace: String,
    /// This agent's identity in Leases and Events (`<node>/<pod>`).
    pub identity: String,
    /// The configuration.
    pub config: AgentConfig,
    /// Volumes at once.
    pub concurrency: usize,
    /// Repository location.
    pub location: String,
    /// Password and cache settings.
    pub repo: RepoSettings,
    /// Whether this agent may do maintenance.
    pub maintenance: bool,
}

/// A volume ready to be backed up.
struct Planned {
    volume: Volume,
    job: VolumeJob,
}

/// The agent: a client, the open repository, Leases, an Event recorder and the results.
pub struct Agent {
    s: Settings,
    client: Client,
    repo: Arc<Repo>,
    leases: Leases,
    recorder: Recorder,
    /// The newest result per volume (`namespace/pvc`), for metrics and the UI.
    pub results: Arc<Mutex<BTreeMap<String, VolumeResult>>>,
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn result(
    s: &Settings,
    v: &Volume,
    status: Status,
    reason: impl Into<String>,
    started: Instant,
    started_s: i64,
) -> VolumeResult {
    VolumeResult {
        namespace: v.namespace.clone(),
        pvc: v.pvc.clone(),
        pv: v.pv.clone(),
        node: s.node.clone(),
        status,
        reason: reason.into(),
        snapshot: None,
        parent: None,
        summary: None,
        warnings: Vec::new(),
        started: started_s,
        seconds: started.elapsed().as_secs_f64(),
    }
}

impl Agent {
    /// Connects to the API server and opens the repository.
    pub async fn connect(s: Settings) -> Result<Agent> {
        let client = Client::try_default().await.map_err(|e| AgentError::Kube {
            what: "connect (in-cluster service account, or KUBECONFIG)".into(),
            source: e,
        })?;
        let (location, settings) = (s.location.clone(), s.repo.clone());
        let repo = tokio::task::spawn_blocking(move || Repo::open(&location, &settings))
            .await
            .map_err(|e| AgentError::Usage(format!("repository open task failed: {e}")))??;
        // The Leases' namespace must exist: say so now, not once per volume.
        let ns_api = Api::<Namespace>::all(client.clone());
        match kube_api::retry("read the agent's namespace", || {
            ns_api.get_opt(&s.lease_namespace)
        })
        .await?
        {
            Some(_) => {}
            None => {
                return Err(AgentError::Usage(format!(
                    "the namespace {:?} for the agent's Leases does not exist: create it, or set \
                     --lease-namespace (POD_NAMESPACE) to the agent's own namespace",
                    s.lease_namespace
                )))
            }
        }
        let leases = Leases::new(
            Api::<Lease>::namespaced(client.clone(), &s.lease_namespace),
            s.identity.clone(),
            s.config.lease_seconds,
        );
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "holdfast-agent".into(),
                instance: Some(s.identity.clone()),
            },
        );
        Ok(Agent {
            s,
            client,
            repo: Arc::new(repo),
            leases,
            recorder,
            results: Arc::default(),
        })
    }

    /// Runs a blocking repository operation off the async threads.
    pub(crate) async fn with_repo<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Repo) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || f(&repo))
            .await
            .map_err(|e| AgentError::Usage(format!("repository task failed: {e}")))?
    }

    /// The newest snapshot time of each volume, ns.
    async fn newest(&self) -> Result<HashMap<String, i64>> {
        let cluster = self.s.cluster.clone();
        self.with_repo(move |r| r.newest_by_volume(&cluster)).await
    }

    /// Decides what to do with each volume on this node: results for those not backed up
    /// now, and the plan for the others. `once`: every volume, whatever its schedule.
    fn plan(
        &self,
        inv: &Inventory,
        newest: &HashMap<String, i64>,
        once: bool,
        started_s: i64,
    ) -> Result<(Vec<VolumeResult>, Vec<Planned>)> {
        let s = &self.s;
        let found =
            discovery::volumes_on_node(&s.node, &inv.pods, &inv.pvcs, &inv.pvs, &inv.namespaces);
        kubelet::check_dir(&s.kubelet_dir, &found.pod_uids).map_err(AgentError::KubeletDir)?;
        for u in &found.unusable {
            tracing::warn!(volume = %u.key, reason = %u.reason, "PVC cannot be backed up");
        }
        let now = chrono::Utc::now();
        let (mut done, mut planned) = (Vec::new(), Vec::new());
        for v in found.volumes {
            let t0 = Instant::now();
            let key = v.key();
            if !s.config.namespaces.allows(&v.namespace) {
                continue;
            }
            let sel = match selection::resolve(
                &key,
                &v.namespace,
                &v.pvc_annotations,
                &v.namespace_annotations,
                &s.config.defaults,
            ) {
                Ok(sel) => sel,
                Err(e) => {
                    done.push(result(s, &v, Status::Failed, e.to_string(), t0, started_s));
                    continue;
                }
            };
            let Some(schedule) = &sel.schedule else {
                done.push(result(
                    s,
                    &v,
                    Status::Skipped,
                    format!(
                        "opted out: holdfast.io/schedule is empty (on the {:?})",
                        sel.schedule_origin
                    ),
                    t0,
                    started_s,
                ));
                continue;
            };
            if !once {
                let last = newest
                    .get(&key)
                    .and_then(|ns| chrono::DateTime::from_timestamp_nanos(*ns).into());
                if !schedule.is_due(last, now) {
                    done.push(result(
                        s,
                        &v,
                        Status::NotDue,
                        format!("next at {:?}", schedule.next_fire(now)),
                        t0,
                        started_s,
                    ));
                    continue;
                }
            }
            let mount = match kubelet::locate(&s.kubelet_dir, &v) {
                Ok(m) => m,
                Err(e @ LocateError::Block { .. }) => {
                    done.push(result(s, &v, Status::Skipped, e.to_string(), t0, started_s));
                    continue;
                }
                Err(e) => {
                    done.push(result(s, &v, Status::Failed, e.to_string(), t0, started_s));
                    continue;
                }
            };
            let job = VolumeJob {
                cluster: s.cluster.clone(),
                namespace: v.namespace.clone(),
                pvc: v.pvc.clone(),
                pv: v.pv.clone(),
                storage_class: v.storage_class.clone(),
                mount,
                paths: sel.paths.clone(),
                exclude: sel.exclude.clone(),
            };
            planned.push(Planned { volume: v, job });
        }
        Ok((done, planned))
    }

    /// One volume's turn: its Lease, a last look at the repository for shared volumes,
    /// the backup, the Event.
    async fn run_volume(&self, p: Planned, run_start_ns: i64) -> VolumeResult {
        let (s, v) = (&self.s, &p.volume);
        let (t0, started_s) = (Instant::now(), now_s());
        let key = v.key();
        let lease_name = lease::volume_lease_name(&key);
        let annotations = BTreeMap::from([
            ("holdfast.io/volume".to_string(), key.clone()),
            ("holdfast.io/pv".to_string(), v.pv.clone()),
        ]);
        let claim = kube_api::retry("take the volume's Lease", || {
            self.leases.try_acquire(&lease_name, &annotations)
        })
        .await;
        let held = match claim {
            Ok(Claim::Acquired(h)) => *h,
            Ok(Claim::Busy { holder }) => {
                return result(
                    s,
                    v,
                    Status::Skipped,
                    format!("another agent ({holder}) is backing it up"),
                    t0,
                    started_s,
                )
            }
            Err(e) => return result(s, v, Status::Failed, e.to_string(), t0, started_s),
        };
        if v.is_shared() {
            // Two agents that started together: the second finds the first's snapshot.
            match self.newest().await {
                Ok(n) if n.get(&key).is_some_and(|t| *t >= run_start_ns) => {
                    self.leases.release(held).await;
                    return result(
                        s,
                        v,
                        Status::Skipped,
                        "already backed up by another agent in this round",
                        t0,
                        started_s,
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    self.leases.release(held).await;
                    return result(s, v, Status::Failed, e.to_string(), t0, started_s);
                }
            }
        }
        // Renew while the backup runs; losing the Lease does not stop the backup (a second
        // copy of the same volume costs time, not data).
        let (leases, period) = (
            self.leases.clone(),
            Duration::from_secs(u64::from(s.config.lease_seconds) / 3),
        );
        let renew_held = held.clone();
        let renewer = tokio::spawn(async move {
            let mut h = renew_held;
            loop {
                tokio::time::sleep(period).await;
                match leases.renew(&mut h).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = %h.name, "lost the volume's Lease during its backup");
                        return h;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %h.name, error = %e, "cannot renew the volume's Lease")
                    }
                }
            }
        });
        tracing::info!(volume = %key, pv = %v.pv, mount = %p.job.mount.display(), "backing up");
        let job = p.job.clone();
        let outcome = self.with_repo(move |r| r.backup_volume(&job)).await;
        renewer.abort();
        self.leases.release(held).await;
        let mut r = result(s, v, Status::Succeeded, String::new(), t0, started_s);
        match outcome {
            Ok(rep) => {
                let sm = &rep.summary;
                r.reason = format!(
                    "snapshot {}: {} files new, {} changed, {} unchanged; {} bytes added",
                    rep.snapshot_id.short(),
                    sm.files_new,
                    sm.files_changed,
                    sm.files_unchanged,
                    sm.bytes_added_stored
                );
                r.snapshot = Some(rep.snapshot_id.to_string());
                r.parent = rep.parent.map(|p| p.to_string());
                r.summary = Some(rep.summary.clone());
                r.warnings = rep.warnings.clone();
            }
            Err(e) => {
                r.status = Status::Failed;
                r.reason = e.to_string();
            }
        }
        r.seconds = t0.elapsed().as_secs_f64();
        r
    }

    /// Logs a result, keeps it, and reports it as an Event on the PVC.
    async fn record(&self, v: Option<&Volume>, r: &VolumeResult) {
        match r.status {
            Status::Succeeded => {
                tracing::info!(volume = %r.key(), seconds = r.seconds, "{}", r.reason)
            }
            Status::Failed => tracing::error!(volume = %r.key(), "backup failed: {}", r.reason),
            Status::Skipped => tracing::info!(volume = %r.key(), "skipped: {}", r.reason),
            Status::NotDue => tracing::debug!(volume = %r.key(), "not due: {}", r.reason),
        }
        self.results
            .lock()
            .expect("results lock")
            .insert(r.key(), r.clone());
        let (type_, reason) = match r.status {
            Status::Succeeded => (EventType::Normal, "BackupSucceeded"),
            Status::Failed => (EventType::Warning, "BackupFailed"),
            _ => return,
        };
        let Some(v) = v else { return };
        let reference = pvc_reference(&v.namespace, &v.pvc, v.pvc_uid.clone());
        self.publish(&reference, type_, reason, r.reason.clone())
            .await;
    }

    /// Records an Event about `reference` (its note cut to the 1 kB the API allows); a
    /// failure is logged: Events are reports, never the reason a backup fails.
    async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        mut note: String,
    ) {
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Backup".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            tracing::warn!(object = ?reference.name, error = %e, "cannot record the Event");
        }
    }

    /// Backs up the planned volumes, at most `concurrency` at once.
    async fn run_planned(&self, planned: Vec<Planned>, run_start_ns: i64) -> Vec<VolumeResult> {
        let n = self.s.concurrency.max(1);
        futures::stream::iter(planned)
            .map(|p| async move {
                let v = p.volume.clone();
                let r = self.run_volume(p, run_start_ns).await;
                self.record(Some(&v), &r).await;
                r
            })
            .buffer_unordered(n)
            .collect()
            .await
    }

    /// `--once`: every volume this node is responsible for now, then maintenance.
    pub async fn run_once(&self) -> Result<RunReport> {
        let run_start_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let started_s = now_s();
        let inv = kube_api::inventory(&self.client, Some(&self.s.node)).await?;
        let newest = HashMap::new();
        let (mut done, planned) = self.plan(&inv, &newest, true, started_s)?;
        for r in &done {
            self.record(None, r).await;
        }
        done.extend(self.run_planned(planned, run_start_ns).await);
        done.sort_by_key(|r| r.key());
        let mut report = RunReport {
            node: self.s.node.clone(),
            volumes: done,
            ..Default::default()
        };
        if self.s.maintenance {
            // Maintenance is the cluster's, not this node's: its failure is logged (and
            // retried next time), it does not fail this node's backups.
            match maintenance::run(self).await {
                Ok(Some(m)) => {
                    report.unmounted = m.unmounted.clone();
                    report.maintenance = serde_json::to_value(&m).ok();
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "maintenance failed");
                    report.maintenance = Some(serde_json::json!({"error": e.to_string()}));
                }
            }
        }
        Ok(report)
    }

    /// The daemon: watch caches of pods on this node, PVCs, PVs and namespaces; every
    /// `tick` the due volumes are backed up, then maintenance runs if this agent is elected
    /// and it is time. Ends on SIGTERM or Ctrl-C (a backup cut short leaves nothing that
    /// blocks the next one: its Lease expires, its repository session goes stale).
    pub async fn run_daemon(self: Arc<Self>, tick: Duration) -> Result<()> {
        let pods = cache::<Pod>(
            Api::all(self.client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.s.node)),
        );
        let pvcs =
            cache::<PersistentVolumeClaim>(Api::all(self.client.clone()), Default::default());
        let pvs = cache::<PersistentVolume>(Api::all(self.client.clone()), Default::default());
        let nss = cache::<Namespace>(Api::all(self.client.clone()), Default::default());
        for (what, r) in [
            ("pods", pods.clone().wait_until_ready().await.is_ok()),
            (
                "persistentvolumeclaims",
                pvcs.clone().wait_until_ready().await.is_ok(),
            ),
            (
                "persistentvolumes",
                pvs.clone().wait_until_ready().await.is_ok(),
            ),
            ("namespaces", nss.clone().wait_until_ready().await.is_ok()),
        ] {
            if !r {
                return Err(AgentError::Usage(format!(
                    "the watch of {what} ended before its first list"
                )));
            }
        }
        // A wrong --kubelet-dir is a setup error: fail at start, not once a round.
        let node_pods: Vec<Pod> = pods.state().iter().map(|p| (**p).clone()).collect();
        let found = discovery::volumes_on_node(&self.s.node, &node_pods, &[], &[], &[]);
        kubelet::check_dir(&self.s.kubelet_dir, &found.pod_uids).map_err(AgentError::KubeletDir)?;
        tracing::info!(node = %self.s.node, cluster = %self.s.cluster, "agent started");
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut jobs = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(self.s.concurrency.max(1)));
        let mut backed_up_since_maintenance = false;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown() => {
                    tracing::info!("stopping: running backups end with the process; their Leases expire");
                    return Ok(());
                }
            }
            while let Some(r) = jobs.try_join_next() {
                if matches!(r, Ok(Status::Succeeded)) {
                    backed_up_since_maintenance = true;
                }
            }
            let inv = Inventory {
                pods: pods.state().iter().map(|p| (**p).clone()).collect(),
                pvcs: pvcs.state().iter().map(|p| (**p).clone()).collect(),
                pvs: pvs.state().iter().map(|p| (**p).clone()).collect(),
                namespaces: nss.state().iter().map(|p| (**p).clone()).collect(),
            };
            let newest = match self.newest().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list the repository's snapshots; trying again next round");
                    continue;
                }
            };
            let run_start_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let (done, planned) = match self.plan(&inv, &newest, false, now_s()) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "cannot plan this round");
                    continue;
                }
            };
            for r in &done {
                if r.status != Status::NotDue {
                    let seen = self
                        .results
                        .lock()
                        .expect("results")
                        .get(&r.key())
                        .map(|o| (o.status, o.reason.clone()));
                    if seen != Some((r.status, r.reason.clone())) {
                        self.record(None, r).await;
                    }
                }
            }
            for p in planned {
                let key = p.volume.key();
                if !running.lock().expect("running").insert(key.clone()) {
                    continue;
                }
                let (me, running, sem) = (self.clone(), running.clone(), sem.clone());
                jobs.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let v = p.volume.clone();
                    let r = me.run_volume(p, run_start_ns).await;
                    me.record(Some(&v), &r).await;
                    running.lock().expect("running").remove(&key);
                    r.status
                });
            }
            if self.s.maintenance && jobs.is_empty() && backed_up_since_maintenance {
                match maintenance::run(&self).await {
                    Ok(Some(_)) => backed_up_since_maintenance = false,
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "maintenance failed"),
                }
            }
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// The Kubernetes client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The Leases.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Reports a Warning Event on a PVC (maintenance's findings).
    pub(crate) async fn warn_pvc(&self, pvc: &PersistentVolumeClaim, reason: &str, note: String) {
        let reference = pvc_reference(
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
            pvc.metadata.name.as_deref().unwrap_or_default(),
            pvc.metadata.uid.clone(),
        );
        self.publish(&reference, EventType::Warning, reason, note)
            .await;
    }
}

/// A reference to a PVC, for Events about it.
fn pvc_reference(namespace: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        uid,
        ..Default::default()
    }
}

/// A watch cache of `api` (the stream is driven by a task of its own, with backoff).
fn cache<K>(api: Api<K>, cfg: watcher::Config) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, cfg))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(r) = stream.next().await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "watch failed; retrying");
            }
        }
    });
    reader
}

/// Resolves when the process is asked to stop.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
