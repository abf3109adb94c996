//! A kubelet directory tree for the pods of one node, as the agent finds it under the kubelet
//! root (`/var/lib/kubelet` on k3s):
//!
//! ```text
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv>/mount/         filesystem PVC (the data)
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv>/vol_data.json  written by the kubelet
//! <root>/pods/<pod-uid>/volumeDevices/kubernetes.io~csi/<pv>          block PVC (a regular file here)
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~projected/kube-api-access-xxxxx/{token,ca.crt,namespace}
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~configmap/config/
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~empty-dir/scratch/
//! <root>/pods/<pod-uid>/{etc-hosts,containers/app/}
//! <root>/plugins/kubernetes.io/csi/<driver>/<sha256(volumeHandle)>/globalmount/  staging
//! <root>/plugins/kubernetes.io/csi/volumeDevices/<pv>/data/vol_data.json        block staging
//! ```
//!
//! `vol_data.json` has the kubelet's keys: `attachmentID` (`csi-<sha256(handle+driver+node)>`),
//! `driverName`, `nodeName`, `specVolID` (the PV name), `volumeHandle`, `volumeLifecycleMode`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::fixtures::{Cluster, PodInfo, PodVolume};

/// One PVC volume laid out for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletVolume {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod uid.
    pub pod_uid: String,
    /// Claim name.
    pub claim: String,
    /// PV name.
    pub pv_name: String,
    /// Whether it is a block volume.
    pub block: bool,
    /// The `mount/` directory (filesystem) or the device stand-in file (block); put test data
    /// here.
    pub path: PathBuf,
}

/// What [`build`] made.
#[derive(Clone, Debug)]
pub struct KubeletLayout {
    /// The kubelet root.
    pub root: PathBuf,
    /// The PVC volumes, per pod, in the cluster's order.
    pub volumes: Vec<KubeletVolume>,
}

impl KubeletLayout {
    /// The path of a pod's claim (mount dir or device file).
    pub fn path_of(&self, namespace: &str, pod: &str, claim: &str) -> Option<&Path> {
        self.volumes
            .iter()
            .find(|v| v.namespace == namespace && v.pod == pod && v.claim == claim)
            .map(|v| v.path.as_path())
    }
}

pub(crate) fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The kubelet's `vol_data.json` for a CSI volume of `pv` on `node`.
pub fn vol_data_json(v: &PodVolume, node: &str) -> serde_json::Value {
    let driver = v.pvc.kind.driver();
    json!({
        "attachmentID": format!("csi-{}", hex_sha256(&format!("{}{}{}", v.pvc.volume_handle, driver, node))),
        "driverName": driver,
        "nodeName": node,
        "specVolID": v.pvc.pv_name,
        "volumeHandle": v.pvc.volume_handle,
        "volumeLifecycleMode": "Persistent",
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> io::Result<()> {
    fs::write(path, serde_json::to_vec(v).expect("serializes"))
}

fn pod_dirs(root: &Path, p: &PodInfo, out: &mut Vec<KubeletVolume>) -> io::Result<()> {
    let pod_dir = root.join("pods").join(&p.uid);
    let vols = pod_dir.join("volumes");
    fs::create_dir_all(pod_dir.join("containers").join("app"))?;
    fs::write(
        pod_dir.join("etc-hosts"),
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.42.0.2\t{}\n",
            p.name
        ),
    )?;
    for v in &p.volumes {
        let driver = v.pvc.kind.driver();
        let staging = root
            .join("plugins/kubernetes.io/csi")
            .join(driver)
            .join(hex_sha256(&v.pvc.volume_handle));
        let path = if v.pvc.kind.is_block() {
            let dev_dir = pod_dir.join("volumeDevices").join("kubernetes.io~csi");
            fs::create_dir_all(&dev_dir)?;
            let dev = dev_dir.join(&v.pvc.pv_name);
            fs::write(&dev, [])?;
            let data = root
                .join("plugins/kubernetes.io/csi/volumeDevices")
                .join(&v.pvc.pv_name)
                .join("data");
            fs::create_dir_all(&data)?;
            write_json(&data.join("vol_data.json"), &vol_data_json(v, &p.node))?;
            dev
        } else {
            let pv_dir = vols.join("kubernetes.io~csi").join(&v.pvc.pv_name);
            let mount = pv_dir.join("mount");
            fs::create_dir_all(&mount)?;
            write_json(&pv_dir.join("vol_data.json"), &vol_data_json(v, &p.node))?;
            fs::create_dir_all(staging.join("globalmount"))?;
            write_json(
                &staging.join("vol_data.json"),
                &json!({"driverName": driver, "volumeHandle": v.pvc.volume_handle}),
            )?;
            mount
        };
        out.push(KubeletVolume {
            namespace: p.namespace.clone(),
            pod: p.name.clone(),
            pod_uid: p.uid.clone(),
            claim: v.pvc.name.clone(),
            pv_name: v.pvc.pv_name.clone(),
            block: v.pvc.kind.is_block(),
            path,
        });
    }
    let token = vols.join("kubernetes.io~projected").join(&p.token_volume);
    fs::create_dir_all(&token)?;
    fs::write(token.join("token"), "eyJhbGciOiJSUzI1NiJ9.fake.token")?;
    fs::write(
        token.join("ca.crt"),
        "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n",
    )?;
    fs::write(token.join("namespace"), &p.namespace)?;
    let cm = vols.join("kubernetes.io~configmap").join(&p.config_volume);
    fs::create_dir_all(&cm)?;
    fs::write(cm.join("app.conf"), "key=value\n")?;
    fs::create_dir_all(vols.join("kubernetes.io~empty-dir").join(&p.scratch_volume))?;
    Ok(())
}

/// Lays out the kubelet tree under `root` for the pods of `cluster` on `node`.
pub fn build(root: &Path, cluster: &Cluster, node: &str) -> io::Result<KubeletLayout> {
    let mut volumes = Vec::new();
    fs::create_dir_all(root.join("pods"))?;
    for p in cluster.pods_on(node) {
        pod_dirs(root, p, &mut volumes)?;
    }
    Ok(KubeletLayout {
        root: root.to_path_buf(),
        volumes,
    })
}
