//! End-to-end tests of monitoring: the agent's `/metrics` scraped from the real binary
//! (values rebuilt after a restart, failures kept, `promtool check metrics`), `holdfast
//! coverage` against the in-tree fake Kubernetes API server, and the shipped alert rules
//! and Grafana dashboard checked with Prometheus's own `promtool` and against the metric
//! names the agent exports.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_e2e::{
    exit as code, lorem, require, run_command, tempdir, write_file, Repo, Run, COMMAND_TIMEOUT,
};
use holdfast_fake_kube::fixtures::{Cluster, ClusterBuilder};
use holdfast_fake_kube::kubelet::{self, KubeletLayout};
use holdfast_fake_kube::FakeKube;
use serde::Deserialize;
use serde_json::Value;
use tempfile::TempDir;

const AGENT_NS: &str = "holdfast-system";
const CLUSTER: &str = "test-cluster";

/// A fake cluster, a repository, and the kubelet directory of each node.
struct Env {
    /// The API server (kept running for the test's length).
    _fake: FakeKube,
    repo: Repo,
    dir: TempDir,
    kubeconfig: PathBuf,
    cluster: Cluster,
    layouts: BTreeMap<String, KubeletLayout>,
}

impl Env {
    fn new(builder: ClusterBuilder) -> Env {
        let fake = FakeKube::start_blocking();
        let cluster = builder.namespace(AGENT_NS, &[]).seed(&fake);
        let dir = tempdir();
        let kubeconfig = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let mut layouts = BTreeMap::new();
        for node in &cluster.nodes {
            let root = dir.path().join("kubelet").join(node);
            layouts.insert(
                node.clone(),
                kubelet::build(&root, &cluster, node).expect("kubelet tree"),
            );
        }
        Env {
            _fake: fake,
            repo: Repo::new(),
            dir,
            kubeconfig,
            cluster,
            layouts,
        }
    }

    fn mount(&self, ns: &str, pod: &str, claim: &str) -> PathBuf {
        let p = self.cluster.pod(ns, pod).expect("pod");
        self.layouts[&p.node]
            .path_of(ns, pod, claim)
            .expect("mount")
            .to_path_buf()
    }

    /// `holdfast ARGS` with the cluster's kubeconfig and the agent's environment on `node`.
    fn holdfast(&self, node: &str, args: &[&str]) -> Command {
        let mut c = self.repo.command(args);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("NODE_NAME", node)
            .env("POD_NAME", format!("agent-{node}"))
            .env("POD_NAMESPACE", AGENT_NS)
            .env("HOLDFAST_CLUSTER_NAME", CLUSTER)
            .env("HOLDFAST_LOG", "holdfast_agent=info,holdfast=warn");
        c
    }

    /// `holdfast agent ARGS` on `node`.
    fn agent(&self, node: &str, args: &[&str]) -> Command {
        let kd = self.dir.path().join("kubelet").join(node);
        let mut all = vec!["agent", "--kubelet-dir", kd.to_str().unwrap()];
        all.extend(args);
        self.holdfast(node, &all)
    }

    fn once(&self, node: &str) -> Run {
        run_command(
            self.agent(node, &["--once", "--json", "--no-maintenance"]),
            COMMAND_TIMEOUT,
        )
    }

