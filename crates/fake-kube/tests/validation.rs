//! Strict validation (Events, Leases, unknown fields) and installing extra resource types.

mod common;

use common::{client, status};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

#[tokio::test]
async fn events_k8s_io_event_needs_its_required_fields() {
    let fake = FakeKube::start().await;
    let events: Api<Event> = Api::default_namespaced(client(&fake));
    let bare: Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2026-01-02T15:04:05.000000Z",
        "reason": "BackupStarted"
    }))
    .unwrap();
    let s = status(events.create(&PostParams::default(), &bare).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .starts_with("Event.events.k8s.io \"e1\" is invalid: ["),
        "{}",
        s.message
    );
    let fields: Vec<String> = s
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    for f in [
        "reportingController",
        "reportingInstance",
        "action",
        "regarding",
        "type",
    ] {
        assert!(
            fields.contains(&f.to_string()),
            "{f} missing from {fields:?}"
        );
    }
    assert!(!fields.contains(&"eventTime".to_string()));
    let full: Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2026-01-02T15:04:05.000000Z",
        "reason": "BackupStarted", "action": "Backup", "type": "Normal",
        "reportingController": "holdfast.dev/agent", "reportingInstance": "agent-node-a",
        "regarding": {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data", "apiVersion": "v1"},
        "note": "backup of default/data started"
    }))
    .unwrap();
    events.create(&PostParams::default(), &full).await.unwrap();
}

#[tokio::test]
async fn lease_create_conflicting_update_and_field_types() {
    let fake = FakeKube::start().await;
    let c = client(&fake);
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "holdfast-maintenance"},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15,
                 "acquireTime": "2026-01-02T15:04:05.000000Z", "renewTime": "2026-01-02T15:04:05.000000Z"}
    }))
    .unwrap();
    let v1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut a = v1.clone();
    a.spec.as_mut().unwrap().holder_identity = Some("node-b".into());
    leases
        .replace("holdfast-maintenance", &PostParams::default(), &a)
        .await
        .unwrap();
    let mut b = v1.clone();
    b.spec.as_mut().unwrap().holder_identity = Some("node-c".into());
    let s = status(
        leases
            .replace("holdfast-maintenance", &PostParams::default(), &b)
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        fake.get::<Lease>(Some("kube-node-lease"), "holdfast-maintenance")
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("node-b")
    );

    // Raw bodies the typed client cannot produce.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        c.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
            "leases",
        ),
    );
    let bad_time: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "t"}, "spec": {"renewTime": "2026-01-02T15:04:05Z"}
    }))
    .unwrap();
    let s = status(raw.create(&PostParams::default(), &bad_time).await);
    assert_eq!(s.code, 400);
    assert!(
        s.message.contains("cannot be handled as a Lease"),
        "{}",
        s.message
    );
    let bad_type: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "t"}, "spec": {"leaseDurationSeconds": "fifteen"}
    }))
    .unwrap();
    assert_eq!(
        status(raw.create(&PostParams::default(), &bad_type).await).code,
        400
    );
    let zero: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "t"}, "spec": {"leaseDurationSeconds": 0}
    }))
    .unwrap();
    let s = status(raw.create(&PostParams::default(), &zero).await);
    assert_eq!(
        (s.code, s.details.unwrap().causes[0].field.as_str()),
        (422, "spec.leaseDurationSeconds")
    );
}

#[tokio::test]
async fn unknown_fields_strict_rejects_default_warns() {
    let fake = FakeKube::start().await;
    let c = client(&fake);
    let body: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "u"},
        "spec": {"containers": [{"name": "c", "image": "i"}], "colour": "blue"}
    }))
    .unwrap();
    // PostParams has no fieldValidation: send the request by hand through the same client.
    let req = axum::http::Request::post("/api/v1/namespaces/default/pods?fieldValidation=Strict")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let s = status(c.request::<serde_json::Value>(req).await);
    assert_eq!(s.code, 400);
    assert!(
        s.message.contains("unknown field \"spec.colour\""),
        "{}",
        s.message
    );
    // The default (Warn) accepts the object and says so in a Warning header.
    let req = axum::http::Request::post("/api/v1/namespaces/default/pods")
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let warning = resp.headers().get("warning").unwrap().to_str().unwrap();
    assert_eq!(warning, "299 - \"unknown field \\\"spec.colour\\\"\"");
    // The stored pod drops nothing the client sent (the real server would drop the field; the
    // fake keeps the JSON as sent), but typed readers still decode it.
    let pods: Api<Pod> = Api::default_namespaced(c);
    assert!(pods.get("u").await.is_ok());
}

#[tokio::test]
async fn uninstalled_group_is_404_until_installed() {
    let fake = FakeKube::start().await;
    let c = client(&fake);
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    );
    let snaps: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let snap: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap-1"},
        "spec": {"volumeSnapshotClassName": "csi-rbdplugin-snapclass",
                 "source": {"persistentVolumeClaimName": "data"}}
    }))
    .unwrap();
    let s = status(snaps.list(&Default::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        s.message,
        "the server could not find the requested resource"
    );
    assert_eq!(
        status(snaps.create(&PostParams::default(), &snap).await).code,
        404
    );

    fake.install_resource(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshots",
        "VolumeSnapshot",
        true,
    );
    let made = snaps.create(&PostParams::default(), &snap).await.unwrap();
    assert!(made.metadata.uid.is_some());
    assert_eq!(
        snaps.list(&Default::default()).await.unwrap().items.len(),
        1
    );
    let groups = c.list_api_groups().await.unwrap();
    assert!(groups
        .groups
        .iter()
        .any(|g| g.name == "snapshot.storage.k8s.io"));
    // Installed types answer a delete with the deleted object, like custom resources.
    let gone = snaps.delete("snap-1", &Default::default()).await.unwrap();
    assert!(gone.is_left());
}

#[tokio::test]
async fn kube_runtime_event_recorder_publishes_and_patches_a_series() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::runtime::events::{Event as RtEvent, EventType, Recorder, Reporter};
    use kube::Resource;
    let fake = FakeKube::start().await;
    holdfast_fake_kube::fixtures::ClusterBuilder::new()
        .rbd_pvc("app", "data", "1Gi", &[])
        .seed(&fake);
    let c = client(&fake);
    let pvc = Api::<PersistentVolumeClaim>::namespaced(c.clone(), "app")
        .get("data")
        .await
        .unwrap();
    let recorder = Recorder::new(
        c.clone(),
        Reporter {
            controller: "holdfast.dev/agent".into(),
            instance: Some("holdfast-agent-node-a".into()),
        },
    );
    let ev = RtEvent {
        type_: EventType::Normal,
        reason: "BackupSucceeded".into(),
        note: Some("snapshot 1a2b3c stored".into()),
        action: "Backup".into(),
        secondary: None,
    };
    recorder.publish(&ev, &pvc.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &pvc.object_ref(&())).await.unwrap();
    let events: Vec<Event> = fake.list(Some("app"));
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.series.as_ref().unwrap().count, 2);
    assert_eq!(e.regarding.as_ref().unwrap().name.as_deref(), Some("data"));
    let log = fake.requests();
    assert!(log.iter().any(|r| r.method == "POST"
        && r.path == "/apis/events.k8s.io/v1/namespaces/app/events"
        && r.status == 201));
    assert!(log.iter().any(|r| r.method == "PATCH" && r.status == 200));
}
