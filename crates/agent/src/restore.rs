//! `holdfast agent restore`: a volume's snapshot back into a PVC (the same, a new one, or
//! one folder of it). The agent makes the target PVC if it does not exist (the source's
//! storage class and at least its size, or what is asked), mounts it on its own node with a
//! pause pod, writes the files through the kubelet path with owners, modes, xattrs and hard
//! links, and deletes the pod. The pod holds no credential: the agent, which already holds
//! the repository's, does the writing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_engine::filter::PathFilter;
use holdfast_engine::restorer::{self, RestoreOptions, RestoreProgress};
use holdfast_repo::id::Id;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use serde::Serialize;
use serde_json::json;

use crate::args::RestoreArgs;
use crate::discovery::{self, VolumeMode};
use crate::error::{AgentError, Result};
use crate::kube_api;
use crate::kubelet::{self, Located};
use crate::repo::{self, tags, Repo, BLOCK_IMAGE_NAME};
use crate::runner::Agent;
use crate::selection;
use crate::temporary;

/// Annotation on a PVC made by a restore: the snapshot it was restored from.
pub const RESTORED_FROM: &str = "holdfast.io/restored-from";

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// When its data is from (RFC 3339).
    pub snapshot_time: String,
    /// `namespace/pvc` written to.
    pub target: String,
    /// Whether the target PVC was created by this restore.
    pub created_pvc: bool,
    /// The folder of the volume restored (empty: all of it).
    pub path: String,
    /// How the target was reached: `restore-pod` or `running-pod` (with `--force`).
    pub via: String,
    /// Files restored.
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// What could not be restored exactly (metadata), if anything.
    pub warnings: Vec<String>,
    /// Seconds it took.
    pub seconds: f64,
}

/// Pods that use `pvc` in `namespace` and are not finished.
async fn users(agent: &Agent, namespace: &str, pvc: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(agent.client().clone(), namespace);
    let lp = kube::api::ListParams::default();
    let pods = kube_api::retry("list pods", || api.list(&lp)).await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed")) && !temporary::is_temporary(&p.metadata)
        })
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == pvc)
                })
        })
        .collect())
}