    fn snapshots_of(&self, ns: &str, pvc: &str) -> Vec<Value> {
        self.repo.snapshots(&[
            "--host",
            CLUSTER,
            "--tag",
            &format!("namespace={ns},pvc={pvc}"),
        ])
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` on `127.0.0.1:port`; `None` while nothing answers.
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (labels with escapes).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("value");
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((n, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                let mut chars = rest.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some('n') => val.push('\n'),
                                Some(c) => val.push(c),
                                None => panic!("{line}"),
                            },
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.insert(key, val);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (n.to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value: value.parse().unwrap_or_else(|_| panic!("{line}")),
        });
    }
    out
}

/// The value of `name` for the series whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn vol(pvc: &'static str) -> [(&'static str, &'static str); 3] {
    [("kind", "volume"), ("namespace", "app"), ("pvc", pvc)]
}

/// Scrapes until the agent has rebuilt its metrics once (60 s at most).
fn scrape_ready(port: u16, child: &mut Child) -> String {
    let t0 = Instant::now();
    loop {
        if let Some((head, body)) = http_get(port, "/metrics") {
            assert!(head.starts_with("HTTP/1.0 200"), "{head}");
            assert!(head.contains("text/plain; version=0.0.4"), "{head}");
            if body.contains("\nholdfast_metrics_refresh_timestamp_seconds ") {
                return body;
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            panic!("the agent exited ({st}) before serving metrics:\n{err}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no rebuilt metrics after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c.spawn().expect("spawn holdfast agent")
}

fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "the agent did not stop cleanly: {st}");
}

/// `promtool`, or a loud failure (under CI) / refusal to pass untested.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    require(found.is_some(), "promtool (Debian's prometheus package)");
    found.unwrap()
}

fn promtool_run(args: &[&OsStr], stdin: Option<&str>) -> std::process::Output {
    let mut c = Command::new(promtool());
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("promtool");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The agent's metrics after backups (one volume failing after an earlier success) come
/// back identical from a new agent process: successes from the repository, failures
/// and attempts from the volumes' Leases. The scrape passes `promtool check metrics`, and
/// the elected agent exports coverage.
#[test]
fn metrics_survive_a_restart_and_keep_failures() {
    let env = Env::new(
        ClusterBuilder::new()
            .node("node-a")
            .namespace("app", &[])
            .rbd_pvc("app", "db", "1Gi", &[])
            .cephfs_pvc("app", "files", "1Gi", &[("holdfast.io/paths", "data")])
            .rbd_pvc("app", "tmp", "1Gi", &[("holdfast.io/schedule", "")])
            .pod("app", "db-0", "node-a", &["db", "files", "tmp"]),
    );
    write_file(
        &env.mount("app", "db-0", "db").join("a.txt"),
        lorem(50_000).as_bytes(),
    );
    let data = env.mount("app", "db-0", "files").join("data");
    write_file(&data.join("b.txt"), lorem(20_000).as_bytes());
    env.once("node-a").assert_ok();
    std::fs::remove_dir_all(&data).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let second = env.once("node-a");
    second.assert_code(code::PARTIAL);

    let db = env.snapshots_of("app", "db");
    let files = env.snapshots_of("app", "files");
    assert_eq!((db.len(), files.len()), (2, 1));
    let time_of = |s: &Value| {
        chrono::DateTime::parse_from_rfc3339(s["time"].as_str().unwrap())
            .unwrap()
            .timestamp_millis() as f64
            / 1000.0
    };
    let newest_db = db.iter().map(time_of).fold(f64::MIN, f64::max);
    let db_newest_snap = db.iter().find(|s| time_of(s) == newest_db).unwrap();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--interval", "1", "--no-maintenance", "--listen", &listen];
    let mut first = spawn(env.agent("node-a", &args));
    let s1 = scrape_ready(port, &mut first);
    let m1 = parse(&s1);

    // Successes: the newest snapshot's time and counters.
    let last_success = value(
        &m1,
        "holdfast_backup_last_success_timestamp_seconds",
        &vol("db"),
    );
    assert!(
        // `snapshots --json` prints whole seconds.
        (0.0..1.0).contains(&(last_success.expect("db last success") - newest_db)),
        "{last_success:?} vs {newest_db}\n{s1}"
    );
    assert_eq!(
        value(&m1, "holdfast_backup_last_status", &vol("db")),
        Some(1.0)
    );
    assert_eq!(
        value(&m1, "holdfast_backup_bytes_added", &vol("db")),
        db_newest_snap["summary"]["bytes_added_stored"].as_f64(),
        "{s1}"
    );
    assert_eq!(
        value(&m1, "holdfast_schedule_interval_seconds", &vol("db")),
        Some(86400.0)
    );
    // The failure: status 0, attempted after the last success.
    assert_eq!(
        value(&m1, "holdfast_backup_last_status", &vol("files")),
        Some(0.0),
        "{s1}"
    );
    let attempt = value(
        &m1,
        "holdfast_backup_last_attempt_timestamp_seconds",
        &vol("files"),
    );
    let success = value(
        &m1,
        "holdfast_backup_last_success_timestamp_seconds",
        &vol("files"),
    );
    assert!(attempt.unwrap() > success.unwrap(), "{s1}");
    // Opted out: no backup series; in the coverage, uncovered (no reason given).
    assert_eq!(value(&m1, "holdfast_backup_last_status", &vol("tmp")), None);
    assert_eq!(value(&m1, "holdfast_agent_elected", &[]), Some(1.0));
    assert_eq!(value(&m1, "holdfast_repository_up", &[]), Some(1.0));
    assert_eq!(
        value(
            &m1,
            "holdfast_pvc_covered",
            &[("namespace", "app"), ("pvc", "tmp")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m1,
            "holdfast_pvc_covered",
            &[("namespace", "app"), ("pvc", "db")]
        ),
        Some(1.0)
    );
    assert_eq!(value(&m1, "holdfast_pvcs_uncovered", &[]), Some(1.0));
    assert_eq!(value(&m1, "holdfast_repository_snapshots", &[]), Some(3.0));
    assert!(value(&m1, "holdfast_repository_size_bytes", &[]).unwrap() > 0.0);
    let health = http_get(port, "/healthz").unwrap();
    assert!(health.0.starts_with("HTTP/1.0 200") && health.1 == "ok\n");

    // Prometheus's own linter accepts the scrape.
    let check = promtool_run(&[OsStr::new("check"), OsStr::new("metrics")], Some(&s1));
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}\n{s1}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    stop(first);

    // A new process: the same values, before it backed anything up.
    let port2 = free_port();
    let listen2 = format!("127.0.0.1:{port2}");
    let args2 = ["--interval", "1", "--no-maintenance", "--listen", &listen2];
    let mut second = spawn(env.agent("node-a", &args2));
    let m2 = parse(&scrape_ready(port2, &mut second));
    stop(second);
    let backup_series = |m: &[Sample]| -> Vec<Sample> {
        m.iter()
            .filter(|s| {
                s.name.starts_with("holdfast_backup_") || s.name.starts_with("holdfast_schedule_")
            })
            .cloned()
            .collect()
    };
    assert_eq!(backup_series(&m1), backup_series(&m2));
    assert_eq!(
        env.snapshots_of("app", "db").len(),
        2,
        "nothing was due: the values are the rebuilt ones"
    );
}

/// A bad `--listen` is a usage error naming the flag.
#[test]
fn bad_listen_address_is_a_usage_error() {
    let env = Env::new(ClusterBuilder::new().node("node-a"));
    let r = run_command(
        env.agent("node-a", &["--listen", "nowhere"]),
        COMMAND_TIMEOUT,
    );
    r.assert_code(code::USAGE);
    r.assert_stderr_contains("--listen");
}

fn faketime_lib() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn coverage(env: &Env, fake_offset: Option<&str>) -> Run {
    let mut c = env.holdfast("node-a", &["coverage", "--json"]);
    if let Some(off) = fake_offset {
        let lib = faketime_lib();
        require(lib.is_some(), "libfaketime (Debian's faketime package)");
        c.env("LD_PRELOAD", lib.unwrap())
            .env("FAKETIME", off)
            .env("FAKETIME_DONT_RESET", "1");
    }
    run_command(c, COMMAND_TIMEOUT)
}

fn rows(run: &Run) -> BTreeMap<String, Value> {
    run.json()["pvcs"]
        .as_array()
        .unwrap_or_else(|| panic!("no pvcs in the report\n{run}"))
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["namespace"].as_str().unwrap(),
                    r["pvc"].as_str().unwrap()
                ),
                r.clone(),
            )
        })
        .collect()
}

/// `holdfast coverage` names how each PVC is covered; it exits 3 while something is
/// uncovered or stale (4 hours on: the hourly volume is stale, the daily one is not), 0
/// when everything is covered and fresh.
#[test]
fn coverage_classifies_every_pvc_and_exits_3_on_problems() {
    let env = Env::new(
        ClusterBuilder::new()
            .node("node-a")
            .node("node-b")
            .namespace("app", &[])
            .rbd_pvc("app", "db", "1Gi", &[])
            .rbd_pvc(
                "app",
                "hourly",
                "1Gi",
                &[("holdfast.io/schedule", "@hourly")],
            )
            .rbd_pvc(
                "app",
                "cache",
                "1Gi",
                &[
                    ("holdfast.io/schedule", ""),
                    ("holdfast.io/reason", "rebuilt from the database on start"),
                ],
            )
            .rbd_pvc(
                "app",
                "pgdata",
                "1Gi",
                &[
                    ("holdfast.io/schedule", ""),
                    ("holdfast.io/covered-by", "postgres dump by the DBA team"),
                ],
            )
            .rbd_pvc("app", "tmp", "1Gi", &[("holdfast.io/schedule", "")])
            .rbd_pvc("app", "orphan", "1Gi", &[])
            .rbd_pvc("app", "elsewhere", "1Gi", &[])
            .pod(
                "app",
                "db-0",
                "node-a",
                &["db", "hourly", "cache", "pgdata", "tmp"],
            )
            .pod("app", "web-0", "node-b", &["elsewhere"]),
    );
    write_file(&env.mount("app", "db-0", "db").join("a"), b"a");
    write_file(&env.mount("app", "db-0", "hourly").join("b"), b"b");
    env.once("node-a").assert_ok();

    let now = coverage(&env, None);
    now.assert_code(code::PARTIAL);
    let r = rows(&now);
    let st = |k: &str| r[k]["status"].as_str().unwrap().to_string();
    assert_eq!(st("app/db"), "ok", "{now}");
    assert_eq!(st("app/hourly"), "ok");
    assert_eq!(st("app/cache"), "opted-out");
    assert_eq!(st("app/pgdata"), "external");
    assert_eq!(st("app/tmp"), "uncovered");
    assert_eq!(st("app/orphan"), "uncovered");
    assert_eq!(st("app/elsewhere"), "never");
    assert_eq!(r.len(), 7, "{now}");
    assert!(r["app/tmp"]["detail"]
        .as_str()
        .unwrap()
        .contains("holdfast.io/reason"));
    assert!(r["app/orphan"]["detail"]
        .as_str()
        .unwrap()
        .contains("no running pod mounts it"));
    assert_eq!(r["app/db"]["method"], "live");
    assert_eq!(r["app/hourly"]["schedule_interval_seconds"], 3600);
    assert_eq!(
        r["app/db"]["newest_snapshot"]["id"].as_str().unwrap().len(),
        8
    );
    let report = now.json();
    assert_eq!(report["uncovered"], 2);
    assert_eq!(report["problems"], 3);

    // Four hours on: the hourly volume is stale, the daily one is not.
    let later = coverage(&env, Some("+4h"));
    later.assert_code(code::PARTIAL);
    let r = rows(&later);
    assert_eq!(r["app/hourly"]["status"], "stale", "{later}");
    assert_eq!(r["app/db"]["status"], "ok");
    assert!(r["app/hourly"]["age_seconds"].as_i64().unwrap() >= 4 * 3600);

    // The table names every PVC and sums up.
    let table = run_command(env.holdfast("node-a", &["coverage"]), COMMAND_TIMEOUT);
    table.assert_code(code::PARTIAL);
    let out = table.stdout_str();
    assert!(
        out.contains("app        tmp") || out.contains("tmp"),
        "{out}"
    );
    assert!(
        out.contains("7 PVCs:") && out.contains("3 need attention"),
        "{out}"
    );
}

/// Everything covered and fresh: exit 0.
#[test]
fn coverage_exits_0_when_everything_is_covered() {
    let env = Env::new(
        ClusterBuilder::new()
            .node("node-a")
            .namespace("app", &[])
            .rbd_pvc("app", "db", "1Gi", &[])
            .rbd_pvc(
                "app",
                "cache",
                "1Gi",
                &[
                    ("holdfast.io/schedule", ""),
                    ("holdfast.io/reason", "scratch space"),
                ],
            )
            .pod("app", "db-0", "node-a", &["db", "cache"]),
    );
    write_file(&env.mount("app", "db-0", "db").join("a"), b"a");
    env.once("node-a").assert_ok();
    let run = coverage(&env, None);
    run.assert_ok();
    assert_eq!(run.json()["problems"], 0);
    let table = run_command(env.holdfast("node-a", &["coverage"]), COMMAND_TIMEOUT);
    table.assert_ok();
    assert!(table
        .stdout_str()
        .contains("everything is covered and fresh"));
}

/// The metric names of the agent: from a scrape of the real binary's metrics module
/// (every family is declared with HELP and TYPE even without samples).
fn exported_metric_names() -> BTreeSet<String> {
    holdfast_agent::metrics::FAMILIES
        .iter()
        .map(|f| f.name.to_string())
        .collect()
}

/// Metric names used in a PromQL expression: identifiers starting `holdfast_` (the only
/// other metric the rules use is Prometheus's own `up`).
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if word.starts_with("holdfast_") {
                out.insert(word);
            }
        } else if c == '"' {
            // Skip strings (label values).
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                i += if bytes[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "expr" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                }
                collect_exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// The dashboard is valid Grafana JSON whose every panel query uses metrics the agent
/// exports, with the datasource as a variable.
#[test]
fn dashboard_queries_use_exported_metrics() {
    let path = repo_root().join("deploy/grafana/holdfast-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert!(d["schemaVersion"].as_i64().unwrap() >= 36);
    assert!(d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "datasource" && v["type"] == "datasource"));
    let exported = exported_metric_names();
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for p in panels {
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let mut exprs = Vec::new();
        collect_exprs(&p["targets"], &mut exprs);
        assert!(!exprs.is_empty(), "panel {} has no query", p["title"]);
        for e in exprs {
            let names = metric_names_in(&e);
            assert!(!names.is_empty(), "panel {}: {e}", p["title"]);
            for n in names {
                assert!(
                    exported.contains(&n),
                    "panel {} uses {n}, which the agent does not export",
                    p["title"]
                );
                used.insert(n);
            }
        }
    }
    for must in [
        "holdfast_backup_last_success_timestamp_seconds",
        "holdfast_backup_duration_seconds",
        "holdfast_backup_bytes_added",
        "holdfast_repository_size_bytes",
        "holdfast_drill_last_status",
        "holdfast_pvcs_uncovered",
        "holdfast_pvc_covered",
        "holdfast_backup_last_status",
    ] {
        assert!(used.contains(must), "the dashboard does not show {must}");
    }
}

/// The rule file and the PrometheusRule carry the same groups; every alert uses exported
/// metrics; promtool accepts the rules and their unit tests (each alert firing and not).
#[test]
fn alert_rules_pass_promtool_and_match_the_prometheusrule() {
    let root = repo_root();
    let rules_path = root.join("deploy/prometheus/holdfast-rules.yaml");
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&rules_path).unwrap()).unwrap();
    let pr: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/holdfast-prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(pr["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(pr["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "deploy/holdfast-prometheusrule.yaml differs from deploy/prometheus/holdfast-rules.yaml"
    );
    let exported = exported_metric_names();
    let as_json: Value = serde_json::to_value(&rules).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&as_json, &mut exprs);
    let mut alerts = BTreeSet::new();
    for g in as_json["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().expect("alerting rules only");
            alerts.insert(name.to_string());
            assert!(r["labels"]["severity"].is_string(), "{name}: severity");
            assert!(r["annotations"]["summary"].is_string(), "{name}: summary");
            assert!(
                r["annotations"]["description"].is_string(),
                "{name}: description"
            );
        }
    }
    for e in &exprs {
        for n in metric_names_in(e) {
            assert!(exported.contains(&n), "a rule uses {n}: not exported\n{e}");
        }
    }
    for a in [
        "HoldfastBackupStale",
        "HoldfastBackupNeverSucceeded",
        "HoldfastBackupFailing",
        "HoldfastPVCNotCovered",
        "HoldfastDrillFailed",
        "HoldfastDrillOverdue",
        "HoldfastRepositoryCheckFailed",
        "HoldfastRepositoryUnreachable",
        "HoldfastAgentDown",
    ] {
        assert!(alerts.contains(a), "missing alert {a}");
    }
    let check = promtool_run(
        &[
            OsStr::new("check"),
            OsStr::new("rules"),
            rules_path.as_os_str(),
        ],
        None,
    );
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The unit tests: every alert's firing and quiet cases (promtool fails on any
    // alert that fires unexpectedly at an evaluation time listed).
    let tests_path = root.join("deploy/prometheus/holdfast-rules.test.yaml");
    let tests_text = std::fs::read_to_string(&tests_path).unwrap();
    for a in &alerts {
        assert!(
            tests_text.matches(&format!("alertname: {a}")).count() >= 2,
            "{a} needs a firing and a quiet case in {}",
            tests_path.display()
        );
    }
    let test = promtool_run(
        &[
            OsStr::new("test"),
            OsStr::new("rules"),
            tests_path.as_os_str(),
        ],
        None,
    );
    assert!(
        test.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// The ServiceMonitor selects the agents' Service (from the rendered manifests) by its
/// labels and port name, and keeps the metrics' own `namespace` label.
#[test]
fn servicemonitor_selects_the_agents_metrics_service() {
    let root = repo_root();
    let sm: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/holdfast-servicemonitor.yaml")).unwrap(),
    )
    .unwrap();
    let agent = std::fs::read_to_string(root.join("deploy/holdfast-agent.yaml")).unwrap();
    let svc = serde_yaml_ng::Deserializer::from_str(&agent)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .find(|d| d["kind"].as_str() == Some("Service"))
        .expect("a Service in deploy/holdfast-agent.yaml");
    let want = sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    for (k, v) in want {
        assert_eq!(&svc["metadata"]["labels"][k], v, "label {k:?}");
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["honorLabels"].as_bool(),
        Some(true)
    );
    assert_eq!(
        sm["metadata"]["namespace"], svc["metadata"]["namespace"],
        "same namespace"
    );
}
