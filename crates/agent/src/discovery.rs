//! Which persistent volumes are mounted on this node: pods scheduled here, their
//! `persistentVolumeClaim` volumes, the bound PVs. A pure function of the objects, so the
//! agent can feed it from lists (`--once`) or from watch caches (the daemon).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use serde::Serialize;

use crate::temporary;

/// A pod that uses a volume on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodRef {
    /// Pod name.
    pub name: String,
    /// Pod UID: the kubelet's directory name.
    pub uid: String,
}

/// Filesystem or raw block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeMode {
    /// Mounted as a directory.
    Filesystem,
    /// Attached as a device (`volumeDevices`): backed up as one image file.
    Block,
}

/// One PVC mounted on this node, with what the agent needs to back it up.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    /// The PVC's namespace.
    pub namespace: String,
    /// The PVC's name.
    pub pvc: String,
    /// The PVC's UID (for Events about it).
    pub pvc_uid: Option<String>,
    /// The PV bound to it.
    pub pv: String,
    /// Its StorageClass, if any.
    pub storage_class: Option<String>,
    /// The CSI driver, for CSI PVs.
    pub driver: Option<String>,
    /// Filesystem or block.
    pub mode: VolumeMode,
    /// Access modes of the PVC (`ReadWriteOnce`, `ReadWriteMany`, ...).
    pub access_modes: Vec<String>,
    /// Its size (`status.capacity.storage`, else the request), as a quantity (`10Gi`).
    pub capacity: Option<String>,
    /// The pods on this node that use it (oldest first, by name when equal).
    pub pods: Vec<PodRef>,
    /// The PVC's annotations.
    #[serde(skip)]
    pub pvc_annotations: BTreeMap<String, String>,
    /// The namespace's annotations.
    #[serde(skip)]
    pub namespace_annotations: BTreeMap<String, String>,
}

impl Volume {
    /// `namespace/pvc`: the volume's stable key (schedules, leases, parents).
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pvc)
    }

    /// Whether more than one node may mount it at once.
    pub fn is_shared(&self) -> bool {
        self.access_modes
            .iter()
            .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany")
    }
}

/// A PVC seen on this node that cannot be backed up, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unusable {
    /// `namespace/pvc`.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// What discovery found on this node.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Found {
    /// Volumes to consider, sorted by key.
    pub volumes: Vec<Volume>,
    /// PVCs referenced by pods here that are not usable (not bound, PV missing, ...).
    pub unusable: Vec<Unusable>,
    /// UIDs of the running pods on this node (for the kubelet directory check).
    pub pod_uids: Vec<String>,
}

/// Whether a pod's volumes are mounted and staying: running and not being deleted.
fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Finds the volumes on `node`: `pods` may hold pods of any node, `pvcs` and `pvs` every
/// PVC and PV (or at least those the pods name), `namespaces` the namespaces (for their
/// annotations; a namespace not listed has none).
pub fn volumes_on_node(
    node: &str,
    pods: &[Pod],
    pvcs: &[PersistentVolumeClaim],
    pvs: &[PersistentVolume],
    namespaces: &[Namespace],
) -> Found {
    let pvc_by_key: HashMap<(String, String), &PersistentVolumeClaim> = pvcs
        .iter()
        .filter_map(|c| Some(((c.metadata.namespace.clone()?, c.metadata.name.clone()?), c)))
        .collect();
    let pv_by_name: HashMap<&str, &PersistentVolume> = pvs
        .iter()
        .filter_map(|v| Some((v.metadata.name.as_deref()?, v)))
        .collect();
    let ns_ann: HashMap<&str, &BTreeMap<String, String>> = namespaces
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.as_deref()?,
                n.metadata.annotations.as_ref()?,
            ))
        })
        .collect();

    let mut found = Found::default();
    let mut by_key: BTreeMap<(String, String), Volume> = BTreeMap::new();
    let mut unusable: BTreeMap<String, String> = BTreeMap::new();
    let mut pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter(|p| is_active(p))
        .collect();
    pods.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    });
    for pod in pods {
        let (Some(ns), Some(name), Some(uid)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
            pod.metadata.uid.as_deref(),
        ) else {
            continue;
        };
        found.pod_uids.push(uid.to_string());
        let Some(spec) = &pod.spec else { continue };
        for v in spec.volumes.iter().flatten() {
            let Some(claim) = &v.persistent_volume_claim else {
                continue; // configMap, secret, projected token, emptyDir, hostPath: never
            };
            let key = (ns.to_string(), claim.claim_name.clone());
            let skey = format!("{ns}/{}", claim.claim_name);
            let Some(pvc) = pvc_by_key.get(&key) else {
                unusable.insert(skey, "the PVC does not exist".into());
                continue;
            };
            if temporary::is_temporary(&pvc.metadata) {
                continue; // the agent's own snapshot or restore volume
            }
            let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
            let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref());
            let (Some("Bound"), Some(pv_name)) = (phase, pv_name) else {
                unusable.insert(skey, format!("the PVC is not bound (phase {phase:?})"));
                continue;
            };
            let Some(pv) = pv_by_name.get(pv_name) else {
                unusable.insert(skey, format!("its PV {pv_name} does not exist"));
                continue;
            };
            let entry = by_key
                .entry(key)
                .or_insert_with(|| volume_of(pvc, pv, ns_ann.get(ns).copied()));
            if !entry.pods.iter().any(|p| p.uid == uid) {
                entry.pods.push(PodRef {
                    name: name.to_string(),
                    uid: uid.to_string(),
                });
            }
        }
    }
    found.volumes = by_key.into_values().collect();
    found.unusable = unusable
        .into_iter()
        .map(|(key, reason)| Unusable { key, reason })
        .collect();
    found
}

