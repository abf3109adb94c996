//! Helpers shared by the integration tests.
#![allow(dead_code)]

use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

/// A kube client for the fake, built from its URL.
pub fn client(fake: &FakeKube) -> kube::Client {
    let cfg = kube::Config::new(fake.url().parse().expect("url"));
    kube::Client::try_from(cfg).expect("client")
}

/// The Status of an API error, or a panic naming what came instead.
pub fn status<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A minimal pod on `node` with labels.
pub fn pod(name: &str, node: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("pod")
}

/// Creates namespace `name` through the API.
pub async fn make_ns(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}

/// A kube client without kube's default retry layer (which retries 429/503/504 up to 15 times
/// with backoff), so a test sees injected 429/503 answers.
pub fn client_no_retry(fake: &FakeKube) -> kube::Client {
    let mut cfg = kube::Config::new(fake.url().parse().expect("url"));
    cfg.default_retry = false;
    kube::Client::try_from(cfg).expect("client")
}

/// Makes sure the environment provides `what` (`have`) before a test relies on it; panics
/// otherwise, naming what is missing, so that a test that cannot run never passes. (A copy of
/// `holdfast_e2e::require`, which this crate cannot depend on.)
#[track_caller]
pub fn require(have: bool, what: &str) {
    if have {
        return;
    }
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" {n}"))
        .unwrap_or_default();
    let in_ci = matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "0" && v != "false");
    if in_ci {
        panic!("test{test} did not run: it needs {what}, which CI must provide");
    }
    panic!(
        "test{test} did not run: it needs {what}, which this environment lacks. Run it where \
         that is available (CI runs the tests as root with what `.ci/run` installs), or leave \
         it out explicitly (cargo nextest run -E 'not test(NAME)')"
    );
}

/// Whether `cmd` is on PATH.
pub fn have_command(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
