//! End-to-end tests of `holdfast agent` over the real binary, against the in-tree fake
//! Kubernetes API server (crates/fake-kube) and kubelet-like directory trees: no real API
//! server can run here, so the agent's real kube client talks HTTP to a fake that is strict
//! where the real one is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use holdfast_e2e::{
    assert_trees_equal, exit as code, lorem, require, run_command, tempdir, wait_until, write_file,
    write_random, Repo, Run, COMMAND_TIMEOUT,
};
use holdfast_fake_kube::csi::{CsiSim, Storage};
use holdfast_fake_kube::fixtures::{Cluster, ClusterBuilder};
use holdfast_fake_kube::kubelet::{self, KubeletLayout};
use holdfast_fake_kube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The namespace of the agents' Leases.
const AGENT_NS: &str = "holdfast-system";
/// The host name the agents record.
const CLUSTER: &str = "test-cluster";

/// A fake cluster, a repository, and a kubelet directory per node.
struct Env {
    /// The CSI simulator, if started ([`Env::with_sim`]); dropped first, so its mounts go
    /// before the directories under them.
    sim: Option<CsiSim>,
    fake: FakeKube,
    repo: Repo,
    dir: TempDir,
    kubeconfig: PathBuf,
    cluster: Cluster,
    layouts: BTreeMap<String, KubeletLayout>,
}

