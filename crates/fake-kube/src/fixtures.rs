//! Real-shaped objects as a k3s + Rook-Ceph cluster serves them, and a [`ClusterBuilder`] that
//! seeds a [`FakeKube`] with nodes, namespaces, StorageClasses, bound PVC/PV pairs (ceph-csi RBD
//! and CephFS, filesystem and block) and the pods that mount them.
//!
//! Shapes follow Rook's example StorageClasses (`rook-ceph-block`, `rook-cephfs`), ceph-csi's
//! volume handles (`0001-0009-rook-ceph-<16 hex pool id>-<uuid>`) and volume attributes
//! (`imageName: csi-vol-<uuid>`, `subvolumeName`, `subvolumePath: /volumes/csi/csi-vol-<uuid>/<uuid>`),
//! and what the PV controller and kubelet leave on PVCs, PVs and pods (bind annotations,
//! protection finalizers, the projected `kube-api-access-xxxxx` token volume).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::store::new_uid;
use crate::FakeKube;

/// The RBD CSI driver name Rook registers (`<operator namespace>.rbd.csi.ceph.com`).
pub const RBD_DRIVER: &str = "rook-ceph.rbd.csi.ceph.com";
/// The CephFS CSI driver name Rook registers.
pub const CEPHFS_DRIVER: &str = "rook-ceph.cephfs.csi.ceph.com";
/// The ceph-csi cluster ID Rook uses (the namespace of the CephCluster).
pub const CLUSTER_ID: &str = "rook-ceph";
/// The provisioner identity ceph-csi's external-provisioner writes into PVs.
pub const PROVISIONER_IDENTITY_RBD: &str = "1764720000000-8081-rook-ceph.rbd.csi.ceph.com";
/// Same, for CephFS.
pub const PROVISIONER_IDENTITY_CEPHFS: &str = "1764720000000-8082-rook-ceph.cephfs.csi.ceph.com";

const TIME: &str = "2026-12-01T08:00:00Z";

/// Which kind of ceph-csi volume a PVC is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// RBD image with a filesystem (`rook-ceph-block`, volumeMode Filesystem, ext4).
    Rbd,
    /// RBD image as a raw block device (`rook-ceph-block`, volumeMode Block).
    RbdBlock,
    /// CephFS subvolume (`rook-cephfs`, ReadWriteMany).
    CephFs,
}

impl VolumeKind {
    /// The CSI driver name.
    pub fn driver(self) -> &'static str {
        match self {
            VolumeKind::CephFs => CEPHFS_DRIVER,
            _ => RBD_DRIVER,
        }
    }

    /// The StorageClass name.
    pub fn storage_class(self) -> &'static str {
        match self {
            VolumeKind::CephFs => "rook-cephfs",
            _ => "rook-ceph-block",
        }
    }

    /// Whether the volume is a raw block device.
    pub fn is_block(self) -> bool {
        self == VolumeKind::RbdBlock
    }
}

fn annotations(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// A k3s Node; `server` adds the control-plane role labels.
pub fn node(name: &str, server: bool, index: usize) -> Value {
    let ip = format!("10.0.0.{}", 10 + index % 200);
    let mut labels = json!({
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
    });
    if server {
        labels["node-role.kubernetes.io/control-plane"] = json!("true");
        labels["node-role.kubernetes.io/master"] = json!("true");
        labels["node-role.kubernetes.io/etcd"] = json!("true");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": new_uid(),
            "creationTimestamp": TIME,
            "labels": labels,
            "annotations": {
                "alpha.kubernetes.io/provided-node-ip": ip,
                "csi.volume.kubernetes.io/nodeid": format!("{{\"{CEPHFS_DRIVER}\":\"{name}\",\"{RBD_DRIVER}\":\"{name}\"}}"),
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/public-ip": ip,
                "k3s.io/hostname": name,
                "k3s.io/internal-ip": ip,
                "k3s.io/node-args": if server { "[\"server\"]" } else { "[\"agent\"]" },
                "k3s.io/node-config-hash": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRST====",
                "k3s.io/node-env": "{}",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": format!("10.42.{}.0/24", index % 250),
            "podCIDRs": [format!("10.42.{}.0/24", index % 250)],
            "providerID": format!("k3s://{name}"),
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "allocatable": {"cpu": "4", "ephemeral-storage": "95000000000", "memory": "16000000Ki", "pods": "110"},
            "capacity": {"cpu": "4", "ephemeral-storage": "100000000Ki", "memory": "16300000Ki", "pods": "110"},
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": TIME, "lastTransitionTime": TIME,
            }],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": new_uid(),
                "containerRuntimeVersion": "containerd://2.0.5-k3s2",
                "kernelVersion": "6.8.0-60-generic",
                "kubeProxyVersion": "v1.33.5+k3s1",
                "kubeletVersion": "v1.33.5+k3s1",
                "machineID": new_uid().replace('-', ""),
                "operatingSystem": "linux",
                "osImage": "Ubuntu 24.04.2 LTS",
                "systemUUID": new_uid(),
            },
        },
    })
}