/// Runs `holdfast agent restore`.
pub async fn run(agent: &Agent, a: &RestoreArgs) -> Result<RestoreReport> {
    let t0 = Instant::now();
    let s = agent.settings();
    let sub = selection::subpath(a.path.as_deref().unwrap_or(""))
        .map_err(|d| AgentError::Usage(format!("--path: {d}")))?;
    // 1. The snapshot: the volume's newest, or the one named (which must be this volume's).
    let volume_tags = repo::volume_filter(&s.cluster, &a.namespace, &a.pvc);
    let (filter, spec) = (volume_tags.clone(), a.snapshot.clone());
    let (id, snap) = agent
        .with_repo(move |r| Ok(r.repository().find_snapshot(&spec, &filter)?))
        .await?;
    // `latest` is found among the volume's snapshots; an ID must be one of them too.
    if !volume_tags.matches(&snap) {
        return Err(AgentError::Usage(format!(
            "snapshot {} is not a snapshot of {}/{} in cluster {} (see `holdfast snapshots \
             --host {} --tag namespace={},pvc={}`)",
            id.short(),
            a.namespace,
            a.pvc,
            s.cluster,
            s.cluster,
            a.namespace,
            a.pvc
        )));
    }
    let mode = if repo::tag(&snap.tags, tags::VOLUME_MODE) == Some("block") {
        VolumeMode::Block
    } else {
        VolumeMode::Filesystem
    };
    if mode == VolumeMode::Block && !sub.as_os_str().is_empty() {
        return Err(AgentError::Usage(
            "--path does not apply to a block volume's snapshot (it is one image)".into(),
        ));
    }
    // 2. The target PVC: existing (in use: refused without --force) or made now.
    let target = a.to.clone().unwrap_or_else(|| a.pvc.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(agent.client().clone(), &a.namespace);
    let source_pvc = kube_api::retry("read the source PVC", || pvcs.get_opt(&a.pvc)).await?;
    let existing = if target == a.pvc {
        source_pvc.clone()
    } else {
        kube_api::retry("read the target PVC", || pvcs.get_opt(&target)).await?
    };
    let run = temporary::run_id();
    let source_key = format!("{}/{}", a.namespace, a.pvc);
    let mut created_pvc = false;
    let users = users(agent, &a.namespace, &target).await?;
    if existing.is_some() && !users.is_empty() && !a.force {
        let names: Vec<String> = users
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        return Err(AgentError::Usage(format!(
            "PVC {}/{target} is in use by {} {}: restoring into it would change files under a \
             running application. Stop it (scale to 0), restore into a new PVC with --to, or \
             pass --force",
            a.namespace,
            if names.len() == 1 { "pod" } else { "pods" },
            names.join(", ")
        )));
    }
    match &existing {
        Some(p) => {
            let existing_mode = p.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
            if (existing_mode == Some("Block")) != (mode == VolumeMode::Block) {
                return Err(AgentError::Usage(format!(
                    "PVC {}/{target} has volumeMode {}, the snapshot is of a {} volume",
                    a.namespace,
                    existing_mode.unwrap_or("Filesystem"),
                    if mode == VolumeMode::Block {
                        "block"
                    } else {
                        "filesystem"
                    }
                )));
            }
        }
        None => {
            create_target(agent, a, &target, source_pvc.as_ref(), &snap, mode, &id).await?;
            created_pvc = true;
        }
    }
    // 3. Where to write: a pod here already mounts it (--force), or a restore pod.
    let here_uids: Vec<String> = users
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(s.node.as_str()))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let pv_now = existing
        .as_ref()
        .and_then(|p| p.spec.as_ref()?.volume_name.clone());
    let exposer = agent.exposer();
    let pod_name = temporary::object_name(&format!("restore-{target}"), &run);
    let (at, via, pod) = match (pv_now, here_uids.is_empty()) {
        (Some(pv), false) => {
            let at = kubelet::locate_pv(&s.kubelet_dir, &pv, &here_uids, mode)
                .map_err(|e| AgentError::Volume(e.to_string()))?;
            (at, "running-pod", None)
        }
        _ => {
            let shared = existing
                .as_ref()
                .or(source_pvc.as_ref())
                .and_then(|p| p.spec.as_ref()?.access_modes.clone())
                .unwrap_or_default()
                .iter()
                .any(|m| m == "ReadWriteMany");
            if !users.is_empty() && !shared {
                let elsewhere: Vec<String> = users
                    .iter()
                    .map(|p| {
                        format!(
                            "{} on {}",
                            p.metadata.name.clone().unwrap_or_default(),
                            p.spec
                                .as_ref()
                                .and_then(|s| s.node_name.clone())
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                return Err(AgentError::Usage(format!(
                    "PVC {}/{target} is mounted by {} on another node and can be mounted on one \
                     node only: run this restore in the agent on that node (kubectl exec into \
                     its holdfast pod)",
                    a.namespace,
                    elsewhere.join(", ")
                )));
            }
            exposer
                .create_pod(
                    &a.namespace,
                    &pod_name,
                    &target,
                    mode,
                    false,
                    temporary::ROLE_RESTORE,
                    &run,
                    &source_key,
                )
                .await?;
            match exposer
                .wait_mounted(&a.namespace, &target, &pod_name, mode)
                .await
            {
                Ok(x) => (x.at, "restore-pod", Some(pod_name.clone())),
                Err(e) => {
                    let _ = exposer.delete_pod(&a.namespace, &pod_name).await;
                    return Err(e);
                }
            }
        }
    };
    // 4. The data.
    tracing::info!(snapshot = %id.short(), target = %format!("{}/{target}", a.namespace),
        at = %at.path().display(), "restoring");
    let progress = Arc::new(RestoreProgress::default());
    let reporter = {
        let p = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let done = p.bytes.load(std::sync::atomic::Ordering::Relaxed);
                let total = p.bytes_total.load(std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    "restored {:.1} of {:.1} MiB ({} entries)",
                    done as f64 / 1048576.0,
                    total as f64 / 1048576.0,
                    p.entries.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        })
    };
    let root = format!("/{}/{}", a.namespace, a.pvc);
    let (tree, sub2, at2, prog) = (snap.tree, sub.clone(), at.clone(), progress.clone());
    let written = agent
        .with_repo(move |r| write_data(r, &tree, &root, &sub2, &at2, &prog))
        .await;
    reporter.abort();
    if let Some(p) = &pod {
        if let Err(e) = exposer.delete_pod(&a.namespace, p).await {
            tracing::warn!(error = %e, "cannot delete the restore pod; the agent's next start does");
        }
    }
    let summary = written?;
    Ok(RestoreReport {
        snapshot: id.to_string(),
        snapshot_time: chrono::DateTime::from_timestamp_nanos(snap.time_ns).to_rfc3339(),
        target: format!("{}/{target}", a.namespace),
        created_pvc,
        path: sub.display().to_string(),
        via: via.into(),
        files: summary.files,
        dirs: summary.dirs,
        bytes: summary.bytes,
        warnings: summary.warnings,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Creates the restore's target PVC: the source's storage class, access modes and at least
/// its size, unless the arguments say otherwise; without a source PVC (it was deleted: the
/// usual reason to restore) from the snapshot's tags and size.
async fn create_target(
    agent: &Agent,
    a: &RestoreArgs,
    target: &str,
    source: Option<&PersistentVolumeClaim>,
    snap: &holdfast_repo::snapshot::Snapshot,
    mode: VolumeMode,
    id: &Id,
) -> Result<()> {
    let src_spec = source.and_then(|p| p.spec.as_ref());
    let storage_class = a
        .storage_class
        .clone()
        .or_else(|| src_spec.and_then(|s| s.storage_class_name.clone()))
        .or_else(|| repo::tag(&snap.tags, tags::STORAGE_CLASS).map(str::to_string));
    let source_size = source.and_then(discovery::capacity_of);
    let size = match (&a.size, source_size) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s,
        (None, None) => {
            // Room for the data and a quarter more, in whole GiB.
            let bytes = snap.summary.bytes_total;
            let gib = (bytes as f64 * 1.25 / 1024f64.powi(3)).ceil().max(1.0);
            format!("{gib}Gi")
        }
    };
    let access = src_spec
        .and_then(|s| s.access_modes.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": target,
            "namespace": a.namespace,
            "labels": {temporary::MANAGED_BY: temporary::MANAGER},
            "annotations": {RESTORED_FROM: id.to_string()},
        },
        "spec": {
            "storageClassName": storage_class,
            "accessModes": access,
            "volumeMode": if mode == VolumeMode::Block { "Block" } else { "Filesystem" },
            "resources": {"requests": {"storage": size}},
        },
    }))
    .map_err(|e| AgentError::Volume(format!("PVC object: {e}")))?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(agent.client().clone(), &a.namespace);
    let pp = PostParams::default();
    kube_api::retry(&format!("create PVC {}/{target}", a.namespace), || {
        api.create(&pp, &pvc)
    })
    .await?;
    tracing::info!(pvc = %format!("{}/{target}", a.namespace), size = %size,
        storage_class = ?storage_class, "created the target PVC");
    Ok(())
}

/// Writes the snapshot's volume (or its folder `sub`) at `at`.
fn write_data(
    r: &Repo,
    tree: &Id,
    root: &str,
    sub: &Path,
    at: &Located,
    progress: &RestoreProgress,
) -> Result<holdfast_engine::restorer::RestoreSummary> {
    let repo = r.repository();
    let index = repo.load_index()?;
    match at {
        Located::Device(dev) => {
            let image = format!("{root}/{BLOCK_IMAGE_NAME}");
            let node = restorer::lookup(repo, &index, tree, image.as_bytes())?
                .ok_or_else(|| AgentError::Usage(format!("{image} is not in the snapshot")))?;
            progress
                .bytes_total
                .store(node.size, std::sync::atomic::Ordering::Relaxed);
            let w = holdfast_engine::image::write_into(repo, &index, &node, dev)?;
            progress
                .bytes
                .store(w.bytes, std::sync::atomic::Ordering::Relaxed);
            Ok(holdfast_engine::restorer::RestoreSummary {
                files: 1,
                bytes: w.data_bytes,
                ..Default::default()
            })
        }
        Located::Dir(mount) => {
            let is_whole = sub.as_os_str().is_empty();
            let wanted = if is_whole {
                root.to_string()
            } else {
                format!("{root}/{}", sub.display())
            };
            let node = restorer::lookup(repo, &index, tree, wanted.as_bytes())?
                .ok_or_else(|| AgentError::Usage(format!("{wanted} is not in the snapshot")))?;
            let opts = |target: PathBuf, subpath: Option<Vec<u8>>| RestoreOptions {
                target,
                subpath,
                includes: PathFilter::default(),
                excludes: PathFilter::default(),
                owners: holdfast_engine::fsmeta::is_root(),
            };
            if is_whole {
                let subtree = node.subtree.ok_or_else(|| {
                    AgentError::Volume(format!("{wanted} is not a directory in the snapshot"))
                })?;
                let summary = restorer::restore(
                    repo,
                    &index,
                    &subtree,
                    &opts(mount.clone(), None),
                    progress,
                )?;
                // The volume's root keeps its owner and mode (an app running as its own
                // user must still own its data directory).
                root_owner_mode(mount, &node)?;
                Ok(summary)
            } else {
                let parent = match sub.parent() {
                    Some(p) if !p.as_os_str().is_empty() => mount.join(p),
                    _ => mount.clone(),
                };
                let o = opts(parent, Some(wanted.into_bytes()));
                Ok(restorer::restore(repo, &index, tree, &o, progress)?)
            }
        }
    }
}

/// Gives the restored volume's root the owner (as root), mode and modification time it had
/// in the snapshot.
fn root_owner_mode(dir: &Path, node: &holdfast_repo::tree::Node) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, e: std::io::Error| {
        AgentError::Volume(format!("{what} of {}: {e}", dir.display()))
    };
    if holdfast_engine::fsmeta::is_root() {
        std::os::unix::fs::chown(dir, Some(node.uid), Some(node.gid))
            .map_err(|e| io("set the owner", e))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(|e| io("set the mode", e))?;
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(node.mtime_ns.max(0) as u64);
    std::fs::File::open(dir)
        .and_then(|f| f.set_modified(t))
        .map_err(|e| io("set the modification time", e))
}