impl Env {
    /// Seeds `builder` (plus the agents' namespace) and lays out every node's kubelet tree.
    fn new(builder: ClusterBuilder) -> Env {
        let fake = FakeKube::start_blocking();
        let cluster = builder.namespace(AGENT_NS, &[]).seed(&fake);
        let dir = tempdir();
        let kubeconfig = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig)
            .expect("write kubeconfig");
        let mut layouts = BTreeMap::new();
        for node in &cluster.nodes {
            let root = dir.path().join("kubelet").join(node);
            layouts.insert(
                node.clone(),
                kubelet::build(&root, &cluster, node).expect("kubelet tree"),
            );
        }
        Env {
            sim: None,
            fake,
            repo: Repo::new(),
            dir,
            kubeconfig,
            cluster,
            layouts,
        }
    }

    /// One node, one RBD PVC `app/db` mounted by pod `app/db-0`.
    fn one_volume() -> Env {
        Env::new(
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .rbd_pvc("app", "db", "1Gi", &[])
                .pod("app", "db-0", "node-a", &["db"]),
        )
    }

    /// Starts the CSI simulator (snapshot controller, ceph-csi, PV controller, scheduler and
    /// kubelets for every node) on `storage` (made in the test's directory).
    fn with_sim(mut self, storage: impl FnOnce(&Path) -> Storage) -> Env {
        let roots: Vec<(String, PathBuf)> = self
            .cluster
            .nodes
            .iter()
            .map(|n| (n.clone(), self.kubelet_dir(n)))
            .collect();
        let nodes: Vec<(&str, &Path)> = roots
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        let storage = storage(&self.dir.path().join("storage"));
        self.sim = Some(CsiSim::start(&self.fake, &nodes, storage).expect("CSI simulator"));
        self
    }

    fn sim(&self) -> &CsiSim {
        self.sim.as_ref().expect("the CSI simulator is started")
    }

    /// Gives `claim` (mounted by `ns/pod`) storage from the simulator; returns its path.
    fn source(&self, ns: &str, pod: &str, claim: &str) -> PathBuf {
        let pvc = self.cluster.pvc(ns, claim).expect("claim");
        let path = self.mount(ns, pod, claim);
        self.sim().add_source(pvc, &path).expect("source volume")
    }

    /// The agent's temporary objects still in the fake, as `kind ns/name`.
    fn temporaries(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (group, plural) in [
            ("", "pods"),
            ("", "persistentvolumeclaims"),
            ("snapshot.storage.k8s.io", "volumesnapshots"),
        ] {
            let version = "v1";
            for o in self.fake.list_values(group, version, plural, None) {
                if o["metadata"]["labels"]["holdfast.io/role"].is_string() {
                    out.push(format!(
                        "{plural} {}/{}",
                        o["metadata"]["namespace"].as_str().unwrap_or_default(),
                        o["metadata"]["name"].as_str().unwrap_or_default()
                    ));
                }
            }
        }
        out
    }

    /// Waits (10 s at most) until the agent's temporary objects are gone: deletions finish
    /// asynchronously (finalizers, the simulator's controllers), as in a real cluster.
    fn assert_no_temporaries(&self, what: &str) {
        let t0 = std::time::Instant::now();
        while !self.temporaries().is_empty() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            self.temporaries().is_empty(),
            "{what}: left behind: {:?}",
            self.temporaries()
        );
    }

    /// The mounted directory of `claim` in pod `ns/pod`.
    fn mount(&self, ns: &str, pod: &str, claim: &str) -> PathBuf {
        let p = self.cluster.pod(ns, pod).expect("pod");
        self.layouts[&p.node]
            .path_of(ns, pod, claim)
            .unwrap_or_else(|| panic!("no mount of {claim} in {ns}/{pod}"))
            .to_path_buf()
    }

    fn kubelet_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join("kubelet").join(node)
    }

    /// `holdfast agent ARGS` as the agent of `node` (pod `agent-<node>`).
    /// A node name of the form `DIR-as-NODE` uses `DIR`'s kubelet directory for `NODE`.
    fn agent(&self, node: &str, args: &[&str]) -> Command {
        let (kd, node) = match node.split_once("-as-") {
            Some((dir, node)) => (self.kubelet_dir(dir), node),
            None => (self.kubelet_dir(node), node),
        };
        let mut all: Vec<String> = vec!["agent".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend([
            "--kubelet-dir".into(),
            kd.display().to_string(),
            "--cluster-name".into(),
            CLUSTER.into(),
        ]);
        let mut c = self.repo.command(&all);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("NODE_NAME", node)
            .env("POD_NAME", format!("agent-{node}"))
            .env("POD_NAMESPACE", AGENT_NS)
            // Daemons of parallel tests must not compete for the default port.
            .env("HOLDFAST_AGENT_LISTEN", "127.0.0.1:0")
            .env("HOLDFAST_LOG", "holdfast_agent=info,holdfast=warn");
        c
    }

    /// `holdfast agent --once --json EXTRA` on `node`.
    fn once(&self, node: &str, extra: &[&str]) -> Run {
        let mut args = vec!["--once", "--json"];
        args.extend(extra);
        run_command(self.agent(node, &args), COMMAND_TIMEOUT)
    }

    /// Snapshots (JSON) of one volume.
    fn snapshots_of(&self, ns: &str, pvc: &str) -> Vec<Value> {
        self.repo.snapshots(&[
            "--host",
            CLUSTER,
            "--tag",
            &format!("namespace={ns},pvc={pvc}"),
        ])
    }

    /// events.k8s.io/v1 Events about `ns/pvc`, as (type, reason, note).
    fn events(&self, ns: &str, pvc: &str) -> Vec<(String, String, String)> {
        self.fake
            .list_values("events.k8s.io", "v1", "events", Some(ns))
            .into_iter()
            .filter(|e| {
                e["regarding"]["name"] == pvc && e["regarding"]["kind"] == "PersistentVolumeClaim"
            })
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Restores the newest snapshot of `ns/pvc` and returns where its root landed.
    fn restore_volume(&self, ns: &str, pvc: &str) -> PathBuf {
        let target = self.dir.path().join(format!("restore-{ns}-{pvc}"));
        let tag = format!("namespace={ns},pvc={pvc}");
        self.repo
            .restore("latest", &target, &["--host", CLUSTER, "--tag", &tag])
            .assert_ok();
        target.join(ns).join(pvc)
    }
}

/// The per-volume results of a `--once --json` run, by `namespace/pvc`.
fn results(run: &Run) -> BTreeMap<String, Value> {
    let v = run.json();
    v["volumes"]
        .as_array()
        .unwrap_or_else(|| panic!("no volumes in the report\n{run}"))
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

fn status(results: &BTreeMap<String, Value>, key: &str) -> String {
    results
        .get(key)
        .unwrap_or_else(|| panic!("{key} not in the results: {results:#?}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Copies a directory's contents with their metadata (`cp -a`): what a volume held before a
/// test changed it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Fills a directory with a few files and a subdirectory.
fn fill(dir: &Path, seed: u64) {
    write_file(&dir.join("a.txt"), lorem(3000 + seed as usize).as_bytes());
    write_random(&dir.join("sub/blob.bin"), 200_000, seed);
    write_file(
        &dir.join("sub/deeper/c.txt"),
        format!("volume {seed}\n").as_bytes(),
    );
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().expect("spawn holdfast agent")
}

fn finish(child: Child) -> Run {
    let output = child.wait_with_output().expect("wait for the agent");
    Run {
        cmdline: "holdfast agent".into(),
        output,
    }
}

/// Two agents (two nodes) at once into one repository: every selected PVC is backed up
/// exactly once (the RWX one mounted on both nodes too), opt-outs by PVC and by namespace
/// hold, subpaths and excludes apply, block volumes are backed up as images, Events name the outcome,
/// and each volume restores identical.
#[test]
fn two_agents_back_up_each_selected_volume_once() {
    let env = Env::new(
        ClusterBuilder::new()
            .server_node("node-a")
            .node("node-b")
            .namespace("app", &[])
            .namespace("scratch", &[("holdfast.io/schedule", "")])
            .rbd_pvc("app", "db", "1Gi", &[])
            .cephfs_pvc(
                "app",
                "media",
                "10Gi",
                &[
                    ("holdfast.io/paths", "photos,docs"),
                    ("holdfast.io/exclude", "*.tmp"),
                ],
            )
            .rbd_pvc("app", "cache", "1Gi", &[("holdfast.io/schedule", "")])
            .rbd_pvc("app", "web", "1Gi", &[])
            .block_pvc("app", "raw", "1Gi", &[])
            .rbd_pvc("app", "idle", "1Gi", &[])
            .rbd_pvc("scratch", "tmp", "1Gi", &[])
            .rbd_pvc(
                "scratch",
                "kept",
                "1Gi",
                &[("holdfast.io/schedule", "@daily")],
            )
            .pod("app", "db-0", "node-a", &["db", "media", "cache"])
            .pod("app", "web-0", "node-b", &["web", "media", "raw"])
            .pod("scratch", "job", "node-a", &["tmp", "kept"]),
    );
    fill(&env.mount("app", "db-0", "db"), 1);
    let media = env.mount("app", "db-0", "media");
    fill(&media.join("photos"), 2);
    fill(&media.join("docs"), 3);
    fill(&media.join("other"), 4);
    write_file(&media.join("photos/upload.tmp"), b"partial upload");
    // The same CephFS volume as node-b's kubelet mounts it: the same files and times.
    let media_b = env.mount("app", "web-0", "media");
    let st = Command::new("cp")
        .arg("-a")
        .arg(media.join("."))
        .arg(&media_b)
        .status()
        .unwrap();
    assert!(st.success());
    fill(&env.mount("app", "db-0", "cache"), 5);
    fill(&env.mount("app", "web-0", "web"), 6);
    fill(&env.mount("scratch", "job", "tmp"), 7);
    fill(&env.mount("scratch", "job", "kept"), 8);

    let a = spawn(env.agent("node-a", &["--once", "--json"]));
    let b = spawn(env.agent("node-b", &["--once", "--json"]));
    let (a, b) = (finish(a), finish(b));
    a.assert_ok();
    b.assert_ok();
    let (ra, rb) = (results(&a), results(&b));

    // Each selected volume: one snapshot, whichever agent took it.
    for (ns, pvc) in [
        ("app", "db"),
        ("app", "media"),
        ("app", "web"),
        ("scratch", "kept"),
    ] {
        let snaps = env.snapshots_of(ns, pvc);
        assert_eq!(snaps.len(), 1, "{ns}/{pvc}: {snaps:#?}\nA:\n{a}\nB:\n{b}");
    }
    let media_done: Vec<String> = [&ra, &rb].iter().map(|r| status(r, "app/media")).collect();
    assert!(
        media_done.contains(&"succeeded".to_string())
            && media_done.contains(&"skipped".to_string()),
        "the RWX volume is backed up by one agent and skipped by the other: {media_done:?}"
    );
    assert_eq!(status(&ra, "app/cache"), "skipped", "opted out on the PVC");
    assert_eq!(
        status(&ra, "scratch/tmp"),
        "skipped",
        "opted out on the namespace"
    );
    assert_eq!(
        status(&ra, "scratch/kept"),
        "succeeded",
        "the PVC opts back in"
    );
    // The block volume is backed up as one image file (read live: no snapshot API here).
    assert_eq!(status(&rb, "app/raw"), "succeeded", "{rb:#?}");
    let raw = &env.snapshots_of("app", "raw")[0];
    assert_eq!(raw["paths"], json!(["/app/raw/volume.img"]));
    assert!(raw["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "volume-mode=block"));
    assert!(env.snapshots_of("app", "cache").is_empty());
    assert!(env.snapshots_of("scratch", "tmp").is_empty());

    // Snapshots: the cluster as host, stable logical paths, the volume's tags.
    let db = &env.snapshots_of("app", "db")[0];
    assert_eq!(db["host"], CLUSTER);
    assert_eq!(db["paths"], json!(["/app/db"]));
    let tags: Vec<&str> = db["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let pv = &env.cluster.pvc("app", "db").unwrap().pv_name;
    for t in [
        "namespace=app",
        "pvc=db",
        &format!("pv={pv}"),
        "storageclass=rook-ceph-block",
        "method=live",
    ] {
        assert!(tags.contains(&t), "tag {t} missing: {tags:?}");
    }
    let m = &env.snapshots_of("app", "media")[0];
    assert_eq!(m["paths"], json!(["/app/media/docs", "/app/media/photos"]));

    // Restores are identical; only the selected subpaths, without the excluded file.
    assert_trees_equal(
        &env.mount("app", "db-0", "db"),
        &env.restore_volume("app", "db"),
    );
    let rm = env.restore_volume("app", "media");
    // Compare without the excluded file (and with the directory's time as backed up).
    let md = std::fs::metadata(media.join("photos")).unwrap();
    std::fs::remove_file(media.join("photos/upload.tmp")).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        holdfast_e2e::set_mtime(&media.join("photos"), md.mtime(), md.mtime_nsec());
    }
    assert_trees_equal(&media.join("photos"), &rm.join("photos"));
    assert_trees_equal(&media.join("docs"), &rm.join("docs"));
    assert!(
        !rm.join("other").exists(),
        "a subpath not selected was backed up"
    );
    assert_trees_equal(
        &env.mount("app", "web-0", "web"),
        &env.restore_volume("app", "web"),
    );

    // Events on the PVCs.
    let ev = env.events("app", "db");
    assert!(
        ev.iter()
            .any(|(t, r, _)| t == "Normal" && r == "BackupSucceeded"),
        "{ev:?}"
    );
    // One agent did the maintenance, and reported the PVC no pod mounts.
    let unmounted: Vec<Value> = [a.json(), b.json()]
        .iter()
        .flat_map(|j| j["unmounted"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(unmounted, vec![json!("app/idle")], "A:\n{a}\nB:\n{b}");
    let ev = env.events("app", "idle");
    assert!(
        ev.iter()
            .any(|(t, r, _)| t == "Warning" && r == "NotBackedUp"),
        "{ev:?}"
    );
    env.repo.cmd(&["check"]).assert_ok();
}

/// A pod recreated with a new UID on another node: the next backup finds its parent by the
/// volume's tags and reads no file again.
#[test]
fn recreated_pod_on_another_node_is_backed_up_incrementally() {
    let env = Env::new(
        ClusterBuilder::new()
            .node("node-a")
            .node("node-b")
            .namespace("app", &[])
            .rbd_pvc("app", "db", "1Gi", &[])
            .pod("app", "db-0", "node-a", &["db"]),
    );
    let old_mount = env.mount("app", "db-0", "db");
    fill(&old_mount, 11);
    let first = env.once("node-a", &["--no-maintenance"]);
    first.assert_ok();
    let first_id = results(&first)["app/db"]["snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    // The pod moves to node-b under a new UID; the volume (same files, same inodes) follows.
    let mut pod: Value = env
        .fake
        .get_value("", "v1", "pods", Some("app"), "db-0")
        .expect("pod");
    env.fake.delete::<Pod>(Some("app"), "db-0");
    let new_uid = "4f7d2c1e-9a8b-4c3d-8e2f-1a2b3c4d5e6f";
    pod["metadata"]["uid"] = json!(new_uid);
    pod["metadata"]["resourceVersion"] = Value::Null;
    pod["spec"]["nodeName"] = json!("node-b");
    env.fake.insert(&pod);
    let pv_dir = old_mount.parent().unwrap();
    let new_csi = env
        .kubelet_dir("node-b")
        .join("pods")
        .join(new_uid)
        .join("volumes/kubernetes.io~csi");
    std::fs::create_dir_all(&new_csi).unwrap();
    std::fs::rename(pv_dir, new_csi.join(pv_dir.file_name().unwrap())).unwrap();

    let second = env.once("node-b", &["--no-maintenance"]);
    second.assert_ok();
    let r = &results(&second)["app/db"];
    assert_eq!(r["status"], "succeeded", "{second}");
    assert_eq!(
        r["parent"].as_str(),
        Some(first_id.as_str()),
        "parent found by tags: {r:#}"
    );
    assert_eq!(r["summary"]["bytes_read"], 0, "no file read again: {r:#}");
    assert_eq!(r["summary"]["files_new"], 0, "{r:#}");
    assert_eq!(r["summary"]["files_changed"], 0, "{r:#}");
    let snaps = env.snapshots_of("app", "db");
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s["paths"] == json!(["/app/db"])));
}

/// The daemon backs up what is due, then leaves it alone until its schedule fires again,
/// and stops cleanly on SIGTERM.
#[test]
fn daemon_backs_up_due_volumes_once_and_skips_them_until_due() {
    let env = Env::new(
        ClusterBuilder::new()
            .node("node-a")
            .namespace("app", &[])
            .rbd_pvc("app", "db", "1Gi", &[("holdfast.io/schedule", "@daily")])
            .rbd_pvc(
                "app",
                "logs",
                "1Gi",
                &[("holdfast.io/schedule", "0 3 * * *")],
            )
            .pod("app", "db-0", "node-a", &["db", "logs"]),
    );
    fill(&env.mount("app", "db-0", "db"), 21);
    fill(&env.mount("app", "db-0", "logs"), 22);
    let mut child = spawn(env.agent("node-a", &["--interval", "1", "--no-maintenance"]));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    wait_until(
        &mut child,
        Duration::from_secs(120),
        "both volumes backed up",
        || {
            std::thread::sleep(Duration::from_millis(300));
            env.snapshots_of("app", "db").len() == 1 && env.snapshots_of("app", "logs").len() == 1
        },
    );
    // Several more rounds: nothing is due.
    std::thread::sleep(Duration::from_secs(4));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let run = finish(child);
    run.assert_ok();
    assert_eq!(env.snapshots_of("app", "db").len(), 1, "{run}");
    assert_eq!(env.snapshots_of("app", "logs").len(), 1, "{run}");
}

/// An agent killed in the middle of a backup leaves nothing that blocks the next run, and
/// the next run's results are correct.
#[test]
fn killed_agent_leaves_nothing_that_blocks_the_next_run() {
    let env = Env::one_volume();
    let mount = env.mount("app", "db-0", "db");
    fill(&mount, 31);
    write_random(&mount.join("big.bin"), 24 << 20, 32);
    // Slow uploads (1 MiB/s) keep the backup running long enough to be killed in it.
    let mut child = spawn(env.agent("node-a", &["--once", "--json", "--limit-upload", "1024"]));
    let lease = holdfast_agent::lease::volume_lease_name("app/db");
    wait_until(
        &mut child,
        Duration::from_secs(60),
        "the agent holds the volume's Lease",
        || {
            env.fake
                .get_value(
                    "coordination.k8s.io",
                    "v1",
                    "leases",
                    Some(AGENT_NS),
                    &lease,
                )
                .is_some_and(|l| l["spec"]["holderIdentity"] == "node-a/agent-node-a")
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    child.kill().unwrap();
    let killed = finish(child);
    assert_eq!(killed.code(), None, "killed before it finished: {killed}");
    assert!(env.snapshots_of("app", "db").is_empty());

    let next = env.once("node-a", &[]);
    next.assert_ok();
    assert_eq!(status(&results(&next), "app/db"), "succeeded", "{next}");
    env.repo.cmd(&["check", "--read-data"]).assert_ok();
    assert_trees_equal(&mount, &env.restore_volume("app", "db"));
}

/// An API server that is down fails the run clearly and writes nothing; one that answers
/// 500 a few times delays it.
#[test]
fn api_server_down_or_failing() {
    let env = Env::one_volume();
    fill(&env.mount("app", "db-0", "db"), 41);
    // 500 (kube's client itself retries 503 and 429 for minutes, which looks like a hang).
    env.fake.faults().fail_next(10_000, 500);
    let down = env.once("node-a", &[]);
    down.assert_code(code::FAILURE);
    down.assert_stderr_contains("Kubernetes API");
    assert!(env.snapshots_of("app", "db").is_empty());

    env.fake.faults().clear();
    env.fake.faults().fail_next(3, 500);
    let flaky = env.once("node-a", &[]);
    flaky.assert_ok();
    assert_eq!(status(&results(&flaky), "app/db"), "succeeded", "{flaky}");
    assert_eq!(env.snapshots_of("app", "db").len(), 1);
    env.repo.cmd(&["check"]).assert_ok();
}

/// A missing subpath fails that volume only, with an Event saying why; the run exits 3.
#[test]
fn missing_subpath_fails_only_its_volume() {
    let env = Env::new(
        ClusterBuilder::new()
            .node("node-a")
            .namespace("app", &[])
            .rbd_pvc("app", "db", "1Gi", &[])
            .cephfs_pvc("app", "files", "1Gi", &[("holdfast.io/paths", "data,gone")])
            .pod("app", "db-0", "node-a", &["db", "files"]),
    );
    fill(&env.mount("app", "db-0", "db"), 51);
    fill(&env.mount("app", "db-0", "files").join("data"), 52);
    let run = env.once("node-a", &["--no-maintenance"]);
    run.assert_code(code::PARTIAL);
    let r = results(&run);
    assert_eq!(status(&r, "app/db"), "succeeded");
    assert_eq!(status(&r, "app/files"), "failed");
    let reason = r["app/files"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("gone") && reason.contains("does not exist"),
        "{reason}"
    );
    assert!(
        env.snapshots_of("app", "files").is_empty(),
        "no partial snapshot"
    );
    let ev = env.events("app", "files");
    assert!(
        ev.iter()
            .any(|(t, r, n)| t == "Warning" && r == "BackupFailed" && n.contains("gone")),
        "{ev:?}"
    );
}

/// A Lease held by an agent that died blocks the volume only until it expires.
#[test]
fn lease_of_a_dead_agent_blocks_only_until_it_expires() {
    let env = Env::one_volume();
    fill(&env.mount("app", "db-0", "db"), 61);
    let name = holdfast_agent::lease::volume_lease_name("app/db");
    let lease = |renewed: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": AGENT_NS},
            "spec": {"holderIdentity": "node-x/agent-node-x", "leaseDurationSeconds": 60,
                     "acquireTime": renewed, "renewTime": renewed}
        })
    };
    let now = chrono_like_now(0);
    env.fake.insert(&lease(&now));
    let busy = env.once("node-a", &["--no-maintenance"]);
    busy.assert_ok();
    let r = results(&busy);
    assert_eq!(status(&r, "app/db"), "skipped");
    assert!(
        r["app/db"]["reason"].as_str().unwrap().contains("node-x"),
        "{r:#?}"
    );
    assert!(env.snapshots_of("app", "db").is_empty());

    // Two minutes later, never renewed: expired.
    env.fake.insert(&lease(&chrono_like_now(-120)));
    let taken = env.once("node-a", &["--no-maintenance"]);
    taken.assert_ok();
    assert_eq!(status(&results(&taken), "app/db"), "succeeded", "{taken}");
    let l = env
        .fake
        .get_value("coordination.k8s.io", "v1", "leases", Some(AGENT_NS), &name)
        .unwrap();
    assert_eq!(l["spec"]["leaseTransitions"], 1, "{l:#}");
}

/// A kubelet directory that is not the node's fails at once, naming the flag.
#[test]
fn wrong_kubelet_dir_is_a_clear_error() {
    let env = Env::one_volume();
    // A kubelet directory of another machine: a pods/ directory without these pods.
    let empty = env.dir.path().join("kubelet").join("elsewhere");
    std::fs::create_dir_all(empty.join("pods")).unwrap();
    let c = env.agent("elsewhere-as-node-a", &["--once"]);
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_code(code::FAILURE);
    run.assert_stderr_contains("--kubelet-dir");
    assert!(env.snapshots_of("app", "db").is_empty());
}

/// `holdfast agent manifests` prints the install manifests.
#[test]
fn manifests_are_printed() {
    let repo = Repo::uninit();
    let run = repo.cmd(&[
        "agent",
        "manifests",
        "--namespace",
        "backup",
        "--repository",
        "s3:http://nas:9000/b/k",
    ]);
    run.assert_ok();
    let out = run.stdout_str();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "DaemonSet",
        "ConfigMap",
    ] {
        assert!(
            out.contains(&format!("kind: {kind}")),
            "{kind} missing:\n{out}"
        );
    }
    assert!(out.contains("namespace: backup"));
    assert!(out.contains("s3:http://nas:9000/b/k"));
}

/// RFC 3339 with microseconds, `offset_s` from now (a Lease's MicroTime).
fn chrono_like_now(offset_s: i64) -> String {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let t = Timestamp::now() + SignedDuration::from_secs(offset_s);
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// The agent on a real CephFS: the volume's directory is a bind mount of a subvolume-shaped
/// directory of a ceph-fuse mount, as ceph-csi stages and the kubelet publishes it.
mod cephfs {
    use super::*;

    struct Mounts(Vec<PathBuf>);
    impl Drop for Mounts {
        fn drop(&mut self) {
            for m in self.0.iter().rev() {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }

    #[test]
    fn volume_on_cephfs_is_backed_up_and_restored() {
        let conf = std::env::var_os("HOLDFAST_TEST_CEPH_CONF");
        require(conf.is_some(), "a Ceph cluster with CephFS (HOLDFAST_TEST_CEPH_CONF; scripts/s3-test-servers.sh start)");
        require(holdfast_e2e::is_root(), "root (ceph-fuse and bind mounts)");
        let conf = PathBuf::from(conf.unwrap());
        let env = Env::new(
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .cephfs_pvc("app", "share", "1Gi", &[("holdfast.io/paths", "data")])
                .pod("app", "nas-0", "node-a", &["share"]),
        );
        let fsroot = env.dir.path().join("cephfs");
        std::fs::create_dir_all(&fsroot).unwrap();
        let st = Command::new("ceph-fuse")
            .arg(format!(
                "--pid-file={}",
                env.dir.path().join("ceph-fuse.pid").display()
            ))
            .arg(&fsroot)
            .env("CEPH_CONF", &conf)
            .status()
            .expect("run ceph-fuse");
        assert!(st.success(), "ceph-fuse failed");
        let mut mounts = Mounts(vec![fsroot.clone()]);
        let fstype = Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE"])
            .arg(&fsroot)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&fstype.stdout).trim(),
            "fuse.ceph-fuse",
            "not a CephFS mount"
        );
        let sub = fsroot.join(format!(
            "volumes/csi/csi-vol-{}/{}",
            std::process::id(),
            "5f1e"
        ));
        fill(&sub.join("data"), 71);
        fill(&sub.join("skipped"), 72);
        let target = env.mount("app", "nas-0", "share");
        let st = Command::new("mount")
            .arg("--bind")
            .arg(&sub)
            .arg(&target)
            .status()
            .unwrap();
        assert!(st.success(), "bind mount failed");
        mounts.0.push(target.clone());

        let run = env.once("node-a", &["--no-maintenance"]);
        run.assert_ok();
        assert_eq!(status(&results(&run), "app/share"), "succeeded", "{run}");
        let restored = env.restore_volume("app", "share");
        assert_trees_equal(&sub.join("data"), &restored.join("data"));
        assert!(!restored.join("skipped").exists());
        // The second run reads nothing again (CephFS inode numbers and times are stable).
        let again = env.once("node-a", &["--no-maintenance"]);
        again.assert_ok();
        assert_eq!(
            results(&again)["app/share"]["summary"]["bytes_read"],
            0,
            "{again}"
        );
        drop(mounts);
    }
}

/// Settings that are missing are usage errors (exit 2) that say what to set, before anything
/// is contacted.
#[test]
fn missing_settings_are_usage_errors() {
    let env = Env::one_volume();
    let mut c = env.agent("node-a", &["--once"]);
    c.env_remove("NODE_NAME");
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_code(code::USAGE);
    run.assert_stderr_contains("NODE_NAME");

    let mut c = env.agent("node-a", &["--once"]);
    c.env("POD_NAMESPACE", "nowhere");
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_code(code::USAGE);
    run.assert_stderr_contains("\"nowhere\"");

    let cfg = env.dir.path().join("agent.yaml");
    write_file(&cfg, b"concurency: 2\n");
    let mut c = env.agent("node-a", &["--once"]);
    c.env("HOLDFAST_AGENT_CONFIG", &cfg);
    let run = run_command(c, COMMAND_TIMEOUT);
    run.assert_code(code::USAGE);
    run.assert_stderr_contains("concurency");
}

/// Point-in-time backups from CSI VolumeSnapshots, with the CSI simulator on plain
/// directories (a snapshot is a copy taken when the VolumeSnapshot is made): the agent's
/// whole flow, its failures and its cleanup, without Ceph or root.
mod snapshots {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// One node, RBD PVC `app/db` mounted by `app/db-0`, the snapshot API and its classes,
    /// the simulator; the source filled with `fill(.., 41)`.
    fn env() -> (Env, PathBuf) {
        let env = Env::new(
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .rbd_pvc("app", "db", "1Gi", &[])
                .pod("app", "db-0", "node-a", &["db"])
                .snapshot_classes(),
        )
        .with_sim(Storage::dir);
        let src = env.source("app", "db-0", "db");
        fill(&src, 41);
        (env, src)
    }

    /// What a snapshot's tag `key` says.
    fn tag(snap: &Value, key: &str) -> Option<String> {
        snap["tags"].as_array()?.iter().find_map(|t| {
            t.as_str()?
                .strip_prefix(key)?
                .strip_prefix('=')
                .map(str::to_string)
        })
    }

    /// A file rewritten while the backup runs is restored as it was when the snapshot was
    /// taken; the snapshot's time is the VolumeSnapshot's; nothing is left behind.
    #[test]
    fn backup_reads_the_snapshot_not_the_live_volume() {
        let (env, src) = env();
        let before = env.dir.path().join("before");
        copy_tree(&src, &before);
        let taken: Arc<Mutex<Option<chrono::DateTime<chrono::Utc>>>> = Arc::default();
        let (t2, s2) = (taken.clone(), src.clone());
        env.sim().on_snapshot_taken(move |_| {
            *t2.lock().unwrap() = Some(chrono::Utc::now());
            // The application writes on after the snapshot.
            // (Runs again for the second backup: must not fail then.)
            std::fs::write(s2.join("a.txt"), b"written after the snapshot\n").unwrap();
            let _ = std::fs::remove_file(s2.join("sub/blob.bin"));
        });
        let run = env.once("node-a", &["--no-maintenance"]);
        run.assert_ok();
        let r = &results(&run)["app/db"];
        assert_eq!(r["status"], "succeeded", "{run}");
        assert_eq!(r["method"], "snapshot", "{run}");
        assert_eq!(
            std::fs::read(src.join("a.txt")).unwrap(),
            b"written after the snapshot\n",
            "the hook ran"
        );
        assert_trees_equal(&before, &env.restore_volume("app", "db"));
        let snaps = env.snapshots_of("app", "db");
        assert_eq!(snaps.len(), 1);
        assert_eq!(tag(&snaps[0], "method").as_deref(), Some("snapshot"));
        assert!(
            tag(&snaps[0], "snapshot-handle").is_some(),
            "{:?}",
            snaps[0]
        );
        // The record's time is the snapshot's creation (RFC 3339 to the second), not the
        // backup's start or end.
        let t = chrono::DateTime::parse_from_rfc3339(snaps[0]["time"].as_str().unwrap()).unwrap();
        let taken = taken.lock().unwrap().expect("snapshot taken");
        let d = (t.with_timezone(&chrono::Utc) - taken)
            .num_milliseconds()
            .abs();
        assert!(d < 1500, "snapshot time {t} vs taken {taken}");
        env.assert_no_temporaries("after the backup");
        env.sim()
            .wait_clean(Duration::from_secs(10))
            .unwrap_or_else(|s| panic!("storage left behind: {s:?}"));
        // A second run is incremental against the first (same recorded paths).
        let again = env.once("node-a", &["--no-maintenance"]);
        again.assert_ok();
        let r = &results(&again)["app/db"];
        assert!(r["parent"].is_string(), "{again}");
        env.assert_no_temporaries("after the second backup");
        assert!(env.sim().errors().is_empty(), "{:?}", env.sim().errors());
    }

    /// Without the snapshot API the volume is read live, tagged so, with one Warning Event.
    #[test]
    fn no_snapshot_api_reads_live_and_warns() {
        let env = Env::one_volume();
        fill(&env.mount("app", "db-0", "db"), 42);
        let run = env.once("node-a", &["--no-maintenance"]);
        run.assert_ok();
        assert_eq!(results(&run)["app/db"]["method"], "live", "{run}");
        let warned: Vec<_> = env
            .events("app", "db")
            .into_iter()
            .filter(|(t, r, _)| t == "Warning" && r == "SnapshotUnavailable")
            .collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].2.contains("no VolumeSnapshot API"), "{warned:?}");
        let snaps = env.snapshots_of("app", "db");
        assert_eq!(tag(&snaps[0], "method").as_deref(), Some("live"));
        // `csi` refuses to read live.
        let mut pvc = env
            .fake
            .get_value("", "v1", "persistentvolumeclaims", Some("app"), "db")
            .unwrap();
        pvc["metadata"]["annotations"]["holdfast.io/snapshot-source"] = json!("csi");
        env.fake.insert(&pvc);
        let run = env.once("node-a", &["--no-maintenance"]);
        assert_eq!(run.code(), Some(code::FAILURE), "{run}");
        let r = &results(&run)["app/db"];
        assert_eq!(r["status"], "failed");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("snapshot-source is csi"),
            "{run}"
        );
    }

    /// Turns one of the simulator's faults on or off.
    type Knob<'a> = Box<dyn Fn(bool) + 'a>;
    /// Whether the agent has reached a step.
    type Reached<'a> = Box<dyn Fn() -> bool + 'a>;

    fn write_config(env: &Env, text: &str) -> PathBuf {
        let p = env.dir.path().join("agent.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Each step's failure (snapshot error, not ready in time, PVC not bound, pod not
    /// running) fails the volume with that step named, in the result and the Event; nothing
    /// is left behind.
    #[test]
    fn each_failing_step_is_named_and_cleaned_up() {
        let (env, _src) = env();
        let cfg = write_config(
            &env,
            "snapshots:\n  readyTimeoutSeconds: 2\n  bindTimeoutSeconds: 2\n  podTimeoutSeconds: 2\n",
        );
        let cfg = cfg.display().to_string();
        let sim = env.sim();
        let cases: Vec<(&str, Knob)> = vec![
            (
                "failed: rbd: pool full",
                Box::new(|on| sim.snapshot_error(on.then_some("rbd: pool full"))),
            ),
            (
                "not ready to use within 2 s",
                Box::new(|on| sim.snapshots_never_ready(on)),
            ),
            (
                "not bound within 2 s",
                Box::new(|on| sim.pvcs_never_bind(on)),
            ),
            (
                "not running within 2 s",
                Box::new(|on| sim.pods_unschedulable(on.then_some("0/1 nodes are available"))),
            ),
        ];
        for (want, knob) in &cases {
            knob(true);
            let run = env.once("node-a", &["--no-maintenance", "--config", &cfg]);
            knob(false);
            assert_eq!(run.code(), Some(code::FAILURE), "{want}: {run}");
            let r = &results(&run)["app/db"];
            assert_eq!(r["status"], "failed", "{want}: {run}");
            let reason = r["reason"].as_str().unwrap();
            assert!(reason.contains(want), "{want}: {reason}");
            assert!(
                env.events("app", "db")
                    .iter()
                    .any(|(t, r, n)| t == "Warning" && r == "BackupFailed" && n.contains(want)),
                "{want}: {:?}",
                env.events("app", "db")
            );
            env.assert_no_temporaries(want);
            sim.wait_clean(Duration::from_secs(10))
                .unwrap_or_else(|s| panic!("{want}: storage left behind: {s:?}"));
        }
        assert!(env.snapshots_of("app", "db").is_empty());
    }

    /// An agent killed after the VolumeSnapshot, after the PVC, after the pod, or while it
    /// reads leaves objects behind; its next start deletes them and the backup succeeds.
    #[test]
    fn a_killed_agents_leftovers_are_deleted_at_the_next_start() {
        let (env, src) = env();
        write_random(&src.join("big.bin"), 12 << 20, 43);
        let sim = env.sim();
        let count = |plural: &str| {
            env.temporaries()
                .iter()
                .filter(|t| t.starts_with(plural))
                .count()
        };
        let steps: Vec<(&str, Knob, Reached)> = vec![
            (
                "after the VolumeSnapshot",
                Box::new(|on| sim.snapshots_never_ready(on)),
                Box::new(|| count("volumesnapshots") == 1),
            ),
            (
                "after the PVC",
                Box::new(|on| sim.pvcs_never_bind(on)),
                Box::new(|| count("persistentvolumeclaims") == 1),
            ),
            (
                "after the pod",
                Box::new(|on| sim.pods_unschedulable(on.then_some("0/1 nodes are available"))),
                Box::new(|| count("pods") == 1),
            ),
            (
                "while reading",
                Box::new(|_| {}),
                Box::new(|| {
                    env.fake
                        .list_values("", "v1", "pods", Some("app"))
                        .iter()
                        .any(|p| {
                            p["metadata"]["labels"]["holdfast.io/role"].is_string()
                                && p["status"]["phase"] == "Running"
                        })
                }),
            ),
        ];
        for (i, (step, knob, reached)) in steps.iter().enumerate() {
            // New data each time, so the read is slow (1 MiB/s uploads) and can be killed.
            write_random(&src.join("big.bin"), 12 << 20, 50 + i as u64);
            knob(true);
            let mut child = spawn(env.agent(
                "node-a",
                &[
                    "--once",
                    "--json",
                    "--no-maintenance",
                    "--limit-upload",
                    "1024",
                ],
            ));
            wait_until(&mut child, Duration::from_secs(60), step, reached);
            if *step == "while reading" {
                std::thread::sleep(Duration::from_secs(2));
            }
            child.kill().unwrap();
            let killed = finish(child);
            assert_eq!(
                killed.code(),
                None,
                "{step}: killed before it finished: {killed}"
            );
            knob(false);
            assert!(
                !env.temporaries().is_empty(),
                "{step}: something to clean up"
            );
            let next = env.once("node-a", &["--no-maintenance"]);
            next.assert_ok();
            let r = results(&next);
            assert_eq!(status(&r, "app/db"), "succeeded", "{step}: {next}");
            let swept = next.json()["swept"].as_array().cloned().unwrap_or_default();
            assert!(!swept.is_empty(), "{step}: nothing swept: {next}");
            env.assert_no_temporaries(step);
            sim.wait_clean(Duration::from_secs(10))
                .unwrap_or_else(|s| panic!("{step}: storage left behind: {s:?}"));
        }
        env.repo.cmd(&["check", "--read-data"]).assert_ok();
        assert_trees_equal(&src, &env.restore_volume("app", "db"));
    }

    /// The elected agent deletes any node's temporary objects that are a day old (their
    /// agent went away with its node); younger ones of other nodes are left to their agent.
    #[test]
    fn maintenance_sweeps_day_old_leftovers_of_any_node() {
        let (env, _src) = env();
        let old = "2026-01-01T00:00:00Z";
        let labels = json!({
            "app.kubernetes.io/managed-by": "holdfast",
            "holdfast.io/role": "snapshot-read",
            "holdfast.io/node": "gone-node",
            "holdfast.io/run": "0123456789",
        });
        let young = {
            let mut l = labels.clone();
            l["holdfast.io/node"] = json!("node-b");
            l
        };
        env.fake.insert(&json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "hf-db-0123456789", "namespace": "app", "labels": labels,
                         "creationTimestamp": old},
            "spec": {"source": {"persistentVolumeClaimName": "gone"}},
        }));
        env.fake.insert(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hf-db-0123456789", "namespace": "app", "labels": labels,
                         "creationTimestamp": old},
            "spec": {"nodeName": "gone-node", "containers": [{"name": "hold", "image": "pause"}]},
        }));
        env.fake.insert(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hf-db-9876543210", "namespace": "app", "labels": young},
            "spec": {"nodeName": "node-b", "containers": [{"name": "hold", "image": "pause"}]},
        }));
        let run = env.once("node-a", &[]);
        run.assert_ok();
        let swept = run.json()["maintenance"]["swept"].clone();
        assert_eq!(
            swept,
            json!([
                "Pod app/hf-db-0123456789",
                "VolumeSnapshot app/hf-db-0123456789"
            ]),
            "{run}"
        );
        assert_eq!(env.temporaries(), ["pods app/hf-db-9876543210"]);
    }

    /// A PVC that no pod mounts is backed up from a snapshot, once, by the one agent that
    /// holds the unmounted-PVC Lease, on its own node.
    #[test]
    fn unmounted_pvc_is_backed_up_from_a_snapshot_once() {
        let env = Env::new(
            ClusterBuilder::new()
                .node("node-a")
                .node("node-b")
                .namespace("app", &[])
                .rbd_pvc("app", "db", "1Gi", &[])
                .rbd_pvc("app", "archive", "1Gi", &[])
                .pod("app", "db-0", "node-a", &["db"])
                .pod("app", "helper-0", "node-a", &["archive"])
                .snapshot_classes(),
        )
        .with_sim(Storage::dir);
        fill(&env.source("app", "db-0", "db"), 44);
        let archive = env.source("app", "helper-0", "archive");
        fill(&archive, 45);
        // The pod that used it is gone: nothing mounts `archive` now.
        env.fake.delete::<Pod>(Some("app"), "helper-0");
        let a = spawn(env.agent("node-a", &["--once", "--json", "--no-maintenance"]));
        let b = spawn(env.agent("node-b", &["--once", "--json", "--no-maintenance"]));
        let (a, b) = (finish(a), finish(b));
        a.assert_ok();
        b.assert_ok();
        let done: Vec<String> = [&a, &b]
            .iter()
            .flat_map(|r| results(r).into_iter())
            .filter(|(k, v)| k == "app/archive" && v["status"] == "succeeded")
            .map(|(_, v)| v["node"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(done.len(), 1, "backed up once\n{a}\n{b}");
        let snaps = env.snapshots_of("app", "archive");
        assert_eq!(snaps.len(), 1);
        assert_eq!(tag(&snaps[0], "method").as_deref(), Some("snapshot"));
        assert_trees_equal(&archive, &env.restore_volume("app", "archive"));
        env.assert_no_temporaries("after the backup");
    }
}

/// `holdfast agent restore`: a volume's snapshot into a new PVC (made by the restore), one
/// folder of it, and the guard on PVCs that running pods use; block volumes as images.
mod restore {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `holdfast agent restore ARGS` as the agent of `node-a` would run it under
    /// `kubectl exec`: settings from the environment, as the DaemonSet sets them.
    fn agent_restore(env: &Env, args: &[&str]) -> Run {
        let mut all = vec!["--json", "agent", "restore"];
        all.extend(args);
        let mut c = env.repo.command(&all);
        c.env("KUBECONFIG", &env.kubeconfig)
            .env("NODE_NAME", "node-a")
            .env("POD_NAME", "agent-node-a")
            .env("POD_NAMESPACE", AGENT_NS)
            .env("HOLDFAST_KUBELET_DIR", env.kubelet_dir("node-a"))
            .env("HOLDFAST_CLUSTER_NAME", CLUSTER)
            .env("HOLDFAST_LOG", "holdfast_agent=info,holdfast=warn");
        run_command(c, COMMAND_TIMEOUT)
    }

    fn env_with(builder: ClusterBuilder) -> Env {
        Env::new(builder.snapshot_classes()).with_sim(Storage::dir)
    }

    #[test]
    fn into_a_new_pvc_one_folder_and_not_over_a_running_app() {
        let env = env_with(
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .rbd_pvc("app", "db", "1Gi", &[])
                .pod("app", "db-0", "node-a", &["db"]),
        );
        let src = env.source("app", "db-0", "db");
        fill(&src, 61);
        std::fs::hard_link(src.join("a.txt"), src.join("sub/a-link.txt")).unwrap();
        std::fs::set_permissions(
            src.join("sub/deeper"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        if holdfast_e2e::is_root() {
            std::os::unix::fs::chown(src.join("sub/blob.bin"), Some(1000), Some(1001)).unwrap();
        }
        env.once("node-a", &["--no-maintenance"]).assert_ok();

        // A running pod uses `db`: refused without --force, nothing created.
        let r = agent_restore(&env, &["-n", "app", "--pvc", "db"]);
        assert_eq!(r.code(), Some(code::USAGE), "{r}");
        assert!(r.stderr_str().contains("in use by pod db-0"), "{r}");
        env.assert_no_temporaries("after the refusal");

        // Into a new PVC: made with the source's class and size, written, pod deleted.
        let r = agent_restore(&env, &["-n", "app", "--pvc", "db", "--to", "db-copy"]);
        r.assert_ok();
        let rep = r.json();
        assert_eq!(rep["created_pvc"], true, "{r}");
        assert_eq!(rep["via"], "restore-pod");
        let pvc = env
            .fake
            .get_value("", "v1", "persistentvolumeclaims", Some("app"), "db-copy")
            .expect("target PVC");
        assert_eq!(pvc["spec"]["storageClassName"], "rook-ceph-block");
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert!(pvc["metadata"]["annotations"]["holdfast.io/restored-from"].is_string());
        env.assert_no_temporaries("after the restore");
        let copy = env
            .sim()
            .volume_path("app", "db-copy")
            .expect("provisioned");
        assert_trees_equal(&src, &copy);

        // One folder into an existing PVC, others untouched.
        std::fs::remove_dir_all(copy.join("sub")).unwrap();
        let r = agent_restore(
            &env,
            &[
                "-n", "app", "--pvc", "db", "--to", "db-copy", "--path", "sub",
            ],
        );
        r.assert_ok();
        assert_eq!(r.json()["created_pvc"], false, "{r}");
        let copy = env
            .sim()
            .volume_path("app", "db-copy")
            .expect("provisioned");
        assert_trees_equal(&src.join("sub"), &copy.join("sub"));
        assert!(copy.join("a.txt").exists());
        env.assert_no_temporaries("after the folder restore");

        // A snapshot of another volume is refused by ID.
        let r = agent_restore(&env, &["-n", "app", "--pvc", "other"]);
        assert_ne!(r.code(), Some(0), "{r}");
    }

    /// One HTTP/1.0 request to the agent on `port` with the UI's bearer token; (status
    /// line and headers, body).
    fn http(
        port: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (String, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{auth}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        (head.to_string(), body.to_string())
    }

    /// The daemon serves the web UI at /ui when its login file exists: login required, the
    /// volume's snapshot listed, the coverage page from the agent's audit, and a folder
    /// restored into a new PVC through the agent's restore.
    #[test]
    fn web_ui_in_the_agent_lists_covers_and_restores_into_a_pvc() {
        let env = env_with(
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .rbd_pvc("app", "db", "1Gi", &[])
                .rbd_pvc("app", "scratch", "1Gi", &[("holdfast.io/schedule", "")])
                .pod("app", "db-0", "node-a", &["db", "scratch"]),
        );
        let src = env.source("app", "db-0", "db");
        fill(&src, 62);
        env.once("node-a", &["--no-maintenance"]).assert_ok();
        let snap = env.snapshots_of("app", "db").pop().expect("snapshot");
        let id = snap["id"].as_str().unwrap().to_string();

        let token = "restore-token-0123456789";
        let login = env.dir.path().join("ui-logins");
        std::fs::write(&login, format!("restore:{token}\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut c = env.agent(
            "node-a",
            &[
                "--interval",
                "3600",
                "--no-maintenance",
                "--listen",
                &listen,
                "--ui-login-file",
                login.to_str().unwrap(),
            ],
        );
        let log = env.dir.path().join("agent-ui.log");
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child: Child = c.spawn().expect("agent");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "the agent exited");
            assert!(std::time::Instant::now() < deadline, "no UI after 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }

        // Without a login: sent to the login page, nothing of the repository shown.
        let (head, body) = http(port, "GET", "/ui", None, "");
        assert!(!body.contains(&id[..8]), "{head}\n{body}");
        assert!(!body.contains(token));
        // `/` leads to the UI.
        let (head, _) = http(port, "GET", "/", None, "");
        assert!(head.contains("/ui"), "{head}");

        let (head, body) = http(port, "GET", "/ui", Some(token), "");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            body.contains(&id[..8]),
            "start page lists the snapshot:\n{body}"
        );
        assert!(!body.contains(token));

        // Coverage from the agent's audit: db backed up, scratch opted out without a
        // reason (so uncovered).
        let (_, body) = http(port, "GET", "/ui/coverage", Some(token), "");
        assert!(
            body.contains("scratch") && body.contains("uncovered"),
            "{body}"
        );
        assert!(body.contains("db") && body.contains("ok"), "{body}");

        // Another namespace is refused with the reason.
        let form = |ns: &str, pvc: &str, path: &str| {
            format!("snapshot={id}&path_enc={path}&namespace={ns}&pvc={pvc}")
        };
        let (_, body) = http(
            port,
            "POST",
            "/ui/restore",
            Some(token),
            &form("other", "x", "%2Fapp%2Fdb%2Fsub"),
        );
        assert!(body.contains("stays in its namespace"), "{body}");

        // One folder into a new PVC, through the agent's restore.
        let (_, body) = http(
            port,
            "POST",
            "/ui/restore",
            Some(token),
            &form("app", "db-copy", "%2Fapp%2Fdb%2Fsub"),
        );
        assert!(
            body.contains("restored") && body.contains("db-copy"),
            "{body}"
        );
        let copy = env
            .sim()
            .volume_path("app", "db-copy")
            .expect("provisioned");
        assert_trees_equal(&src.join("sub"), &copy.join("sub"));
        assert!(!copy.join("a.txt").exists(), "only the folder was restored");
        env.assert_no_temporaries("after the UI's restore");

        // The restore shows in the agent's activity.
        let (_, body) = http(port, "GET", "/ui", Some(token), "");
        assert!(body.contains("into app/db-copy"), "{body}");

        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }

    /// A block volume is backed up from a snapshot as one sparse image and restored onto a
    /// new block PVC byte for byte.
    #[test]
    fn block_volume_is_an_image_and_restores_byte_identical() {
        let env = env_with(
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .block_pvc("app", "raw", "64Mi", &[])
                .pod("app", "vm-0", "node-a", &["raw"]),
        );
        let dev = env.source("app", "vm-0", "raw");
        // 64 MiB, mostly never written: a few data runs.
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
            f.set_len(64 << 20).unwrap();
            for (i, off) in [0u64, 5 << 20, 40 << 20].iter().enumerate() {
                f.seek(SeekFrom::Start(*off)).unwrap();
                f.write_all(&holdfast_e2e::random_bytes(1 << 20, 70 + i as u64))
                    .unwrap();
            }
        }
        let run = env.once("node-a", &["--no-maintenance"]);
        run.assert_ok();
        let r = &results(&run)["app/raw"];
        assert_eq!(r["status"], "succeeded", "{run}");
        assert_eq!(r["method"], "snapshot");
        let snaps = env.snapshots_of("app", "raw");
        assert!(snaps[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "volume-mode=block"));
        let stored = r["summary"]["bytes_added_stored"].as_u64().unwrap();
        assert!(stored < 4 << 20, "zero runs are not stored: {stored}");
        let r = agent_restore(&env, &["-n", "app", "--pvc", "raw", "--to", "raw-copy"]);
        r.assert_ok();
        let pvc = env
            .fake
            .get_value("", "v1", "persistentvolumeclaims", Some("app"), "raw-copy")
            .unwrap();
        assert_eq!(pvc["spec"]["volumeMode"], "Block");
        let copy = env
            .sim()
            .volume_path("app", "raw-copy")
            .expect("provisioned");
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&dev).unwrap());
    }
}

/// Point-in-time backups read from real Ceph snapshots (the CSI simulator on the Ceph
/// cluster of scripts/s3-test-servers.sh): RBD clones and CephFS `.snap` directories.
mod ceph {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn ceph_env(builder: ClusterBuilder) -> Env {
        let conf = std::env::var_os("HOLDFAST_TEST_CEPH_CONF");
        require(
            conf.is_some(),
            "a Ceph cluster with CephFS (HOLDFAST_TEST_CEPH_CONF; scripts/s3-test-servers.sh start)",
        );
        require(
            holdfast_e2e::is_root(),
            "root (rbd-fuse, ceph-fuse, loop devices, mounts)",
        );
        let conf = PathBuf::from(conf.unwrap());
        Env::new(builder.snapshot_classes()).with_sim(|w| Storage::ceph(&conf, w))
    }

    /// Backs up `claim` while a hook rewrites a file right after the snapshot; the restore
    /// is the snapshot's content, and nothing is left on Ceph or in the API.
    fn point_in_time(claim: &str, builder: ClusterBuilder, paths: Option<&str>) {
        let env = ceph_env(builder);
        let src = env.source("app", "app-0", claim);
        // ext4's lost+found: not test data (removed before the copy, so times agree).
        let _ = std::fs::remove_dir(src.join("lost+found"));
        let data = match paths {
            Some(p) => src.join(p),
            None => src.clone(),
        };
        fill(&data, 81);
        write_random(&data.join("big.bin"), 6 << 20, 82);
        let before = env.dir.path().join("before");
        copy_tree(&data, &before);
        let hits = Arc::new(Mutex::new(0));
        let (h2, d2) = (hits.clone(), data.clone());
        env.sim().on_snapshot_taken(move |_| {
            *h2.lock().unwrap() += 1;
            std::fs::write(d2.join("a.txt"), b"after the snapshot\n").unwrap();
            let _ = std::fs::remove_file(d2.join("big.bin"));
        });
        let run = env.once("node-a", &["--no-maintenance"]);
        run.assert_ok();
        let r = &results(&run)[&format!("app/{claim}")];
        assert_eq!(r["status"], "succeeded", "{run}");
        assert_eq!(r["method"], "snapshot", "{run}");
        assert_eq!(*hits.lock().unwrap(), 1);
        let restored = env.restore_volume("app", claim);
        let restored = match paths {
            Some(p) => restored.join(p),
            None => restored,
        };
        assert_trees_equal(&before, &restored);
        env.assert_no_temporaries("after the backup");
        env.sim()
            .wait_clean(Duration::from_secs(30))
            .unwrap_or_else(|s| panic!("left on Ceph: {s:?}"));
        assert!(env.sim().errors().is_empty(), "{:?}", env.sim().errors());
    }

    #[test]
    fn rbd_volume_is_read_from_its_snapshot() {
        point_in_time(
            "db",
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .rbd_pvc("app", "db", "256Mi", &[])
                .pod("app", "app-0", "node-a", &["db"]),
            None,
        );
    }

    #[test]
    fn cephfs_volume_is_read_from_its_snapshot() {
        point_in_time(
            "share",
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .cephfs_pvc("app", "share", "256Mi", &[("holdfast.io/paths", "data")])
                .pod("app", "app-0", "node-a", &["share"]),
            Some("data"),
        );
    }

    /// `holdfast.io/snapshot-source: cephfs-snapdir`: the newest `.snap` directory is read,
    /// and no VolumeSnapshot is made.
    #[test]
    fn cephfs_snapdir_is_read_without_api_objects() {
        let env = ceph_env(
            ClusterBuilder::new()
                .node("node-a")
                .namespace("app", &[])
                .cephfs_pvc(
                    "app",
                    "share",
                    "256Mi",
                    &[("holdfast.io/snapshot-source", "cephfs-snapdir")],
                )
                .pod("app", "app-0", "node-a", &["share"]),
        );
        let src = env.source("app", "app-0", "share");
        fill(&src, 83);
        std::fs::create_dir(src.join(".snap/nightly")).expect("CephFS snapshot");
        let before = src.join(".snap/nightly");
        std::fs::write(src.join("a.txt"), b"after the snapshot\n").unwrap();
        let run = env.once("node-a", &["--no-maintenance"]);
        run.assert_ok();
        let r = &results(&run)["app/share"];
        assert_eq!(r["method"], "snapshot", "{run}");
        let snaps = env.snapshots_of("app", "share");
        assert!(snaps[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "snapshot-handle=.snap/nightly"));
        assert_trees_equal(&before, &env.restore_volume("app", "share"));
        assert!(
            !env.fake
                .requests()
                .iter()
                .any(|q| q.path.contains("volumesnapshots") && q.method == "POST"),
            "no VolumeSnapshot made"
        );
        std::fs::remove_dir(src.join(".snap/nightly")).unwrap();
    }
}

/// Scheduled holdfast commands (issue 12): jobs that are not volumes run on one agent per
/// schedule, with their outcome in the report, an Event and the job's Lease.
mod commands {
    use super::*;

    fn config(env: &Env, text: &str) -> String {
        let p = env.dir.path().join("commands.yaml");
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn by_name(run: &Run) -> BTreeMap<String, Value> {
        run.json()["commands"]
            .as_array()
            .unwrap_or_else(|| panic!("no commands in the report\n{run}"))
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    }

    #[test]
    fn commands_run_once_per_schedule_and_failures_are_reported() {
        let env = Env::new(
            ClusterBuilder::new()
                .node("node-a")
                .node("node-b")
                .namespace("app", &[]),
        );
        let cfg = config(
            &env,
            "commands:\n\
             - name: numbers\n  args: [backup, --stdin-from-command, --stdin-filename, numbers.txt, --tag, job=numbers, --, sh, -c, 'seq 1 5000']\n\
             - name: broken\n  args: [backup, --stdin-from-command, --, sh, -c, 'echo no route to the bucket >&2; exit 4']\n\
             - name: elsewhere\n  placement: eachNode\n  ifExists: /nonexistent/k3s/snapshots\n  args: [backup, /nonexistent/k3s/snapshots]\n",
        );
        let first = env.once("node-a", &["--config", &cfg]);
        let got = by_name(&first);
        assert_eq!(got["numbers"]["status"], "succeeded", "{first}");
        assert_eq!(got["broken"]["status"], "failed", "{first}");
        let why = got["broken"]["reason"].as_str().unwrap();
        assert!(
            why.contains("exited with status 4") && why.contains("no route to the bucket"),
            "{why}"
        );
        assert_eq!(got["elsewhere"]["status"], "skipped", "{first}");
        first.assert_code(3);
        let made = env.repo.snapshots(&["--tag", "job=numbers"]);
        assert_eq!(made.len(), 1);
        assert_eq!(
            made[0]["host"], CLUSTER,
            "the cluster is the host of a command's snapshot"
        );

        let events: Vec<(String, String)> = env
            .fake
            .list_values("events.k8s.io", "v1", "events", Some(AGENT_NS))
            .into_iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["note"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert!(
            events.iter().any(|(r, n)| r == "CommandFailed"
                && n.starts_with("broken:")
                && n.contains("status 4")),
            "{events:?}"
        );
        assert!(
            events.iter().any(|(r, _)| r == "CommandSucceeded"),
            "{events:?}"
        );

        // The other node's agent: the daily job ran, the failed one waits before a retry.
        let second = env.once("node-b", &["--config", &cfg]);
        let got = by_name(&second);
        assert_eq!(got["numbers"]["status"], "notDue", "{second}");
        assert_eq!(got["broken"]["status"], "notDue", "{second}");
        second.assert_ok();
        assert_eq!(env.repo.snapshots(&["--tag", "job=numbers"]).len(), 1);
    }

    #[test]
    fn a_bad_command_job_is_a_configuration_error() {
        let env = Env::one_volume();
        let cfg = config(&env, "commands:\n- name: p\n  args: [prune]\n");
        env.once("node-a", &["--config", &cfg])
            .assert_code(holdfast_e2e::exit::USAGE)
            .assert_stderr_contains("maintenance");
    }
}
