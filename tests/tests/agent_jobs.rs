//! End-to-end tests of the agent's cluster jobs over the real binary, against the in-tree
//! fake Kubernetes API server: database dumps through `pods/exec`
//! (`holdfast.io/backup-command`; the fake runs the command on this machine) and the
//! Kubernetes objects backup (discovery, one YAML file per object, `holdfast objects
//! apply-order`).

use std::path::{Path, PathBuf};

use holdfast_e2e::postgres::Postgres;
use holdfast_e2e::{exit as code, run_command, tempdir, Repo, Run, COMMAND_TIMEOUT};
use holdfast_fake_kube::FakeKube;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The namespace of the agents' Leases.
const AGENT_NS: &str = "holdfast-system";
/// The host name the agent records.
const CLUSTER: &str = "test-cluster";

/// A fake cluster with namespaces `app` and the agent's, a repository, an empty kubelet
/// directory (the agent's node runs no pods with volumes).
struct Env {
    fake: FakeKube,
    repo: Repo,
    dir: TempDir,
    kubeconfig: PathBuf,
}

impl Env {
    fn new() -> Env {
        let fake = FakeKube::start_blocking();
        for ns in [AGENT_NS, "app"] {
            fake.insert(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        let dir = tempdir();
        std::fs::create_dir_all(dir.path().join("kubelet/pods")).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig).unwrap();
        Env {
            fake,
            repo: Repo::new(),
            dir,
            kubeconfig,
        }
    }

    /// `holdfast agent --once --json` on node `node-a`, with `config` as its configuration.
    fn once(&self, config: &str) -> Run {
        let cfg = self.dir.path().join("agent.yaml");
        std::fs::write(&cfg, config).unwrap();
        let kd = self.dir.path().join("kubelet");
        let mut c = self.repo.command(&[
            "agent",
            "--once",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
            "--kubelet-dir",
            kd.to_str().unwrap(),
            "--cluster-name",
            CLUSTER,
        ]);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("NODE_NAME", "node-a")
            .env("POD_NAME", "agent-node-a")
            .env("POD_NAMESPACE", AGENT_NS)
            .env("HOLDFAST_AGENT_LISTEN", "127.0.0.1:0")
            .env("HOLDFAST_LOG", "holdfast_agent=info,holdfast=warn");
        run_command(c, COMMAND_TIMEOUT)
    }

    /// The report's job results, by key.
    fn jobs(run: &Run) -> Vec<Value> {
        run.json()["jobs"].as_array().cloned().unwrap_or_default()
    }

    /// Snapshots with these tags.
    fn snapshots(&self, tags: &str) -> Vec<Value> {
        self.repo.snapshots(&["--host", CLUSTER, "--tag", tags])
    }

    /// Restores the newest snapshot with these tags into a new directory.
    fn restore(&self, tags: &str, name: &str) -> PathBuf {
        let target = self.dir.path().join(name);
        self.repo
            .restore("latest", &target, &["--host", CLUSTER, "--tag", tags]);
        target
    }

    /// Exec requests the fake saw, as `ns/pod`.
    fn execs(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/exec"))
            .map(|r| {
                let p: Vec<&str> = r.path.split('/').collect();
                format!("{}/{}", p[4], p[6])
            })
            .collect()
    }

    /// events.k8s.io Events about pod `ns/pod`, as (type, reason, note).
    fn pod_events(&self, ns: &str, pod: &str) -> Vec<(String, String, String)> {
        self.fake
            .list_values("events.k8s.io", "v1", "events", Some(ns))
            .into_iter()
            .filter(|e| e["regarding"]["name"] == pod && e["regarding"]["kind"] == "Pod")
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// A Running and Ready pod on another node, annotated with `annotations`, owned by `owner`
/// (kind, name), with literal `env` values in its one container `main`.
fn pod(
    name: &str,
    owner: Option<(&str, &str)>,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Value {
    let mut meta = json!({
        "name": name, "namespace": "app",
        "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "annotations": annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some((kind, owner)) = owner {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": owner,
            "uid": format!("uid-{owner}"), "controller": true}]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"nodeName": "node-db", "containers": [{"name": "main", "image": "postgres",
            "env": env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn seq_output(n: u32) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A StatefulSet with three annotated replicas and a Deployment with two: each is dumped
/// once, from the replica whose name sorts first, and the restored file is exactly the
/// command's output; the snapshot carries the dump's tags and the pod gets an Event.
#[test]
fn dump_runs_once_per_owner_and_restores_exactly() {
    let env = Env::new();
    for i in 0..3 {
        env.fake.insert(&pod(
            &format!("pg-{i}"),
            Some(("StatefulSet", "pg")),
            &[],
            &[("holdfast.io/backup-command", "seq 1 200000")],
            &[],
        ));
    }
    for suffix in ["xk2p9", "ab3cd"] {
        env.fake.insert(&pod(
            &format!("web-5f7d9-{suffix}"),
            Some(("ReplicaSet", "web-5f7d9")),
            &[("pod-template-hash", "5f7d9")],
            &[
                (
                    "holdfast.io/backup-command",
                    "echo \"$SITE\"; printf 'tail'",
                ),
                ("holdfast.io/backup-filename", "site.txt"),
            ],
            &[("SITE", "example.org")],
        ));
    }
    let run = env.once("");
    run.assert_ok();
    let jobs = Env::jobs(&run);
    let keys: Vec<(String, String, String)> = jobs
        .iter()
        .map(|j| {
            (
                j["key"].as_str().unwrap().to_string(),
                j["pod"].as_str().unwrap_or_default().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (
                "app/Deployment/web".into(),
                "web-5f7d9-ab3cd".into(),
                "succeeded".into()
            ),
            (
                "app/StatefulSet/pg".into(),
                "pg-0".into(),
                "succeeded".into()
            ),
        ],
        "{run}"
    );
    let mut execs = env.execs();
    execs.sort();
    assert_eq!(
        execs,
        ["app/pg-0", "app/web-5f7d9-ab3cd"],
        "one exec per owner"
    );

    let snaps = env.snapshots("kind=dump,owner=StatefulSet/pg");
    assert_eq!(snaps.len(), 1);
    let tags: Vec<&str> = snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "kind=dump",
        "namespace=app",
        "owner=StatefulSet/pg",
        "method=command",
    ] {
        assert!(tags.contains(&t), "{t} not in {tags:?}");
    }
    let target = env.restore("kind=dump,owner=StatefulSet/pg", "pg");
    let restored = std::fs::read(target.join("app/pg/pg.dump")).unwrap();
    assert_eq!(restored, seq_output(200_000));
    let target = env.restore("kind=dump,owner=Deployment/web", "web");
    assert_eq!(
        std::fs::read_to_string(target.join("app/web/site.txt")).unwrap(),
        "example.org\ntail"
    );
    let ev = env.pod_events("app", "pg-0");
    assert!(
        ev.iter()
            .any(|(t, r, _)| t == "Normal" && r == "BackupSucceeded"),
        "{ev:?}"
    );

    // A second run dumps again (no schedule is consulted by --once), into the same file;
    // unchanged output adds no data.
    let run = env.once("");
    run.assert_ok();
    let pg = Env::jobs(&run)
        .into_iter()
        .find(|j| j["key"] == "app/StatefulSet/pg")
        .unwrap();
    assert_eq!(pg["summary"]["data_blobs_added"], 0, "{run}");
    assert_eq!(env.snapshots("kind=dump,owner=StatefulSet/pg").len(), 2);
}

/// A dump that writes part of its output and exits 2 saves no snapshot; the report and the
/// pod's Event name the pod, the exit code and the last error output; a pod that is not
/// Ready is not dumped.
#[test]
fn failing_dump_saves_no_snapshot_and_names_the_exit_code() {
    let env = Env::new();
    env.fake.insert(&pod(
        "db-0",
        Some(("StatefulSet", "db")),
        &[],
        &[(
            "holdfast.io/backup-command",
            "seq 1 50000; echo 'pg_dump: error: connection to server failed' >&2; exit 2",
        )],
        &[],
    ));
    let mut down = pod(
        "cache-0",
        Some(("StatefulSet", "cache")),
        &[],
        &[("holdfast.io/backup-command", "echo never")],
        &[],
    );
    down["status"]["conditions"][0]["status"] = json!("False");
    env.fake.insert(&down);
    let run = env.once("");
    run.assert_code(code::FAILURE);
    let jobs = Env::jobs(&run);
    let db = jobs
        .iter()
        .find(|j| j["key"] == "app/StatefulSet/db")
        .unwrap();
    assert_eq!(db["status"], "failed");
    let reason = db["reason"].as_str().unwrap();
    for needle in [
        "pod app/db-0",
        "exited with code 2",
        "pg_dump: error: connection to server failed",
        "no snapshot was written",
    ] {
        assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
    }
    let cache = jobs
        .iter()
        .find(|j| j["key"] == "app/StatefulSet/cache")
        .unwrap();
    assert_eq!(cache["status"], "skipped");
    assert!(
        env.snapshots("kind=dump").is_empty(),
        "a snapshot was saved"
    );
    assert_eq!(env.execs(), ["app/db-0"]);
    let ev = env.pod_events("app", "db-0");
    assert!(
        ev.iter().any(|(t, r, n)| t == "Warning"
            && r == "BackupFailed"
            && n.contains("exited with code 2")
            && n.contains("connection to server failed")),
        "{ev:?}"
    );
}

/// The daemon runs a due dump and the objects backup once, then not again until their
/// schedules fire: several rounds later there is still one snapshot of each and one exec.
#[test]
fn daemon_runs_due_jobs_once() {
    let env = Env::new();
    env.fake.insert(&pod(
        "db-0",
        Some(("StatefulSet", "db")),
        &[],
        &[
            ("holdfast.io/backup-command", "seq 1 1000"),
            ("holdfast.io/schedule", "@daily"),
        ],
        &[],
    ));
    let cfg = env.dir.path().join("agent.yaml");
    std::fs::write(&cfg, OBJECTS_ON).unwrap();
    let kd = env.dir.path().join("kubelet");
    let mut c = env.repo.command(&[
        "agent",
        "--interval",
        "1",
        "--no-maintenance",
        "--config",
        cfg.to_str().unwrap(),
        "--kubelet-dir",
        kd.to_str().unwrap(),
        "--cluster-name",
        CLUSTER,
    ]);
    c.env("KUBECONFIG", &env.kubeconfig)
        .env("NODE_NAME", "node-a")
        .env("POD_NAME", "agent-node-a")
        .env("POD_NAMESPACE", AGENT_NS)
        .env("HOLDFAST_AGENT_LISTEN", "127.0.0.1:0")
        .env("HOLDFAST_LOG", "holdfast_agent=info,holdfast=warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    holdfast_e2e::wait_until(
        &mut child,
        std::time::Duration::from_secs(120),
        "the dump and the objects backed up",
        || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            env.snapshots("kind=dump").len() == 1 && env.snapshots("kind=objects").len() == 1
        },
    );
    // Several more rounds: nothing is due.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(env.snapshots("kind=dump").len(), 1, "{log}");
    assert_eq!(env.snapshots("kind=objects").len(), 1, "{log}");
    assert_eq!(env.execs(), ["app/db-0"], "{log}");
}

const OBJECTS_ON: &str = "objects:\n  enabled: true\n";

fn seed_objects(fake: &FakeKube) {
    fake.insert(&json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }));
    for (name, size) in [("small", 1), ("large", 3)] {
        fake.insert(&json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "app"}, "spec": {"size": size}}));
    }
    fake.insert(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "app",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\":true}"}},
        "data": {"mode": "v1"}}));
    fake.insert(&json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-password", "namespace": "app"},
        "data": {"password": "aHVudGVyMg=="}}));
    fake.insert(
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "fast"}, "provisioner": "rbd.csi.ceph.com"}),
    );
    fake.insert(&json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "logger", "namespace": "app"},
        "spec": {"selector": {"matchLabels": {"app": "logger"}},
            "template": {"metadata": {"labels": {"app": "logger"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"numberReady": 1}}));
}

