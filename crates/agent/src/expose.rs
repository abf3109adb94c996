//! Getting a volume mounted on the agent's own node when no pod there mounts it: a PVC made
//! from a VolumeSnapshot (for a point-in-time backup) or a restore's target PVC, and a
//! short-lived pause pod pinned to this node that mounts it, so the kubelet publishes it
//! under `<kubelet-dir>/pods/<uid>/...` where the agent reads (or, for a restore, writes).
//! The pod holds no credential: it only keeps the volume mounted.

use std::path::PathBuf;
use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::discovery::VolumeMode;
use crate::error::{AgentError, Result};
use crate::kube_api;
use crate::kubelet::{self, Located};
use crate::snapshot_api::{self, Timeouts};
use crate::temporary;

/// Where the pause pod's image comes from by default (the Kubernetes project's pause image:
/// it does nothing, as root-less as an image can be).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Who creates the objects and where.
#[derive(Clone)]
pub struct Exposer {
    /// API client.
    pub client: Client,
    /// This node.
    pub node: String,
    /// The kubelet's root directory (as mounted in the agent).
    pub kubelet_dir: PathBuf,
    /// The agent's identity (annotation on what it creates).
    pub owner: String,
    /// The pause pod's image.
    pub pause_image: String,
    /// Step timeouts.
    pub timeouts: Timeouts,
}

/// A PVC mounted by a pause pod on this node.
#[derive(Debug, Clone)]
pub struct Exposed {
    /// Namespace of the PVC and the pod.
    pub namespace: String,
    /// The PVC.
    pub pvc: String,
    /// The pause pod.
    pub pod: String,
    /// The PV bound to the PVC.
    pub pv: String,
    /// The mounted directory, or the device of a block volume.
    pub at: Located,
}

/// The PVC spec of a temporary volume made from VolumeSnapshot `snapshot`.
pub struct FromSnapshot<'a> {
    /// Namespace (the source PVC's, as a snapshot can only be used in its own namespace).
    pub namespace: &'a str,
    /// Name of the new PVC.
    pub name: &'a str,
    /// The VolumeSnapshot.
    pub snapshot: &'a str,
    /// StorageClass (the source's).
    pub storage_class: Option<&'a str>,
    /// Size to ask for (at least the snapshot's restore size).
    pub size: &'a str,
    /// Filesystem or block.
    pub mode: VolumeMode,
    /// Access mode: `ReadOnlyMany` where the driver makes that cheap (CephFS: a shallow,
    /// snapshot-backed volume), else `ReadWriteOnce`.
    pub access_mode: &'a str,
    /// `namespace/pvc` of the source, for the annotation.
    pub source: &'a str,
    /// The run.
    pub run: &'a str,
}

fn mode_str(m: VolumeMode) -> &'static str {
    match m {
        VolumeMode::Filesystem => "Filesystem",
        VolumeMode::Block => "Block",
    }
}

