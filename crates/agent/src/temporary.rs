//! The objects the agent creates for a while and deletes again: VolumeSnapshots, PVCs made
//! from them, and the pause pods that get those mounted on the agent's node (and the restore
//! pods of `agent restore`). Each carries labels that say who made it, on which node and in
//! which run, so that what a killed agent left behind is found and deleted when it starts
//! again; names are unique per run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::Client;

use crate::error::Result;
use crate::kube_api;
use crate::snapshot_api;

/// `app.kubernetes.io/managed-by`: every object the agent creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGER: &str = "holdfast";
/// What the object is for: [`ROLE_SNAPSHOT_READ`], [`ROLE_RESTORE`].
pub const ROLE: &str = "holdfast.io/role";
/// Reading a volume from its snapshot (snapshot, PVC, pause pod): deleted after the backup.
pub const ROLE_SNAPSHOT_READ: &str = "snapshot-read";
/// The pod that holds a restore's target PVC mounted: deleted after the restore (the PVC
/// stays: it is the restore's result).
pub const ROLE_RESTORE: &str = "restore";
/// The node whose agent made it (and cleans it up).
pub const NODE: &str = "holdfast.io/node";
/// The run that made it: unique per volume backup or restore.
pub const RUN: &str = "holdfast.io/run";
/// Annotation: the PVC it was made for, `namespace/pvc`.
pub const SOURCE: &str = "holdfast.io/source";
/// Annotation: the agent that made it (`<node>/<pod>`).
pub const OWNER: &str = "holdfast.io/owner";

/// Whether an object is one of the agent's temporary objects (never itself backed up).
pub fn is_temporary(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().is_some_and(|l| {
        l.get(MANAGED_BY).map(String::as_str) == Some(MANAGER) && l.contains_key(ROLE)
    })
}

/// A fresh run ID: 10 lowercase hex digits from the time, the process and a counter, so
/// that two runs never share a name even across agents started at the same instant.
pub fn run_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let host = crate::hostname_of_process().unwrap_or_default();
    let h = blake3::hash(format!("{t}/{}/{n}/{host}", std::process::id()).as_bytes());
    h.to_hex()[..10].to_string()
}

/// The name of a temporary object for `pvc` in run `run`: `hf-<pvc>-<run>`, cut so that it
/// is a valid DNS label (at most 63 characters, no trailing dash).
pub fn object_name(pvc: &str, run: &str) -> String {
    let room = 63 - "hf--".len() - run.len();
    let mut base: String = pvc
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(room)
        .collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("hf-{base}-{run}")
}

/// The labels of a temporary object.
pub fn labels(role: &str, node: &str, run: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (ROLE.to_string(), role.to_string()),
        (NODE.to_string(), label_value(node)),
        (RUN.to_string(), run.to_string()),
    ])
}

/// The annotations of a temporary object.
pub fn annotations(source: &str, owner: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SOURCE.to_string(), source.to_string()),
        (OWNER.to_string(), owner.to_string()),
    ])
}

/// A node name as a label value (node names may be longer than the 63 a label allows).
fn label_value(v: &str) -> String {
    let mut s: String = v.chars().take(63).collect();
    while s.ends_with(['-', '.', '_']) {
        s.pop();
    }
    s
}

/// The selector of this node's temporary objects.
pub fn node_selector(node: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{ROLE},{NODE}={}", label_value(node))
}

/// What [`sweep`] deleted, as `kind namespace/name`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Swept {
    /// Deleted objects.
    pub deleted: Vec<String>,
}

/// Whether an object was created before `before` (objects without a creation time count
/// as old: the API server always sets one).
fn older(meta: &ObjectMeta, before: &chrono::DateTime<chrono::Utc>) -> bool {
    let before_ns = i128::from(before.timestamp_nanos_opt().unwrap_or(i64::MAX));
    meta.creation_timestamp
        .as_ref()
        .is_none_or(|t| t.0.as_nanosecond() < before_ns)
}

