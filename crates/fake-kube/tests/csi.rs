//! The CSI simulator (`holdfast_fake_kube::csi`) driven through the real kube client exactly as
//! the agent's snapshot-based backup drives a cluster: VolumeSnapshot -> PVC from it -> pause
//! pod pinned to the node -> read the kubelet path -> delete all three; and as its restore
//! does: a new empty PVC (or the app's own claim) -> read-write pod writes through the kubelet
//! path -> pod deleted, the claim keeps the data (`CsiSim::volume_path`). The Dir backend runs
//! everywhere; the `ceph::` tests run the same flow on a real Ceph cluster (RBD filesystem and
//! block volumes, CephFS) and are selected like the other Ceph tests (`.config/nextest.toml`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::client;
use holdfast_fake_kube::csi::{CsiSim, Storage, VS_FINALIZER};
use holdfast_fake_kube::fixtures::{Cluster, ClusterBuilder, VolumeKind};
use holdfast_fake_kube::kubelet::{self, KubeletLayout};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{json, Value};
use tempfile::TempDir;

const MANAGED: &str = "app.kubernetes.io/managed-by";

fn vs_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

fn vsc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent"),
        "volumesnapshotcontents",
    )
}

/// A fake cluster with the snapshot API, nodes `node-a` (the app) and `node-b` (the agent's
/// pause pods), one claim of each kind mounted by `app/db-0` on node-a, kubelet trees for
/// both nodes and the simulator.
struct Env {
    // Dropped first: unmounts before the temporary directory goes.
    sim: CsiSim,
    fake: FakeKube,
    cluster: Cluster,
    app: KubeletLayout,
    dir: TempDir,
    client: kube::Client,
}

impl Env {
    fn new(storage: impl FnOnce(&Path) -> Storage, snapshot_api: bool) -> Env {
        let fake = FakeKube::start_blocking();
        let mut b = ClusterBuilder::new()
            .node("node-a")
            .node("node-b")
            .namespace("app", &[])
            .rbd_pvc("app", "db", "64Mi", &[])
            .block_pvc("app", "raw", "32Mi", &[])
            .cephfs_pvc("app", "share", "64Mi", &[])
            .pod("app", "db-0", "node-a", &["db", "raw", "share"]);
        if snapshot_api {
            b = b.snapshot_classes();
        }
        let cluster = b.seed(&fake);
        let dir = tempfile::tempdir().expect("tempdir");
        let root_a = dir.path().join("kubelet/node-a");
        let root_b = dir.path().join("kubelet/node-b");
        let app = kubelet::build(&root_a, &cluster, "node-a").expect("kubelet tree");
        kubelet::build(&root_b, &cluster, "node-b").expect("kubelet tree");
        let storage = storage(&dir.path().join("storage"));
        let sim = CsiSim::start(&fake, &[("node-a", &root_a), ("node-b", &root_b)], storage)
            .expect("simulator");
        let client = client(&fake);
        Env {
            fake,
            cluster,
            app,
            dir,
            sim,
            client,
        }
    }

    fn dir_backend() -> Env {
        Env::new(Storage::dir, true)
    }

    /// Gives `claim` storage, mounted at the app pod's kubelet path.
    fn source(&self, claim: &str) -> PathBuf {
        let pvc = self.cluster.pvc("app", claim).expect("claim");
        let path = self.app.path_of("app", "db-0", claim).expect("path");
        self.sim.add_source(pvc, path).expect("source volume")
    }

    fn root_b(&self) -> PathBuf {
        self.dir.path().join("kubelet/node-b")
    }