fn all_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The objects backup: every listable resource of every group, a CRD and its custom
/// resources included, Secrets, Events and Leases not; cleaned YAML that parses; a second
/// run of an unchanged cluster adds no data; an edit that keeps the size is still seen;
/// `holdfast objects apply-order` puts the CRD and the Namespaces first.
#[test]
fn objects_backup_covers_every_group_and_dedups() {
    let env = Env::new();
    seed_objects(&env.fake);
    let run = env.once(OBJECTS_ON);
    run.assert_ok();
    let jobs = Env::jobs(&run);
    assert_eq!(jobs.len(), 1, "{run}");
    assert_eq!(jobs[0]["key"], "objects");
    assert_eq!(jobs[0]["status"], "succeeded", "{run}");
    let snaps = env.snapshots("kind=objects");
    assert_eq!(snaps.len(), 1);

    let target = env.restore("kind=objects", "objects-1");
    let root = target.join("objects");
    let files = all_files(&root);
    for want in [
        "_cluster/apiextensions.k8s.io/CustomResourceDefinition/widgets.example.com.yaml",
        "_cluster/core/Namespace/app.yaml",
        "_cluster/storage.k8s.io/StorageClass/fast.yaml",
        "app/apps/DaemonSet/logger.yaml",
        "app/core/ConfigMap/settings.yaml",
        "app/example.com/Widget/large.yaml",
        "app/example.com/Widget/small.yaml",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "{want} missing from {files:#?}"
        );
    }
    for f in &files {
        assert!(!f.contains("/Secret/"), "a Secret was backed up: {f}");
        assert!(
            !f.contains("/Lease/") && !f.contains("/Event/"),
            "noise backed up: {f}"
        );
    }
    // Every file parses, names its type and carries nothing the server sets.
    for f in &files {
        let v: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(root.join(f)).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            v["apiVersion"].is_string() && v["kind"].is_string(),
            "{f}: {v}"
        );
        for gone in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            assert!(v["metadata"][gone].is_null(), "{f} keeps metadata.{gone}");
        }
        assert!(v["status"].is_null(), "{f} keeps its status");
    }
    let cm: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("app/core/ConfigMap/settings.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(cm["data"]["mode"], "v1");
    assert!(
        cm["metadata"]["annotations"].is_null(),
        "last-applied kept: {cm}"
    );

    // The order kubectl apply needs.
    let order = env
        .repo
        .cmd(&["objects", "apply-order", root.to_str().unwrap()]);
    order.assert_ok();
    let lines: Vec<String> = order
        .stdout_str()
        .lines()
        .map(|l| {
            Path::new(l)
                .strip_prefix(&root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(lines.len(), files.len());
    assert!(
        lines[0].ends_with("CustomResourceDefinition/widgets.example.com.yaml"),
        "{lines:#?}"
    );
    let first_non_ns = lines[1..]
        .iter()
        .position(|l| !l.contains("/Namespace/"))
        .unwrap()
        + 1;
    assert!(
        first_non_ns >= 3,
        "the namespaces come right after the CRD: {lines:#?}"
    );
    let widget = lines.iter().position(|l| l.contains("/Widget/")).unwrap();
    let configmap = lines
        .iter()
        .position(|l| l.contains("/ConfigMap/"))
        .unwrap();
    assert!(configmap < widget, "custom resources come last: {lines:#?}");

    // Unchanged: no data, no trees.
    let run = env.once(OBJECTS_ON);
    run.assert_ok();
    let j = &Env::jobs(&run)[0];
    assert_eq!(j["summary"]["data_blobs_added"], 0, "{run}");
    assert_eq!(j["summary"]["tree_blobs_added"], 0, "{run}");

    // An edit that keeps the file's size and time is still recorded.
    let mut cm = env
        .fake
        .get_value("", "v1", "configmaps", Some("app"), "settings")
        .unwrap();
    cm["data"]["mode"] = json!("v2");
    env.fake.insert(&cm);
    env.once(OBJECTS_ON).assert_ok();
    let target = env.restore("kind=objects", "objects-3");
    let text =
        std::fs::read_to_string(target.join("objects/app/core/ConfigMap/settings.yaml")).unwrap();
    assert!(text.contains("mode: v2"), "{text}");
}

/// The Bitnami PostgreSQL case: a pod whose spec holds `POSTGRES_PASSWORD` is annotated
/// with a `pg_dumpall` command against a real PostgreSQL (tests/support/postgres.rs: initdb
/// with a password, a free port, a temporary directory, stopped when dropped, also on a
/// panic); the restored dump loads into a fresh server and a query gives the rows back.
/// Needs PostgreSQL's server programs: fails, saying so, when they are missing.
#[test]
fn postgres_dump_restores_into_a_fresh_server() {
    let env = Env::new();
    let pg = Postgres::start();
    pg.psql("postgres", "create database shop");
    pg.psql(
        "shop",
        "create table t (id int primary key, name text);
         insert into t select g, 'row ' || g from generate_series(1, 1000) g;",
    );
    let cmd = format!(
        "PGPASSWORD=\"$POSTGRES_PASSWORD\" pg_dumpall -h 127.0.0.1 -p {} -U postgres",
        pg.port
    );
    env.fake.insert(&pod(
        "postgresql-0",
        Some(("StatefulSet", "postgresql")),
        &[],
        &[
            ("holdfast.io/backup-command", cmd.as_str()),
            ("holdfast.io/backup-filename", "all.sql"),
        ],
        &[("POSTGRES_PASSWORD", pg.password.as_str())],
    ));
    let run = env.once("");
    run.assert_ok();
    let target = env.restore("kind=dump,owner=StatefulSet/postgresql", "pg-restore");
    let sql = std::fs::read_to_string(target.join("app/postgresql/all.sql")).unwrap();
    assert!(
        sql.contains("CREATE DATABASE shop"),
        "not a pg_dumpall: {sql:.200}"
    );

    let fresh = Postgres::start();
    // pg_dumpall recreates the postgres role, which the fresh server has: drop that line.
    let cleaned: String = sql
        .lines()
        .filter(|l| !l.starts_with("CREATE ROLE postgres;"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = env.dir.path().join("all.sql");
    std::fs::write(&file, cleaned).unwrap();
    fresh.load("postgres", &file);
    assert_eq!(
        fresh.psql("shop", "select count(*), sum(id) from t"),
        "1000|500500"
    );
}
