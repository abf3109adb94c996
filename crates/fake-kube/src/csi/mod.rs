//! A CSI simulator for the agent's snapshot-based backups: the controllers and node plugins a
//! Rook-Ceph cluster runs around a [`FakeKube`], on real storage.
//!
//! [`CsiSim::start`] runs one background thread that polls the fake's store (in-process, not
//! over HTTP; its writes do not appear in the request log) every 20 ms and plays:
//!
//! - **snapshot-controller + csi-snapshotter** (external-snapshotter v8): a new
//!   `VolumeSnapshot` with `spec.source.persistentVolumeClaimName` gets the
//!   `volumesnapshot-bound-protection` finalizer and a `VolumeSnapshotContent`
//!   `snapcontent-<vs uid>` (its own `volumesnapshotcontent-bound-protection` finalizer,
//!   `spec.source.volumeHandle`, `sourceVolumeMode`, `volumeSnapshotRef`), the storage
//!   snapshot is taken, and both statuses are written: the content's `creationTime` (int64 ns
//!   since the epoch, when the storage snapshot was taken), `restoreSize` (bytes),
//!   `snapshotHandle`, `readyToUse`; the snapshot's `boundVolumeSnapshotContentName`,
//!   `creationTime` (a `metav1.Time`: RFC 3339 to the second, as the real controller writes
//!   it), `restoreSize` (the source PVC's capacity) and `readyToUse`. The class is
//!   `spec.volumeSnapshotClassName` or the class annotated
//!   `snapshot.storage.kubernetes.io/is-default-class: "true"` for the PV's driver; problems
//!   are reported in `status.error.message` as the real controller words them. Deleting the
//!   `VolumeSnapshot` (deletionPolicy Delete) deletes the content and the storage snapshot.
//! - **external-provisioner + ceph-csi controller**: a PVC with
//!   `spec.dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name}` of a
//!   ready snapshot (same driver, same volume mode, a request no smaller than the
//!   restoreSize) gets a PV `pvc-<claim uid>` with a ceph-csi-shaped handle
//!   (`0001-0009-rook-ceph-<pool id>-<uuid>`) and attributes. A PVC without a dataSource of a
//!   ceph-csi class gets a new empty volume of its `resources.requests.storage` the same way
//!   (RBD: an image with a fresh ext4, or raw for volumeMode Block; CephFS: an empty
//!   subvolume). A class with `volumeBindingMode: WaitForFirstConsumer` provisions only once
//!   the scheduler has picked a node for a pod using the claim (annotation
//!   `volume.kubernetes.io/selected-node`, [`SELECTED_NODE`]). PVCs of other provisioners or
//!   data sources are left Pending (not simulated).
//! - **PV controller** (binding, `kubernetes.io/pvc-protection`, reclaim policy Delete): the
//!   claim gets `spec.volumeName`, the bind annotations and status Bound; a deleted claim
//!   goes once no pod uses it, and then its PV and storage volume.
//! - **scheduler**: a pod without `spec.nodeName` is bound to the node its
//!   `nodeAffinity` `matchFields metadata.name In [...]` (or a `kubernetes.io/hostname`
//!   match expression or nodeSelector) names, once its claims are bound (an unbound
//!   WaitForFirstConsumer claim gets the selected-node annotation instead); otherwise it gets
//!   `PodScheduled=False`, reason `Unschedulable`, with the real scheduler's message.
//! - **kubelet + ceph-csi node plugin**, for the nodes given to [`CsiSim::start`]: a pod bound
//!   to such a node has each PVC volume published at
//!   `<kubelet root>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount` (Filesystem; with
//!   `vol_data.json`) or `<root>/pods/<uid>/volumeDevices/kubernetes.io~csi/<pv>` (Block),
//!   read-only when the pod's volume says `readOnly: true` or the claim is ReadOnlyMany
//!   (otherwise read-write: see the backends for how writes reach the volume), and
//!   then status Running with the conditions and container statuses a kubelet writes. A pod
//!   that is deleted (the fake removes it at once) is unpublished and its directory removed.
//!
//! Pods and PVCs that existed when the simulator started (the fixtures' app pods and their
//! bound claims) are left alone; their volumes are given storage with [`CsiSim::add_source`].
//! New pods that mount such a claim (e.g. a restore pod writing into the app's PVC) get it
//! published like any other volume. [`CsiSim::volume_path`] shows a test where a claim's data
//! lives on the host (e.g. what a restore wrote into a new empty PVC).
//!
//! ## Storage ([`Storage`])
//! - **Dir**: directories; a snapshot is a `cp -a` copy taken at snapshot time; a volume from
//!   a snapshot is that copy (ReadOnlyMany CephFS) or a further copy; publishing copies the
//!   data into the pod's path (no mounts, no root: `readOnly` is not enforced). Block volumes
//!   are regular image files; an empty block volume is a sparse zero-filled image of the
//!   requested size, an empty Filesystem volume an empty directory. A read-write publication
//!   is copied back into the volume when it is unpublished (a tick after the pod is deleted;
//!   [`CsiSim::volume_path`] waits for that), replacing the volume's contents: while the pod
//!   runs the volume does not show its writes, and of two read-write pods of one volume the
//!   last one unpublished wins. (Bind mounts would need root, which Dir avoids.)
//! - **Ceph** (real): an RBD filesystem volume is an RBD image (pool `rbd`, created when
//!   missing) reached through its own `rbd-fuse` mount and a loop device, `mkfs.ext4`, mounted
//!   at the pod's path; a block volume is the loop device bind-mounted over the
//!   `volumeDevices/...` file. An image already attached (a source the app pod mounts, or a
//!   volume another pod uses) is bind-mounted from that publication instead of being attached
//!   and mounted twice (as the kubelet's per-node staging would share it). A snapshot is `rbd snap create pool/img@csi-snap-<vs uid>`
//!   (mounted file systems frozen with `fsfreeze` around it), handle `pool/img@snap`; a volume
//!   from it is `rbd snap protect` + `rbd clone`, attached read-only (`losetup -r`) and mounted
//!   `ro,noload` when published read-only. A CephFS volume is a subvolume-shaped directory
//!   `volumes/csi/csi-vol-<id>/<uuid>` of one shared `ceph-fuse` mount, bind-mounted; its
//!   snapshot is `mkdir <subvol>/.snap/<name>` (handle `<subvol path>@<name>`), and a
//!   ReadOnlyMany volume from it is that `.snap/<name>` directory, bind-mounted read-only
//!   (ceph-csi's shallow `backingSnapshot` volumes); other access modes get a copy.
//!
//! ## Where it differs from the real ceph-csi
//! - ceph-csi's snapshot handles are opaque ids like the volume handles
//!   (`0001-0009-rook-ceph-<pool id>-<uuid>`, backed by an OMAP journal); here they are
//!   `pool/image@snap` (RBD), `<subvolume path>@<name>` (CephFS) or a directory (Dir).
//! - ceph-csi's RBD snapshot is itself a clone image (`csi-snap-<uuid>`, with a snapshot of
//!   the source as its parent, flattened past a depth), and a volume from it is a clone of
//!   that; here the snapshot is a plain RBD snapshot of the source and the volume a clone of
//!   it. Its CephFS snapshots are `ceph fs subvolume snapshot create` (a `.snap` dir of the
//!   subvolume's group dir, `/volumes/csi/csi-vol-<id>/.snap/<name>/<uuid>`), and non-shallow
//!   restores are `subvolume clone`s; here `mkdir <subvol>/.snap/<name>` and `cp -a`.
//! - Nothing is staged per node (no `globalmount`); a volume is attached afresh per pod.
//!   Nothing freezes file systems in the real flow (ceph-csi takes crash-consistent
//!   snapshots); the freeze here only makes the tests' expectations exact.
//! - A snapshot still used by a volume is deleted when the last such volume goes (as
//!   ceph-csi's reference tracking does for shallow volumes; real RBD clones do not hold it).
//! - Deleting a pod is immediate in the fake; the kubelet's unmount follows within a tick.
//! - No Events are emitted, no `as-source-protection` finalizer, no group snapshots, no
//!   volume expansion, no attach (VolumeAttachment), no topology (a WaitForFirstConsumer PV
//!   gets no node affinity).