    fn vs(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), "app", &vs_resource())
    }

    fn vsc(&self) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &vsc_resource())
    }

    fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), "app")
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "app")
    }

    fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    async fn create_vs(&self, name: &str, claim: &str, class: Option<&str>) {
        let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
        if let Some(c) = class {
            spec["volumeSnapshotClassName"] = json!(c);
        }
        let mut o = DynamicObject::new(name, &vs_resource()).within("app");
        o.metadata.labels = Some([(MANAGED.to_string(), "holdfast".to_string())].into());
        o.data = json!({ "spec": spec });
        self.vs()
            .create(&PostParams::default(), &o)
            .await
            .expect("create VolumeSnapshot");
    }

    async fn create_pvc(&self, name: &str, vs: &str, kind: VolumeKind, size: &str) {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {MANAGED: "holdfast"}},
            "spec": {
                "storageClassName": kind.storage_class(),
                "accessModes": [if kind == VolumeKind::CephFs { "ReadOnlyMany" } else { "ReadWriteOnce" }],
                "volumeMode": if kind.is_block() { "Block" } else { "Filesystem" },
                "resources": {"requests": {"storage": size}},
                "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": vs},
            },
        }))
        .unwrap();
        self.pvcs()
            .create(&PostParams::default(), &pvc)
            .await
            .expect("create PVC");
    }

    async fn create_pod(&self, name: &str, claim: &str, node: &str, block: bool) {
        let mut container = json!({"name": "pause", "image": "registry.k8s.io/pause:3.10"});
        if block {
            container["volumeDevices"] = json!([{"name": "data", "devicePath": "/dev/xvda"}]);
        } else {
            container["volumeMounts"] =
                json!([{"name": "data", "mountPath": "/data", "readOnly": true}]);
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {MANAGED: "holdfast"}},
            "spec": {
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
                }}},
                "containers": [container],
                "restartPolicy": "Never",
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}}],
            },
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    /// A new empty claim (no dataSource), as the agent's restore makes it.
    async fn create_empty_pvc(&self, name: &str, class: &str, kind: VolumeKind, size: &str) {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {MANAGED: "holdfast"}},
            "spec": {
                "storageClassName": class,
                "accessModes": [if kind == VolumeKind::CephFs { "ReadWriteMany" } else { "ReadWriteOnce" }],
                "volumeMode": if kind.is_block() { "Block" } else { "Filesystem" },
                "resources": {"requests": {"storage": size}},
            },
        }))
        .unwrap();
        self.pvcs()
            .create(&PostParams::default(), &pvc)
            .await
            .expect("create PVC");
    }

    /// A pod pinned to `node` mounting `claim` (`readOnly: ro`), as the agent's restore pod.
    async fn create_pod_mode(&self, name: &str, claim: &str, node: &str, block: bool, ro: bool) {
        let mut container = json!({"name": "pause", "image": "registry.k8s.io/pause:3.10"});
        if block {
            container["volumeDevices"] = json!([{"name": "data", "devicePath": "/dev/xvda"}]);
        } else {
            container["volumeMounts"] =
                json!([{"name": "data", "mountPath": "/data", "readOnly": ro}]);
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {MANAGED: "holdfast"}},
            "spec": {
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
                }}},
                "containers": [container],
                "restartPolicy": "Never",
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}}],
            },
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    async fn wait_bound(&self, claim: &str) -> PersistentVolumeClaim {
        self.wait(60, "the PVC to be bound", || async {
            self.pvcs()
                .get_opt(claim)
                .await
                .unwrap()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        })
        .await
    }

    /// Waits for `pod` to run; returns its volume's kubelet path on `root` for PV `pv`.
    async fn wait_running(&self, pod: &str, root: &Path, pv: &str, block: bool) -> PathBuf {
        let p = self
            .wait(60, "the pod to run", || async {
                self.pods().get_opt(pod).await.unwrap().filter(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
            })
            .await;
        let dir = root.join("pods").join(p.metadata.uid.unwrap());
        if block {
            dir.join("volumeDevices/kubernetes.io~csi").join(pv)
        } else {
            dir.join("volumes/kubernetes.io~csi").join(pv).join("mount")
        }
    }

    async fn delete_pod(&self, pod: &str) {
        let _ = self.pods().delete(pod, &DeleteParams::default()).await;
        self.wait(60, "the pod to go", || async {
            self.pods()
                .get_opt(pod)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
    }

    /// Polls `f` until it gives `Some`, or panics after `secs` with the simulator's log.
    async fn wait<T, F, Fut>(&self, secs: u64, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > end {
                panic!(
                    "timed out waiting for {what}; simulator log:\n{}\nerrors: {:?}",
                    self.sim.log().join("\n"),
                    self.sim.errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn vs_json(&self, name: &str) -> Option<Value> {
        self.vs()
            .get_opt(name)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    async fn delete_all(&self, pod: &str, pvc: &str, vs: &str) {
        let dp = DeleteParams::default();
        let _ = self.pods().delete(pod, &dp).await;
        let _ = self.pvcs().delete(pvc, &dp).await;
        let _ = self.vs().delete(vs, &dp).await;
        self.wait(60, "the objects to go", || async {
            let gone = self.pods().get_opt(pod).await.unwrap().is_none()
                && self.pvcs().get_opt(pvc).await.unwrap().is_none()
                && self.vs().get_opt(vs).await.unwrap().is_none();
            gone.then_some(())
        })
        .await;
    }

    /// The agent's objects are gone and so is everything the simulator made for them.
    async fn assert_clean(&self) {
        self.sim
            .wait_clean(Duration::from_secs(60))
            .unwrap_or_else(|left| panic!("left behind: {left:?}\n{}", self.sim.log().join("\n")));
        let vsc = self.vsc().list(&Default::default()).await.unwrap();
        assert!(vsc.items.is_empty(), "contents left: {:?}", vsc.items);
        let pvs: Vec<String> = self
            .pvs()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|c| c.name.clone())
                    == Some("hf-restore".into())
            })
            .filter_map(|p| p.metadata.name)
            .collect();
        assert!(pvs.is_empty(), "PVs left: {pvs:?}");
        assert!(
            self.sim.errors().is_empty(),
            "simulator errors: {:?}",
            self.sim.errors()
        );
    }
}

fn write_data(path: &Path, block: bool, text: &str) {
    if block {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        let mut buf = text.as_bytes().to_vec();
        buf.resize(4096, 0);
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
    } else {
        std::fs::create_dir_all(path.join("data")).unwrap();
        std::fs::write(path.join("data/f.txt"), text).unwrap();
        // The RBD source is a mounted ext4: make the write durable before the snapshot.
        std::fs::File::open(path.join("data/f.txt"))
            .unwrap()
            .sync_all()
            .unwrap();
    }
}

fn read_data(path: &Path, block: bool) -> String {
    if block {
        use std::io::Read;
        let mut buf = vec![0u8; 4096];
        std::fs::File::open(path)
            .unwrap()
            .read_exact(&mut buf)
            .unwrap();
        String::from_utf8_lossy(&buf)
            .trim_end_matches('\0')
            .to_string()
    } else {
        std::fs::read_to_string(path.join("data/f.txt")).unwrap()
    }
}

/// What [`whole_flow`] saw: the snapshot handle and the file system type mounted at the pause
/// pod's volume path (None when not a mount point: the Dir backend copies).
struct Seen {
    handle: String,
    fstype: Option<String>,
}

fn fstype(path: &Path) -> Option<String> {
    let out = std::process::Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "--mountpoint"])
        .arg(path)
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !t.is_empty()).then_some(t)
}

