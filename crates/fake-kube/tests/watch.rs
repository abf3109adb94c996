//! Watch streams through the real kube client and kube-runtime's watcher.

mod common;

use std::time::Duration;

use common::{client, pod};
use futures::{StreamExt, TryStreamExt};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;

async fn next_event(
    s: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Pod>>> + Unpin),
) -> WatchEvent<Pod> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("event decodes")
}

fn describe(e: &WatchEvent<Pod>) -> String {
    match e {
        WatchEvent::Added(p) => format!("ADDED {}", p.metadata.name.clone().unwrap()),
        WatchEvent::Modified(p) => format!("MODIFIED {}", p.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(p) => format!("DELETED {}", p.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    }
}

#[tokio::test]
async fn watch_sees_added_modified_deleted_in_order_then_bookmarks() {
    let fake = FakeKube::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &pod("w", "node-a", json!({})))
        .await
        .unwrap();
    let patch = json!({"metadata": {"labels": {"x": "1"}}});
    pods.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    pods.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut last_rv = 0u64;
    while seen.len() < 3 {
        let e = next_event(&mut stream).await;
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) = &e {
            let rv: u64 = p
                .metadata
                .resource_version
                .clone()
                .unwrap()
                .parse()
                .unwrap();
            assert!(rv > last_rv, "resourceVersions increase");
            last_rv = rv;
            seen.push(describe(&e));
        }
    }
    assert_eq!(seen, ["ADDED w", "MODIFIED w", "DELETED w"]);
    // Then, with nothing happening, a bookmark at the latest resourceVersion.
    loop {
        if let WatchEvent::Bookmark(b) = next_event(&mut stream).await {
            assert_eq!(
                b.metadata.resource_version,
                fake.resource_version().to_string()
            );
            break;
        }
    }
}

#[tokio::test]
async fn watch_from_before_the_history_answers_410() {
    let fake = FakeKube::builder().history_limit(2).start().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    let rv = fake.resource_version().to_string();
    for n in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &pod(n, "node-a", json!({})))
            .await
            .unwrap();
    }
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with("too old resource version"));
        }
        other => panic!("expected ERROR 410, got {}", describe(&other)),
    }
    // A resourceVersion still in the history replays what came after it.
    let mid = pods
        .get("b")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &mid)
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED c");
}

#[tokio::test]
async fn selectors_apply_to_watch_and_turn_changes_into_added_or_deleted() {
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    pods.create(
        &PostParams::default(),
        &pod("p", "node-a", json!({"app": "web"})),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("q", "node-b", json!({"app": "web"})),
    )
    .await
    .unwrap();
    let rv = fake.resource_version().to_string();
    let wp = WatchParams::default()
        .timeout(10)
        .labels("app=web")
        .fields("spec.nodeName=node-a");
    let mut stream = pods.watch(&wp, &rv).await.unwrap().boxed();
    let leave = json!({"metadata": {"labels": {"app": "db"}}});
    pods.patch("p", &PatchParams::default(), &Patch::Merge(&leave))
        .await
        .unwrap();
    // q is on another node: its change is not seen.
    pods.patch("q", &PatchParams::default(), &Patch::Merge(&leave))
        .await
        .unwrap();
    let back = json!({"metadata": {"labels": {"app": "web"}}});
    pods.patch("p", &PatchParams::default(), &Patch::Merge(&back))
        .await
        .unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED p");
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED p");
}

#[tokio::test]
async fn kube_runtime_watcher_follows_changes_and_relists_after_410() {
    let fake = FakeKube::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    pods.create(&PostParams::default(), &pod("seed", "node-a", json!({})))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let wpods = pods.clone();
    let task = tokio::spawn(async move {
        // page_size 1 makes the initial list take two pages when there are two pods.
        let cfg = watcher::Config::default().page_size(1).timeout(20);
        let mut s = watcher(wpods, cfg).boxed();
        while let Some(e) = s.next().await {
            let d = match e {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitApply(p)) => {
                    format!("InitApply {}", p.metadata.name.unwrap())
                }
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::Apply(p)) => format!("Apply {}", p.metadata.name.unwrap()),
                Ok(watcher::Event::Delete(p)) => format!("Delete {}", p.metadata.name.unwrap()),
                Err(e) => format!("Err {e}"),
            };
            if tx.send(d).is_err() {
                break;
            }
        }
    });
    async fn expect_on(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("watcher event in time")
            .unwrap();
        assert_eq!(got, want);
    }
    expect_on(&mut rx, "Init").await;
    expect_on(&mut rx, "InitApply seed").await;
    expect_on(&mut rx, "InitDone").await;
    pods.create(&PostParams::default(), &pod("new", "node-a", json!({})))
        .await
        .unwrap();
    expect_on(&mut rx, "Apply new").await;
    let patch = json!({"metadata": {"labels": {"x": "1"}}});
    pods.patch("new", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    expect_on(&mut rx, "Apply new").await;
    pods.delete("seed", &DeleteParams::default()).await.unwrap();
    expect_on(&mut rx, "Delete seed").await;

    // Compaction, then the stream is cut: the watcher re-watches from its last
    // resourceVersion, gets 410 Expired, and lists again from scratch.
    fake.compact_history();
    fake.close_watches();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no event after close; requests {:#?}", fake.requests()))
        .unwrap();
    assert!(got.starts_with("Err") && got.contains("Expired"), "{got}");
    expect_on(&mut rx, "Init").await;
    expect_on(&mut rx, "InitApply new").await;
    expect_on(&mut rx, "InitDone").await;
    task.abort();
    let lists = fake
        .requests()
        .iter()
        .filter(|r| {
            r.path == "/api/v1/namespaces/default/pods" && r.method == "GET" && !r.is_watch()
        })
        .count();
    assert_eq!(lists, 2, "one list at start, one after the 410");
    let watches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    assert!(watches.len() >= 2);
    assert_eq!(
        watches[0].query_param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
}

#[tokio::test]
async fn reflector_store_matches_the_fake() {
    let fake = FakeKube::start().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&fake));
    for n in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &pod(n, "node-a", json!({})))
            .await
            .unwrap();
    }
    let (reader, writer) = kube::runtime::reflector::store::<Pod>();
    let stream = kube::runtime::reflector(writer, watcher(pods.clone(), Default::default()));
    let task = tokio::spawn(async move { stream.try_for_each(|_| async { Ok(()) }).await });
    tokio::time::timeout(Duration::from_secs(10), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    for _ in 0..100 {
        if reader.state().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut names: Vec<String> = reader
        .state()
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "c"]);
    task.abort();
}