/// A Namespace with the given annotations (and the `kubernetes.io/metadata.name` label).
pub fn namespace(name: &str, annots: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": new_uid(),
            "creationTimestamp": TIME,
            "labels": {"kubernetes.io/metadata.name": name},
            "annotations": annotations(annots),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// Rook's `rook-ceph-block` StorageClass (RBD, pool `replicapool`, ext4).
pub fn storage_class_rbd() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "rook-ceph-block", "uid": new_uid(), "creationTimestamp": TIME},
        "provisioner": RBD_DRIVER,
        "parameters": {
            "clusterID": CLUSTER_ID,
            "pool": "replicapool",
            "imageFormat": "2",
            "imageFeatures": "layering",
            "csi.storage.k8s.io/provisioner-secret-name": "rook-csi-rbd-provisioner",
            "csi.storage.k8s.io/provisioner-secret-namespace": "rook-ceph",
            "csi.storage.k8s.io/controller-expand-secret-name": "rook-csi-rbd-provisioner",
            "csi.storage.k8s.io/controller-expand-secret-namespace": "rook-ceph",
            "csi.storage.k8s.io/node-stage-secret-name": "rook-csi-rbd-node",
            "csi.storage.k8s.io/node-stage-secret-namespace": "rook-ceph",
            "csi.storage.k8s.io/fstype": "ext4",
        },
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true,
        "volumeBindingMode": "Immediate",
    })
}

/// Rook's `rook-cephfs` StorageClass (filesystem `myfs`, pool `myfs-replicated`).
pub fn storage_class_cephfs() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "rook-cephfs", "uid": new_uid(), "creationTimestamp": TIME},
        "provisioner": CEPHFS_DRIVER,
        "parameters": {
            "clusterID": CLUSTER_ID,
            "fsName": "myfs",
            "pool": "myfs-replicated",
            "csi.storage.k8s.io/provisioner-secret-name": "rook-csi-cephfs-provisioner",
            "csi.storage.k8s.io/provisioner-secret-namespace": "rook-ceph",
            "csi.storage.k8s.io/controller-expand-secret-name": "rook-csi-cephfs-provisioner",
            "csi.storage.k8s.io/controller-expand-secret-namespace": "rook-ceph",
            "csi.storage.k8s.io/node-stage-secret-name": "rook-csi-cephfs-node",
            "csi.storage.k8s.io/node-stage-secret-namespace": "rook-ceph",
        },
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true,
        "volumeBindingMode": "Immediate",
    })
}

/// Rook's example VolumeSnapshotClass for a ceph-csi driver (`csi-rbdplugin-snapclass` for
/// RBD, `csi-cephfsplugin-snapclass` for CephFS: snapshotter secret, deletionPolicy Delete),
/// annotated as the default class for its driver.
pub fn snapshot_class(driver: &str) -> Value {
    let (name, secret) = if driver == CEPHFS_DRIVER {
        ("csi-cephfsplugin-snapclass", "rook-csi-cephfs-provisioner")
    } else {
        ("csi-rbdplugin-snapclass", "rook-csi-rbd-provisioner")
    };
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {
            "name": name,
            "uid": new_uid(),
            "creationTimestamp": TIME,
            "annotations": {crate::csi::DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "driver": driver,
        "parameters": {
            "clusterID": CLUSTER_ID,
            "csi.storage.k8s.io/snapshotter-secret-name": secret,
            "csi.storage.k8s.io/snapshotter-secret-namespace": "rook-ceph",
        },
        "deletionPolicy": "Delete",
    })
}

