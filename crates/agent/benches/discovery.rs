//! Discovery and scheduling cost in a large cluster (issue 10): 10 nodes, 500 pods,
//! 1,000 PVCs in the fake API server, listed over HTTP by the real kube client.
//!
//! `cargo bench -p holdfast-agent --bench discovery`; run by hand, never by CI.

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use holdfast_agent::config::VolumeDefaults;
use holdfast_agent::discovery;
use holdfast_agent::kube_api::{self, Inventory};
use holdfast_agent::selection;
use holdfast_fake_kube::fixtures::ClusterBuilder;
use holdfast_fake_kube::FakeKube;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

const NODE: &str = "node-3";

/// What one node's agent does with an inventory each round: discovery, then per volume
/// the selection and whether it is due. Returns how many are due (never-backed-up volumes
/// are; the count keeps the work from being optimised away).
fn plan(inv: &Inventory, defaults: &VolumeDefaults) -> usize {
    let found = discovery::volumes_on_node(NODE, &inv.pods, &inv.pvcs, &inv.pvs, &inv.namespaces);
    let now = Utc::now();
    let newest = Some(now - chrono::Duration::hours(2));
    let mut due = 0;
    for v in &found.volumes {
        let key = v.key();
        let sel = selection::resolve(
            &key,
            &v.namespace,
            &v.pvc_annotations,
            &v.namespace_annotations,
            defaults,
        )
        .expect("valid selection");
        if let Some(s) = &sel.schedule {
            if s.is_due(newest, now) {
                due += 1;
            }
        }
    }
    due
}

fn client(rt: &tokio::runtime::Runtime, fake: &FakeKube) -> Client {
    rt.block_on(async {
        let kc = Kubeconfig::from_yaml(&fake.kubeconfig_yaml()).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        Client::try_from(cfg).expect("client")
    })
}

fn bench(c: &mut Criterion) {
    let fake = FakeKube::start_blocking();
    let cluster = ClusterBuilder::large(10, 500, 1000).seed(&fake);
    assert_eq!(cluster.pods.len(), 500);
    assert_eq!(cluster.pvcs.len(), 1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = client(&rt, &fake);
    let defaults = VolumeDefaults::default();

    let mut g = c.benchmark_group("agent_discovery_500pods_1000pvcs");
    g.sample_size(30);
    g.bench_function("node_inventory_http_plus_plan", |b| {
        b.iter(|| {
            let inv = rt
                .block_on(kube_api::inventory(&client, Some(NODE)))
                .expect("inventory");
            plan(&inv, &defaults)
        })
    });
    g.bench_function("cluster_inventory_http", |b| {
        b.iter(|| {
            rt.block_on(kube_api::inventory(&client, None))
                .expect("inventory")
        })
    });
    let node_inv = rt
        .block_on(kube_api::inventory(&client, Some(NODE)))
        .expect("inventory");
    let found = discovery::volumes_on_node(
        NODE,
        &node_inv.pods,
        &node_inv.pvcs,
        &node_inv.pvs,
        &node_inv.namespaces,
    );
    eprintln!(
        "{NODE}: {} pods listed, {} volumes found ({} unusable); cluster: {} PVCs, {} PVs, {} namespaces",
        node_inv.pods.len(),
        found.volumes.len(),
        found.unusable.len(),
        node_inv.pvcs.len(),
        node_inv.pvs.len(),
        node_inv.namespaces.len()
    );
    g.bench_function("plan_only_prebuilt_objects", |b| {
        b.iter(|| plan(&node_inv, &defaults))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
