//! Create, get, list, replace, delete through the real kube client.

mod common;

use common::{client, make_ns, pod, status};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn create_get_list_delete_and_404() {
    let fake = FakeKube::start().await;
    let c = client(&fake);
    make_ns(&c, "app").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "app");
    let mut p = pod("web-0", "node-a", json!({"app": "web"}));
    p.metadata.resource_version = Some("999".into());
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 36);
    assert!(created.metadata.creation_timestamp.is_some());
    let rv: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(rv, 999, "a resourceVersion sent on create is ignored");
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));

    let got = pods.get("web-0").await.unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    // All-namespaces list.
    let all: Api<Pod> = Api::all(c.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    let s = status(pods.create(&PostParams::default(), &p).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "pods \"web-0\" already exists");

    let deleted = pods
        .delete("web-0", &DeleteParams::default())
        .await
        .unwrap();
    let gone = deleted.left().expect("a pod delete answers the pod");
    assert!(gone.metadata.deletion_timestamp.is_some());
    let s = status(pods.get("web-0").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "pods \"web-0\" not found");
    let s = status(pods.delete("web-0", &DeleteParams::default()).await);
    assert_eq!(s.code, 404);
    assert!(fake.get::<Pod>(Some("app"), "web-0").is_none());
}

#[tokio::test]
async fn replace_with_stale_resource_version_conflicts() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake));
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cfg"}, "data": {"a": "1"}
    }))
    .unwrap();
    let v1 = cms.create(&PostParams::default(), &cm).await.unwrap();
    let mut v2 = v1.clone();
    v2.data = Some([("a".to_string(), "2".to_string())].into());
    let stored = cms
        .replace("cfg", &PostParams::default(), &v2)
        .await
        .unwrap();
    assert_ne!(
        stored.metadata.resource_version,
        v1.metadata.resource_version
    );
    assert_eq!(stored.metadata.uid, v1.metadata.uid);
    assert_eq!(stored.metadata.generation, Some(2));

    // v1's resourceVersion is stale now.
    let mut stale = v1.clone();
    stale.data = Some([("a".to_string(), "3".to_string())].into());
    let s = status(cms.replace("cfg", &PostParams::default(), &stale).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // Without a resourceVersion, PUT is unconditional.
    stale.metadata.resource_version = None;
    let forced = cms
        .replace("cfg", &PostParams::default(), &stale)
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["a"], "3");
    // A PUT that changes nothing does not bump the resourceVersion.
    let rv_before = fake.resource_version();
    let same = cms.get("cfg").await.unwrap();
    cms.replace("cfg", &PostParams::default(), &same)
        .await
        .unwrap();
    assert_eq!(fake.resource_version(), rv_before);
    // Deleting a ConfigMap answers a Success Status, as the real server does.
    let st = cms.delete("cfg", &DeleteParams::default()).await.unwrap();
    assert!(st.is_right());
}

#[tokio::test]
async fn create_checks_namespace_name_and_body() {
    let fake = FakeKube::start().await;
    let c = client(&fake);
    let pods: Api<Pod> = Api::namespaced(c.clone(), "missing");
    let s = status(
        pods.create(&PostParams::default(), &pod("a", "n", json!({})))
            .await,
    );
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "namespaces \"missing\" not found")
    );

    let pods: Api<Pod> = Api::default_namespaced(c.clone());
    let s = status(
        pods.create(&PostParams::default(), &pod("Bad_Name", "n", json!({})))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s
        .message
        .starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value"));
    let causes = s.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");

    let mut other_ns = pod("a", "n", json!({}));
    other_ns.metadata.namespace = Some("kube-system".into());
    let s = status(pods.create(&PostParams::default(), &other_ns).await);
    assert_eq!(s.code, 400);

    let mut generated = pod("", "n", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("job-".into());
    let made = pods
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");

    let mut nameless = pod("", "n", json!({}));
    nameless.metadata.name = None;
    let s = status(pods.create(&PostParams::default(), &nameless).await);
    assert_eq!(s.code, 422);
}

#[tokio::test]
async fn kubeconfig_from_env_and_cluster_scoped_types() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).unwrap();
    // Each nextest test runs in its own process, so the variable is ours alone.
    std::env::set_var("KUBECONFIG", &path);
    let c = kube::Client::try_default().await.unwrap();
    assert_eq!(c.default_namespace(), "default");
    let v = c.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));

    let nss: Api<Namespace> = Api::all(c.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()));

    let nodes: Api<Node> = Api::all(c.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    assert!(nodes.get("node-a").await.is_ok());
    assert!(fake.get::<Node>(None, "node-a").is_some());
}

#[tokio::test]
async fn discovery_documents() {
    let fake = FakeKube::start().await;
    let c = client(&fake);
    let groups = c.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert!(names.contains(&"coordination.k8s.io") && names.contains(&"apps"));
    assert!(!names.contains(&"snapshot.storage.k8s.io"));
    let core = c.list_core_api_resources("v1").await.unwrap();
    let pods = core.resources.iter().find(|r| r.name == "pods").unwrap();
    assert!(pods.namespaced);
    assert_eq!(pods.kind, "Pod");
    assert!(core.resources.iter().any(|r| r.name == "pods/status"));
    let nodes = core.resources.iter().find(|r| r.name == "nodes").unwrap();
    assert!(!nodes.namespaced);
    let versions = c.list_core_api_versions().await.unwrap();
    assert_eq!(versions.versions, vec!["v1".to_string()]);
}

#[test]
fn blocking_server_serves_sync_tests() {
    let fake = FakeKube::start_blocking();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = rt.block_on(async {
        let nss: Api<Namespace> = Api::all(client(&fake));
        nss.list(&ListParams::default()).await.unwrap().items.len()
    });
    assert_eq!(n, 4);
    drop(fake);
}

#[tokio::test]
async fn label_values_and_annotation_keys_are_validated() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake));
    let bad_label: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "l", "labels": {"holdfast.dev/schedule": "@daily"}}
    }))
    .unwrap();
    let s = status(cms.create(&PostParams::default(), &bad_label).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(s.details.unwrap().causes[0].field, "metadata.labels");
    // The same value is fine as an annotation; a bad annotation key is not.
    let ok: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "l", "annotations": {"holdfast.dev/schedule": "@daily"}}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &ok).await.unwrap();
    let bad_key: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "k", "annotations": {"bad key": "x"}}
    }))
    .unwrap();
    assert_eq!(
        status(cms.create(&PostParams::default(), &bad_key).await).code,
        422
    );
}