mod storage;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fixtures::{PvcInfo, VolumeKind, CEPHFS_DRIVER, CLUSTER_ID, RBD_DRIVER};
use crate::resources::{ResourceType, SNAPSHOT_GROUP};
use crate::store::{name_of, namespace_of, new_uid, now_time};
use crate::validation::FieldValidation;
use crate::verbs::{self, WriteOpts};
use crate::{FakeKube, Shared};

pub use storage::Storage;
use storage::{quantity_bytes, Backend, Snap, Vol};

/// The finalizer the snapshot-controller puts on a bound VolumeSnapshot.
pub const VS_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
/// The finalizer the snapshot-controller puts on a bound VolumeSnapshotContent.
pub const VSC_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
/// The annotation that marks a default VolumeSnapshotClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "snapshot.storage.kubernetes.io/is-default-class";

/// The annotation the scheduler puts on a WaitForFirstConsumer claim of a pod it places.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

const POLL: Duration = Duration::from_millis(20);

/// What a hook set with [`CsiSim::on_snapshot_taken`] is told.
#[derive(Clone, Debug)]
pub struct SnapshotTaken {
    /// The VolumeSnapshot's namespace.
    pub namespace: String,
    /// The VolumeSnapshot's name.
    pub name: String,
    /// The source PVC.
    pub pvc: String,
    /// The storage snapshot's handle.
    pub handle: String,
}

/// What the simulator has made on the storage for the agent's objects (the sources of
/// [`CsiSim::add_source`] are not counted), for tests that prove nothing was left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageState {
    /// Handles of storage snapshots (including deleted VolumeSnapshots' snapshots still used
    /// by a volume).
    pub snapshots: Vec<String>,
    /// PVs of volumes provisioned (empty or from snapshots).
    pub volumes: Vec<String>,
    /// Kubelet paths a volume is published at (mounts, or copies for Dir), sources excluded.
    pub published: Vec<PathBuf>,
    /// Objects of the Ceph backend (RBD `image` and `image@snap`, sources included); empty
    /// for Dir.
    pub ceph_objects: Vec<String>,
}

impl StorageState {
    /// No snapshot, provisioned volume or publication left (sources do not count).
    pub fn is_clean(&self) -> bool {
        self.snapshots.is_empty() && self.volumes.is_empty() && self.published.is_empty()
    }
}

#[derive(Default)]
struct Knobs {
    never_ready: bool,
    snapshot_error: Option<String>,
    never_bind: bool,
    unschedulable: Option<String>,
}

struct SnapRec {
    snap: Option<Snap>,
    vs_uid: String,
    refs: usize,
    /// The VolumeSnapshot is gone; delete the storage snapshot when `refs` reaches 0.
    released: bool,
}

struct VolRec {
    vol: Vol,
    /// The content (key of `State::snaps`) it was restored from.
    from: Option<String>,
    claim_uid: String,
}

struct PodRec {
    targets: Vec<PathBuf>,
    dir: PathBuf,
    namespace: String,
    claims: Vec<String>,
}

#[derive(Default)]
struct State {
    old_pods: HashSet<String>,
    old_pvcs: HashSet<String>,
    /// Source volumes by CSI volume handle, with their target and claim.
    sources: BTreeMap<String, (Vol, PathBuf, String, String)>,
    /// Content name -> snapshot.
    snaps: BTreeMap<String, SnapRec>,
    /// VolumeSnapshot uids already handled (content made or error written).
    seen_vs: HashSet<String>,
    /// PV name -> restored volume.
    vols: BTreeMap<String, VolRec>,
    /// Pod uid -> published volumes.
    pods: BTreeMap<String, PodRec>,
    /// Claims (uid) a "not simulated" note was logged for.
    noted: HashSet<String>,
}

