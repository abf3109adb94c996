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

use crate::commands::{self, CommandResult, CommandStatus};
use crate::config::AgentConfig;
use crate::discovery::{self, Volume};
use crate::error::{AgentError, Result};
use crate::expose::{Exposer, FromSnapshot};
use crate::jobs;
use crate::kube_api::{self, Inventory};
use crate::kubelet::{self, Located};
use crate::lease::{self, Claim, Leases};
use crate::maintenance;
use crate::metrics::{Attempt, JobKey, MetricsState};
use crate::repo::{Method, Repo, RepoSettings, VolumeJob};
use crate::report::{RunReport, Status, VolumeResult};
use crate::selection::{self, Selection, SnapshotSource};
use crate::snapdir;
use crate::snapshot_api::{self, Class, Timeouts};
use crate::temporary;

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

/// How a planned volume is read.
enum Read {
    /// From a directory or device that is there now: a pod's live mount, or a CephFS
    /// snapshot directory.
    Direct {
        /// Where.
        at: Located,
        /// Live or snapshot.
        method: Method,
        /// The time the data is from, if not the backup's start.
        time_ns: Option<i64>,
        /// The storage snapshot, if any.
        handle: Option<String>,
    },
    /// From a new CSI VolumeSnapshot of this class, exposed on this node.
    Snapshot {
        /// The VolumeSnapshotClass.
        class: String,
    },
}

/// A volume ready to be backed up.
struct Planned {
    volume: Volume,
    selection: Selection,
    read: Read,
    /// Why it is read another way than asked (published once per volume).
    fallback: Option<String>,
}

/// The Lease of the agent that backs up PVCs no pod mounts (one agent per round).
pub const UNMOUNTED_LEASE: &str = "holdfast-unmounted";

/// The agent: a client, the open repository, Leases, an Event recorder and the results.
pub struct Agent {
    s: Settings,
    client: Client,
    repo: Arc<Repo>,
    leases: Leases,
    recorder: Recorder,
    exposer: Exposer,
    /// Volumes already warned about reading live instead of from a snapshot.
    warned: Mutex<HashSet<String>>,
    /// Leftovers of an earlier run deleted at the start.
    swept: Vec<String>,
    /// The newest result per volume (`namespace/pvc`), for metrics and the UI.
    pub results: Arc<Mutex<BTreeMap<String, VolumeResult>>>,
    /// What `/metrics` shows (rebuilt by [`crate::refresh`]).
    metrics: Arc<MetricsState>,
    /// The repository's size and when it was last measured (a listing of every pack:
    /// done every [`crate::refresh::SIZE_EVERY`], not every round).
    pub(crate) size_cache: Mutex<Option<(Instant, u64)>>,
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
        method: None,
        snapshot: None,
        parent: None,
        summary: None,
        warnings: Vec::new(),
        started: started_s,
        seconds: started.elapsed().as_secs_f64(),
    }
}

impl Agent {
    /// Connects to the API server, opens the repository and deletes what an earlier,
    /// killed agent on this node left behind.
    pub async fn connect(s: Settings) -> Result<Agent> {
        Self::connect_with(s, true).await
    }

    /// [`Agent::connect`]; `sweep`: delete this node's leftovers first.
    pub async fn connect_with(s: Settings, sweep: bool) -> Result<Agent> {
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
        let t = &s.config.snapshots;
        let exposer = Exposer {
            client: client.clone(),
            node: s.node.clone(),
            kubelet_dir: s.kubelet_dir.clone(),
            owner: s.identity.clone(),
            pause_image: t.pause_image.clone(),
            timeouts: Timeouts {
                ready: Duration::from_secs(t.ready_timeout_seconds),
                bound: Duration::from_secs(t.bind_timeout_seconds),
                running: Duration::from_secs(t.pod_timeout_seconds),
                poll: Duration::from_millis(500),
            },
        };
        // What a killed predecessor on this node left behind goes first: its snapshots and
        // volumes hold storage, its pods hold mounts.
        let swept = if sweep {
            temporary::sweep(&client, &s.node, chrono::Utc::now())
                .await?
                .deleted
        } else {
            Vec::new()
        };
        Ok(Agent {
            client,
            repo: Arc::new(repo),
            leases,
            recorder,
            exposer,
            warned: Mutex::default(),
            metrics: Arc::new(MetricsState::new(&s.node)),
            s,
            swept,
            results: Arc::default(),
            size_cache: Mutex::new(None),
        })
    }