/// The agent's whole flow for one claim; proves the pause pod sees the data as of the
/// snapshot although the source changed right after it was taken.
async fn whole_flow(env: &Env, claim: &str, kind: VolumeKind) -> Seen {
    let block = kind.is_block();
    let src = env.source(claim);
    write_data(&src, block, "v1");
    let src2 = src.clone();
    env.sim
        .on_snapshot_taken(move |_| write_data(&src2, block, "v2"));
    let class = if kind == VolumeKind::CephFs {
        "csi-cephfsplugin-snapclass"
    } else {
        "csi-rbdplugin-snapclass"
    };
    // The default class is found when none is named (RBD); CephFS names it.
    let named = (kind == VolumeKind::CephFs).then_some(class);
    env.create_vs("hf-snap", claim, named).await;
    let vs = env
        .wait(60, "the VolumeSnapshot to be ready", || async {
            env.vs_json("hf-snap")
                .await
                .filter(|v| v["status"]["readyToUse"] == true)
        })
        .await;
    assert_eq!(vs["metadata"]["finalizers"], json!([VS_FINALIZER]));
    let content_name = vs["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        content_name,
        format!("snapcontent-{}", vs["metadata"]["uid"].as_str().unwrap())
    );
    let created = vs["status"]["creationTime"].as_str().unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(created).expect("RFC 3339 creationTime");
    assert!((chrono::Utc::now() - created.with_timezone(&chrono::Utc)).num_seconds() < 120);
    let size = env.cluster.pvc("app", claim).unwrap().size.clone();
    assert_eq!(vs["status"]["restoreSize"], json!(size));
    let content = serde_json::to_value(env.vsc().get(&content_name).await.unwrap()).unwrap();
    assert_eq!(content["spec"]["volumeSnapshotClassName"], class);
    assert_eq!(content["spec"]["deletionPolicy"], "Delete");
    assert_eq!(content["spec"]["driver"], kind.driver());
    assert_eq!(
        content["spec"]["source"]["volumeHandle"],
        env.cluster
            .pvc("app", claim)
            .unwrap()
            .volume_handle
            .as_str()
    );
    assert_eq!(content["status"]["readyToUse"], true);
    assert!(content["status"]["creationTime"].as_i64().unwrap() > 1_700_000_000_000_000_000);
    assert!(content["status"]["restoreSize"].as_u64().unwrap() > 0);
    let handle = content["status"]["snapshotHandle"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!handle.is_empty());
    assert_eq!(env.sim.storage_state().snapshots, vec![handle.to_string()]);

    env.create_pvc("hf-restore", "hf-snap", kind, &size).await;
    let pvc = env
        .wait(60, "the PVC to be bound", || async {
            env.pvcs()
                .get_opt("hf-restore")
                .await
                .unwrap()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        })
        .await;
    let pv_name = pvc.spec.unwrap().volume_name.expect("volumeName");
    let pv = env.pvs().get(&pv_name).await.unwrap();
    let pv_spec = pv.spec.unwrap();
    assert_eq!(
        pv_spec.claim_ref.unwrap().name.as_deref(),
        Some("hf-restore")
    );
    assert_eq!(pv_spec.csi.as_ref().unwrap().driver, kind.driver());
    assert!(pv_spec
        .csi
        .unwrap()
        .volume_handle
        .starts_with("0001-0009-rook-ceph-"));

    env.create_pod("hf-reader", "hf-restore", "node-b", block)
        .await;
    let pod = env
        .wait(60, "the pod to run", || async {
            env.pods()
                .get_opt("hf-reader")
                .await
                .unwrap()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
        .await;
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-b")
    );
    let status = pod.status.unwrap();
    let conds = status.conditions.unwrap();
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t}: {conds:?}"
        );
    }
    assert_eq!(status.host_ip.as_deref(), Some("10.0.0.11"));
    let uid = pod.metadata.uid.unwrap();
    let pod_dir = env.root_b().join("pods").join(&uid);
    let path = if block {
        pod_dir
            .join("volumeDevices/kubernetes.io~csi")
            .join(&pv_name)
    } else {
        let p = pod_dir.join("volumes/kubernetes.io~csi").join(&pv_name);
        let vd: Value =
            serde_json::from_slice(&std::fs::read(p.join("vol_data.json")).unwrap()).unwrap();
        assert_eq!(vd["specVolID"], pv_name.as_str());
        assert_eq!(vd["nodeName"], "node-b");
        p.join("mount")
    };
    assert_eq!(read_data(&path, block), "v1", "the snapshot's data");
    assert_eq!(read_data(&src, block), "v2", "the source changed after");
    assert_eq!(env.sim.storage_state().published, vec![path.clone()]);
    let fstype = fstype(&path);

    env.delete_all("hf-reader", "hf-restore", "hf-snap").await;
    env.assert_clean().await;
    assert!(!pod_dir.exists(), "the pod's directory is removed");
    assert_eq!(read_data(&src, block), "v2", "the source is left alone");
    Seen { handle, fstype }
}