/// Serves the external-snapshotter's three types (`snapshot.storage.k8s.io/v1`
/// VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass, with status subresources) on
/// `fake`, as installing the CRDs does. Without it the snapshot API is absent (404, and no
/// such group in discovery), as on a cluster without the snapshot controller.
pub fn install_snapshot_api(fake: &FakeKube) {
    for r in crate::resources::volume_snapshot_resources() {
        fake.install(r);
    }
}

/// A bound PVC and its PV, as made by what [`ClusterBuilder`] records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvcInfo {
    /// Namespace of the claim.
    pub namespace: String,
    /// Claim name.
    pub name: String,
    /// Claim uid.
    pub uid: String,
    /// Bound PV name (`pvc-<claim uid>`).
    pub pv_name: String,
    /// RBD, RBD block or CephFS.
    pub kind: VolumeKind,
    /// The CSI volume handle.
    pub volume_handle: String,
    /// Requested and provisioned size, e.g. `1Gi`.
    pub size: String,
}

/// A bound PVC (`pv.kubernetes.io/bind-completed`, provisioner annotations,
/// `kubernetes.io/pvc-protection` finalizer, status Bound with capacity).
pub fn pvc(info: &PvcInfo, annots: &[(&str, &str)]) -> Value {
    let mut a = json!({
        "pv.kubernetes.io/bind-completed": "yes",
        "pv.kubernetes.io/bound-by-controller": "yes",
        "volume.beta.kubernetes.io/storage-provisioner": info.kind.driver(),
        "volume.kubernetes.io/storage-provisioner": info.kind.driver(),
    });
    for (k, v) in annots {
        a[*k] = json!(v);
    }
    let modes = if info.kind == VolumeKind::CephFs {
        json!(["ReadWriteMany"])
    } else {
        json!(["ReadWriteOnce"])
    };
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": info.name,
            "namespace": info.namespace,
            "uid": info.uid,
            "creationTimestamp": TIME,
            "annotations": a,
            "finalizers": ["kubernetes.io/pvc-protection"],
        },
        "spec": {
            "accessModes": modes,
            "resources": {"requests": {"storage": info.size}},
            "storageClassName": info.kind.storage_class(),
            "volumeMode": if info.kind.is_block() { "Block" } else { "Filesystem" },
            "volumeName": info.pv_name,
        },
        "status": {
            "accessModes": modes,
            "capacity": {"storage": info.size},
            "phase": "Bound",
        },
    })
}

