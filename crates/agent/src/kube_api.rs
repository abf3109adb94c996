//! The agent's reads and writes of Kubernetes objects, with retries: an API server that
//! restarts or answers 5xx for a while delays a run, it does not fail it.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::Client;

use crate::error::{AgentError, Result};

/// Whether an error may go away on its own: server errors, throttling, timeouts and
/// connection failures; not 4xx answers (they will be the same next time).
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429 || s.code == 408,
        _ => true,
    }
}

/// How many times a call is tried, and the first pause (doubling after each failure).
const ATTEMPTS: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Runs `f` until it succeeds, fails for good, or fails transiently `ATTEMPTS` times.
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                tracing::warn!(what, attempt, error = %e, "Kubernetes API call failed; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => {
                return Err(AgentError::Kube {
                    what: what.to_string(),
                    source: e,
                })
            }
        }
    }
}

/// Everything discovery needs, read at one moment.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    /// Pods (of this node, or of the cluster for maintenance).
    pub pods: Vec<Pod>,
    /// Every PVC.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// Every PV.
    pub pvs: Vec<PersistentVolume>,
    /// Every namespace.
    pub namespaces: Vec<Namespace>,
}

async fn list_all<K>(api: Api<K>, lp: ListParams, what: &str) -> Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    retry(what, || {
        let (api, lp) = (api.clone(), lp.clone());
        async move { api.list(&lp).await.map(|l| l.items) }
    })
    .await
}

/// Lists the objects discovery needs; `node`: only that node's pods (else every pod).
pub async fn inventory(client: &Client, node: Option<&str>) -> Result<Inventory> {
    let mut pods_lp = ListParams::default();
    if let Some(n) = node {
        pods_lp = pods_lp.fields(&format!("spec.nodeName={n}"));
    }
    let (pods, pvcs, pvs, namespaces) = tokio::try_join!(
        list_all(Api::<Pod>::all(client.clone()), pods_lp, "list pods"),
        list_all(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            ListParams::default(),
            "list persistentvolumeclaims"
        ),
        list_all(
            Api::<PersistentVolume>::all(client.clone()),
            ListParams::default(),
            "list persistentvolumes"
        ),
        list_all(
            Api::<Namespace>::all(client.clone()),
            ListParams::default(),
            "list namespaces"
        ),
    )?;
    Ok(Inventory {
        pods,
        pvcs,
        pvs,
        namespaces,
    })
}

/// Every pod of the cluster (for PVCs that no pod mounts).
pub async fn all_pods(client: &Client) -> Result<Vec<Pod>> {
    list_all(
        Api::<Pod>::all(client.clone()),
        ListParams::default(),
        "list pods",
    )
    .await
}
