//! Merge, JSON and server-side-apply patches through the real kube client.

mod common;

use common::{client, status};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"a": "1", "b": "2"}},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn merge_patch_sets_and_removes_keys() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake));
    cms.create(&PostParams::default(), &cm("m")).await.unwrap();
    let p = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": {"k2": "v2"}});
    let out = cms
        .patch("m", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    let labels = out.metadata.labels.unwrap();
    assert!(!labels.contains_key("a"));
    assert_eq!(labels["c"], "3");
    assert_eq!(out.data.unwrap().len(), 2);
    // Strategic merge is applied as a merge patch.
    let p = json!({"data": {"k": "x"}});
    let out = cms
        .patch("m", &PatchParams::default(), &Patch::Strategic(&p))
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["k"], "x");
    // A stale resourceVersion in the patch body: 409.
    let p = json!({"metadata": {"resourceVersion": "1"}, "data": {"k": "y"}});
    let s = status(
        cms.patch("m", &PatchParams::default(), &Patch::Merge(&p))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    // A patch of a missing object: 404.
    let s = status(
        cms.patch("nope", &PatchParams::default(), &Patch::Merge(&p))
            .await,
    );
    assert_eq!(s.code, 404);
}

#[tokio::test]
async fn json_patch_applies_and_failed_test_is_422() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake));
    cms.create(&PostParams::default(), &cm("j")).await.unwrap();
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "v"},
        {"op": "replace", "path": "/data/k", "value": "w"},
        {"op": "remove", "path": "/metadata/labels/b"}
    ]))
    .unwrap();
    let out = cms
        .patch("j", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["k"], "w");
    assert!(!out.metadata.labels.unwrap().contains_key("b"));
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "nope"}]))
            .unwrap();
    let s = status(
        cms.patch("j", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await,
    );
    assert_eq!(s.code, 422);
}

#[tokio::test]
async fn server_side_apply_creates_then_merges_and_needs_a_field_manager() {
    let fake = FakeKube::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client(&fake));
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "s"}, "data": {"a": "1"}});
    let s = status(
        cms.patch("s", &PatchParams::default(), &Patch::Apply(&body))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("fieldManager: Required value"));
    let pp = PatchParams::apply("holdfast-agent");
    let created = cms.patch("s", &pp, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(created.data.clone().unwrap()["a"], "1");
    let body2 = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "s"}, "data": {"b": "2"}});
    let merged = cms
        .patch("s", &pp.clone().force(), &Patch::Apply(&body2))
        .await
        .unwrap();
    assert_eq!(merged.metadata.uid, created.metadata.uid);
    assert_eq!(merged.data.unwrap().len(), 2);
    // Kind in the body must match the URL.
    let wrong = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let s = status(cms.patch("s", &pp, &Patch::Apply(&wrong)).await);
    assert_eq!(s.code, 400);
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_main_resource() {
    use k8s_openapi::api::core::v1::Pod;
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    pods.create(
        &PostParams::default(),
        &common::pod("s", "node-a", json!({})),
    )
    .await
    .unwrap();
    // Status in a main-resource patch is ignored, as on the real server.
    let p = json!({"status": {"phase": "Running"}, "metadata": {"labels": {"x": "1"}}});
    let out = pods
        .patch("s", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(out.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(out.metadata.labels.unwrap()["x"], "1");
    // Through /status it lands, and nothing else changes.
    let p = json!({"status": {"phase": "Running"}, "metadata": {"labels": {"x": "2"}}});
    let out = pods
        .patch_status("s", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(out.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(out.metadata.labels.unwrap()["x"], "1");
    // A status-only change does not bump the generation.
    assert_eq!(out.metadata.generation, Some(1));
}

#[tokio::test]
async fn finalizers_hold_a_delete_until_removed() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::DeleteParams;
    let fake = FakeKube::start().await;
    let cluster = holdfast_fake_kube::fixtures::ClusterBuilder::new()
        .rbd_pvc("default", "data", "1Gi", &[])
        .seed(&fake);
    assert_eq!(cluster.pvcs.len(), 1);
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(client(&fake));
    let answer = pvcs.delete("data", &DeleteParams::default()).await.unwrap();
    let held = answer.left().expect("the object, still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(pvcs.get("data").await.is_ok());
    let p = json!({"metadata": {"finalizers": null}});
    pvcs.patch("data", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(status(pvcs.get("data").await).code, 404);
}
