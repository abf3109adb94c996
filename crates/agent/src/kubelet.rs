//! Where the kubelet mounted a pod's volume: `<kubelet-dir>/pods/<pod-uid>/volumes/
//! <plugin>/<pv-name>`, with CSI volumes one level further down in `mount/`. The agent
//! mounts the kubelet directory read-only at the same path (mountPropagation
//! HostToContainer), so these paths are valid inside its container.

use std::path::{Path, PathBuf};

use crate::discovery::{Volume, VolumeMode};

/// Why a volume's directory could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// No pod's directory holds the volume (declared but not mounted yet, or the pod was
    /// replaced since it was listed).
    #[error("no mount of PV {pv} under {dir} for pods {pods}")]
    NotMounted {
        /// The PV.
        pv: String,
        /// The kubelet pods directory.
        dir: String,
        /// The pod UIDs searched.
        pods: String,
    },
    /// More than one plugin directory matched (never seen on a healthy node).
    #[error("PV {pv} is mounted more than once under {dir}: {found:?}")]
    Ambiguous {
        /// The PV.
        pv: String,
        /// The pod directory.
        dir: String,
        /// What matched.
        found: Vec<String>,
    },
}

/// Where a volume is on this node: the directory with its files, or its block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// A filesystem volume's mounted directory.
    Dir(PathBuf),
    /// A block volume's device (`volumeDevices/<plugin>/<pv>`).
    Device(PathBuf),
}

impl Located {
    /// The path, whichever it is.
    pub fn path(&self) -> &Path {
        match self {
            Located::Dir(p) | Located::Device(p) => p,
        }
    }
}

/// Where `volume` is, from the first of its pods that has it.
pub fn locate(kubelet_dir: &Path, volume: &Volume) -> Result<Located, LocateError> {
    let uids: Vec<String> = volume.pods.iter().map(|p| p.uid.clone()).collect();
    locate_pv(kubelet_dir, &volume.pv, &uids, volume.mode)
}

/// Where PV `pv` is in the first of the pods `pod_uids` that has it: `volumes/<plugin>/<pv>`
/// (with `mount/` for CSI) for filesystem volumes, `volumeDevices/<plugin>/<pv>` for block.
pub fn locate_pv(
    kubelet_dir: &Path,
    pv: &str,
    pod_uids: &[String],
    mode: VolumeMode,
) -> Result<Located, LocateError> {
    let pods_dir = kubelet_dir.join("pods");
    let sub = match mode {
        VolumeMode::Filesystem => "volumes",
        VolumeMode::Block => "volumeDevices",
    };
    for uid in pod_uids {
        let vols = pods_dir.join(uid).join(sub);
        let Ok(plugins) = std::fs::read_dir(&vols) else {
            continue;
        };
        let mut found = Vec::new();
        for plugin in plugins.flatten() {
            let at = plugin.path().join(pv);
            match mode {
                VolumeMode::Block => {
                    if at.exists() && !at.is_dir() {
                        found.push(Located::Device(at));
                    }
                }
                VolumeMode::Filesystem => {
                    let csi_mount = at.join("mount");
                    if csi_mount.is_dir() {
                        found.push(Located::Dir(csi_mount));
                    } else if at.is_dir() && !at.join("vol_data.json").exists() {
                        found.push(Located::Dir(at));
                    }
                }
            }
        }
        match found.len() {
            0 => continue,
            1 => return Ok(found.remove(0)),
            _ => {
                return Err(LocateError::Ambiguous {
                    pv: pv.to_string(),
                    dir: vols.display().to_string(),
                    found: found
                        .iter()
                        .map(|p| p.path().display().to_string())
                        .collect(),
                })
            }
        }
    }
    Err(LocateError::NotMounted {
        pv: pv.to_string(),
        dir: pods_dir.display().to_string(),
        pods: pod_uids.join(", "),
    })
}

