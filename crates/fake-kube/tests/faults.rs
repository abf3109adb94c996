//! Fault injection and the request log.

mod common;

use std::time::{Duration, Instant};

use common::{client, client_no_retry, status};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};

#[tokio::test]
async fn fail_next_is_seen_by_the_client_then_clears() {
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    fake.faults().fail_next(2, 500);
    let s = status(pods.list(&ListParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    assert_eq!(status(pods.list(&ListParams::default()).await).code, 500);
    assert!(pods.list(&ListParams::default()).await.is_ok());
    let log = fake.requests();
    assert_eq!(log.len(), 3);
    assert!(log[0].injected && log[1].injected && !log[2].injected);
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert_eq!(log[2].method, "GET");
    assert_eq!(log[2].path, "/api/v1/namespaces/default/pods");
}

#[tokio::test]
async fn fail_matching_targets_one_path_and_request_log_has_queries() {
    let fake = FakeKube::start().await;
    let c = client_no_retry(&fake);
    let pods: Api<Pod> = Api::all(c.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(c);
    fake.faults().fail_matching("/configmaps", 1, 429);
    pods.list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    let s = status(cms.list(&ListParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
    assert!(cms.list(&ListParams::default()).await.is_ok());
    let first = &fake.requests()[0];
    assert_eq!(first.path, "/api/v1/pods");
    assert_eq!(
        first.query_param("fieldSelector").as_deref(),
        Some("spec.nodeName=node-a")
    );
}

#[tokio::test]
async fn unavailable_and_delay() {
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client_no_retry(&fake));
    fake.faults().set_unavailable(true);
    for _ in 0..3 {
        let s = status(pods.list(&ListParams::default()).await);
        assert_eq!((s.code, s.reason.as_str()), (503, "ServiceUnavailable"));
    }
    fake.faults().set_unavailable(false);
    fake.faults().delay(Duration::from_millis(300));
    let t = Instant::now();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    fake.faults().clear();
    let t = Instant::now();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn kube_default_client_retries_503_and_429() {
    // kube's default client retries 429/503/504 (RetryPolicy::server_retry): an agent using it
    // does not see a short outage at all. The log shows the retries.
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    fake.faults().fail_next(2, 503);
    pods.list(&ListParams::default()).await.unwrap();
    let codes: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(codes, [503, 503, 200]);
    fake.faults().clear_requests();
    // 429 carries Retry-After: 1, which the client honours.
    fake.faults().fail_next(1, 429);
    let t = Instant::now();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn fail_matching_can_target_watches_only() {
    use futures::StreamExt;
    use kube::api::WatchParams;
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client_no_retry(&fake));
    fake.faults().fail_matching("watch=true", 1, 500);
    assert!(pods.list(&ListParams::default()).await.is_ok());
    let s = status(
        pods.watch(&WatchParams::default().timeout(1), "0")
            .await
            .map(|_| ()),
    );
    assert_eq!(s.code, 500);
    let mut stream = pods
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    // The stream ends at timeoutSeconds.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok());
}

#[tokio::test]
async fn set_unavailable_ends_open_watches() {
    use futures::StreamExt;
    use kube::api::WatchParams;
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client_no_retry(&fake));
    let mut stream = pods
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    fake.faults().set_unavailable(true);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the watch stream ended");
    let s = status(pods.watch(&WatchParams::default(), "0").await.map(|_| ()));
    assert_eq!(s.code, 503);
}