/// A PVC's size: `status.capacity.storage` once bound, else its request (`10Gi`).
pub fn capacity_of(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .or_else(|| {
            pvc.spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
        })
        .map(|q| q.0.clone())
}

/// The [`Volume`] of a bound PVC and its PV (no pods yet).
fn volume_of(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    ns_annotations: Option<&BTreeMap<String, String>>,
) -> Volume {
    let pv_spec = pv.spec.as_ref();
    let pvc_spec = pvc.spec.as_ref();
    let mode = match pv_spec.and_then(|s| s.volume_mode.as_deref()) {
        Some("Block") => VolumeMode::Block,
        _ => VolumeMode::Filesystem,
    };
    Volume {
        namespace: pvc.metadata.namespace.clone().unwrap_or_default(),
        pvc: pvc.metadata.name.clone().unwrap_or_default(),
        pvc_uid: pvc.metadata.uid.clone(),
        pv: pv.metadata.name.clone().unwrap_or_default(),
        storage_class: pv_spec
            .and_then(|s| s.storage_class_name.clone())
            .or_else(|| pvc_spec.and_then(|s| s.storage_class_name.clone())),
        driver: pv_spec
            .and_then(|s| s.csi.as_ref())
            .map(|c| c.driver.clone()),
        mode,
        access_modes: pvc_spec
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default(),
        capacity: capacity_of(pvc),
        pods: Vec::new(),
        pvc_annotations: pvc.metadata.annotations.clone().unwrap_or_default(),
        namespace_annotations: ns_annotations.cloned().unwrap_or_default(),
    }
}

/// Bound PVCs that no active pod mounts, anywhere (`pods` must be every pod of the
/// cluster), as volumes without pods: backed up from a VolumeSnapshot where the driver
/// has one. The agent's own temporary PVCs are left out.
pub fn unmounted_volumes(
    pods: &[Pod],
    pvcs: &[PersistentVolumeClaim],
    pvs: &[PersistentVolume],
    namespaces: &[Namespace],
) -> Vec<Volume> {
    let unmounted_keys = unmounted(pods, pvcs);
    let pv_by_name: HashMap<&str, &PersistentVolume> = pvs
        .iter()
        .filter_map(|v| Some((v.metadata.name.as_deref()?, v)))
        .collect();
    let mut out = Vec::new();
    for c in pvcs {
        let key = format!(
            "{}/{}",
            c.metadata.namespace.as_deref().unwrap_or_default(),
            c.metadata.name.as_deref().unwrap_or_default()
        );
        if unmounted_keys.binary_search(&key).is_err() || temporary::is_temporary(&c.metadata) {
            continue;
        }
        let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let Some(pv) = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .and_then(|n| pv_by_name.get(n))
        else {
            continue;
        };
        if !bound || c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = namespaces
            .iter()
            .find(|n| n.metadata.name == c.metadata.namespace)
            .and_then(|n| n.metadata.annotations.as_ref());
        out.push(volume_of(c, pv, ns));
    }
    out.sort_by_key(Volume::key);
    out
}