/// Checks, as Velero's node-agent does at start, that the kubelet directory is the one
/// the pods on this node live in: every running pod's UID must have a directory there.
/// An empty `pod_uids` passes (a node with no pods yet).
pub fn check_dir(kubelet_dir: &Path, pod_uids: &[String]) -> Result<(), String> {
    let pods_dir = kubelet_dir.join("pods");
    if !pods_dir.is_dir() {
        return Err(format!(
            "{} is not a directory: the kubelet directory is wrong or not mounted into the \
             agent's pod; set --kubelet-dir (k3s and most distributions: /var/lib/kubelet; \
             k0s: /var/lib/k0s/kubelet; RKE1: /opt/rke/var/lib/kubelet)",
            pods_dir.display()
        ));
    }
    let missing: Vec<&str> = pod_uids
        .iter()
        .filter(|u| !pods_dir.join(u).is_dir())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() && missing.len() == pod_uids.len() {
        return Err(format!(
            "none of the {} running pods on this node has a directory under {} (first: {}): \
             unexpected directory structure; set --kubelet-dir to the kubelet's root directory \
             on this node",
            pod_uids.len(),
            pods_dir.display(),
            missing[0]
        ));
    }
    if !missing.is_empty() {
        tracing::warn!(
            missing = missing.len(),
            first = missing[0],
            "some running pods have no directory under {} yet (just started or moving)",
            pods_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::PodRef;

    fn vol(mode: VolumeMode, uids: &[&str]) -> Volume {
        Volume {
            namespace: "app".into(),
            pvc: "data".into(),
            pvc_uid: None,
            pv: "pvc-1234".into(),
            storage_class: None,
            driver: None,
            mode,
            access_modes: vec![],
            capacity: None,
            pods: uids
                .iter()
                .map(|u| PodRef {
                    name: "p".into(),
                    uid: u.to_string(),
                })
                .collect(),
            pvc_annotations: Default::default(),
            namespace_annotations: Default::default(),
        }
    }

    #[test]
    fn finds_csi_mounts_and_reports_what_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path();
        let csi = k.join("pods/u2/volumes/kubernetes.io~csi/pvc-1234");
        std::fs::create_dir_all(csi.join("mount")).unwrap();
        std::fs::write(csi.join("vol_data.json"), "{}").unwrap();
        std::fs::create_dir_all(
            k.join("pods/u2/volumes/kubernetes.io~projected/kube-api-access-x"),
        )
        .unwrap();
        // The first pod has no mount (replaced since listed); the second has it.
        let v = vol(VolumeMode::Filesystem, &["u1", "u2"]);
        assert_eq!(locate(k, &v).unwrap(), Located::Dir(csi.join("mount")));
        let e = locate(k, &vol(VolumeMode::Filesystem, &["u1"])).unwrap_err();
        assert!(matches!(e, LocateError::NotMounted { .. }), "{e}");
        // A block volume is its device under volumeDevices/, not a directory.
        let e = locate(k, &vol(VolumeMode::Block, &["u2"])).unwrap_err();
        assert!(matches!(e, LocateError::NotMounted { .. }), "{e}");
        let dev = k.join("pods/u2/volumeDevices/kubernetes.io~csi/pvc-1234");
        std::fs::create_dir_all(dev.parent().unwrap()).unwrap();
        std::fs::write(&dev, b"").unwrap();
        assert_eq!(
            locate(k, &vol(VolumeMode::Block, &["u2"])).unwrap(),
            Located::Device(dev)
        );
        // A CSI volume whose mount/ is gone (unmounted) is not mistaken for its parent.
        std::fs::remove_dir(csi.join("mount")).unwrap();
        assert!(locate(k, &v).is_err());
    }

    #[test]
    fn kubelet_dir_check_names_the_flag() {
        let d = tempfile::tempdir().unwrap();
        let e = check_dir(d.path(), &["u1".into()]).unwrap_err();
        assert!(e.contains("--kubelet-dir"), "{e}");
        std::fs::create_dir_all(d.path().join("pods/u1")).unwrap();
        check_dir(d.path(), &["u1".into(), "u2".into()]).unwrap();
        let e = check_dir(d.path(), &["u8".into(), "u9".into()]).unwrap_err();
        assert!(
            e.contains("unexpected directory structure") && e.contains("--kubelet-dir"),
            "{e}"
        );
        check_dir(d.path(), &[]).unwrap();
    }
}
