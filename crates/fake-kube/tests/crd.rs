//! A CustomResourceDefinition created through the API serves its custom resource (in
//! discovery too, as kube's `Discovery` reads it); deleting it stops that.

use holdfast_fake_kube::FakeKube;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use serde_json::json;

#[tokio::test]
async fn a_created_crd_serves_its_resource_until_deleted() {
    let fake = FakeKube::start().await;
    let client = kube::Client::try_from(kube::Config::new(fake.url().parse().unwrap())).unwrap();
    let crd_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();

    let d = Discovery::new(client.clone()).run().await.unwrap();
    let g = d.get("example.com").expect("the CRD's group is discovered");
    let (ar, caps) = g
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.kind == "Widget")
        .expect("Widget is discovered");
    assert_eq!(ar.plural, "widgets");
    assert!(caps.supports_operation(kube::discovery::verbs::LIST));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}
    }))
    .unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        widgets.list(&Default::default()).await.unwrap().items.len(),
        1
    );

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let d = Discovery::new(client.clone()).run().await.unwrap();
    assert!(d.get("example.com").is_none(), "the group is gone");
    assert!(widgets.list(&Default::default()).await.is_err());
}