#[tokio::test]
async fn dir_backend_filesystem_flow() {
    let env = Env::dir_backend();
    let seen = whole_flow(&env, "db", VolumeKind::Rbd).await;
    assert_eq!(seen.fstype, None, "copied, not mounted");
}

#[tokio::test]
async fn dir_backend_block_flow() {
    let env = Env::dir_backend();
    let seen = whole_flow(&env, "raw", VolumeKind::RbdBlock).await;
    assert!(
        seen.handle.contains("snapshots/csi-snap-"),
        "{}",
        seen.handle
    );
}

#[tokio::test]
async fn dir_backend_cephfs_flow() {
    let env = Env::dir_backend();
    whole_flow(&env, "share", VolumeKind::CephFs).await;
}

#[tokio::test]
async fn snapshot_never_ready_stays_unready_and_deletes_cleanly() {
    let env = Env::dir_backend();
    env.source("db");
    env.sim.snapshots_never_ready(true);
    env.create_vs("hf-snap", "db", None).await;
    let vs = env
        .wait(10, "the content to be bound", || async {
            env.vs_json("hf-snap")
                .await
                .filter(|v| v["status"]["boundVolumeSnapshotContentName"].is_string())
        })
        .await;
    assert_eq!(vs["status"]["readyToUse"], false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let vs = env.vs_json("hf-snap").await.unwrap();
    assert_eq!(vs["status"]["readyToUse"], false);
    assert!(env.sim.storage_state().snapshots.is_empty());
    env.vs()
        .delete("hf-snap", &DeleteParams::default())
        .await
        .unwrap();
    env.wait(10, "the snapshot to go", || async {
        env.vs_json("hf-snap").await.is_none().then_some(())
    })
    .await;
    env.assert_clean().await;
}

#[tokio::test]
async fn snapshot_error_is_in_status() {
    let env = Env::dir_backend();
    env.source("db");
    env.sim
        .snapshot_error(Some("rpc error: code = Internal desc = pool full"));
    env.create_vs("hf-snap", "db", None).await;
    let vs = env
        .wait(10, "the error", || async {
            env.vs_json("hf-snap")
                .await
                .filter(|v| v["status"]["error"]["message"].is_string())
        })
        .await;
    assert_eq!(
        vs["status"]["error"]["message"],
        "rpc error: code = Internal desc = pool full"
    );
    assert_eq!(vs["status"]["readyToUse"], false);
    env.vs()
        .delete("hf-snap", &DeleteParams::default())
        .await
        .unwrap();
    env.wait(10, "the snapshot to go", || async {
        env.vs_json("hf-snap").await.is_none().then_some(())
    })
    .await;
    env.assert_clean().await;

    // Real errors: a missing claim, an unknown class.
    env.sim.snapshot_error(None);
    env.create_vs("no-claim", "nope", None).await;
    env.create_vs("no-class", "db", Some("gold")).await;
    for (name, want) in [
        ("no-claim", "failed to retrieve PVC nope from the lister"),
        (
            "no-class",
            "volumesnapshotclass.snapshot.storage.k8s.io \"gold\" not found",
        ),
    ] {
        let vs = env
            .wait(10, "the error", || async {
                env.vs_json(name)
                    .await
                    .filter(|v| v["status"]["error"]["message"].is_string())
            })
            .await;
        let msg = vs["status"]["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg}");
    }
}

#[tokio::test]
async fn pvc_never_bound_stays_pending() {
    let env = Env::dir_backend();
    env.source("db");
    env.sim.pvcs_never_bind(true);
    env.create_vs("hf-snap", "db", None).await;
    env.wait(10, "ready", || async {
        env.vs_json("hf-snap")
            .await
            .filter(|v| v["status"]["readyToUse"] == true)
    })
    .await;
    env.create_pvc("hf-restore", "hf-snap", VolumeKind::Rbd, "64Mi")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pvc = env.pvcs().get("hf-restore").await.unwrap();
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(pvc.spec.unwrap().volume_name.is_none());
    // A pod of an unbound claim is not scheduled, and says why.
    env.create_pod("hf-reader", "hf-restore", "node-b", false)
        .await;
    let pod = env
        .wait(10, "PodScheduled=False", || async {
            env.pods().get("hf-reader").await.ok().filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "PodScheduled" && c.status == "False")
                    })
            })
        })
        .await;
    let c = &pod.status.unwrap().conditions.unwrap()[0];
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .contains("unbound immediate PersistentVolumeClaims"),
        "{c:?}"
    );
    env.delete_all("hf-reader", "hf-restore", "hf-snap").await;
    env.assert_clean().await;
}

