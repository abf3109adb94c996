//! The `fake-kube` binary: seed file, kubeconfig, serving until killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn binary_serves_a_seed_file_and_writes_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    let kubeconfig = dir.path().join("kubeconfig");
    let exe = env!("CARGO_BIN_EXE_fake-kube");
    let out = Command::new(exe)
        .args(["--example-seed", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&seed, &out.stdout).unwrap();

    let mut child = Command::new(exe)
        .args(["--port", "0", "--bookmark-interval-ms", "100", "--seed"])
        .arg(&seed)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("http://127.0.0.1:"), "{line}");

    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        cfg.cluster_url.to_string().trim_end_matches('/'),
        line.trim()
    );
    let client = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::all(client);
    let on_node = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    assert_eq!(on_node.items.len(), 2);
    child.kill().unwrap();
    child.wait().unwrap();
}