/// The PV ceph-csi provisions for `info` (spec.csi with driver, volumeHandle, volumeAttributes,
/// secret refs; claimRef; `kubernetes.io/pv-protection` finalizer; status Bound).
pub fn pv(info: &PvcInfo) -> Value {
    // The handle ends in the same UUID ceph-csi puts in the image/subvolume name.
    let h = &info.volume_handle;
    let uuid = h[h.len().saturating_sub(36)..].to_string();
    let (attrs, secret, fs_type) = match info.kind {
        VolumeKind::CephFs => (
            json!({
                "clusterID": CLUSTER_ID,
                "fsName": "myfs",
                "pool": "myfs-replicated",
                "subvolumeName": format!("csi-vol-{uuid}"),
                "subvolumePath": format!("/volumes/csi/csi-vol-{uuid}/{}", new_uid()),
                "storage.kubernetes.io/csiProvisionerIdentity": PROVISIONER_IDENTITY_CEPHFS,
            }),
            "cephfs",
            None,
        ),
        _ => (
            json!({
                "clusterID": CLUSTER_ID,
                "imageFeatures": "layering",
                "imageFormat": "2",
                "imageName": format!("csi-vol-{uuid}"),
                "journalPool": "replicapool",
                "pool": "replicapool",
                "storage.kubernetes.io/csiProvisionerIdentity": PROVISIONER_IDENTITY_RBD,
            }),
            "rbd",
            Some("ext4"),
        ),
    };
    let mut csi = json!({
        "driver": info.kind.driver(),
        "volumeHandle": info.volume_handle,
        "volumeAttributes": attrs,
        "controllerExpandSecretRef": {"name": format!("rook-csi-{secret}-provisioner"), "namespace": "rook-ceph"},
        "nodeStageSecretRef": {"name": format!("rook-csi-{secret}-node"), "namespace": "rook-ceph"},
    });
    if let (Some(fs), false) = (fs_type, info.kind.is_block()) {
        csi["fsType"] = json!(fs);
    }
    let modes = if info.kind == VolumeKind::CephFs {
        json!(["ReadWriteMany"])
    } else {
        json!(["ReadWriteOnce"])
    };
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": info.pv_name,
            "uid": new_uid(),
            "creationTimestamp": TIME,
            "annotations": {
                "pv.kubernetes.io/provisioned-by": info.kind.driver(),
                "volume.kubernetes.io/provisioner-deletion-secret-name": format!("rook-csi-{secret}-provisioner"),
                "volume.kubernetes.io/provisioner-deletion-secret-namespace": "rook-ceph",
            },
            "finalizers": ["kubernetes.io/pv-protection"],
        },
        "spec": {
            "accessModes": modes,
            "capacity": {"storage": info.size},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "name": info.name,
                "namespace": info.namespace,
                "uid": info.uid,
            },
            "csi": csi,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": info.kind.storage_class(),
            "volumeMode": if info.kind.is_block() { "Block" } else { "Filesystem" },
        },
        "status": {"phase": "Bound", "lastPhaseTransitionTime": TIME},
    })
}

/// One PVC a pod mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodVolume {
    /// The pod's volume name (`vol-<claim>`).
    pub volume_name: String,
    /// The claim.
    pub pvc: PvcInfo,
    /// `persistentVolumeClaim.readOnly`.
    pub read_only: bool,
}

/// A pod as [`ClusterBuilder`] made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid` (the kubelet's directory name under `pods/`).
    pub uid: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `status.phase`.
    pub phase: String,
    /// The PVC volumes.
    pub volumes: Vec<PodVolume>,
    /// Name of the projected service-account token volume (`kube-api-access-xxxxx`).
    pub token_volume: String,
    /// Name of the configMap volume.
    pub config_volume: String,
    /// Name of the emptyDir volume.
    pub scratch_volume: String,
}

fn random_suffix() -> String {
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| A[rand::random::<usize>() % A.len()] as char)
        .collect()
}

