//! CSI VolumeSnapshots (`snapshot.storage.k8s.io/v1`): which class serves a volume's
//! driver, taking a snapshot of a PVC and waiting until it is ready to use, and deleting it.
//! The types are not in k8s-openapi (they are CRDs of the external-snapshotter), so the
//! objects are handled as dynamic objects with the fields the API documents.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use crate::error::{AgentError, Result};
use crate::kube_api;
use crate::temporary;

/// The snapshot API group.
pub const GROUP: &str = "snapshot.storage.k8s.io";
/// Annotation marking a class as its driver's default.
pub const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// `volumesnapshots.snapshot.storage.k8s.io`.
pub fn volume_snapshot_resource() -> ApiResource {
    resource("VolumeSnapshot", "volumesnapshots")
}

/// `volumesnapshotcontents.snapshot.storage.k8s.io`.
pub fn content_resource() -> ApiResource {
    resource("VolumeSnapshotContent", "volumesnapshotcontents")
}

/// `volumesnapshotclasses.snapshot.storage.k8s.io`.
pub fn class_resource() -> ApiResource {
    resource("VolumeSnapshotClass", "volumesnapshotclasses")
}

/// One VolumeSnapshotClass: its name, driver and whether it is the driver's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// The class name.
    pub name: String,
    /// The CSI driver it serves.
    pub driver: String,
    /// Annotated as the default for its driver.
    pub default: bool,
}

impl Class {
    fn from_object(o: &DynamicObject) -> Option<Class> {
        Some(Class {
            name: o.metadata.name.clone()?,
            driver: o.data.get("driver")?.as_str()?.to_string(),
            default: o
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true"),
        })
    }
}

/// The snapshot classes of the cluster; `None` when the snapshot API is not installed
/// (k3s does not ship the snapshot controller and CRDs by default).
pub async fn classes(client: &Client) -> Result<Option<Vec<Class>>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &class_resource());
    let lp = ListParams::default();
    match kube_api::retry("list VolumeSnapshotClasses", || api.list(&lp)).await {
        Ok(l) => Ok(Some(
            l.items.iter().filter_map(Class::from_object).collect(),
        )),
        Err(AgentError::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The class to snapshot a volume of `driver` with: `wanted` (the `holdfast.io/snapshot-class`
/// annotation) if given, which must serve the driver; else the driver's default class; else
/// its only class. `Ok(None)`: no class serves the driver. Several defaults for one driver
/// are an error, as the snapshot controller treats them.
pub fn choose_class(
    classes: &[Class],
    driver: &str,
    wanted: Option<&str>,
) -> Result<Option<String>, String> {
    if let Some(w) = wanted {
        return match classes.iter().find(|c| c.name == w) {
            Some(c) if c.driver == driver => Ok(Some(c.name.clone())),
            Some(c) => Err(format!(
                "VolumeSnapshotClass {w:?} (holdfast.io/snapshot-class) serves driver {}, not the volume's {driver}",
                c.driver
            )),
            None => Err(format!(
                "VolumeSnapshotClass {w:?} (holdfast.io/snapshot-class) does not exist"
            )),
        };
    }
    let of_driver: Vec<&Class> = classes.iter().filter(|c| c.driver == driver).collect();
    let defaults: Vec<&Class> = of_driver.iter().copied().filter(|c| c.default).collect();
    match (defaults.len(), of_driver.len()) {
        (1, _) => Ok(Some(defaults[0].name.clone())),
        (0, 1) => Ok(Some(of_driver[0].name.clone())),
        (0, 0) => Ok(None),
        (0, _) => Err(format!(
            "{} VolumeSnapshotClasses serve {driver} and none is the default: annotate one with \
             {DEFAULT_CLASS}: \"true\", or name one in holdfast.io/snapshot-class",
            of_driver.len()
        )),
        (n, _) => Err(format!(
            "{n} VolumeSnapshotClasses are the default for {driver}: keep one, or name one in \
             holdfast.io/snapshot-class"
        )),
    }
}

/// A VolumeSnapshot that is ready to use.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Its namespace (the source PVC's).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// When the storage took it: the point in time the data is from.
    pub created: DateTime<Utc>,
    /// The smallest volume it can be restored into (`status.restoreSize`), if reported.
    pub restore_size: Option<String>,
    /// The bound VolumeSnapshotContent.
    pub content: Option<String>,
    /// The driver's handle of the snapshot (`VolumeSnapshotContent.status.snapshotHandle`).
    pub handle: Option<String>,
}

/// How long each step may take before the backup fails with that step named.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// VolumeSnapshot `readyToUse`.
    pub ready: Duration,
    /// PVC from it `Bound`.
    pub bound: Duration,
    /// Pause pod `Running`.
    pub running: Duration,
    /// Between two looks at an object.
    pub poll: Duration,
}

/// Creates a VolumeSnapshot `name` of `namespace/pvc` with `class`, labelled as a
/// temporary object of `node`'s run `run`.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    client: &Client,
    namespace: &str,
    pvc: &str,
    name: &str,
    class: &str,
    node: &str,
    run: &str,
    owner: &str,
) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshot_resource());
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": temporary::labels(temporary::ROLE_SNAPSHOT_READ, node, run),
            "annotations": temporary::annotations(&format!("{namespace}/{pvc}"), owner),
        },
        "spec": {
            "volumeSnapshotClassName": class,
            "source": {"persistentVolumeClaimName": pvc},
        },
    }))
    .map_err(|e| AgentError::Volume(format!("VolumeSnapshot object: {e}")))?;
    let pp = PostParams::default();
    kube_api::retry(&format!("create VolumeSnapshot {namespace}/{name}"), || {
        api.create(&pp, &obj)
    })
    .await?;
    Ok(())
}