    /// Runs a blocking repository operation that deletes (the maintenance job's forget and
    /// prune) off the async threads: on the repository opened with the maintenance keys
    /// where they are set (the agents' own keys are then writer-only; opened anew each
    /// time, one key derivation per maintenance run), else on the agent's repository.
    pub async fn with_maintenance_repo<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Repo) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Some(keys) = self.s.repo.maintenance_keys.clone() else {
            return self.with_repo(f).await;
        };
        let (location, settings) = (self.s.location.clone(), self.s.repo.clone());
        tokio::task::spawn_blocking(move || f(&Repo::open_as(&location, &settings, Some(keys))?))
            .await
            .map_err(|e| AgentError::Usage(format!("repository task failed: {e}")))?
    }

    /// Runs a blocking repository operation off the async threads.
    pub async fn with_repo<T: Send + 'static>(
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
        classes: Option<&[Class]>,
    ) -> Result<(Vec<VolumeResult>, Vec<Planned>)> {
        let s = &self.s;
        let found =
            discovery::volumes_on_node(&s.node, &inv.pods, &inv.pvcs, &inv.pvs, &inv.namespaces);
        kubelet::check_dir(&s.kubelet_dir, &found.pod_uids).map_err(AgentError::KubeletDir)?;
        for u in &found.unusable {
            tracing::warn!(volume = %u.key, reason = %u.reason, "PVC cannot be backed up");
        }
        Ok(self.plan_volumes(found.volumes, newest, once, started_s, classes))
    }

    /// Plans `volumes` (mounted here, or mounted nowhere: then only a snapshot can be read).
    fn plan_volumes(
        &self,
        volumes: Vec<Volume>,
        newest: &HashMap<String, i64>,
        once: bool,
        started_s: i64,
        classes: Option<&[Class]>,
    ) -> (Vec<VolumeResult>, Vec<Planned>) {
        let s = &self.s;
        let now = chrono::Utc::now();
        let (mut done, mut planned) = (Vec::new(), Vec::new());
        for v in volumes {
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
            match self.choose_read(&v, &sel, classes, now) {
                Ok((read, fallback)) => planned.push(Planned {
                    volume: v,
                    selection: sel,
                    read,
                    fallback,
                }),
                Err((status, why)) => done.push(result(s, &v, status, why, t0, started_s)),
            }
        }
        (done, planned)
    }

    /// How to read a volume: its `holdfast.io/snapshot-source`, what the cluster offers,
    /// and whether a pod here mounts it. The second value says why a volume is read live
    /// although a snapshot was asked for.
    fn choose_read(
        &self,
        v: &Volume,
        sel: &Selection,
        classes: Option<&[Class]>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Read, Option<String>), (Status, String)> {
        let mounted = !v.pods.is_empty();
        let live = || -> Result<Read, (Status, String)> {
            match kubelet::locate(&self.s.kubelet_dir, v) {
                Ok(at) => Ok(Read::Direct {
                    at,
                    method: Method::Live,
                    time_ns: None,
                    handle: None,
                }),
                Err(e) => Err((Status::Failed, e.to_string())),
            }
        };
        let mut why_not = None;
        if sel.source == SnapshotSource::Live {
            return if mounted {
                live().map(|r| (r, None))
            } else {
                Err((
                    Status::Skipped,
                    "no pod mounts it, and holdfast.io/snapshot-source is live".into(),
                ))
            };
        }
        if sel.source == SnapshotSource::CephfsSnapdir && mounted {
            let at = kubelet::locate(&self.s.kubelet_dir, v)
                .map_err(|e| (Status::Failed, e.to_string()))?;
            let period = sel.schedule.as_ref().and_then(|s| s.period(now));
            match snapdir::newest(at.path(), now, period) {
                Ok(snap) => {
                    return Ok((
                        Read::Direct {
                            at: Located::Dir(snap.path),
                            method: Method::Snapshot,
                            time_ns: Some(snap.time.timestamp_nanos_opt().unwrap_or(0)),
                            handle: Some(format!(".snap/{}", snap.name)),
                        },
                        None,
                    ))
                }
                Err(e) => why_not = Some(format!("no usable CephFS snapshot directory: {e}")),
            }
        }
        let class = match (classes, v.driver.as_deref()) {
            (None, _) => Err(
                "the cluster has no VolumeSnapshot API (snapshot.storage.k8s.io/v1; \
                 k3s does not install the snapshot controller)"
                    .to_string(),
            ),
            (_, None) => Err("its PV is not a CSI volume".to_string()),
            (Some(cl), Some(driver)) => {
                match snapshot_api::choose_class(cl, driver, sel.snapshot_class.as_deref()) {
                    Ok(Some(c)) => Ok(c),
                    Ok(None) => Err(format!("no VolumeSnapshotClass serves its driver {driver}")),
                    // A class named but wrong is a mistake to fix, not a reason to read live.
                    Err(e) => return Err((Status::Failed, e)),
                }
            }
        };
        match class {
            Ok(class) => Ok((Read::Snapshot { class }, why_not)),
            Err(e) => {
                let why = match why_not {
                    Some(w) => format!("{w}; {e}"),
                    None => e,
                };
                if sel.source == SnapshotSource::Csi {
                    Err((
                        Status::Failed,
                        format!("holdfast.io/snapshot-source is csi but {why}"),
                    ))
                } else if !mounted {
                    Err((
                        Status::Skipped,
                        format!("no pod mounts it, and it cannot be read from a snapshot: {why}"),
                    ))
                } else {
                    live().map(|r| (r, Some(format!("read live (not point-in-time): {why}"))))
                }
            }
        }
    }

    /// The repository job for a volume read from `at`.
    fn job(
        &self,
        v: &Volume,
        sel: &Selection,
        at: Located,
        method: Method,
        time_ns: Option<i64>,
        handle: Option<String>,
    ) -> VolumeJob {
        VolumeJob {
            cluster: self.s.cluster.clone(),
            namespace: v.namespace.clone(),
            pvc: v.pvc.clone(),
            pv: v.pv.clone(),
            storage_class: v.storage_class.clone(),
            mount: at,
            method,
            time_ns,
            snapshot_handle: handle,
            paths: sel.paths.clone(),
            exclude: sel.exclude.clone(),
            progress: Arc::default(),
        }
    }

    /// Backs up `v` from a new VolumeSnapshot of `class`: snapshot, wait until ready, a
    /// PVC from it and a pause pod that mounts it on this node, the backup from the kubelet
    /// path, then everything deleted again whatever happened.
    async fn backup_from_snapshot(
        &self,
        v: &Volume,
        sel: &Selection,
        class: &str,
        progress: Arc<holdfast_engine::archiver::BackupProgress>,
    ) -> Result<(holdfast_engine::backup::BackupReport, Vec<String>)> {
        let run = temporary::run_id();
        let name = temporary::object_name(&v.pvc, &run);
        let ns = v.namespace.as_str();
        let source = v.key();
        let x = &self.exposer;
        let outcome = async {
            snapshot_api::create(
                &self.client,
                ns,
                &v.pvc,
                &name,
                class,
                &self.s.node,
                &run,
                &self.s.identity,
            )
            .await?;
            let ready = snapshot_api::wait_ready(&self.client, ns, &name, &x.timeouts).await?;
            let size = larger_quantity(ready.restore_size.as_deref(), v.capacity.as_deref())
                .unwrap_or("1Gi")
                .to_string();
            // CephFS: a read-only volume from a snapshot is shallow (backed by the snapshot,
            // no copy); other drivers clone, and the pod mounts the clone read-only.
            let is_cephfs = v.driver.as_deref().is_some_and(|d| d.contains("cephfs"));
            x.create_pvc_from_snapshot(&FromSnapshot {
                namespace: ns,
                name: &name,
                snapshot: &name,
                storage_class: v.storage_class.as_deref(),
                size: &size,
                mode: v.mode,
                access_mode: if is_cephfs {
                    "ReadOnlyMany"
                } else {
                    "ReadWriteOnce"
                },
                source: &source,
                run: &run,
            })
            .await?;
            x.create_pod(
                ns,
                &name,
                &name,
                v.mode,
                true,
                temporary::ROLE_SNAPSHOT_READ,
                &run,
                &source,
            )
            .await?;
            let exposed = x.wait_mounted(ns, &name, &name, v.mode).await?;
            tracing::info!(volume = %source, snapshot = %name, created = %ready.created,
                at = %exposed.at.path().display(), "reading the volume's snapshot");
            let mut job = self.job(
                v,
                sel,
                exposed.at,
                Method::Snapshot,
                Some(ready.created.timestamp_nanos_opt().unwrap_or(0)),
                ready.handle.clone().or(Some(format!("{ns}/{name}"))),
            );
            job.progress = progress;
            self.with_repo(move |r| r.backup_volume(&job)).await
        }
        .await;
        // Pod, PVC, snapshot: each depends on the next. A failure to delete is reported; the
        // next start of this agent deletes what is left.
        let mut cleanup = Vec::new();
        for (kind, r) in [
            ("pod", x.delete_pod(ns, &name).await),
            ("PVC", x.delete_pvc(ns, &name).await),
            (
                "VolumeSnapshot",
                snapshot_api::delete(&self.client, ns, &name).await,
            ),
        ] {
            if let Err(e) = r {
                tracing::warn!(volume = %source, error = %e, "cannot delete the temporary {kind}");
                cleanup.push(format!("temporary {kind} {ns}/{name} not deleted: {e}"));
            }
        }
        outcome.map(|rep| (rep, cleanup))
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
        if v.is_shared() || v.pods.is_empty() {
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
        let renewer = self.leases.keep_renewed(&held, "volume");
        let attempt = chrono::Utc::now();
        let progress = Arc::new(holdfast_engine::archiver::BackupProgress::default());
        let running = self
            .metrics
            .start(JobKey::volume(&v.namespace, &v.pvc), progress.clone());
        let outcome = match p.read {
            Read::Direct {
                at,
                method,
                time_ns,
                handle,
            } => {
                tracing::info!(volume = %key, pv = %v.pv, at = %at.path().display(), method = method.as_str(), "backing up");
                let mut job = self.job(v, &p.selection, at, method, time_ns, handle);
                job.progress = progress;
                self.with_repo(move |r| r.backup_volume(&job))
                    .await
                    .map(|rep| (rep, method, Vec::new()))
            }
            Read::Snapshot { class } => {
                tracing::info!(volume = %key, pv = %v.pv, class = %class, "backing up from a VolumeSnapshot");
                self.backup_from_snapshot(v, &p.selection, &class, progress)
                    .await
                    .map(|(rep, cleanup)| (rep, Method::Snapshot, cleanup))
            }
        };
        renewer.abort();
        drop(running);
        let mut held = held;
        let failure = outcome.as_ref().err().map(|e| e.to_string());
        self.leases
            .record_outcome(&mut held, attempt, failure.as_deref())
            .await;
        self.leases.release(held).await;
        let mut r = result(s, v, Status::Succeeded, String::new(), t0, started_s);
        match outcome {
            Ok((rep, method, cleanup)) => {
                for rb in &rep.rollbacks {
                    tracing::error!(host = %rb.host, "{rb}");
                }
                r.method = Some(method.as_str().to_string());
                r.reason = crate::report::saved_line(&rep);
                r.snapshot = Some(rep.snapshot_id.to_string());
                r.parent = rep.parent.map(|p| p.to_string());
                r.summary = Some(rep.summary.clone());
                r.warnings = rep.warnings.clone();
                r.warnings.extend(cleanup);
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
        if matches!(r.status, Status::Succeeded | Status::Failed) {
            self.metrics.record_attempt(
                JobKey::volume(&r.namespace, &r.pvc),
                Attempt {
                    started: r.started as f64,
                    ok: r.status == Status::Succeeded,
                    snapshot_time: None,
                    method: r.method.clone(),
                    summary: r.summary.clone(),
                    interval_seconds: None,
                },
            );
        }
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
    pub(crate) async fn publish(
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

    /// Says once per volume (per process) that it is read live although a point-in-time
    /// snapshot was wanted, as a Warning Event on its PVC.
    async fn warn_fallback(&self, p: &Planned) {
        let Some(why) = &p.fallback else { return };
        let key = p.volume.key();
        if !self.warned.lock().expect("warned").insert(key.clone()) {
            return;
        }
        tracing::warn!(volume = %key, "{why}");
        let v = &p.volume;
        let reference = pvc_reference(&v.namespace, &v.pvc, v.pvc_uid.clone());
        self.publish(
            &reference,
            EventType::Warning,
            "SnapshotUnavailable",
            why.clone(),
        )
        .await;
    }

    /// The cluster's VolumeSnapshotClasses; `None` when the snapshot API is not installed.
    async fn classes(&self) -> Result<Option<Vec<Class>>> {
        snapshot_api::classes(&self.client).await
    }

    /// PVCs that no pod mounts, planned by the one agent that holds [`UNMOUNTED_LEASE`]
    /// (taken each round, so it moves when its holder goes away); they are read from
    /// snapshots on this node. `inv`'s pods are not used: every pod is listed here.
    async fn plan_unmounted(
        &self,
        inv: &Inventory,
        newest: &HashMap<String, i64>,
        once: bool,
        started_s: i64,
        classes: Option<&[Class]>,
    ) -> Result<(Vec<VolumeResult>, Vec<Planned>, Option<lease::Held>)> {
        if !self.s.config.snapshots.unmounted || classes.is_none() {
            return Ok(Default::default());
        }
        let anns = BTreeMap::from([(
            "holdfast.io/role".to_string(),
            "backs up PVCs that no pod mounts".to_string(),
        )]);
        let claim = kube_api::retry("take the Lease for unmounted PVCs", || {
            self.leases.try_acquire(UNMOUNTED_LEASE, &anns)
        })
        .await?;
        let Claim::Acquired(held) = claim else {
            return Ok(Default::default());
        };
        let pods = kube_api::all_pods(&self.client).await?;
        let volumes = discovery::unmounted_volumes(&pods, &inv.pvcs, &inv.pvs, &inv.namespaces);
        let (done, planned) = self.plan_volumes(volumes, newest, once, started_s, classes);
        Ok((done, planned, Some(*held)))
    }

    /// Backs up the planned volumes, at most `concurrency` at once.
    async fn run_planned(&self, planned: Vec<Planned>, run_start_ns: i64) -> Vec<VolumeResult> {
        let n = self.s.concurrency.max(1);
        futures::stream::iter(planned)
            .map(|p| async move {
                self.warn_fallback(&p).await;
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
        let classes = self.classes().await?;
        let (mut done, mut planned) =
            self.plan(&inv, &newest, true, started_s, classes.as_deref())?;
        let (more_done, more, unmounted_lease) = self
            .plan_unmounted(&inv, &newest, true, started_s, classes.as_deref())
            .await?;
        done.extend(more_done);
        planned.extend(more);
        for r in &done {
            self.record(None, r).await;
        }
        done.extend(self.run_planned(planned, run_start_ns).await);
        done.sort_by_key(|r| r.key());
        if let Some(held) = unmounted_lease {
            self.leases.release(held).await;
        }
        let mut report = RunReport {
            node: self.s.node.clone(),
            volumes: done,
            swept: self.swept.clone(),
            commands: self.run_commands().await,
            ..Default::default()
        };
        // Dumps and the objects backup, if this agent is elected for them.
        match jobs::plan(self, true).await {
            Ok((done, planned, held)) => {
                report.jobs = done;
                let n = self.s.concurrency.max(1);
                let ran: Vec<_> = futures::stream::iter(planned)
                    .map(|j| jobs::run(self, j))
                    .buffer_unordered(n)
                    .collect()
                    .await;
                report.jobs.extend(ran);
                report.jobs.sort_by(|a, b| a.key.cmp(&b.key));
                if let Some(h) = held {
                    self.leases.release(h).await;
                }
            }
            Err(e) => report.jobs.push(crate::report::JobResult {
                kind: "cluster".into(),
                key: jobs::CLUSTER_JOBS_LEASE.into(),
                pod: None,
                status: Status::Failed,
                reason: format!("cannot plan the cluster's dumps and objects backup: {e}"),
                snapshot: None,
                summary: None,
                warnings: Vec::new(),
                started: started_s,
                seconds: 0.0,
            }),
        }
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
        let snapshot_inventory = || Inventory {
            pods: pods.state().iter().map(|p| (**p).clone()).collect(),
            pvcs: pvcs.state().iter().map(|p| (**p).clone()).collect(),
            pvs: pvs.state().iter().map(|p| (**p).clone()).collect(),
            namespaces: nss.state().iter().map(|p| (**p).clone()).collect(),
        };
        // The metrics as the repository and the Leases left them, before the first round.
        if let Err(e) = crate::refresh::refresh(&self, &snapshot_inventory()).await {
            tracing::warn!(error = %e, "cannot rebuild the metrics; trying again after the round");
        }
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut jobs = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(self.s.concurrency.max(1)));
        let mut backed_up_since_maintenance = false;
        // Scheduled commands run beside the volumes, one round of them at a time.
        let commands_running = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
            let inv = snapshot_inventory();
            let newest = match self.newest().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list the repository's snapshots; trying again next round");
                    self.metrics.update(|v| v.repository_up = Some(false));
                    continue;
                }
            };
            let run_start_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
            let classes = match self.classes().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list VolumeSnapshotClasses; trying again next round");
                    continue;
                }
            };
            let (mut done, mut planned) =
                match self.plan(&inv, &newest, false, now_s(), classes.as_deref()) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot plan this round");
                        continue;
                    }
                };
            match self
                .plan_unmounted(&inv, &newest, false, now_s(), classes.as_deref())
                .await
            {
                // The Lease stays held (renewed each round) while this agent runs.
                Ok((d, p, _held)) => {
                    done.extend(d);
                    planned.extend(p);
                }
                Err(e) => tracing::error!(error = %e, "cannot plan the PVCs no pod mounts"),
            }
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
                    me.warn_fallback(&p).await;
                    let v = p.volume.clone();
                    let r = me.run_volume(p, run_start_ns).await;
                    me.record(Some(&v), &r).await;
                    running.lock().expect("running").remove(&key);
                    r.status
                });
            }
            if !self.s.config.commands.is_empty()
                && !commands_running.load(std::sync::atomic::Ordering::SeqCst)
            {
                commands_running.store(true, std::sync::atomic::Ordering::SeqCst);
                let (me, flag) = (self.clone(), commands_running.clone());
                tokio::spawn(async move {
                    me.run_commands().await;
                    flag.store(false, std::sync::atomic::Ordering::SeqCst);
                });
            }
            // Dumps and the objects backup, if this agent holds their Lease (kept, renewed
            // each round, while it runs).
            match jobs::plan(&self, false).await {
                Ok((done, planned, _held)) => {
                    for d in done.iter().filter(|d| d.status == Status::Failed) {
                        tracing::error!(job = %d.key, "{}", d.reason);
                    }
                    for j in planned {
                        let key = format!("job:{}", j.key());
                        if !running.lock().expect("running").insert(key.clone()) {
                            continue;
                        }
                        let (me, running, sem) = (self.clone(), running.clone(), sem.clone());
                        jobs.spawn(async move {
                            let _permit = sem.acquire_owned().await;
                            let r = jobs::run(&me, j).await;
                            running.lock().expect("running").remove(&key);
                            r.status
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot plan the cluster's dumps and objects backup")
                }
            }
            if self.s.maintenance && jobs.is_empty() && backed_up_since_maintenance {
                match maintenance::run(&self).await {
                    Ok(Some(_)) => backed_up_since_maintenance = false,
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "maintenance failed"),
                }
            }
            if let Err(e) = crate::refresh::refresh(&self, &inv).await {
                tracing::warn!(error = %e, "cannot rebuild the metrics; trying again next round");
            }
        }
    }

    /// Runs the configured commands that are due and that this agent may run (one at a
    /// time: they share the node with the volumes' backups), reporting each as an Event
    /// in the agent's namespace when it ran.
    pub async fn run_commands(&self) -> Vec<CommandResult> {
        let jobs = &self.s.config.commands;
        if jobs.is_empty() {
            return Vec::new();
        }
        let program = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot find this program to run the commands");
                return Vec::new();
            }
        };
        let env = commands::repo_env(&self.s.location, &self.s.repo, &self.s.cluster);
        let mut out = Vec::new();
        for job in jobs {
            let r = commands::run_job(
                job,
                &self.leases,
                &self.s.node,
                &program,
                &env,
                chrono::Utc::now(),
            )
            .await;
            let (type_, reason) = match r.status {
                CommandStatus::Succeeded => {
                    tracing::info!(command = %r.name, seconds = ?r.seconds, "command succeeded");
                    (EventType::Normal, "CommandSucceeded")
                }
                CommandStatus::Failed => {
                    tracing::error!(command = %r.name, "command failed: {}", r.reason);
                    (EventType::Warning, "CommandFailed")
                }
                _ => {
                    tracing::debug!(command = %r.name, status = ?r.status, "{}", r.reason);
                    out.push(r);
                    continue;
                }
            };
            let reference = ObjectReference {
                api_version: Some("coordination.k8s.io/v1".into()),
                kind: Some("Lease".into()),
                namespace: Some(self.s.lease_namespace.clone()),
                name: Some(job.lease_name(&self.s.node)),
                ..Default::default()
            };
            self.publish(
                &reference,
                type_,
                reason,
                format!("{}: {}", r.name, r.reason),
            )
            .await;
            out.push(r);
        }
        out
    }

    /// The metrics `/metrics` shows (shared with the HTTP server).
    pub fn metrics(&self) -> &Arc<MetricsState> {
        &self.metrics
    }

    /// The open repository.
    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// The Kubernetes client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates and waits for the objects that mount volumes on this node.
    pub fn exposer(&self) -> &Exposer {
        &self.exposer
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

/// Bytes of a Kubernetes quantity (`10Gi`, `500M`, `1e9`, `1073741824`); `None` if it is
/// not one.
fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let m = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "m" => 1e-3,
        _ => return None,
    };
    Some(n * m)
}