/// A Running pod (or `info.phase`) with its PVC volumes, a projected token volume, a configMap
/// volume and an emptyDir; filesystem PVCs are `volumeMounts`, block PVCs `volumeDevices`.
pub fn pod(info: &PodInfo, labels: &[(&str, &str)]) -> Value {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut devices = Vec::new();
    for (i, v) in info.volumes.iter().enumerate() {
        let mut claim = json!({"claimName": v.pvc.name});
        if v.read_only {
            claim["readOnly"] = json!(true);
        }
        volumes.push(json!({"name": v.volume_name, "persistentVolumeClaim": claim}));
        if v.pvc.kind.is_block() {
            devices.push(json!({"name": v.volume_name, "devicePath": format!("/dev/xvd{}", (b'a' + (i % 26) as u8) as char)}));
        } else {
            let mut m =
                json!({"name": v.volume_name, "mountPath": format!("/data/{}", v.pvc.name)});
            if v.read_only {
                m["readOnly"] = json!(true);
            }
            mounts.push(m);
        }
    }
    volumes.push(json!({"name": info.config_volume, "configMap": {"name": format!("{}-config", info.name), "defaultMode": 420}}));
    volumes.push(json!({"name": info.scratch_volume, "emptyDir": {}}));
    volumes.push(json!({
        "name": info.token_volume,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}},
            ],
        },
    }));
    mounts.push(json!({"name": info.config_volume, "mountPath": "/etc/app"}));
    mounts.push(json!({"name": info.scratch_volume, "mountPath": "/tmp"}));
    mounts.push(json!({"name": info.token_volume, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}));
    let mut container = json!({
        "name": "app",
        "image": "docker.io/library/postgres:16",
        "imagePullPolicy": "IfNotPresent",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": mounts,
    });
    if !devices.is_empty() {
        container["volumeDevices"] = json!(devices);
    }
    let running = info.phase == "Running";
    let ip = format!("10.42.0.{}", 2 + (info.uid.as_bytes()[0] as usize % 250));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": info.name,
            "namespace": info.namespace,
            "uid": info.uid,
            "creationTimestamp": TIME,
            "labels": annotations(labels),
        },
        "spec": {
            "containers": [container],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "nodeName": info.node,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
            ],
            "volumes": volumes,
        },
        "status": {
            "phase": info.phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": TIME},
                {"type": "Initialized", "status": "True", "lastTransitionTime": TIME},
                {"type": "ContainersReady", "status": if running { "True" } else { "False" }, "lastTransitionTime": TIME},
                {"type": "Ready", "status": if running { "True" } else { "False" }, "lastTransitionTime": TIME},
            ],
            "hostIP": "10.0.0.10",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "qosClass": "BestEffort",
            "startTime": TIME,
            "containerStatuses": [{
                "name": "app",
                "image": "docker.io/library/postgres:16",
                "imageID": "docker.io/library/postgres@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "containerID": format!("containerd://{}", info.uid.replace('-', "")),
                "ready": running,
                "started": running,
                "restartCount": 0,
                "state": if running { json!({"running": {"startedAt": TIME}}) } else { json!({"waiting": {"reason": "ContainerCreating"}}) },
            }],
        },
    })
}

/// What [`ClusterBuilder::seed`] made.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Node names.
    pub nodes: Vec<String>,
    /// Namespaces created (including ones made implicitly for PVCs and pods).
    pub namespaces: Vec<String>,
    /// The PVC/PV pairs.
    pub pvcs: Vec<PvcInfo>,
    /// The pods.
    pub pods: Vec<PodInfo>,
    /// Every object, in insertion order (namespaces and StorageClasses first).
    pub objects: Vec<Value>,
}

impl Cluster {
    /// The pods scheduled on `node`.
    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PodInfo> + 'a {
        self.pods.iter().filter(move |p| p.node == node)
    }

    /// A pod by namespace and name.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// A PVC by namespace and name.
    pub fn pvc(&self, namespace: &str, name: &str) -> Option<&PvcInfo> {
        self.pvcs
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// Every object as a YAML stream (e.g. a seed file for the `fake-kube` binary).
    pub fn to_yaml(&self) -> String {
        self.objects
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).expect("serializes"))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// Builds a cluster's objects; [`ClusterBuilder::seed`] inserts them into a fake.
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    nodes: Vec<(String, bool)>,
    namespaces: Vec<(String, Vec<(String, String)>)>,
    pvcs: Vec<(PvcInfo, Vec<(String, String)>)>,
    pods: Vec<(PodInfo, Vec<(String, String)>)>,
    snapshot_classes: bool,
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

impl ClusterBuilder {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// The CSI snapshot API (the external-snapshotter's CRDs, installed by [`ClusterBuilder::seed`]
    /// with [`install_snapshot_api`]) and one default VolumeSnapshotClass per ceph-csi driver
    /// ([`snapshot_class`]), as Rook's examples make them.
    pub fn snapshot_classes(mut self) -> Self {
        self.snapshot_classes = true;
        self
    }

    /// A worker node (k3s agent).
    pub fn node(mut self, name: &str) -> Self {
        self.nodes.push((name.into(), false));
        self
    }

    /// A server node (k3s server: control-plane, master and etcd role labels).
    pub fn server_node(mut self, name: &str) -> Self {
        self.nodes.push((name.into(), true));
        self
    }

