//! Fixtures: a seeded Rook-Ceph cluster read back through the real kube client, the kubelet
//! tree, and the large-cluster generator.

mod common;

use common::client;
use holdfast_fake_kube::fixtures::{ClusterBuilder, VolumeKind, CEPHFS_DRIVER, RBD_DRIVER};
use holdfast_fake_kube::{kubelet, FakeKube};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};

fn small() -> ClusterBuilder {
    ClusterBuilder::new()
        .server_node("node-a")
        .node("node-b")
        .namespace("app", &[("backsnap.skyb.it/schedule", "@daily")])
        .rbd_pvc("app", "db", "5Gi", &[("holdfast.dev/backup", "true")])
        .cephfs_pvc("app", "shared", "1Gi", &[])
        .block_pvc("app", "raw", "2Gi", &[])
        .rbd_pvc("other", "cache", "1Gi", &[])
        .pod("app", "db-0", "node-a", &["db", "shared", "raw"])
        .pod_with(
            "other",
            "cache-0",
            "node-b",
            "Running",
            &[("cache", true)],
            &[("app", "cache")],
        )
}

#[tokio::test]
async fn seeded_cluster_reads_back_typed_through_kube() {
    let fake = FakeKube::start().await;
    let cluster = small().seed(&fake);
    let c = client(&fake);

    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let a = nodes
        .items
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("node-a"))
        .unwrap();
    let labels = a.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "node-a");
    assert!(labels.contains_key("node-role.kubernetes.io/control-plane"));
    let b = nodes
        .items
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some("node-b"))
        .unwrap();
    assert!(!b
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .contains_key("node-role.kubernetes.io/control-plane"));

    let ns = Api::<Namespace>::all(c.clone()).get("app").await.unwrap();
    assert_eq!(
        ns.metadata.annotations.unwrap()["backsnap.skyb.it/schedule"],
        "@daily"
    );
    // "other" was made implicitly.
    assert!(Api::<Namespace>::all(c.clone()).get("other").await.is_ok());

    let scs = Api::<StorageClass>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let rbd = scs
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("rook-ceph-block"))
        .unwrap();
    assert_eq!(rbd.provisioner, RBD_DRIVER);
    assert_eq!(rbd.parameters.as_ref().unwrap()["pool"], "replicapool");

    // The agent's query: pods on its node.
    let pods: Api<Pod> = Api::all(c.clone());
    let mine = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a,status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 1);
    let pod = &mine.items[0];
    assert_eq!(
        pod.metadata.uid.as_deref(),
        Some(cluster.pod("app", "db-0").unwrap().uid.as_str())
    );
    let spec = pod.spec.as_ref().unwrap();
    let vols = spec.volumes.as_ref().unwrap();
    assert_eq!(
        vols.iter()
            .filter(|v| v.persistent_volume_claim.is_some())
            .count(),
        3
    );
    assert!(vols
        .iter()
        .any(|v| v.name.starts_with("kube-api-access-") && v.projected.is_some()));
    assert!(vols.iter().any(|v| v.empty_dir.is_some()));
    assert!(vols.iter().any(|v| v.config_map.is_some()));
    let ctr = &spec.containers[0];
    assert_eq!(ctr.volume_devices.as_ref().unwrap()[0].name, "vol-raw");

    let pvc = Api::<PersistentVolumeClaim>::namespaced(c.clone(), "app")
        .get("db")
        .await
        .unwrap();
    let ann = pvc.metadata.annotations.unwrap();
    assert_eq!(ann["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(ann["volume.kubernetes.io/storage-provisioner"], RBD_DRIVER);
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    let pv_name = pvc.spec.unwrap().volume_name.unwrap();
    let pv = Api::<PersistentVolume>::all(c.clone())
        .get(&pv_name)
        .await
        .unwrap();
    let spec = pv.spec.unwrap();
    let csi = spec.csi.unwrap();
    assert_eq!(csi.driver, RBD_DRIVER);
    assert!(csi.volume_handle.starts_with("0001-0009-rook-ceph-"));
    let attrs = csi.volume_attributes.unwrap();
    assert!(attrs["imageName"].starts_with("csi-vol-"));
    assert!(csi
        .volume_handle
        .ends_with(&attrs["imageName"]["csi-vol-".len()..]));
    assert_eq!(spec.claim_ref.unwrap().uid, pvc.metadata.uid);
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));

    let shared = cluster.pvc("app", "shared").unwrap();
    assert_eq!(shared.kind, VolumeKind::CephFs);
    let pv = Api::<PersistentVolume>::all(c.clone())
        .get(&shared.pv_name)
        .await
        .unwrap();
    let csi = pv.spec.unwrap().csi.unwrap();
    assert_eq!(csi.driver, CEPHFS_DRIVER);
    let attrs = csi.volume_attributes.unwrap();
    assert!(attrs["subvolumePath"].starts_with("/volumes/csi/csi-vol-"));
    assert_eq!(attrs["fsName"], "myfs");
}