#[tokio::test]
async fn pods_stay_pending_with_the_schedulers_message() {
    let env = Env::dir_backend();
    env.source("db");
    env.create_vs("hf-snap", "db", None).await;
    env.create_pvc("hf-restore", "hf-snap", VolumeKind::Rbd, "64Mi")
        .await;
    env.sim.pods_unschedulable(Some(
        "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.",
    ));
    env.create_pod("hf-reader", "hf-restore", "node-b", false)
        .await;
    let pending = |want: &'static str| {
        let env = &env;
        move || async move {
            env.pods().get("hf-reader").await.ok().filter(|p| {
                let s = p.status.as_ref().unwrap();
                s.phase.as_deref() == Some("Pending")
                    && s.conditions.as_ref().is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                                && c.message.as_deref().is_some_and(|m| m.contains(want))
                        })
                    })
            })
        }
    };
    env.wait(10, "Unschedulable", pending("Insufficient memory"))
        .await;
    // Pinned to a node that does not exist: the real scheduler's message.
    env.sim.pods_unschedulable(None);
    env.create_pod("elsewhere", "hf-restore", "node-z", false)
        .await;
    let p = env
        .wait(10, "Unschedulable", || async {
            env.pods()
                .get("elsewhere")
                .await
                .ok()
                .filter(|p| p.status.as_ref().unwrap().conditions.is_some())
        })
        .await;
    let c = &p.status.unwrap().conditions.unwrap()[0];
    assert_eq!(
        c.message.as_deref(),
        Some("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
    );
    // Turning the knob off lets the first pod run.
    env.wait(20, "Running", || async {
        env.pods()
            .get("hf-reader")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    env.pods()
        .delete("elsewhere", &DeleteParams::default())
        .await
        .unwrap();
    env.delete_all("hf-reader", "hf-restore", "hf-snap").await;
    env.assert_clean().await;
}

#[tokio::test]
async fn without_the_snapshot_api_volumesnapshots_are_not_found() {
    let env = Env::new(Storage::dir, false);
    let groups = kube::Discovery::new(env.client.clone())
        .run()
        .await
        .expect("discovery");
    assert!(!groups.has_group("snapshot.storage.k8s.io"));
    let o = DynamicObject::new("x", &vs_resource()).within("app");
    let err = env.vs().create(&PostParams::default(), &o).await;
    let st = common::status(err);
    assert_eq!(st.code, 404, "{st:?}");
    // Installing it at run time (as installing the CRDs does), then removing it again.
    holdfast_fake_kube::fixtures::install_snapshot_api(&env.fake);
    assert!(env.vs().list(&Default::default()).await.is_ok());
    assert!(env
        .fake
        .uninstall_resource("snapshot.storage.k8s.io", "v1", "volumesnapshots"));
    assert_eq!(
        common::status(env.vs().list(&Default::default()).await).code,
        404
    );
}

/// The agent's restore on an empty claim: a new PVC without dataSource is provisioned empty,
/// a read-write pod writes into it through the kubelet path, the pod goes and the claim
/// keeps the data (seen by [`CsiSim::volume_path`] and by a further pod), and deleting the
/// claim removes the PV and the storage. Returns the PV's name.
async fn empty_volume_flow(env: &Env, kind: VolumeKind, size: &str) -> String {
    let block = kind.is_block();
    env.create_empty_pvc("hf-new", kind.storage_class(), kind, size)
        .await;
    let pvc = env.wait_bound("hf-new").await;
    let uid = pvc.metadata.uid.clone().unwrap();
    let pv_name = pvc.spec.unwrap().volume_name.expect("volumeName");
    assert_eq!(pv_name, format!("pvc-{uid}"));
    let pv = env.pvs().get(&pv_name).await.unwrap();
    let spec = pv.spec.unwrap();
    let csi = spec.csi.unwrap();
    assert_eq!(csi.driver, kind.driver());
    assert!(csi.volume_handle.starts_with("0001-0009-rook-ceph-"));
    assert_eq!(spec.capacity.unwrap()["storage"].0, size);
    assert_eq!(
        spec.volume_mode.as_deref(),
        Some(if block { "Block" } else { "Filesystem" })
    );
    assert_eq!(env.sim.storage_state().volumes, vec![pv_name.clone()]);

    env.create_pod_mode("hf-restore-pod", "hf-new", "node-b", block, false)
        .await;
    let path = env
        .wait_running("hf-restore-pod", &env.root_b(), &pv_name, block)
        .await;
    if block {
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(Some(len), quantity(size), "a device of the requested size");
        assert_eq!(read_data(&path, true), "", "zero-filled");
    } else {
        assert!(path.is_dir());
        let entries: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n != "lost+found")
            .collect();
        assert!(entries.is_empty(), "a new volume is empty: {entries:?}");
    }
    write_data(&path, block, "restored");
    env.delete_pod("hf-restore-pod").await;
    env.sim
        .wait_clean(Duration::from_secs(0))
        .expect_err("the claim's volume stays");
    let data = env.sim.volume_path("app", "hf-new").expect("volume path");
    assert_eq!(env.sim.storage_state().published, Vec::<PathBuf>::new());
    if !env.sim.storage_state().ceph_objects.is_empty() && kind != VolumeKind::CephFs {
        // Ceph RBD: the data path is the raw image.
        assert_eq!(
            Some(std::fs::metadata(&data).unwrap().len()),
            quantity(size)
        );
    } else {
        assert_eq!(read_data(&data, block), "restored", "what the pod wrote");
        if block {
            assert_eq!(
                Some(std::fs::metadata(&data).unwrap().len()),
                quantity(size)
            );
        }
    }

    // A further pod (read-only) sees the data.
    env.create_pod_mode("hf-check", "hf-new", "node-b", block, true)
        .await;
    let path = env
        .wait_running("hf-check", &env.root_b(), &pv_name, block)
        .await;
    assert_eq!(read_data(&path, block), "restored");
    env.delete_pod("hf-check").await;

    let _ = env.pvcs().delete("hf-new", &DeleteParams::default()).await;
    env.wait(60, "the PVC and PV to go", || async {
        let gone = env.pvcs().get_opt("hf-new").await.unwrap().is_none()
            && env.pvs().get_opt(&pv_name).await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
    env.sim
        .wait_clean(Duration::from_secs(60))
        .unwrap_or_else(|left| panic!("left behind: {left:?}\n{}", env.sim.log().join("\n")));
    assert!(
        env.sim.errors().is_empty(),
        "simulator errors: {:?}",
        env.sim.errors()
    );
    if env.sim.storage_state().ceph_objects.is_empty() {
        assert!(!data.exists(), "the volume's storage is deleted");
    }
    pv_name
}

fn quantity(q: &str) -> Option<u64> {
    let (n, m) = match q.strip_suffix("Mi") {
        Some(n) => (n, 1u64 << 20),
        None => (q.strip_suffix("Gi")?, 1 << 30),
    };
    Some(n.parse::<u64>().ok()? * m)
}

#[tokio::test]
async fn dir_backend_empty_filesystem_volume_is_provisioned_written_and_deleted() {
    let env = Env::dir_backend();
    empty_volume_flow(&env, VolumeKind::Rbd, "64Mi").await;
}

#[tokio::test]
async fn dir_backend_empty_block_volume_is_a_sparse_image_of_the_requested_size() {
    let env = Env::dir_backend();
    empty_volume_flow(&env, VolumeKind::RbdBlock, "32Mi").await;
}

#[tokio::test]
async fn dir_backend_empty_cephfs_volume_is_provisioned_written_and_deleted() {
    let env = Env::dir_backend();
    empty_volume_flow(&env, VolumeKind::CephFs, "64Mi").await;
}

#[tokio::test]
async fn empty_block_volume_image_is_sparse() {
    let env = Env::dir_backend();
    env.create_empty_pvc("hf-new", "rook-ceph-block", VolumeKind::RbdBlock, "1Gi")
        .await;
    env.wait_bound("hf-new").await;
    let img = env.sim.volume_path("app", "hf-new").expect("volume path");
    let md = std::fs::metadata(&img).unwrap();
    assert_eq!(md.len(), 1 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(
        md.blocks() * 512 < 1 << 20,
        "sparse: {} blocks",
        md.blocks()
    );
}

#[tokio::test]
async fn claims_of_a_wait_for_first_consumer_class_bind_when_a_pod_is_scheduled() {
    let env = Env::dir_backend();
    let sc: k8s_openapi::api::storage::v1::StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "rbd-wffc"},
        "provisioner": VolumeKind::Rbd.driver(),
        "parameters": {"clusterID": "rook-ceph", "pool": "replicapool"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .unwrap();
    Api::<k8s_openapi::api::storage::v1::StorageClass>::all(env.client.clone())
        .create(&PostParams::default(), &sc)
        .await
        .unwrap();
    env.create_empty_pvc("hf-new", "rbd-wffc", VolumeKind::Rbd, "64Mi")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pvc = env.pvcs().get("hf-new").await.unwrap();
    assert_eq!(
        pvc.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "no consumer yet"
    );
    assert!(env.sim.storage_state().volumes.is_empty());
    env.create_pod_mode("hf-restore-pod", "hf-new", "node-b", false, false)
        .await;
    let pvc = env.wait_bound("hf-new").await;
    assert_eq!(
        pvc.metadata.annotations.unwrap()[holdfast_fake_kube::csi::SELECTED_NODE],
        "node-b"
    );
    let pv = pvc.spec.unwrap().volume_name.unwrap();
    let path = env
        .wait_running("hf-restore-pod", &env.root_b(), &pv, false)
        .await;
    write_data(&path, false, "restored");
    env.delete_pod("hf-restore-pod").await;
    let data = env.sim.volume_path("app", "hf-new").unwrap();
    assert_eq!(read_data(&data, false), "restored");
    assert!(env.sim.errors().is_empty(), "{:?}", env.sim.errors());
}

/// A restore pod writing into the app's existing claim (given storage by `add_source`) on the
/// app's node: the writes land in the source volume.
#[tokio::test]
async fn dir_backend_pod_writes_into_a_source_claim() {
    let env = Env::dir_backend();
    let src = env.source("db");
    write_data(&src, false, "v1");
    env.create_pod_mode("hf-restore-pod", "db", "node-a", false, false)
        .await;
    let pv = env.cluster.pvc("app", "db").unwrap().pv_name.clone();
    let root_a = env.dir.path().join("kubelet/node-a");
    let path = env
        .wait_running("hf-restore-pod", &root_a, &pv, false)
        .await;
    assert_eq!(
        read_data(&path, false),
        "v1",
        "the source's data is published"
    );
    write_data(&path, false, "restored");
    std::fs::write(path.join("new.txt"), "new").unwrap();
    env.delete_pod("hf-restore-pod").await;
    assert_eq!(env.sim.volume_path("app", "db"), Some(src.clone()));
    assert_eq!(read_data(&src, false), "restored");
    assert_eq!(std::fs::read_to_string(src.join("new.txt")).unwrap(), "new");
    assert!(env.sim.storage_state().is_clean());
    assert!(env.sim.errors().is_empty(), "{:?}", env.sim.errors());
}

/// Tests on a real Ceph cluster (`HOLDFAST_TEST_CEPH_CONF`, root).
mod ceph {
    use super::*;

    fn env() -> Env {
        let conf = std::env::var_os("HOLDFAST_TEST_CEPH_CONF");
        common::require(
            conf.is_some(),
            "a Ceph cluster with CephFS (HOLDFAST_TEST_CEPH_CONF; scripts/s3-test-servers.sh start DIR)",
        );
        common::require(
            common::is_root(),
            "root (rbd-fuse, ceph-fuse, loop devices, mounts)",
        );
        for tool in [
            "rbd",
            "rbd-fuse",
            "ceph-fuse",
            "losetup",
            "mkfs.ext4",
            "fsfreeze",
        ] {
            common::require(common::have_command(tool), tool);
        }
        let conf = PathBuf::from(conf.unwrap());
        Env::new(|work| Storage::ceph(&conf, work), true)
    }

    /// No mount, loop device or FUSE mount of this test's directory is left.
    fn assert_nothing_mounted(dir: &Path) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let d = dir.display().to_string();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&d)).collect();
        assert!(left.is_empty(), "mounts left: {left:#?}");
        let loops = std::process::Command::new("losetup")
            .arg("-a")
            .output()
            .unwrap();
        let loops = String::from_utf8_lossy(&loops.stdout).to_string();
        assert!(!loops.contains(&d), "loop devices left: {loops}");
    }

    async fn flow(claim: &str, kind: VolumeKind) {
        let env = env();
        let seen = whole_flow(&env, claim, kind).await;
        let (handle, fs) = match kind {
            VolumeKind::Rbd => ("rbd/csi-vol-", "ext4"),
            VolumeKind::RbdBlock => ("rbd/csi-vol-", "devtmpfs"),
            VolumeKind::CephFs => ("volumes/csi/csi-vol-", "fuse.ceph-fuse"),
        };
        assert!(seen.handle.starts_with(handle), "{}", seen.handle);
        assert!(seen.handle.contains("@csi-snap-"), "{}", seen.handle);
        assert_eq!(seen.fstype.as_deref(), Some(fs));
        // Only the source is left on Ceph: its image and no snapshot (RBD), nothing (CephFS).
        let objs = env.sim.storage_state().ceph_objects;
        let want = usize::from(kind != VolumeKind::CephFs);
        assert_eq!(objs.len(), want, "{objs:?}");
        assert!(objs.iter().all(|o| !o.contains('@')), "{objs:?}");
        let dir = env.dir.path().to_path_buf();
        drop(env);
        assert_nothing_mounted(&dir);
    }

    #[tokio::test]
    async fn rbd_filesystem_point_in_time() {
        flow("db", VolumeKind::Rbd).await;
    }

    #[tokio::test]
    async fn rbd_block_point_in_time() {
        flow("raw", VolumeKind::RbdBlock).await;
    }

    #[tokio::test]
    async fn cephfs_point_in_time() {
        flow("share", VolumeKind::CephFs).await;
    }

    /// An RBD filesystem volume provisioned empty (fresh ext4), written by a read-write pod,
    /// shows the data when published again; deleting the claim removes the image.
    #[tokio::test]
    async fn rbd_empty_volume_is_written_and_republished() {
        let env = env();
        let pv = empty_volume_flow(&env, VolumeKind::Rbd, "64Mi").await;
        let objs = env.sim.storage_state().ceph_objects;
        assert!(objs.is_empty(), "{pv}: {objs:?}");
        let dir = env.dir.path().to_path_buf();
        drop(env);
        assert_nothing_mounted(&dir);
    }

    /// A restore pod on the app's node mounting the app's RBD claim read-write shares the
    /// attached image (bind mount of the app's mount, not a second mount of the same ext4):
    /// both paths show the same file system.
    #[tokio::test]
    async fn rbd_pod_writes_into_a_source_claim() {
        let env = env();
        let src = env.source("db");
        write_data(&src, false, "v1");
        env.create_pod_mode("hf-restore-pod", "db", "node-a", false, false)
            .await;
        let pv = env.cluster.pvc("app", "db").unwrap().pv_name.clone();
        let root_a = env.dir.path().join("kubelet/node-a");
        let path = env
            .wait_running("hf-restore-pod", &root_a, &pv, false)
            .await;
        assert_eq!(read_data(&path, false), "v1");
        write_data(&path, false, "restored");
        assert_eq!(read_data(&src, false), "restored", "one file system");
        env.delete_pod("hf-restore-pod").await;
        env.sim
            .wait_clean(Duration::from_secs(60))
            .unwrap_or_else(|left| panic!("left behind: {left:?}"));
        assert_eq!(read_data(&src, false), "restored");
        assert_eq!(
            fstype(&src).as_deref(),
            Some("ext4"),
            "the source stays mounted"
        );
        assert!(env.sim.errors().is_empty(), "{:?}", env.sim.errors());
        let dir = env.dir.path().to_path_buf();
        drop(env);
        assert_nothing_mounted(&dir);
    }

    /// A failed test leaves nothing behind: the simulator's drop undoes a half-done flow.
    #[tokio::test]
    async fn dropping_the_simulator_mid_flow_cleans_up() {
        let env = env();
        let src = env.source("db");
        write_data(&src, false, "v1");
        env.create_vs("hf-snap", "db", None).await;
        env.create_pvc("hf-restore", "hf-snap", VolumeKind::Rbd, "64Mi")
            .await;
        env.create_pod("hf-reader", "hf-restore", "node-b", false)
            .await;
        env.wait(60, "Running", || async {
            env.pods()
                .get("hf-reader")
                .await
                .ok()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
        .await;
        let st = env.sim.storage_state();
        assert_eq!(st.snapshots.len(), 1);
        assert_eq!(st.volumes.len(), 1);
        assert_eq!(st.published.len(), 1);
        let conf = std::env::var("HOLDFAST_TEST_CEPH_CONF").unwrap();
        let images: Vec<String> = st
            .ceph_objects
            .iter()
            .filter(|o| !o.contains('@'))
            .cloned()
            .collect();
        let dir = env.dir.path().to_path_buf();
        drop(env);
        assert_nothing_mounted(&dir);
        let ls = std::process::Command::new("rbd")
            .args(["-c", &conf, "ls", "rbd"])
            .output()
            .unwrap();
        let ls = String::from_utf8_lossy(&ls.stdout).to_string();
        for i in images {
            assert!(!ls.lines().any(|l| l == i), "image {i} left: {ls}");
        }
    }
}

/// The snapshot types behave as CRDs with a status subresource: status sent on create or on a
/// write to the main resource is ignored; `/status` writes only the status.
#[tokio::test]
async fn snapshot_types_have_a_status_subresource() {
    let fake = FakeKube::start_blocking();
    holdfast_fake_kube::fixtures::install_snapshot_api(&fake);
    let api: Api<DynamicObject> = Api::all_with(client(&fake), &vsc_resource());
    let mut o = DynamicObject::new("c1", &vsc_resource());
    o.data = json!({"spec": {"driver": "d", "deletionPolicy": "Delete"}, "status": {"readyToUse": true}});
    let made = api.create(&PostParams::default(), &o).await.unwrap();
    assert!(made.data.get("status").is_none(), "{made:?}");
    let mut st = made.clone();
    st.data["status"] = json!({"readyToUse": false});
    let st = api
        .replace_status("c1", &PostParams::default(), &st)
        .await
        .unwrap();
    assert_eq!(st.data["status"]["readyToUse"], false);
    let mut main = st.clone();
    main.data["status"] = json!({"readyToUse": true});
    main.data["spec"]["deletionPolicy"] = json!("Retain");
    let main = api
        .replace("c1", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(main.data["spec"]["deletionPolicy"], "Retain");
    assert_eq!(main.data["status"]["readyToUse"], false, "status kept");
}
