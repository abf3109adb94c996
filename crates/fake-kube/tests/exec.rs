//! `pods/exec` over WebSocket through kube's own client (`Api::exec`, `AttachedProcess`):
//! exit codes in the final Status, output streamed, the real server's refusals.

use std::time::Instant;

use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use serde_json::json;
use tokio::io::AsyncReadExt;

fn pod(name: &str, containers: &[&str], phase: &str) -> serde_json::Value {
    let cs: Vec<_> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox", "env": [{"name": "GREETING", "value": format!("hello from {c}")}]}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": cs, "nodeName": "node-a"},
        "status": {"phase": phase}
    })
}

async fn client(fake: &FakeKube) -> Api<Pod> {
    let cfg = kube::Config::new(fake.url().parse().unwrap());
    Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default")
}

fn ap() -> AttachParams {
    AttachParams::default()
        .stdout(true)
        .stderr(true)
        .stdin(false)
}

/// Runs `cmd` in `pod`; returns stdout, stderr and the final Status.
async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    cmd: &[&str],
    ap: &AttachParams,
) -> kube::Result<(
    Vec<u8>,
    String,
    Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
)> {
    let mut p = pods.exec(pod, cmd.to_vec(), ap).await?;
    let mut out = p.stdout().unwrap();
    let mut err = p.stderr().unwrap();
    let status = p.take_status().unwrap();
    let (mut o, mut e) = (Vec::new(), String::new());
    let (a, b) = tokio::join!(out.read_to_end(&mut o), err.read_to_string(&mut e));
    a.unwrap();
    b.unwrap();
    let st = status.await;
    Ok((o, e, st))
}

#[tokio::test]
async fn exit_zero_is_success_with_the_containers_env() {
    let fake = FakeKube::start().await;
    fake.insert(&pod("db-0", &["db"], "Running"));
    let pods = client(&fake).await;
    let (out, err, st) = exec(
        &pods,
        "db-0",
        &["sh", "-c", "echo \"$GREETING\"; echo warn >&2"],
        &ap(),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "hello from db\n");
    assert_eq!(err, "warn\n");
    assert_eq!(st.unwrap().status.as_deref(), Some("Success"));
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure_status_with_the_code() {
    let fake = FakeKube::start().await;
    fake.insert(&pod("db-0", &["db"], "Running"));
    let pods = client(&fake).await;
    let (out, err, st) = exec(
        &pods,
        "db-0",
        &["sh", "-c", "echo partial; echo 'disk full' >&2; exit 2"],
        &ap(),
    )
    .await
    .unwrap();
    assert_eq!(out, b"partial\n");
    assert_eq!(err, "disk full\n");
    let st = st.unwrap();
    assert_eq!(st.status.as_deref(), Some("Failure"));
    assert_eq!(st.reason.as_deref(), Some("NonZeroExitCode"));
    let causes = st.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
    assert_eq!(causes[0].message.as_deref(), Some("2"));
}

#[tokio::test]
async fn large_output_is_streamed_not_buffered() {
    let fake = FakeKube::start().await;
    fake.insert(&pod("db-0", &["db"], "Running"));
    let pods = client(&fake).await;
    let t0 = Instant::now();
    let mut p = pods
        .exec(
            "db-0",
            vec!["sh", "-c", "head -c 52428800 /dev/zero"],
            &ap(),
        )
        .await
        .unwrap();
    let mut out = p.stdout().unwrap();
    let status = p.take_status().unwrap();
    // Read in small pieces, counting: the bytes arrive while the command still runs.
    let (mut total, mut buf, mut first_at) = (0u64, vec![0u8; 65536], None);
    loop {
        let n = out.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        first_at.get_or_insert(t0.elapsed());
        assert!(buf[..n].iter().all(|b| *b == 0));
        total += n as u64;
    }
    let st = status.await.unwrap();
    let took = t0.elapsed();
    eprintln!("50 MB through exec in {took:?} (first bytes after {first_at:?})");
    assert_eq!(total, 52_428_800);
    assert_eq!(st.status.as_deref(), Some("Success"));
}

#[tokio::test]
async fn refusals_are_the_real_servers() {
    let fake = FakeKube::start().await;
    fake.insert(&pod("one", &["db"], "Running"));
    fake.insert(&pod("two", &["db", "sidecar"], "Running"));
    fake.insert(&pod("pending", &["db"], "Pending"));
    let pods = client(&fake).await;
    let code = |r: kube::Result<kube::api::AttachedProcess>| match r {
        Err(kube::Error::UpgradeConnection(
            kube::client::UpgradeConnectionError::ProtocolSwitch(s),
        )) => s.as_u16(),
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("exec was accepted"),
    };
    let cmd = || vec!["true"];
    assert_eq!(code(pods.exec("missing", cmd(), &ap()).await), 404);
    assert_eq!(
        code(pods.exec("one", cmd(), &ap().container("nope")).await),
        400
    );
    assert_eq!(code(pods.exec("two", cmd(), &ap()).await), 400);
    assert_eq!(code(pods.exec("pending", cmd(), &ap()).await), 400);
    // Naming the container of a pod with several works.
    let (out, _, st) = exec(
        &pods,
        "two",
        &["sh", "-c", "echo $GREETING"],
        &ap().container("sidecar"),
    )
    .await
    .unwrap();
    assert_eq!(out, b"hello from sidecar\n");
    assert_eq!(st.unwrap().status.as_deref(), Some("Success"));
}

#[tokio::test]
async fn no_supported_subprotocol_is_refused() {
    let fake = FakeKube::start().await;
    fake.insert(&pod("one", &["db"], "Running"));
    // A raw request offering only an old protocol.
    let mut s = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let req = "GET /api/v1/namespaces/default/pods/one/exec?command=true&stdout=true HTTP/1.1\r\n\
               Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: channel.k8s.io\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("v5.channel.k8s.io"), "{head}");
}