#[test]
fn kubelet_tree_matches_the_seeded_pods() {
    let cluster = small().build();
    let dir = tempfile::tempdir().unwrap();
    let layout = kubelet::build(dir.path(), &cluster, "node-a").unwrap();
    let pod = cluster.pod("app", "db-0").unwrap();
    // Only node-a's pod is laid out.
    assert_eq!(
        std::fs::read_dir(dir.path().join("pods")).unwrap().count(),
        1
    );
    assert_eq!(layout.volumes.len(), 3);

    let db = cluster.pvc("app", "db").unwrap();
    let mount = layout.path_of("app", "db-0", "db").unwrap();
    assert_eq!(
        mount,
        dir.path()
            .join("pods")
            .join(&pod.uid)
            .join("volumes/kubernetes.io~csi")
            .join(&db.pv_name)
            .join("mount")
    );
    assert!(mount.is_dir());
    std::fs::write(mount.join("PG_VERSION"), "16\n").unwrap();
    let vd: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mount.parent().unwrap().join("vol_data.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vd["specVolID"], db.pv_name.as_str());
    assert_eq!(vd["volumeHandle"], db.volume_handle.as_str());
    assert_eq!(vd["driverName"], RBD_DRIVER);
    assert_eq!(vd["nodeName"], "node-a");
    assert_eq!(vd["volumeLifecycleMode"], "Persistent");
    assert_eq!(vd["attachmentID"].as_str().unwrap().len(), 4 + 64);

    let raw = cluster.pvc("app", "raw").unwrap();
    let dev = layout.path_of("app", "db-0", "raw").unwrap();
    assert_eq!(
        dev,
        dir.path()
            .join("pods")
            .join(&pod.uid)
            .join("volumeDevices/kubernetes.io~csi")
            .join(&raw.pv_name)
    );
    assert!(dev.is_file());
    let vols = dir.path().join("pods").join(&pod.uid).join("volumes");
    assert!(vols
        .join("kubernetes.io~projected")
        .join(&pod.token_volume)
        .join("token")
        .is_file());
    assert!(vols.join("kubernetes.io~empty-dir/scratch").is_dir());
    assert!(vols
        .join("kubernetes.io~configmap/config/app.conf")
        .is_file());
}

#[test]
fn large_cluster_generator_and_yaml_seed() {
    let cluster = ClusterBuilder::large(5, 500, 1000).build();
    assert_eq!(cluster.pods.len(), 500);
    assert_eq!(cluster.pvcs.len(), 1000);
    assert_eq!(cluster.nodes.len(), 5);
    assert_eq!(cluster.pods_on("node-3").count(), 100);
    assert!(cluster.pods.iter().all(|p| p.volumes.len() == 2));
    assert_eq!(
        cluster
            .pvcs
            .iter()
            .filter(|p| p.kind == VolumeKind::RbdBlock)
            .count(),
        100
    );
    // Every claim a pod mounts is in the pod's namespace.
    for p in &cluster.pods {
        assert!(p.volumes.iter().all(|v| v.pvc.namespace == p.namespace));
    }

    let fake = FakeKube::start_blocking();
    let small = ClusterBuilder::large(2, 4, 6).build();
    let made = fake.insert_yaml(&small.to_yaml()).unwrap();
    assert_eq!(made.len(), small.objects.len());
    assert_eq!(fake.list::<Pod>(None).len(), 4);
    assert_eq!(fake.list::<PersistentVolume>(None).len(), 6);
    let pod = &small.pods[0];
    let stored = fake.get::<Pod>(Some(&pod.namespace), &pod.name).unwrap();
    assert_eq!(stored.metadata.uid.as_deref(), Some(pod.uid.as_str()));
}

#[tokio::test]
async fn discovery_of_a_large_cluster_by_node_is_paged_and_complete() {
    let fake = FakeKube::start().await;
    let cluster = ClusterBuilder::large(4, 500, 1000).seed(&fake);
    let pods: Api<Pod> = Api::all(client(&fake));
    let mut token: Option<String> = None;
    let mut seen = 0;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default()
            .fields("spec.nodeName=node-1")
            .limit(50);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = pods.list(&lp).await.unwrap();
        seen += page.items.len();
        pages += 1;
        token = page.metadata.continue_;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, cluster.pods_on("node-1").count());
    assert_eq!(pages, 3);
}