    /// A namespace with annotations (namespaces used by PVCs and pods are made anyway).
    pub fn namespace(mut self, name: &str, annotations: &[(&str, &str)]) -> Self {
        self.namespaces.push((name.into(), owned(annotations)));
        self
    }

    /// A PVC of the given kind, bound to a freshly provisioned ceph-csi PV.
    pub fn pvc(
        mut self,
        kind: VolumeKind,
        namespace: &str,
        name: &str,
        size: &str,
        annotations: &[(&str, &str)],
    ) -> Self {
        let uid = new_uid();
        let pool_id = if kind == VolumeKind::CephFs {
            "0000000000000001"
        } else {
            "0000000000000002"
        };
        let info = PvcInfo {
            namespace: namespace.into(),
            name: name.into(),
            pv_name: format!("pvc-{uid}"),
            uid,
            kind,
            volume_handle: format!("0001-0009-{CLUSTER_ID}-{pool_id}-{}", new_uid()),
            size: size.into(),
        };
        self.pvcs.push((info, owned(annotations)));
        self
    }

    /// An RBD filesystem PVC (`rook-ceph-block`, ext4).
    pub fn rbd_pvc(
        self,
        namespace: &str,
        name: &str,
        size: &str,
        annotations: &[(&str, &str)],
    ) -> Self {
        self.pvc(VolumeKind::Rbd, namespace, name, size, annotations)
    }

    /// A CephFS PVC (`rook-cephfs`).
    pub fn cephfs_pvc(
        self,
        namespace: &str,
        name: &str,
        size: &str,
        annotations: &[(&str, &str)],
    ) -> Self {
        self.pvc(VolumeKind::CephFs, namespace, name, size, annotations)
    }

    /// An RBD block-mode PVC.
    pub fn block_pvc(
        self,
        namespace: &str,
        name: &str,
        size: &str,
        annotations: &[(&str, &str)],
    ) -> Self {
        self.pvc(VolumeKind::RbdBlock, namespace, name, size, annotations)
    }

    /// A Running pod on `node` mounting the named PVCs (of its namespace) read-write.
    ///
    /// # Panics
    /// If a PVC was not declared before.
    pub fn pod(self, namespace: &str, name: &str, node: &str, pvcs: &[&str]) -> Self {
        let claims: Vec<(&str, bool)> = pvcs.iter().map(|c| (*c, false)).collect();
        self.pod_with(namespace, name, node, "Running", &claims, &[])
    }

    /// A pod with a phase, claims as `(claim, read_only)` and labels.
    ///
    /// # Panics
    /// If a PVC was not declared before.
    pub fn pod_with(
        mut self,
        namespace: &str,
        name: &str,
        node: &str,
        phase: &str,
        claims: &[(&str, bool)],
        labels: &[(&str, &str)],
    ) -> Self {
        let volumes = claims
            .iter()
            .map(|(c, ro)| {
                let pvc = self
                    .pvcs
                    .iter()
                    .find(|(p, _)| p.namespace == namespace && p.name == *c)
                    .unwrap_or_else(|| panic!("PVC {namespace}/{c} is not declared"))
                    .0
                    .clone();
                PodVolume {
                    volume_name: format!("vol-{c}"),
                    pvc,
                    read_only: *ro,
                }
            })
            .collect();
        let info = PodInfo {
            namespace: namespace.into(),
            name: name.into(),
            uid: new_uid(),
            node: node.into(),
            phase: phase.into(),
            volumes,
            token_volume: format!("kube-api-access-{}", random_suffix()),
            config_volume: "config".into(),
            scratch_volume: "scratch".into(),
        };
        self.pods.push((info, owned(labels)));
        self
    }