/// Deletes this node's temporary objects created before `before` (the start of this
/// process): the leftovers of an agent that was killed in the middle of a backup or restore.
/// Pods go first, then PVCs, then VolumeSnapshots, as they depend on each other. When the
/// snapshot API is not installed there are no snapshots to look for.
pub async fn sweep(
    client: &Client,
    node: &str,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<Swept> {
    sweep_matching(client, &node_selector(node), before).await
}

/// The selector of every node's temporary objects.
pub fn any_node_selector() -> String {
    format!("{MANAGED_BY}={MANAGER},{ROLE}")
}

/// Deletes the temporary objects matching `selector` created before `before`: [`sweep`]
/// for one node, or (from maintenance) every node's that are a day old, which covers nodes
/// that were removed with their agent.
pub async fn sweep_matching(
    client: &Client,
    selector: &str,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<Swept> {
    let lp = ListParams::default().labels(selector);
    let mut swept = Swept::default();
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let list = kube_api::retry("list the agent's temporary pods", || pods.list(&lp)).await?;
    for p in list.items.iter().filter(|p| older(&p.metadata, &before)) {
        let (ns, name) = ns_name(&p.metadata);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        delete_quietly(&api, &name, &dp, "pod").await?;
        swept.deleted.push(format!("Pod {ns}/{name}"));
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let list = kube_api::retry("list the agent's temporary PVCs", || pvcs.list(&lp)).await?;
    for c in list.items.iter().filter(|c| older(&c.metadata, &before)) {
        let (ns, name) = ns_name(&c.metadata);
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        delete_quietly(&api, &name, &dp, "PVC").await?;
        swept
            .deleted
            .push(format!("PersistentVolumeClaim {ns}/{name}"));
    }
    let vs: Api<DynamicObject> =
        Api::all_with(client.clone(), &snapshot_api::volume_snapshot_resource());
    match vs.list(&lp).await {
        Ok(list) => {
            for s in list.items.iter().filter(|s| older(&s.metadata, &before)) {
                let (ns, name) = ns_name(&s.metadata);
                let api: Api<DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    &ns,
                    &snapshot_api::volume_snapshot_resource(),
                );
                delete_quietly(&api, &name, &dp, "VolumeSnapshot").await?;
                swept.deleted.push(format!("VolumeSnapshot {ns}/{name}"));
            }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {} // no snapshot API: nothing to find
        Err(e) => {
            return Err(crate::error::AgentError::Kube {
                what: "list the agent's temporary VolumeSnapshots".into(),
                source: e,
            })
        }
    }
    for d in &swept.deleted {
        tracing::warn!(object = %d, "deleted a leftover of an earlier run");
    }
    Ok(swept)
}

fn ns_name(meta: &ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Deletes `name`; one that is already gone is fine.
pub async fn delete_quietly<K>(
    api: &Api<K>,
    name: &str,
    dp: &DeleteParams,
    kind: &str,
) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("delete {kind} {name}");
    match kube_api::retry(&what, || api.delete(name, dp)).await {
        Ok(_) => Ok(()),
        Err(crate::error::AgentError::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::is_dns_label;

    #[test]
    fn names_are_dns_labels_and_unique() {
        let a = run_id();
        let b = run_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 10);
        let long = "x".repeat(80);
        let n = object_name(&long, &a);
        assert!(n.len() <= 63, "{n}");
        assert!(is_dns_label(&n), "{n}");
        let n = object_name("data-db-0", "0123456789");
        assert_eq!(n, "hf-data-db-0-0123456789");
        // A cut that would end in a dash drops it.
        let n = object_name(&format!("{}-x", "a".repeat(48)), "0123456789");
        assert!(is_dns_label(&n), "{n}");
    }

    #[test]
    fn temporary_objects_are_recognised_by_labels() {
        let mut meta = ObjectMeta::default();
        assert!(!is_temporary(&meta));
        meta.labels = Some(labels(ROLE_SNAPSHOT_READ, "node-a", "r1"));
        assert!(is_temporary(&meta));
        // managed by holdfast but without a role: e.g. a restored PVC, which is the user's.
        meta.labels = Some(BTreeMap::from([(MANAGED_BY.into(), MANAGER.into())]));
        assert!(!is_temporary(&meta));
        assert_eq!(
            node_selector("node-a"),
            "app.kubernetes.io/managed-by=holdfast,holdfast.io/role,holdfast.io/node=node-a"
        );
    }
}