/// The larger of two quantities (either may be missing or unparsable).
fn larger_quantity<'a>(a: Option<&'a str>, b: Option<&'a str>) -> Option<&'a str> {
    match (a, b) {
        (Some(a), Some(b)) => match (quantity_bytes(a), quantity_bytes(b)) {
            (Some(x), Some(y)) if y > x => Some(b),
            (Some(_), _) => Some(a),
            (None, _) => Some(b),
        },
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_by_bytes() {
        assert_eq!(quantity_bytes("10Gi"), Some(10.0 * 1024f64.powi(3)));
        assert_eq!(quantity_bytes("1500M"), Some(1.5e9));
        assert_eq!(quantity_bytes("1e3"), Some(1000.0));
        assert_eq!(quantity_bytes("12"), Some(12.0));
        assert_eq!(quantity_bytes("5Xi"), None);
        assert_eq!(larger_quantity(Some("1Gi"), Some("1500M")), Some("1500M"));
        assert_eq!(larger_quantity(Some("2Gi"), Some("1500M")), Some("2Gi"));
        assert_eq!(larger_quantity(None, Some("1Gi")), Some("1Gi"));
        assert_eq!(larger_quantity(Some("junk"), Some("1Gi")), Some("1Gi"));
        assert_eq!(larger_quantity(None, None), None);
    }
}