/// Waits until VolumeSnapshot `namespace/name` is ready to use, or fails with what its
/// status says (`status.error.message`) or with the timeout.
pub async fn wait_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    t: &Timeouts,
) -> Result<Ready> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshot_resource());
    let started = Instant::now();
    loop {
        let what = format!("read VolumeSnapshot {namespace}/{name}");
        let vs = kube_api::retry(&what, || api.get_opt(name))
            .await?
            .ok_or_else(|| {
                AgentError::Volume(format!(
                    "VolumeSnapshot {namespace}/{name} disappeared while waiting for it"
                ))
            })?;
        let status = vs.data.get("status").cloned().unwrap_or(Value::Null);
        if let Some(msg) = status.pointer("/error/message").and_then(Value::as_str) {
            return Err(AgentError::Volume(format!(
                "VolumeSnapshot {namespace}/{name} failed: {msg}"
            )));
        }
        if status.get("readyToUse").and_then(Value::as_bool) == Some(true) {
            let created = status
                .get("creationTime")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| {
                    AgentError::Volume(format!(
                        "VolumeSnapshot {namespace}/{name} is ready but has no status.creationTime"
                    ))
                })?;
            let content = status
                .get("boundVolumeSnapshotContentName")
                .and_then(Value::as_str)
                .map(str::to_string);
            let handle = match &content {
                Some(c) => content_handle(client, c).await?,
                None => None,
            };
            return Ok(Ready {
                namespace: namespace.into(),
                name: name.into(),
                created,
                restore_size: status
                    .get("restoreSize")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                content,
                handle,
            });
        }
        if started.elapsed() >= t.ready {
            return Err(AgentError::Volume(format!(
                "VolumeSnapshot {namespace}/{name} was not ready to use within {} s (is the \
                 snapshot controller running? kubectl describe volumesnapshot -n {namespace} {name})",
                t.ready.as_secs()
            )));
        }
        tokio::time::sleep(t.poll).await;
    }
}

/// The driver's handle of a bound VolumeSnapshotContent, if it reports one.
async fn content_handle(client: &Client, content: &str) -> Result<Option<String>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &content_resource());
    let what = format!("read VolumeSnapshotContent {content}");
    Ok(kube_api::retry(&what, || api.get_opt(content))
        .await?
        .and_then(|c| {
            c.data
                .pointer("/status/snapshotHandle")
                .and_then(Value::as_str)
                .map(str::to_string)
        }))
}

/// Deletes VolumeSnapshot `namespace/name` (already gone is fine).
pub async fn delete(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &volume_snapshot_resource());
    temporary::delete_quietly(&api, name, &DeleteParams::default(), "VolumeSnapshot").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, driver: &str, default: bool) -> Class {
        Class {
            name: name.into(),
            driver: driver.into(),
            default,
        }
    }

    #[test]
    fn the_annotation_then_the_default_then_the_only_class() {
        let rbd = "rbd.csi.ceph.com";
        let fs = "cephfs.csi.ceph.com";
        let all = [
            c("rbd-a", rbd, false),
            c("rbd-b", rbd, true),
            c("fs", fs, false),
        ];
        assert_eq!(
            choose_class(&all, rbd, None).unwrap().as_deref(),
            Some("rbd-b")
        );
        assert_eq!(
            choose_class(&all, rbd, Some("rbd-a")).unwrap().as_deref(),
            Some("rbd-a")
        );
        assert_eq!(
            choose_class(&all, fs, None).unwrap().as_deref(),
            Some("fs"),
            "the only one"
        );
        assert_eq!(choose_class(&all, "other.csi", None).unwrap(), None);
        let e = choose_class(&all, fs, Some("rbd-a")).unwrap_err();
        assert!(e.contains("serves driver rbd.csi.ceph.com"), "{e}");
        assert!(choose_class(&all, rbd, Some("nope"))
            .unwrap_err()
            .contains("does not exist"));
        let two = [c("a", rbd, false), c("b", rbd, false)];
        assert!(choose_class(&two, rbd, None)
            .unwrap_err()
            .contains("none is the default"));
        let two = [c("a", rbd, true), c("b", rbd, true)];
        assert!(choose_class(&two, rbd, None)
            .unwrap_err()
            .contains("2 VolumeSnapshotClasses"));
    }
}