    /// A large cluster for discovery benchmarks: `nodes` nodes (the first a server), `pods`
    /// pods spread round-robin over them and 10 namespaces, `pvcs` PVCs shared out over the
    /// pods (every 5th CephFS, every 10th block, the rest RBD).
    pub fn large(nodes: usize, pods: usize, pvcs: usize) -> Self {
        let mut b = ClusterBuilder::new();
        for n in 0..nodes.max(1) {
            b.nodes.push((format!("node-{n}"), n == 0));
        }
        let ns = |i: usize| format!("team-{}", i % 10);
        for i in 0..10 {
            b = b.namespace(&ns(i), &[]);
        }
        for i in 0..pvcs {
            let kind = if i % 10 == 9 {
                VolumeKind::RbdBlock
            } else if i % 5 == 4 {
                VolumeKind::CephFs
            } else {
                VolumeKind::Rbd
            };
            let pod_index = i % pods.max(1);
            b = b.pvc(kind, &ns(pod_index), &format!("data-{i}"), "10Gi", &[]);
        }
        for p in 0..pods {
            let claims: Vec<String> = (0..pvcs)
                .filter(|i| i % pods == p)
                .map(|i| format!("data-{i}"))
                .collect();
            let claims: Vec<(&str, bool)> = claims.iter().map(|c| (c.as_str(), false)).collect();
            let node = format!("node-{}", p % nodes.max(1));
            b = b.pod_with(
                &ns(p),
                &format!("app-{p}"),
                &node,
                "Running",
                &claims,
                &[("app", "bench")],
            );
        }
        b
    }

    /// The objects and the record of what they are, without a server.
    pub fn build(&self) -> Cluster {
        let mut c = Cluster::default();
        let mut seen_ns = BTreeSet::new();
        let mut objects = Vec::new();
        for (name, annots) in &self.namespaces {
            if seen_ns.insert(name.clone()) {
                objects.push(namespace(name, &borrowed(annots)));
            }
        }
        let implicit: Vec<String> = self
            .pvcs
            .iter()
            .map(|(p, _)| p.namespace.clone())
            .chain(self.pods.iter().map(|(p, _)| p.namespace.clone()))
            .collect();
        for ns in implicit {
            if seen_ns.insert(ns.clone()) {
                objects.push(namespace(&ns, &[]));
            }
        }
        c.namespaces = seen_ns.into_iter().collect();
        objects.push(storage_class_rbd());
        objects.push(storage_class_cephfs());
        if self.snapshot_classes {
            objects.push(snapshot_class(RBD_DRIVER));
            objects.push(snapshot_class(CEPHFS_DRIVER));
        }
        for (i, (name, server)) in self.nodes.iter().enumerate() {
            objects.push(node(name, *server, i));
            c.nodes.push(name.clone());
        }
        for (info, annots) in &self.pvcs {
            objects.push(pv(info));
            objects.push(pvc(info, &borrowed(annots)));
            c.pvcs.push(info.clone());
        }
        for (info, labels) in &self.pods {
            objects.push(pod(info, &borrowed(labels)));
            c.pods.push(info.clone());
        }
        c.objects = objects;
        c
    }

    /// Inserts everything into `fake` (namespaces first) and returns what it made.
    pub fn seed(&self, fake: &FakeKube) -> Cluster {
        let c = self.build();
        if self.snapshot_classes {
            install_snapshot_api(fake);
        }
        for o in &c.objects {
            fake.insert(o);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{check_decode, FieldValidation};

    #[test]
    fn every_fixture_object_decodes_strictly_as_its_real_type() {
        let c = ClusterBuilder::new()
            .server_node("node-a")
            .node("node-b")
            .namespace("app", &[("a", "b")])
            .rbd_pvc("app", "db", "1Gi", &[])
            .cephfs_pvc("app", "shared", "1Gi", &[])
            .block_pvc("app", "raw", "1Gi", &[])
            .pod_with(
                "app",
                "p",
                "node-a",
                "Pending",
                &[("db", true), ("shared", false), ("raw", false)],
                &[("x", "y")],
            )
            .build();
        let resources = crate::resources::default_resources();
        for o in &c.objects {
            let res = resources
                .iter()
                .find(|r| r.api_version() == o["apiVersion"] && r.kind == o["kind"])
                .expect("served type");
            let warnings = check_decode(res, o, FieldValidation::Strict)
                .unwrap_or_else(|e| panic!("{} {}: {e}", res.kind, o["metadata"]["name"]));
            assert!(warnings.is_empty());
        }
    }
}