impl Exposer {
    /// Creates the temporary PVC from a snapshot.
    pub async fn create_pvc_from_snapshot(&self, f: &FromSnapshot<'_>) -> Result<()> {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": f.name,
                "namespace": f.namespace,
                "labels": temporary::labels(temporary::ROLE_SNAPSHOT_READ, &self.node, f.run),
                "annotations": temporary::annotations(f.source, &self.owner),
            },
            "spec": {
                "storageClassName": f.storage_class,
                "accessModes": [f.access_mode],
                "volumeMode": mode_str(f.mode),
                "resources": {"requests": {"storage": f.size}},
                "dataSource": {
                    "apiGroup": snapshot_api::GROUP,
                    "kind": "VolumeSnapshot",
                    "name": f.snapshot,
                },
            },
        }))
        .map_err(|e| AgentError::Volume(format!("PVC object: {e}")))?;
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), f.namespace);
        let pp = PostParams::default();
        kube_api::retry(&format!("create PVC {}/{}", f.namespace, f.name), || {
            api.create(&pp, &pvc)
        })
        .await?;
        Ok(())
    }

    /// Creates a pause pod `name` on this node that mounts PVC `pvc` (read-only or not),
    /// labelled with `role` and `run`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_pod(
        &self,
        namespace: &str,
        name: &str,
        pvc: &str,
        mode: VolumeMode,
        read_only: bool,
        role: &str,
        run: &str,
        source: &str,
    ) -> Result<()> {
        let mut c = json!({
            "name": "hold",
            "image": self.pause_image,
            "resources": {
                "requests": {"cpu": "1m", "memory": "8Mi"},
                "limits": {"memory": "32Mi"},
            },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
            },
        });
        match mode {
            VolumeMode::Filesystem => {
                c["volumeMounts"] =
                    json!([{"name": "data", "mountPath": "/data", "readOnly": read_only}])
            }
            VolumeMode::Block => {
                c["volumeDevices"] = json!([{"name": "data", "devicePath": "/dev/holdfast-data"}])
            }
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": temporary::labels(role, &self.node, run),
                "annotations": temporary::annotations(source, &self.owner),
            },
            "spec": {
                // Pinned the way DaemonSet pods are: an affinity on the node's name, so the
                // scheduler still runs (WaitForFirstConsumer volumes bind) but only here.
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": [self.node]}
                    ]}]
                }}},
                "tolerations": [{"operator": "Exists"}],
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 0,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [c],
                "volumes": [{"name": "data", "persistentVolumeClaim": {
                    "claimName": pvc, "readOnly": read_only
                }}],
            },
        }))
        .map_err(|e| AgentError::Volume(format!("pod object: {e}")))?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pp = PostParams::default();
        kube_api::retry(&format!("create pod {namespace}/{name}"), || {
            api.create(&pp, &pod)
        })
        .await?;
        Ok(())
    }

    /// Waits until PVC `pvc` is bound and pod `pod` runs, then finds the volume in the
    /// kubelet's tree. Each wait has its own timeout, named in the error.
    pub async fn wait_mounted(
        &self,
        namespace: &str,
        pvc: &str,
        pod: &str,
        mode: VolumeMode,
    ) -> Result<Exposed> {
        let t = &self.timeouts;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let started = Instant::now();
        let pv = loop {
            let c = kube_api::retry(&format!("read PVC {namespace}/{pvc}"), || pvcs.get_opt(pvc))
                .await?
                .ok_or_else(|| AgentError::Volume(format!("PVC {namespace}/{pvc} disappeared")))?;
            let phase = c.status.as_ref().and_then(|s| s.phase.clone());
            let pv = c.spec.as_ref().and_then(|s| s.volume_name.clone());
            if let (Some("Bound"), Some(pv)) = (phase.as_deref(), pv) {
                break pv;
            }
            if started.elapsed() >= t.bound {
                return Err(AgentError::Volume(format!(
                    "PVC {namespace}/{pvc} was not bound within {} s (phase {}; kubectl describe \
                     pvc -n {namespace} {pvc})",
                    t.bound.as_secs(),
                    phase.as_deref().unwrap_or("none")
                )));
            }
            tokio::time::sleep(t.poll).await;
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let started = Instant::now();
        let uid = loop {
            let p = kube_api::retry(&format!("read pod {namespace}/{pod}"), || pods.get_opt(pod))
                .await?
                .ok_or_else(|| AgentError::Volume(format!("pod {namespace}/{pod} disappeared")))?;
            let status = p.status.clone().unwrap_or_default();
            match status.phase.as_deref() {
                Some("Running") => break p.metadata.uid.clone().unwrap_or_default(),
                Some(ph @ ("Failed" | "Succeeded")) => {
                    return Err(AgentError::Volume(format!(
                        "pod {namespace}/{pod} ended ({ph}) before it could be used: {}",
                        status.message.unwrap_or_default()
                    )))
                }
                _ => {}
            }
            if started.elapsed() >= t.running {
                let why: Vec<String> = status
                    .conditions
                    .iter()
                    .flatten()
                    .filter(|c| c.status != "True")
                    .map(|c| {
                        format!(
                            "{} {}: {}",
                            c.type_,
                            c.reason.clone().unwrap_or_default(),
                            c.message.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                return Err(AgentError::Volume(format!(
                    "pod {namespace}/{pod} was not running within {} s ({}; kubectl describe pod \
                     -n {namespace} {pod})",
                    t.running.as_secs(),
                    if why.is_empty() {
                        "phase Pending".to_string()
                    } else {
                        why.join("; ")
                    }
                )));
            }
            tokio::time::sleep(t.poll).await;
        };
        // The kubelet publishes the volume before it reports the pod running; allow a moment
        // for a slow filesystem to show it anyway.
        let started = Instant::now();
        let at = loop {
            match kubelet::locate_pv(&self.kubelet_dir, &pv, std::slice::from_ref(&uid), mode) {
                Ok(at) => break at,
                Err(e) if started.elapsed() >= t.running => {
                    return Err(AgentError::Volume(format!(
                        "pod {namespace}/{pod} runs but its volume is not under the kubelet \
                         directory: {e}"
                    )))
                }
                Err(_) => tokio::time::sleep(t.poll).await,
            }
        };
        Ok(Exposed {
            namespace: namespace.into(),
            pvc: pvc.into(),
            pod: pod.into(),
            pv,
            at,
        })
    }

    /// Deletes a pod (no grace: it only holds a mount).
    pub async fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        temporary::delete_quietly(&api, name, &dp, "pod").await
    }

    /// Deletes a PVC.
    pub async fn delete_pvc(&self, namespace: &str, name: &str) -> Result<()> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        temporary::delete_quietly(&api, name, &DeleteParams::default(), "PVC").await
    }
}