struct Inner {
    shared: Arc<Shared>,
    nodes: BTreeMap<String, PathBuf>,
    backend: Mutex<Backend>,
    state: Mutex<State>,
    knobs: Mutex<Knobs>,
    #[allow(clippy::type_complexity)]
    hook: Mutex<Option<Box<dyn FnMut(&SnapshotTaken) + Send>>>,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
    log: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The simulated snapshot controllers, ceph-csi, PV controller, scheduler and kubelets (see
/// the module documentation). Dropping it stops the thread and undoes everything it made on
/// the storage (unmounts, loop devices, FUSE mounts, clones, snapshots, images).
pub struct CsiSim {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn uid_of(v: &Value) -> String {
    s(v, "/metadata/uid")
}

fn deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn now_rfc3339() -> String {
    now_time()
}

impl CsiSim {
    /// Starts the simulator for `fake`, with a kubelet for each `(node, kubelet root)`.
    /// Pods and PVCs already stored are left alone.
    pub fn start(fake: &FakeKube, nodes: &[(&str, &Path)], storage: Storage) -> io::Result<Self> {
        let shared = fake.shared.clone();
        let mut state = State::default();
        if let Some(res) = shared.resource("", "v1", "pods") {
            state.old_pods = shared
                .lock()
                .list(&res, None)
                .into_iter()
                .map(uid_of)
                .collect();
        }
        if let Some(res) = shared.resource("", "v1", "persistentvolumeclaims") {
            state.old_pvcs = shared
                .lock()
                .list(&res, None)
                .into_iter()
                .map(uid_of)
                .collect();
        }
        let inner = Arc::new(Inner {
            shared,
            nodes: nodes
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_path_buf()))
                .collect(),
            backend: Mutex::new(Backend::new(storage)?),
            state: Mutex::new(state),
            knobs: Mutex::new(Knobs::default()),
            hook: Mutex::new(None),
            stop: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let i2 = inner.clone();
        let thread = std::thread::Builder::new()
            .name("csi-sim".into())
            .spawn(move || {
                while !i2.stop.load(Ordering::SeqCst) {
                    // A bug in one step must not silently stop the whole simulator.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| i2.tick()));
                    if let Err(p) = r {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        i2.error(format!("simulator step panicked: {msg}"));
                    }
                    std::thread::sleep(POLL);
                }
            })?;
        Ok(CsiSim {
            inner,
            thread: Some(thread),
        })
    }

    /// Gives the app's PVC `pvc` (a fixture's bound claim) storage and publishes it read-write
    /// at `target`, its path in the app pod's kubelet tree ([`crate::kubelet::KubeletLayout::path_of`]).
    /// Dir: `target` itself is the volume. Ceph: a new RBD image (ext4, or raw for block) or
    /// CephFS subvolume of the claim's size, mounted at `target`. Returns `target`: write the
    /// test data there.
    pub fn add_source(&self, pvc: &PvcInfo, target: &Path) -> io::Result<PathBuf> {
        let id = new_uid();
        let bytes = quantity_bytes(&pvc.size).unwrap_or(64 << 20);
        let vol = lock(&self.inner.backend).create_source(&id, pvc.kind, bytes, target)?;
        lock(&self.inner.state).sources.insert(
            pvc.volume_handle.clone(),
            (
                vol,
                target.to_path_buf(),
                pvc.namespace.clone(),
                pvc.name.clone(),
            ),
        );
        Ok(target.to_path_buf())
    }

    /// Where the data of claim `namespace/claim` lives on the host, for a test to check what a
    /// pod wrote: for a provisioned volume (empty or from a snapshot) or a source. Dir: the
    /// volume's directory (Filesystem) or image file (Block); Ceph: the CephFS subvolume's
    /// directory, or the RBD image's `rbd-fuse` file (raw; ext4 for Filesystem), valid until
    /// the volume is next published or deleted. None when the claim is not bound to storage
    /// of the simulator.
    ///
    /// Call it once the writing pod is deleted: it first waits (up to 30 s) for the kubelet
    /// to unpublish volumes of deleted pods, as the Dir backend copies a read-write
    /// publication back into the volume then. While a pod runs, the Dir volume does not show
    /// its writes.
    pub fn volume_path(&self, namespace: &str, claim: &str) -> Option<PathBuf> {
        let pvc = self
            .inner
            .get("", "persistentvolumeclaims", namespace, claim)?;
        let pv_name = s(&pvc, "/spec/volumeName");
        let handle = self
            .inner
            .get("", "persistentvolumes", "", &pv_name)
            .map(|pv| s(&pv, "/spec/csi/volumeHandle"))
            .unwrap_or_default();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let live: HashSet<String> = self
                .inner
                .list("", "pods")
                .iter()
                .filter(|p| !deleting(p))
                .map(uid_of)
                .collect();
            let pending = lock(&self.inner.state).pods.iter().any(|(uid, r)| {
                !live.contains(uid)
                    && r.namespace == namespace
                    && r.claims.iter().any(|c| c == claim)
            });
            if !pending || Instant::now() > end {
                break;
            }
            std::thread::sleep(POLL);
        }
        let vol = {
            let st = lock(&self.inner.state);
            st.vols
                .get(&pv_name)
                .map(|r| r.vol.clone())
                .or_else(|| st.sources.get(&handle).map(|x| x.0.clone()))
        }?;
        let res = lock(&self.inner.backend).data_path(&vol);
        match res {
            Ok(p) => Some(p),
            Err(e) => {
                self.inner
                    .error(format!("data path of {namespace}/{claim}: {e}"));
                None
            }
        }
    }

    /// The path a source claim was published at by [`CsiSim::add_source`].
    pub fn source_path(&self, namespace: &str, claim: &str) -> Option<PathBuf> {
        lock(&self.inner.state)
            .sources
            .values()
            .find(|(_, _, ns, c)| ns == namespace && c == claim)
            .map(|(_, t, _, _)| t.clone())
    }

    /// Knob: new VolumeSnapshots get a content but never become `readyToUse` (no storage
    /// snapshot is taken).
    pub fn snapshots_never_ready(&self, on: bool) {
        lock(&self.inner.knobs).never_ready = on;
    }

    /// Knob: new VolumeSnapshots fail: `status.error.message` (and the content's) is `msg`,
    /// `readyToUse: false`. `None` turns it off.
    pub fn snapshot_error(&self, msg: Option<&str>) {
        lock(&self.inner.knobs).snapshot_error = msg.map(str::to_string);
    }

    /// Knob: new PVCs are never provisioned or bound (they stay Pending).
    pub fn pvcs_never_bind(&self, on: bool) {
        lock(&self.inner.knobs).never_bind = on;
    }

    /// Knob: new pods stay Pending: the scheduler writes `PodScheduled=False`, reason
    /// `Unschedulable`, with `msg`; the kubelet does not start pods bound to a node by
    /// `spec.nodeName`. `None` turns it off (waiting pods are then scheduled).
    pub fn pods_unschedulable(&self, msg: Option<&str>) {
        lock(&self.inner.knobs).unschedulable = msg.map(str::to_string);
    }

    /// Runs `f` on the simulator's thread right after each storage snapshot is taken, before
    /// the VolumeSnapshot is marked ready (e.g. to change the source while a backup runs).
    pub fn on_snapshot_taken(&self, f: impl FnMut(&SnapshotTaken) + Send + 'static) {
        *lock(&self.inner.hook) = Some(Box::new(f));
    }

    /// What exists on the storage for the agent's objects now.
    pub fn storage_state(&self) -> StorageState {
        let st = lock(&self.inner.state);
        let be = lock(&self.inner.backend);
        let sources: HashSet<&PathBuf> = st.sources.values().map(|(_, t, _, _)| t).collect();
        let (images, snaps) = be.ledger();
        StorageState {
            snapshots: st
                .snaps
                .values()
                .filter_map(|r| r.snap.as_ref().map(|s| s.handle.clone()))
                .collect(),
            volumes: st.vols.keys().cloned().collect(),
            published: be
                .published()
                .into_iter()
                .filter(|p| !sources.contains(p))
                .collect(),
            ceph_objects: images.into_iter().chain(snaps).collect(),
        }
    }

    /// Waits until [`StorageState::is_clean`] (the agent's objects are gone and the simulator
    /// has undone their storage); on timeout returns what is left.
    pub fn wait_clean(&self, timeout: Duration) -> Result<(), StorageState> {
        let end = Instant::now() + timeout;
        loop {
            let st = self.storage_state();
            if st.is_clean() {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(st);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Failures of the simulator itself (a storage command or an object write that failed);
    /// a test should assert there are none.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.inner.errors).clone()
    }

    /// What the simulator did, one line per step (for a failing test's message).
    pub fn log(&self) -> Vec<String> {
        lock(&self.inner.log).clone()
    }
}

impl Drop for CsiSim {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        lock(&self.inner.backend).teardown();
    }
}

fn pod_conditions(now: &str, running: bool) -> Value {
    let t = if running { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": t, "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "Ready", "status": t, "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": t, "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
    ])
}

fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let any = containers.iter().any(|c| {
        ["requests", "limits"].iter().any(|k| {
            c.pointer(&format!("/resources/{k}"))
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let l = c.pointer(&format!("/resources/limits/{r}"));
            let q = c.pointer(&format!("/resources/requests/{r}"));
            l.is_some() && (q.is_none() || q == l)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn image_id(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    format!("{repo}@sha256:{}", crate::kubelet::hex_sha256(image))
}

/// The nodes a pod's scheduling constraints allow (None: any).
fn wanted_nodes(pod: &Value) -> Option<Vec<String>> {
    let mut sets: Vec<Vec<String>> = Vec::new();
    if let Some(terms) = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    {
        // Terms are ORed; the requirements within one term are ANDed.
        let mut any: Vec<String> = Vec::new();
        let mut unconstrained = false;
        for t in terms {
            let mut term_sets: Vec<Vec<String>> = Vec::new();
            for (list, key) in [("matchFields", "metadata.name"), ("matchExpressions", "kubernetes.io/hostname")] {
                for r in t.get(list).and_then(Value::as_array).into_iter().flatten() {
                    if r["key"] == key && r["operator"] == "In" {
                        term_sets.push(
                            r["values"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect(),
                        );
                    }
                }
            }
            match term_sets.into_iter().reduce(|a, b| a.into_iter().filter(|x| b.contains(x)).collect()) {
                Some(v) => any.extend(v),
                None => unconstrained = true,
            }
        }
        if !unconstrained {
            sets.push(any);
        }
    }
    if let Some(h) = pod
        .pointer("/spec/nodeSelector/kubernetes.io~1hostname")
        .and_then(Value::as_str)
    {
        sets.push(vec![h.to_string()]);
    }
    sets.into_iter()
        .reduce(|a, b| a.into_iter().filter(|x| b.contains(x)).collect())
}

fn pvc_claims(pod: &Value) -> Vec<(String, String, bool)> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let c = v.get("persistentVolumeClaim")?;
            Some((
                s(v, "/name"),
                c.get("claimName")?.as_str()?.to_string(),
                c.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
            ))
        })
        .collect()
}

fn preemption(n: usize) -> String {
    format!("preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.")
}

impl Inner {
    fn res(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.shared.resource(group, "v1", plural)
    }

    fn list(&self, group: &str, plural: &str) -> Vec<Value> {
        match self.res(group, plural) {
            Some(r) => self
                .shared
                .lock()
                .list(&r, None)
                .into_iter()
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let r = self.res(group, plural)?;
        let ns = if r.namespaced { ns } else { "" };
        self.shared.lock().get(&r, ns, name).cloned()
    }

    fn error(&self, msg: String) {
        lock(&self.errors).push(msg.clone());
        self.note(format!("ERROR {msg}"));
    }

    fn note(&self, msg: String) {
        tracing::debug!(target: "csi_sim", "{msg}");
        lock(&self.log).push(msg);
    }

    /// Read-modify-write of a stored object under the store lock (validated strictly as the
    /// real type); `sub` is `Some("status")` for the status subresource.
    fn modify(
        &self,
        group: &str,
        plural: &str,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let r = self.res(group, plural)?;
        let ns = if r.namespaced { ns } else { "" };
        let mut st = self.shared.lock();
        let mut obj = st.get(&r, ns, name)?.clone();
        f(&mut obj);
        let opts = WriteOpts {
            fv: FieldValidation::Strict,
            ..Default::default()
        };
        match verbs::update_locked(&mut st, &r, ns, name, sub, obj, &opts) {
            Ok(w) => Some(w.object),
            Err(e) => {
                drop(st);
                self.error(format!("update {plural} {ns}/{name}: {}", e.message));
                None
            }
        }
    }

    fn create(&self, group: &str, plural: &str, ns: Option<&str>, body: Value) -> Option<Value> {
        let r = self.res(group, plural)?;
        let opts = WriteOpts {
            fv: FieldValidation::Strict,
            ..Default::default()
        };
        let res = verbs::create_locked(&mut self.shared.lock(), &r, ns, body, &opts);
        match res {
            Ok(w) => Some(w.object),
            Err(e) => {
                self.error(format!("create {plural}: {}", e.message));
                None
            }
        }
    }

    fn remove(&self, group: &str, plural: &str, ns: &str, name: &str) {
        if let Some(r) = self.res(group, plural) {
            let ns = if r.namespaced { ns } else { "" };
            self.shared.lock().remove(&r, ns, name);
        }
    }

    fn tick(&self) {
        self.snapshotter();
        self.provisioner();
        self.scheduler();
        self.kubelet();
        self.protection_and_reclaim();
    }

    // ----- snapshot-controller, csi-snapshotter, ceph-csi CreateSnapshot/DeleteSnapshot -----

    fn snapshotter(&self) {
        if self.res(SNAPSHOT_GROUP, "volumesnapshots").is_none() {
            return;
        }
        let all = self.list(SNAPSHOT_GROUP, "volumesnapshots");
        let live: HashSet<String> = all.iter().filter(|v| !deleting(v)).map(uid_of).collect();
        // Deleted snapshots: content and storage snapshot go, then the finalizer.
        let gone: Vec<String> = lock(&self.state)
            .snaps
            .iter()
            .filter(|(_, r)| !r.released && !live.contains(&r.vs_uid))
            .map(|(k, _)| k.clone())
            .collect();
        for content in gone {
            self.remove(SNAPSHOT_GROUP, "volumesnapshotcontents", "", &content);
            let mut st = lock(&self.state);
            if let Some(r) = st.snaps.get_mut(&content) {
                r.released = true;
            }
            drop(st);
            self.note(format!("content {content} deleted"));
            self.collect_snapshots();
        }
        for vs in &all {
            if deleting(vs) {
                let fin = vs
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|x| x == VS_FINALIZER));
                if fin {
                    self.modify(
                        SNAPSHOT_GROUP,
                        "volumesnapshots",
                        &namespace_of(vs),
                        &name_of(vs),
                        None,
                        |o| {
                            if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
                                f.retain(|x| x != VS_FINALIZER);
                            }
                        },
                    );
                }
                lock(&self.state).seen_vs.remove(&uid_of(vs));
                continue;
            }
            if lock(&self.state).seen_vs.contains(&uid_of(vs)) {
                continue;
            }
            lock(&self.state).seen_vs.insert(uid_of(vs));
            self.new_snapshot(vs);
        }
    }

    fn vs_error(&self, vs: &Value, msg: &str) {
        self.note(format!(
            "VolumeSnapshot {}/{}: error {msg}",
            namespace_of(vs),
            name_of(vs)
        ));
        let now = now_rfc3339();
        self.modify(
            SNAPSHOT_GROUP,
            "volumesnapshots",
            &namespace_of(vs),
            &name_of(vs),
            Some("status"),
            |o| {
                let st = o
                    .get("status")
                    .filter(|x| x.is_object())
                    .cloned()
                    .unwrap_or(json!({}));
                let mut st = st;
                st["readyToUse"] = json!(false);
                st["error"] = json!({"message": msg, "time": now});
                o["status"] = st;
            },
        );
    }

    fn new_snapshot(&self, vs: &Value) {
        let ns = namespace_of(vs);
        let name = name_of(vs);
        let vs_uid = uid_of(vs);
        let Some(claim) = vs
            .pointer("/spec/source/persistentVolumeClaimName")
            .and_then(Value::as_str)
        else {
            self.vs_error(vs, "pre-provisioned snapshots (spec.source.volumeSnapshotContentName) are not simulated");
            return;
        };
        let prefix = format!(
            "Failed to create snapshot content with error failed to get input parameters to create snapshot {name}:"
        );
        let Some(pvc) = self.get("", "persistentvolumeclaims", &ns, claim) else {
            self.vs_error(vs, &format!("{prefix} \"failed to retrieve PVC {claim} from the lister: \\\"persistentvolumeclaim \\\\\\\"{claim}\\\\\\\" not found\\\"\""));
            return;
        };
        let pv_name = s(&pvc, "/spec/volumeName");
        let pv = (!pv_name.is_empty() && s(&pvc, "/status/phase") == "Bound")
            .then(|| self.get("", "persistentvolumes", "", &pv_name))
            .flatten();
        let Some(pv) = pv else {
            self.vs_error(vs, &format!("{prefix} \"the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot\""));
            return;
        };
        let driver = s(&pv, "/spec/csi/driver");
        let handle = s(&pv, "/spec/csi/volumeHandle");
        let classes = self.list(SNAPSHOT_GROUP, "volumesnapshotclasses");
        let class = match vs
            .pointer("/spec/volumeSnapshotClassName")
            .and_then(Value::as_str)
        {
            Some(c) => match classes.iter().find(|x| name_of(x) == c) {
                Some(x) => x.clone(),
                None => {
                    self.vs_error(vs, &format!("Failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{c}\" not found"));
                    return;
                }
            },
            None => {
                let defaults: Vec<&Value> = classes
                    .iter()
                    .filter(|x| {
                        s(x, "/driver") == driver
                            && x.pointer("/metadata/annotations")
                                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                                .and_then(Value::as_str)
                                == Some("true")
                    })
                    .collect();
                match defaults.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        self.vs_error(vs, "Failed to set default snapshot class with error cannot find default snapshot class");
                        return;
                    }
                    _ => {
                        self.vs_error(vs, &format!("Failed to set default snapshot class with error {} default snapshot classes were found", defaults.len()));
                        return;
                    }
                }
            }
        };
        if s(&class, "/driver") != driver {
            self.vs_error(vs, &format!("Failed to create snapshot content with error failed to take snapshot of the volume {pv_name}: \"the snapshot class {} has driver {} but the volume's driver is {driver}\"", name_of(&class), s(&class, "/driver")));
            return;
        }
        let knob_error = lock(&self.knobs).snapshot_error.clone();
        let never_ready = lock(&self.knobs).never_ready;
        let content = format!("snapcontent-{vs_uid}");
        let mode = match s(&pv, "/spec/volumeMode").as_str() {
            "" => "Filesystem".to_string(),
            m => m.to_string(),
        };
        // Finalizer on the snapshot, then the content.
        let Some(vs_now) = self.modify(SNAPSHOT_GROUP, "volumesnapshots", &ns, &name, None, |o| {
            let f = o["metadata"]
                .as_object_mut()
                .expect("metadata")
                .entry("finalizers")
                .or_insert(json!([]));
            if let Some(f) = f.as_array_mut() {
                if !f.iter().any(|x| x == VS_FINALIZER) {
                    f.push(json!(VS_FINALIZER));
                }
            }
        }) else {
            return;
        };
        let body = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": content, "finalizers": [VSC_FINALIZER]},
            "spec": {
                "deletionPolicy": s(&class, "/deletionPolicy"),
                "driver": driver,
                "source": {"volumeHandle": handle},
                "sourceVolumeMode": mode,
                "volumeSnapshotClassName": name_of(&class),
                "volumeSnapshotRef": {
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshot",
                    "name": name,
                    "namespace": ns,
                    "resourceVersion": s(&vs_now, "/metadata/resourceVersion"),
                    "uid": vs_uid,
                },
            },
        });
        if self
            .create(SNAPSHOT_GROUP, "volumesnapshotcontents", None, body)
            .is_none()
        {
            return;
        }
        lock(&self.state).snaps.insert(
            content.clone(),
            SnapRec {
                snap: None,
                vs_uid: vs_uid.clone(),
                refs: 0,
                released: false,
            },
        );
        let bound = |ready: bool| {
            self.modify(
                SNAPSHOT_GROUP,
                "volumesnapshots",
                &ns,
                &name,
                Some("status"),
                |o| {
                    o["status"] =
                        json!({"boundVolumeSnapshotContentName": content, "readyToUse": ready});
                },
            )
        };
        if let Some(msg) = knob_error {
            let now = now_rfc3339();
            self.modify(
                SNAPSHOT_GROUP,
                "volumesnapshotcontents",
                "",
                &content,
                Some("status"),
                |o| {
                    o["status"] =
                        json!({"readyToUse": false, "error": {"message": msg, "time": now}})
                },
            );
            bound(false);
            self.vs_error(vs, &msg);
            return;
        }
        if never_ready {
            self.modify(
                SNAPSHOT_GROUP,
                "volumesnapshotcontents",
                "",
                &content,
                Some("status"),
                |o| o["status"] = json!({"readyToUse": false}),
            );
            bound(false);
            self.note(format!("VolumeSnapshot {ns}/{name}: held not ready"));
            return;
        }
        // The storage snapshot (ceph-csi's CreateSnapshot).
        let source = {
            let st = lock(&self.state);
            st.sources
                .get(&handle)
                .map(|(v, _, _, _)| v.clone())
                .or_else(|| st.vols.get(&pv_name).map(|r| r.vol.clone()))
        };
        let Some(vol) = source else {
            let msg = format!("Failed to check and update snapshot content: failed to take snapshot of the volume {handle}: \"rpc error: code = NotFound desc = volume {handle} not found (csi-sim: no storage for this PV; use CsiSim::add_source)\"");
            bound(false);
            self.vs_error(vs, &msg);
            return;
        };
        let taken = chrono::Utc::now();
        let snap = match lock(&self.backend).snapshot(&vol, &format!("csi-snap-{vs_uid}")) {
            Ok(s) => s,
            Err(e) => {
                self.error(format!("snapshot of {handle}: {e}"));
                bound(false);
                self.vs_error(vs, &format!("Failed to check and update snapshot content: failed to take snapshot of the volume {handle}: \"rpc error: code = Internal desc = {e}\""));
                return;
            }
        };
        self.note(format!(
            "VolumeSnapshot {ns}/{name}: storage snapshot {} taken",
            snap.handle
        ));
        if let Some(r) = lock(&self.state).snaps.get_mut(&content) {
            r.snap = Some(snap.clone());
        }
        if let Some(h) = lock(&self.hook).as_mut() {
            h(&SnapshotTaken {
                namespace: ns.clone(),
                name: name.clone(),
                pvc: claim.to_string(),
                handle: snap.handle.clone(),
            });
        }
        let size = match s(&pvc, "/status/capacity/storage") {
            x if x.is_empty() => s(&pvc, "/spec/resources/requests/storage"),
            x => x,
        };
        let bytes = quantity_bytes(&size).unwrap_or(0);
        let ns_time = taken.timestamp_nanos_opt().unwrap_or(0);
        self.modify(
            SNAPSHOT_GROUP,
            "volumesnapshotcontents",
            "",
            &content,
            Some("status"),
            |o| {
                o["status"] = json!({
                    "creationTime": ns_time,
                    "readyToUse": true,
                    "restoreSize": bytes,
                    "snapshotHandle": snap.handle,
                })
            },
        );
        let created = taken.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        self.modify(
            SNAPSHOT_GROUP,
            "volumesnapshots",
            &ns,
            &name,
            Some("status"),
            |o| {
                o["status"] = json!({
                    "boundVolumeSnapshotContentName": content,
                    "creationTime": created,
                    "readyToUse": true,
                    "restoreSize": size,
                })
            },
        );
    }

    /// Deletes released storage snapshots no volume uses any more.
    fn collect_snapshots(&self) {
        let victims: Vec<(String, Option<Snap>)> = lock(&self.state)
            .snaps
            .iter()
            .filter(|(_, r)| r.released && r.refs == 0)
            .map(|(k, r)| (k.clone(), r.snap.clone()))
            .collect();
        for (content, snap) in victims {
            if let Some(snap) = snap {
                if let Err(e) = lock(&self.backend).delete_snapshot(&snap) {
                    self.error(format!("delete snapshot {}: {e}", snap.handle));
                    continue;
                }
                self.note(format!("storage snapshot {} deleted", snap.handle));
            }
            lock(&self.state).snaps.remove(&content);
        }
    }

    // ----- external-provisioner + ceph-csi CreateVolume, PV controller binding -----

    fn provisioner(&self) {
        let pvcs = self.list("", "persistentvolumeclaims");
        for pvc in pvcs {
            let uid = uid_of(&pvc);
            if deleting(&pvc)
                || lock(&self.state).old_pvcs.contains(&uid)
                || !s(&pvc, "/spec/volumeName").is_empty()
            {
                continue;
            }
            if lock(&self.knobs).never_bind {
                continue;
            }
            self.provision(&pvc);
        }
    }

    fn note_once(&self, uid: &str, msg: String) {
        if lock(&self.state).noted.insert(format!("{uid}{msg}")) {
            self.note(msg);
        }
    }

    fn provision(&self, pvc: &Value) {
        let ns = namespace_of(pvc);
        let name = name_of(pvc);
        let uid = uid_of(pvc);
        let sc_name = s(pvc, "/spec/storageClassName");
        let Some(sc) = self.get("storage.k8s.io", "storageclasses", "", &sc_name) else {
            self.note_once(
                &uid,
                format!("PVC {ns}/{name}: storageclass \"{sc_name}\" not found"),
            );
            return;
        };
        let driver = s(&sc, "/provisioner");
        if driver != RBD_DRIVER && driver != CEPHFS_DRIVER {
            return;
        }
        let cephfs = driver == CEPHFS_DRIVER;
        if s(&sc, "/volumeBindingMode") == "WaitForFirstConsumer"
            && pvc
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(SELECTED_NODE))
                .is_none()
        {
            self.note_once(
                &uid,
                format!("PVC {ns}/{name}: waiting for first consumer to be created before binding"),
            );
            return;
        }
        let mode = match s(pvc, "/spec/volumeMode").as_str() {
            "" => "Filesystem".to_string(),
            m => m.to_string(),
        };
        let req = s(pvc, "/spec/resources/requests/storage");
        let want = quantity_bytes(&req).unwrap_or(0);
        let modes: Vec<String> = pvc
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        let ds = pvc
            .pointer("/spec/dataSourceRef")
            .or_else(|| pvc.pointer("/spec/dataSource"))
            .cloned()
            .unwrap_or(Value::Null);
        let id = new_uid();
        let (vol, from, shallow, what) = if ds.is_null() {
            let kind = match (cephfs, mode.as_str()) {
                (true, "Filesystem") => VolumeKind::CephFs,
                (false, "Filesystem") => VolumeKind::Rbd,
                (false, "Block") => VolumeKind::RbdBlock,
                _ => {
                    self.note_once(
                        &uid,
                        format!("PVC {ns}/{name}: volume mode {mode} is not supported by {driver}"),
                    );
                    return;
                }
            };
            if want == 0 {
                self.note_once(
                    &uid,
                    format!("PVC {ns}/{name}: no resources.requests.storage"),
                );
                return;
            }
            match lock(&self.backend).create_empty(&id, kind, want) {
                Ok(v) => (v, None, false, "empty volume".to_string()),
                Err(e) => {
                    self.error(format!("create empty volume for PVC {ns}/{name}: {e}"));
                    return;
                }
            }
        } else {
            let Some((vol, content, shallow)) =
                self.restore_for(pvc, &sc, &ds, &mode, want, &modes, &id)
            else {
                return;
            };
            let what = format!(
                "{} from {}",
                if shallow { "shallow volume" } else { "volume" },
                content.1
            );
            (vol, Some(content.0), shallow, what)
        };
        let pv_name = format!("pvc-{uid}");
        let pool_id = if cephfs {
            "0000000000000001"
        } else {
            "0000000000000002"
        };
        let handle = format!("0001-0009-{CLUSTER_ID}-{pool_id}-{id}");
        lock(&self.state).vols.insert(
            pv_name.clone(),
            VolRec {
                vol: vol.clone(),
                from,
                claim_uid: uid.clone(),
            },
        );
        let params = sc.get("parameters").cloned().unwrap_or(json!({}));
        let secret = if cephfs { "cephfs" } else { "rbd" };
        let mut attrs = json!({
            "clusterID": params.get("clusterID").cloned().unwrap_or(json!(CLUSTER_ID)),
            "pool": params.get("pool").cloned().unwrap_or(json!("replicapool")),
            "storage.kubernetes.io/csiProvisionerIdentity": if cephfs { crate::fixtures::PROVISIONER_IDENTITY_CEPHFS } else { crate::fixtures::PROVISIONER_IDENTITY_RBD },
        });
        if cephfs {
            attrs["fsName"] = params.get("fsName").cloned().unwrap_or(json!("myfs"));
            attrs["subvolumeName"] = json!(format!("csi-vol-{id}"));
            attrs["subvolumePath"] = json!(format!("/{}", vol.loc.display()));
            if shallow {
                attrs["backingSnapshot"] = json!("true");
            }
        } else {
            attrs["imageName"] = json!(format!("csi-vol-{id}"));
            attrs["imageFeatures"] = params
                .get("imageFeatures")
                .cloned()
                .unwrap_or(json!("layering"));
            attrs["imageFormat"] = json!("2");
            attrs["journalPool"] = attrs["pool"].clone();
        }
        let mut csi = json!({
            "driver": driver,
            "volumeHandle": handle,
            "volumeAttributes": attrs,
            "controllerExpandSecretRef": {"name": format!("rook-csi-{secret}-provisioner"), "namespace": "rook-ceph"},
            "nodeStageSecretRef": {"name": format!("rook-csi-{secret}-node"), "namespace": "rook-ceph"},
        });
        if !cephfs && mode == "Filesystem" {
            csi["fsType"] = json!("ext4");
        }
        let pv = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {
                    "pv.kubernetes.io/provisioned-by": driver,
                    "volume.kubernetes.io/provisioner-deletion-secret-name": format!("rook-csi-{secret}-provisioner"),
                    "volume.kubernetes.io/provisioner-deletion-secret-namespace": "rook-ceph",
                },
                "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer", "kubernetes.io/pv-protection"],
            },
            "spec": {
                "accessModes": modes,
                "capacity": {"storage": req},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "name": name,
                    "namespace": ns,
                    "resourceVersion": s(pvc, "/metadata/resourceVersion"),
                    "uid": uid,
                },
                "csi": csi,
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy").cloned().unwrap_or(json!("Delete")),
                "storageClassName": sc_name,
                "volumeMode": mode,
            },
        });
        if self.create("", "persistentvolumes", None, pv).is_none() {
            return;
        }
        let now = now_rfc3339();
        self.modify("", "persistentvolumes", "", &pv_name, Some("status"), |o| {
            o["status"] = json!({"phase": "Bound", "lastPhaseTransitionTime": now});
        });
        self.modify("", "persistentvolumeclaims", &ns, &name, None, |o| {
            let meta = o["metadata"].as_object_mut().expect("metadata");
            let a = meta.entry("annotations").or_insert(json!({}));
            a["pv.kubernetes.io/bind-completed"] = json!("yes");
            a["pv.kubernetes.io/bound-by-controller"] = json!("yes");
            a["volume.beta.kubernetes.io/storage-provisioner"] = json!(driver);
            a["volume.kubernetes.io/storage-provisioner"] = json!(driver);
            let f = meta.entry("finalizers").or_insert(json!([]));
            if let Some(f) = f.as_array_mut() {
                if !f.iter().any(|x| x == "kubernetes.io/pvc-protection") {
                    f.push(json!("kubernetes.io/pvc-protection"));
                }
            }
            o["spec"]["volumeName"] = json!(pv_name);
        });
        self.modify(
            "",
            "persistentvolumeclaims",
            &ns,
            &name,
            Some("status"),
            |o| {
                o["status"] =
                    json!({"phase": "Bound", "accessModes": modes, "capacity": {"storage": req}});
            },
        );
        self.note(format!("PVC {ns}/{name}: bound to {pv_name} ({what})"));
    }

    /// The volume of a PVC with a data source (a VolumeSnapshot): `(volume, (content, snapshot
    /// handle), shallow)`, or None while it cannot be made yet (noted).
    #[allow(clippy::too_many_arguments)]
    fn restore_for(
        &self,
        pvc: &Value,
        sc: &Value,
        ds: &Value,
        mode: &str,
        want: u64,
        modes: &[String],
        id: &str,
    ) -> Option<(Vol, (String, String), bool)> {
        let ns = namespace_of(pvc);
        let name = name_of(pvc);
        let uid = uid_of(pvc);
        let driver = s(sc, "/provisioner");
        let cephfs = driver == CEPHFS_DRIVER;
        if s(ds, "/apiGroup") != SNAPSHOT_GROUP || s(ds, "/kind") != "VolumeSnapshot" {
            self.note_once(
                &uid,
                format!("PVC {ns}/{name}: data source {ds} not simulated"),
            );
            return None;
        }
        let vs_name = s(ds, "/name");
        let Some(vs) = self.get(SNAPSHOT_GROUP, "volumesnapshots", &ns, &vs_name) else {
            self.note_once(
                &uid,
                format!("PVC {ns}/{name}: waiting for VolumeSnapshot {vs_name}"),
            );
            return None;
        };
        if vs.pointer("/status/readyToUse") != Some(&json!(true)) || deleting(&vs) {
            return None;
        }
        let content = s(&vs, "/status/boundVolumeSnapshotContentName");
        let vsc = self.get(SNAPSHOT_GROUP, "volumesnapshotcontents", "", &content)?;
        let snap = lock(&self.state)
            .snaps
            .get(&content)
            .and_then(|r| r.snap.clone());
        let snap = snap?;
        if s(&vsc, "/spec/driver") != driver {
            self.note_once(
                &uid,
                format!(
                    "PVC {ns}/{name}: snapshot driver {} differs from the class's {driver}",
                    s(&vsc, "/spec/driver")
                ),
            );
            return None;
        }
        if s(&vsc, "/spec/sourceVolumeMode") != *mode {
            self.note_once(&uid, format!("PVC {ns}/{name}: requested volume mode {mode} does not match the snapshot source's {}", s(&vsc, "/spec/sourceVolumeMode")));
            return None;
        }
        let have = vsc
            .pointer("/status/restoreSize")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if want < have {
            self.note_once(&uid, format!("PVC {ns}/{name}: requested size {want} is smaller than the snapshot's restoreSize {have}"));
            return None;
        }
        let shallow = cephfs && modes == ["ReadOnlyMany"];
        let vol = match lock(&self.backend).restore(&snap, id, shallow) {
            Ok(v) => v,
            Err(e) => {
                self.error(format!("restore {} for PVC {ns}/{name}: {e}", snap.handle));
                return None;
            }
        };
        if let Some(r) = lock(&self.state).snaps.get_mut(&content) {
            r.refs += 1;
        }
        Some((vol, (content, snap.handle), shallow))
    }

    /// Whether an unbound claim's class binds only once a pod using it is scheduled.
    fn waits_for_consumer(&self, pvc: &Value) -> bool {
        let sc = s(pvc, "/spec/storageClassName");
        self.get("storage.k8s.io", "storageclasses", "", &sc)
            .is_some_and(|c| s(&c, "/volumeBindingMode") == "WaitForFirstConsumer")
    }

    // ----- PVC protection, PV reclaim (Delete) + ceph-csi DeleteVolume -----

    fn protection_and_reclaim(&self) {
        let pods = self.list("", "pods");
        let pvcs = self.list("", "persistentvolumeclaims");
        for pvc in &pvcs {
            let uid = uid_of(pvc);
            if !deleting(pvc) || lock(&self.state).old_pvcs.contains(&uid) {
                continue;
            }
            let ns = namespace_of(pvc);
            let name = name_of(pvc);
            let used = pods
                .iter()
                .any(|p| namespace_of(p) == ns && pvc_claims(p).iter().any(|(_, c, _)| *c == name))
                || lock(&self.state)
                    .pods
                    .values()
                    .any(|r| r.namespace == ns && r.claims.contains(&name));
            if used {
                continue;
            }
            self.modify("", "persistentvolumeclaims", &ns, &name, None, |o| {
                if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
                    f.retain(|x| x != "kubernetes.io/pvc-protection");
                }
            });
        }
        let live: HashSet<String> = self
            .list("", "persistentvolumeclaims")
            .iter()
            .map(uid_of)
            .collect();
        let released: Vec<String> = lock(&self.state)
            .vols
            .iter()
            .filter(|(_, r)| !live.contains(&r.claim_uid))
            .map(|(k, _)| k.clone())
            .collect();
        for pv in released {
            let Some(rec) = lock(&self.state).vols.remove(&pv) else {
                continue;
            };
            if let Err(e) = lock(&self.backend).delete_volume(&rec.vol) {
                self.error(format!("delete volume of {pv}: {e}"));
                lock(&self.state).vols.insert(pv, rec);
                continue;
            }
            self.remove("", "persistentvolumes", "", &pv);
            self.note(format!("PV {pv}: released, volume deleted"));
            if let Some(c) = &rec.from {
                if let Some(r) = lock(&self.state).snaps.get_mut(c) {
                    r.refs = r.refs.saturating_sub(1);
                }
            }
            self.collect_snapshots();
        }
    }

    // ----- scheduler -----

    fn scheduler(&self) {
        let pods = self.list("", "pods");
        let nodes: Vec<String> = self.list("", "nodes").iter().map(name_of).collect();
        for pod in pods {
            if deleting(&pod)
                || !s(&pod, "/spec/nodeName").is_empty()
                || lock(&self.state).old_pods.contains(&uid_of(&pod))
            {
                continue;
            }
            let ns = namespace_of(&pod);
            let name = name_of(&pod);
            let n = nodes.len();
            let knob = lock(&self.knobs).unschedulable.clone();
            // Unbound WaitForFirstConsumer claims: provisioned for the node picked here.
            let mut delayed: Vec<Value> = Vec::new();
            let problem = if let Some(msg) = knob {
                Some(msg)
            } else {
                let mut problem = None;
                for (_, claim, _) in pvc_claims(&pod) {
                    match self.get("", "persistentvolumeclaims", &ns, &claim) {
                        None => {
                            problem = Some(format!("0/{n} nodes are available: persistentvolumeclaim \"{claim}\" not found. {}", preemption(n)));
                            break;
                        }
                        Some(c)
                            if s(&c, "/status/phase") != "Bound"
                                && !deleting(&c)
                                && self.waits_for_consumer(&c) =>
                        {
                            delayed.push(c);
                        }
                        Some(c) if s(&c, "/status/phase") != "Bound" || deleting(&c) => {
                            problem = Some(format!("0/{n} nodes are available: pod has unbound immediate PersistentVolumeClaims. {}", preemption(n)));
                            break;
                        }
                        Some(_) => {}
                    }
                }
                problem
            };
            let candidates: Vec<String> = match wanted_nodes(&pod) {
                None => nodes.clone(),
                Some(w) => nodes.iter().filter(|x| w.contains(x)).cloned().collect(),
            };
            let problem = problem.or_else(|| {
                candidates.is_empty().then(|| {
                    format!("0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector. {}", preemption(n))
                })
            });
            match problem {
                Some(msg) => {
                    let have = pod
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|c| c.iter().find(|x| x["type"] == "PodScheduled"))
                        .map(|c| s(c, "/message"));
                    if have.as_deref() != Some(msg.as_str()) {
                        let now = now_rfc3339();
                        self.modify("", "pods", &ns, &name, Some("status"), |o| {
                            o["status"]["phase"] = json!("Pending");
                            o["status"]["conditions"] = json!([{
                                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                "message": msg, "lastProbeTime": null, "lastTransitionTime": now,
                            }]);
                        });
                        self.note(format!("pod {ns}/{name}: unschedulable: {msg}"));
                    }
                }
                None if !delayed.is_empty() => {
                    let node = candidates[0].clone();
                    for c in delayed {
                        let has = c
                            .pointer("/metadata/annotations")
                            .and_then(|a| a.get(SELECTED_NODE))
                            .is_some();
                        if has {
                            continue;
                        }
                        let cname = name_of(&c);
                        self.modify("", "persistentvolumeclaims", &ns, &cname, None, |o| {
                            let meta = o["metadata"].as_object_mut().expect("metadata");
                            let a = meta.entry("annotations").or_insert(json!({}));
                            a[SELECTED_NODE] = json!(node);
                        });
                        self.note(format!(
                            "PVC {ns}/{cname}: selected node {node} for pod {name}"
                        ));
                    }
                }
                None => {
                    let node = candidates[0].clone();
                    self.modify("", "pods", &ns, &name, None, |o| {
                        o["spec"]["nodeName"] = json!(node);
                    });
                    let now = now_rfc3339();
                    self.modify("", "pods", &ns, &name, Some("status"), |o| {
                        o["status"]["phase"] = json!("Pending");
                        o["status"]["conditions"] = json!([{
                            "type": "PodScheduled", "status": "True",
                            "lastProbeTime": null, "lastTransitionTime": now,
                        }]);
                    });
                    self.note(format!("pod {ns}/{name}: scheduled to {node}"));
                }
            }
        }
    }

    // ----- kubelet + ceph-csi NodePublishVolume/NodeUnpublishVolume -----

    fn kubelet(&self) {
        let pods = self.list("", "pods");
        let live: HashSet<String> = pods.iter().filter(|p| !deleting(p)).map(uid_of).collect();
        let gone: Vec<String> = lock(&self.state)
            .pods
            .keys()
            .filter(|u| !live.contains(*u))
            .cloned()
            .collect();
        for uid in gone {
            let Some(rec) = lock(&self.state).pods.remove(&uid) else {
                continue;
            };
            let mut failed = false;
            for t in &rec.targets {
                if let Err(e) = lock(&self.backend).unpublish(t) {
                    self.error(format!("unpublish {}: {e}", t.display()));
                    failed = true;
                }
            }
            if failed {
                lock(&self.state).pods.insert(uid, rec);
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(&rec.dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    self.error(format!("remove {}: {e}", rec.dir.display()));
                }
            }
            self.note(format!("pod {uid}: volumes unpublished, directory removed"));
        }
        for pod in pods {
            let uid = uid_of(&pod);
            let node = s(&pod, "/spec/nodeName");
            if deleting(&pod)
                || s(&pod, "/status/phase") == "Running"
                || !self.nodes.contains_key(&node)
                || lock(&self.state).old_pods.contains(&uid)
                || lock(&self.state).pods.contains_key(&uid)
            {
                continue;
            }
            if lock(&self.knobs).unschedulable.is_some() {
                continue;
            }
            self.start_pod(&pod, &node);
        }
    }

    fn start_pod(&self, pod: &Value, node: &str) {
        let ns = namespace_of(pod);
        let name = name_of(pod);
        let uid = uid_of(pod);
        let root = &self.nodes[node];
        let dir = root.join("pods").join(&uid);
        // Every claim must be bound and have storage before anything is published.
        let mut plan = Vec::new();
        for (_, claim, ro) in pvc_claims(pod) {
            let Some(pvc) = self.get("", "persistentvolumeclaims", &ns, &claim) else {
                return;
            };
            let pv_name = s(&pvc, "/spec/volumeName");
            if s(&pvc, "/status/phase") != "Bound" || pv_name.is_empty() {
                return;
            }
            let Some(pv) = self.get("", "persistentvolumes", "", &pv_name) else {
                return;
            };
            let handle = s(&pv, "/spec/csi/volumeHandle");
            let vol = {
                let st = lock(&self.state);
                st.vols
                    .get(&pv_name)
                    .map(|r| r.vol.clone())
                    .or_else(|| st.sources.get(&handle).map(|x| x.0.clone()))
            };
            let Some(vol) = vol else {
                self.note_once(&uid, format!("pod {ns}/{name}: no storage for PV {pv_name} (csi-sim: use CsiSim::add_source)"));
                return;
            };
            let rox = pvc
                .pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .is_some_and(|m| m.iter().all(|x| x == "ReadOnlyMany"));
            plan.push((claim, pv, vol, ro || rox));
        }
        let mut rec = PodRec {
            targets: Vec::new(),
            dir: dir.clone(),
            namespace: ns.clone(),
            claims: plan.iter().map(|(c, _, _, _)| c.clone()).collect(),
        };
        let setup = (|| -> io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(
                dir.join("etc-hosts"),
                format!(
                    "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.42.0.9\t{name}\n"
                ),
            )?;
            for c in pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                std::fs::create_dir_all(dir.join("containers").join(s(c, "/name")))?;
            }
            for (_, pv, vol, ro) in &plan {
                let pv_name = name_of(pv);
                let driver = s(pv, "/spec/csi/driver");
                let handle = s(pv, "/spec/csi/volumeHandle");
                let vol_data = json!({
                    "attachmentID": format!("csi-{}", crate::kubelet::hex_sha256(&format!("{handle}{driver}{node}"))),
                    "driverName": driver,
                    "nodeName": node,
                    "specVolID": pv_name,
                    "volumeHandle": handle,
                    "volumeLifecycleMode": "Persistent",
                });
                let target = if vol.kind.is_block() {
                    let data = root
                        .join("plugins/kubernetes.io/csi/volumeDevices")
                        .join(&pv_name)
                        .join("data");
                    std::fs::create_dir_all(&data)?;
                    std::fs::write(data.join("vol_data.json"), vol_data.to_string())?;
                    dir.join("volumeDevices/kubernetes.io~csi").join(&pv_name)
                } else {
                    let pv_dir = dir.join("volumes/kubernetes.io~csi").join(&pv_name);
                    std::fs::create_dir_all(&pv_dir)?;
                    std::fs::write(pv_dir.join("vol_data.json"), vol_data.to_string())?;
                    pv_dir.join("mount")
                };
                lock(&self.backend).publish(vol, &target, *ro)?;
                rec.targets.push(target);
            }
            Ok(())
        })();
        if let Err(e) = setup {
            self.error(format!("start pod {ns}/{name}: {e}"));
            for t in &rec.targets {
                let _ = lock(&self.backend).unpublish(t);
            }
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        lock(&self.state).pods.insert(uid.clone(), rec);
        let host_ip = self
            .get("", "nodes", "", node)
            .and_then(|n| {
                n.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                    .map(|x| s(x, "/address"))
            })
            .unwrap_or_else(|| "10.0.0.10".into());
        let pod_ip = format!("10.42.0.{}", 2 + (uid.as_bytes()[0] as usize % 250));
        let now = now_rfc3339();
        let statuses: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let image = s(c, "/image");
                json!({
                    "name": s(c, "/name"),
                    "image": image,
                    "imageID": image_id(&image),
                    "containerID": format!("containerd://{}", crate::kubelet::hex_sha256(&format!("{uid}{}", s(c, "/name")))),
                    "ready": true,
                    "started": true,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
        let qos = qos_class(pod);
        self.modify("", "pods", &ns, &name, Some("status"), |o| {
            o["status"] = json!({
                "phase": "Running",
                "conditions": pod_conditions(&now, true),
                "hostIP": host_ip,
                "hostIPs": [{"ip": host_ip}],
                "podIP": pod_ip,
                "podIPs": [{"ip": pod_ip}],
                "startTime": now,
                "qosClass": qos,
                "containerStatuses": statuses,
            });
        });
        self.note(format!("pod {ns}/{name}: Running on {node}"));
    }
}
