//! Label and field selectors, and pagination, through the real kube client.

mod common;

use common::{client, pod, status};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

async fn seeded() -> (FakeKube, Api<Pod>) {
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    for (name, node, labels) in [
        ("a", "node-a", json!({"app": "web", "tier": "front"})),
        ("b", "node-a", json!({"app": "db", "tier": "back"})),
        ("c", "node-b", json!({"app": "web"})),
        ("d", "node-b", json!({"app": "cache", "legacy": "yes"})),
    ] {
        pods.create(&PostParams::default(), &pod(name, node, labels))
            .await
            .unwrap();
    }
    (fake, pods)
}

async fn names(pods: &Api<Pod>, lp: &ListParams) -> Vec<String> {
    pods.list(lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect()
}

#[tokio::test]
async fn field_selector_on_node_name_and_phase() {
    let (fake, pods) = seeded().await;
    let lp = ListParams::default().fields("spec.nodeName=node-a");
    assert_eq!(names(&pods, &lp).await, ["a", "b"]);
    let lp = ListParams::default().fields("spec.nodeName!=node-a,metadata.name!=d");
    assert_eq!(names(&pods, &lp).await, ["c"]);
    // Pods created through the API start Pending.
    let lp = ListParams::default().fields("status.phase=Running");
    assert!(names(&pods, &lp).await.is_empty());
    let all: Api<Pod> = Api::all(client(&fake));
    let lp = ListParams::default().fields("spec.nodeName=node-b,metadata.namespace=default");
    assert_eq!(names(&all, &lp).await, ["c", "d"]);
}

#[tokio::test]
async fn unsupported_field_selector_is_400() {
    let (_fake, pods) = seeded().await;
    let s = status(
        pods.list(&ListParams::default().fields("spec.hostname=x"))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert_eq!(s.message, "field label not supported: spec.hostname");
}

#[tokio::test]
async fn label_selectors_equality_and_set_based() {
    let (_fake, pods) = seeded().await;
    let l = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&pods, &l("app=web")).await, ["a", "c"]);
    assert_eq!(names(&pods, &l("app==web,tier")).await, ["a"]);
    assert_eq!(names(&pods, &l("app!=web")).await, ["b", "d"]);
    assert_eq!(names(&pods, &l("app in (db,cache)")).await, ["b", "d"]);
    assert_eq!(
        names(&pods, &l("tier notin (front)")).await,
        ["b", "c", "d"]
    );
    assert_eq!(names(&pods, &l("!legacy,app")).await, ["a", "b", "c"]);
    assert_eq!(names(&pods, &l("legacy")).await, ["d"]);
    let s = status(pods.list(&l("app in db")).await);
    assert_eq!(s.code, 400);
}

#[tokio::test]
async fn pagination_with_limit_and_continue() {
    let (fake, pods) = seeded().await;
    let first = pods.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("a continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let rv = first.metadata.resource_version.clone();
    // A write between pages: the next page still reports the first page's resourceVersion.
    fake.insert(&pod("e", "node-c", json!({})));
    let second = pods
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    let got: Vec<String> = second
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(got, ["d", "e"]);
    assert!(second.metadata.continue_.is_none());
    assert_eq!(second.metadata.resource_version, rv);
    // A continue token from before a compaction is 410 Expired.
    fake.compact_history();
    let s = status(
        pods.list(&ListParams::default().limit(3).continue_token(&token))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
}