/// PVCs that no active pod mounts, anywhere (`pods` must be every pod of the cluster),
/// sorted; the agent's own temporary PVCs are left out.
pub fn unmounted(pods: &[Pod], pvcs: &[PersistentVolumeClaim]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    for p in pods.iter().filter(|p| is_active(p)) {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        for v in p.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(c) = &v.persistent_volume_claim {
                used.insert(format!("{ns}/{}", c.claim_name));
            }
        }
    }
    let mut out: Vec<String> = pvcs
        .iter()
        .filter(|c| !temporary::is_temporary(&c.metadata))
        .filter_map(|c| {
            Some(format!(
                "{}/{}",
                c.metadata.namespace.as_deref()?,
                c.metadata.name.as_deref()?
            ))
        })
        .filter(|k| !used.contains(k))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, uid: &str, node: &str, phase: &str, claims: &[&str]) -> Pod {
        let mut vols: Vec<serde_json::Value> = claims
            .iter()
            .map(|c| json!({"name": format!("v-{c}"), "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        vols.push(
            json!({"name": "kube-api-access-abcde", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}),
        );
        vols.push(json!({"name": "cache", "emptyDir": {}}));
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "uid": uid,
                         "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}], "volumes": vols},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn pvc(ns: &str, name: &str, pv: Option<&str>, modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "annotations": {"holdfast.io/paths": "data"}},
            "spec": {"accessModes": modes, "volumeName": pv, "storageClassName": "rook-cephfs"},
            "status": {"phase": if pv.is_some() { "Bound" } else { "Pending" }}
        }))
        .unwrap()
    }

    fn pv(name: &str, mode: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"volumeMode": mode, "storageClassName": "rook-cephfs",
                     "csi": {"driver": "rook-ceph.cephfs.csi.ceph.com", "volumeHandle": "h"}}
        }))
        .unwrap()
    }

    #[test]
    fn finds_pvcs_of_running_pods_on_this_node_only() {
        let pods = vec![
            pod(
                "app",
                "web-1",
                "u1",
                "node-a",
                "Running",
                &["data", "shared"],
            ),
            pod("app", "web-2", "u2", "node-a", "Running", &["shared"]),
            pod("app", "other", "u3", "node-b", "Running", &["elsewhere"]),
            pod("app", "done", "u4", "node-a", "Succeeded", &["old"]),
            pod(
                "app",
                "blk",
                "u5",
                "node-a",
                "Running",
                &["disk", "pending", "ghost"],
            ),
        ];
        let pvcs = vec![
            pvc("app", "data", Some("pv-data"), &["ReadWriteOnce"]),
            pvc("app", "shared", Some("pv-shared"), &["ReadWriteMany"]),
            pvc("app", "elsewhere", Some("pv-else"), &["ReadWriteOnce"]),
            pvc("app", "old", Some("pv-old"), &["ReadWriteOnce"]),
            pvc("app", "disk", Some("pv-disk"), &["ReadWriteOnce"]),
            pvc("app", "pending", None, &["ReadWriteOnce"]),
        ];
        let pvs = vec![
            pv("pv-data", "Filesystem"),
            pv("pv-shared", "Filesystem"),
            pv("pv-else", "Filesystem"),
            pv("pv-old", "Filesystem"),
            pv("pv-disk", "Block"),
        ];
        let f = volumes_on_node("node-a", &pods, &pvcs, &pvs, &[]);
        let keys: Vec<String> = f.volumes.iter().map(Volume::key).collect();
        assert_eq!(keys, ["app/data", "app/disk", "app/shared"]);
        let shared = &f.volumes[2];
        assert!(shared.is_shared());
        assert_eq!(shared.pods.len(), 2, "one volume, two pods");
        assert_eq!(f.volumes[1].mode, VolumeMode::Block);
        assert_eq!(
            f.volumes[0].driver.as_deref(),
            Some("rook-ceph.cephfs.csi.ceph.com")
        );
        assert_eq!(f.volumes[0].pvc_annotations["holdfast.io/paths"], "data");
        let bad: Vec<&str> = f.unusable.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(bad, ["app/ghost", "app/pending"]);
        assert_eq!(f.pod_uids, ["u5", "u1", "u2"], "oldest first, then by name");
        assert_eq!(unmounted(&pods, &pvcs), ["app/old"]);
    }
}
