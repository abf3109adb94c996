//! # holdfast-fake-kube: a fake Kubernetes API server over real HTTP
//!
//! The agent's tests need an API server, and none can run on the build machines. This crate
//! serves the real Kubernetes REST API (paths, kinds, JSON bodies, `Status` errors, chunked
//! watch streams) from an in-process axum server on `127.0.0.1`, so the agent's real kube-rs
//! client is exercised: serialization, error decoding, pagination, watch resumption.
//!
//! ```no_run
//! # async fn demo() {
//! use holdfast_fake_kube::{fixtures::ClusterBuilder, FakeKube};
//! let fake = FakeKube::start().await;
//! let cluster = ClusterBuilder::new()
//!     .node("node-a")
//!     .namespace("app", &[])
//!     .rbd_pvc("app", "data", "1Gi", &[])
//!     .pod("app", "db-0", "node-a", &["data"])
//!     .seed(&fake);
//! fake.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig")).unwrap();
//! fake.faults().fail_next(1, 500);
//! # let _ = cluster;
//! # }
//! ```
//!
//! ## For test writers
//! - Start: [`FakeKube::start`] (async, current runtime) or [`FakeKube::start_blocking`] (own
//!   thread and runtime, for sync tests); [`FakeKube::builder`] sets the bookmark interval, the
//!   history size and whether `default`/`kube-system`/`kube-public`/`kube-node-lease` exist.
//! - Connect: `kube::Config::new(fake.url().parse()?)`, or [`FakeKube::write_kubeconfig`] and
//!   `KUBECONFIG` for `kube::Client::try_default()`.
//! - Seed and inspect: [`fixtures::ClusterBuilder`], [`FakeKube::insert`] /
//!   [`FakeKube::insert_yaml`] (no validation), typed [`FakeKube::get`] / [`FakeKube::list`] /
//!   [`FakeKube::delete`], raw [`FakeKube::get_value`] / [`FakeKube::list_values`].
//! - Kubelet tree on disk: [`kubelet::build`].
//! - Faults and the request log: [`FakeKube::faults`] ([`Faults`]), [`FakeKube::requests`],
//!   [`FakeKube::compact_history`] (next watch/continue from before is 410),
//!   [`FakeKube::close_watches`].
//! - More types: [`FakeKube::install_resource`] / [`FakeKube::uninstall_resource`]; the CSI
//!   snapshot API: [`fixtures::ClusterBuilder::snapshot_classes`] or
//!   [`fixtures::install_snapshot_api`].
//! - Controllers, ceph-csi and kubelets for snapshot-based backups (VolumeSnapshots, PVCs from
//!   them, pods that mount them, on plain directories or a real Ceph cluster):
//!   [`csi::CsiSim`].
//!
//! Every write takes the next value of one global resourceVersion counter and emits a watch
//! event; create sets `uid`, `creationTimestamp` and `generation: 1` (a spec change bumps it).
//!
//! ## Served
//! - core v1 namespaces, nodes, pods, persistentvolumeclaims, persistentvolumes, events,
//!   configmaps, secrets, serviceaccounts; storage.k8s.io/v1 storageclasses;
//!   coordination.k8s.io/v1 leases; events.k8s.io/v1 events; apps/v1 daemonsets;
//!   apiextensions.k8s.io/v1 customresourcedefinitions (a stored definition serves the
//!   custom resource it defines, in discovery too; deleting it stops that); plus any type
//!   a test installs with [`FakeKube::install_resource`] (it then behaves like a custom
//!   resource).
//! - `pods/exec` over WebSocket (`v5.channel.k8s.io`/`v4.channel.k8s.io`): the command runs
//!   on this machine with the container's literal `env` values, output streamed in chunks,
//!   the exit code in the final Status (see the `exec` module's docs). Everything else answers 404 `the server could not find the requested resource`.
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`.
//! - Verbs: get, list (all namespaces too, `limit`/`continue`), create (`generateName`),
//!   replace, patch (merge, strategic-as-merge, JSON patch, server-side apply), delete,
//!   deletecollection, watch; `status` subresource for pods, PVCs, PVs, nodes, namespaces and
//!   daemonsets; `dryRun=All`.
//!
//! ## Strict, as the real server is
//! - Names (DNS-1123 subdomain; label for namespaces), label keys and values, annotation keys:
//!   422 Invalid with `details.causes` (a label value like `@daily` is refused, as for real).
//! - Creating in a namespace that does not exist: 404 `namespaces "x" not found`. A body
//!   namespace or name that differs from the URL's: 400. A body kind/apiVersion that differs
//!   from the URL's: 400.
//! - A stale `metadata.resourceVersion` in a PUT or patch: 409 Conflict. PUT without one is an
//!   unconditional update. A resourceVersion sent on create is ignored.
//! - Field selectors accept only the fields the real server supports per kind (`metadata.name`,
//!   `metadata.namespace`; pods `spec.nodeName`, `status.phase`, ...; events `involvedObject.*` /
//!   `regarding.*`); anything else is 400 `field label not supported: X`.
//! - events.k8s.io/v1 Events need `eventTime`, `reportingController`, `reportingInstance`,
//!   `action`, `reason`, `type` (Normal/Warning) and `regarding`: 422. Leases: a MicroTime not in
//!   `2006-01-02T15:04:05.000000Z07:00` form or a field of the wrong type is 400 (a decode error,
//!   as on the real server); `leaseDurationSeconds <= 0` is 422.
//! - Built-in kinds are decoded as their k8s-openapi type: wrong field types are 400; unknown
//!   fields are rejected with `fieldValidation=Strict` and otherwise reported in a `Warning`
//!   header (the real default, `Warn`).
//! - Server-side apply without `fieldManager`: 422, as the real server answers it.
//! - Watches from a resourceVersion older than the kept history: an `ERROR` event with a 410
//!   `Expired` Status. [`FakeKube::compact_history`] forces that.
//! - List items of built-in types carry no `kind`/`apiVersion`, as the real server writes them.
//!
//! ## Not done
//! No authentication, admission, RBAC enforcement, garbage collection or owner references,
//! scheduling, controllers (a DaemonSet makes no pods, a PVC is not bound by anything but a
//! fixture or [`csi::CsiSim`], which also schedules and starts pods that mount PVCs), field managers (apply never conflicts), strategic-merge list merging (lists are
//! replaced), protobuf or table output, aggregated discovery, `resourceVersionMatch`, or
//! consistent snapshots across list pages (later pages see current objects). Deleting a pod
//! removes it at once (there is no kubelet to confirm); deleting a namespace removes its
//! contents at once.
#![deny(missing_docs)]

pub mod csi;
pub mod error;
pub mod faults;
pub mod fixtures;
pub mod kubelet;
pub mod resources;
pub mod selectors;
pub mod validation;

mod discovery;
mod exec;
mod server;
mod store;
mod verbs;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

pub use error::{ApiError, Cause};
pub use faults::{Faults, RequestRecord};
pub use resources::ResourceType;

use store::{meta_mut, name_of, namespace_of, ChangeType, StoreState};

/// State shared by the server and the test's handle.
pub(crate) struct Shared {
    store: Mutex<StoreState>,
    resources: RwLock<Vec<ResourceType>>,
    /// The types served because a stored CustomResourceDefinition defines them.
    from_crds: Mutex<Vec<(String, String, String)>>,
    pub(crate) faults: Faults,
    pub(crate) bookmark_interval: Duration,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, StoreState> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn resources(&self) -> Vec<ResourceType> {
        self.resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves exactly the types the stored CustomResourceDefinitions define: new ones are
    /// installed, those of deleted definitions removed (types installed by a test stay).
    pub(crate) fn sync_crds(&self) {
        let Some(crd_res) = self.resource(resources::CRD_GROUP, "v1", "customresourcedefinitions")
        else {
            return;
        };
        let wanted: Vec<ResourceType> = self
            .lock()
            .list(&crd_res, None)
            .into_iter()
            .flat_map(resources::types_of_crd)
            .collect();
        let mut from_crds = self.from_crds.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = self.resources.write().unwrap_or_else(|e| e.into_inner());
        r.retain(|x| {
            !from_crds
                .iter()
                .any(|(g, v, p)| x.is(g, v, p) && !wanted.iter().any(|w| w.is(g, v, p)))
        });
        from_crds.clear();
        for w in wanted {
            r.retain(|x| !x.is(&w.group, &w.version, &w.plural));
            from_crds.push((w.group.clone(), w.version.clone(), w.plural.clone()));
            r.push(w);
        }
    }

    fn resource_for(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.resources()
            .into_iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
    }

    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.resources()
            .into_iter()
            .find(|r| r.is(group, version, plural))
    }
}

/// Settings for a fake server; start it with [`Builder::start`] or
/// [`Builder::start_blocking`].
#[derive(Clone, Debug)]
pub struct Builder {
    bookmark_interval: Duration,
    history_limit: usize,
    default_namespaces: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            bookmark_interval: Duration::from_secs(30),
            history_limit: 10_000,
            default_namespaces: true,
        }
    }
}

impl Builder {
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK (default 30 s).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// How many changes the watch history keeps (default 10,000); older resourceVersions
    /// answer 410 Expired.
    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n.max(1);
        self
    }

    /// Whether to create `default`, `kube-system`, `kube-public` and `kube-node-lease` at start
    /// (default true, as every real cluster has them).
    pub fn default_namespaces(mut self, yes: bool) -> Self {
        self.default_namespaces = yes;
        self
    }

    fn shared(&self) -> Arc<Shared> {
        let sh = Arc::new(Shared {
            store: Mutex::new(StoreState::new(self.history_limit)),
            resources: RwLock::new(resources::default_resources()),
            from_crds: Mutex::default(),
            faults: Faults::default(),
            bookmark_interval: self.bookmark_interval,
        });
        if self.default_namespaces {
            let res = sh
                .resource("", "v1", "namespaces")
                .expect("namespaces served");
            let mut st = sh.lock();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                verbs::create_locked(&mut st, &res, None, body, &Default::default())
                    .expect("default namespace");
            }
        }
        sh
    }

    /// Starts the server on the current tokio runtime, on `127.0.0.1` and a free port.
    pub async fn start(self) -> FakeKube {
        self.start_on(0).await.expect("bind 127.0.0.1")
    }

    /// Starts the server on the current tokio runtime on `127.0.0.1:port` (0 = any free port).
    pub async fn start_on(self, port: u16) -> std::io::Result<FakeKube> {
        let sh = self.shared();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let app = server::router(sh.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeKube {
            shared: sh,
            addr,
            _guard: Guard::Task(task),
        })
    }

    /// Starts the server on its own thread with its own runtime, for synchronous tests.
    pub fn start_blocking(self) -> FakeKube {
        let sh = self.shared();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = server::router(sh.clone());
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                        .await
                        .expect("bind 127.0.0.1");
                    addr_tx
                        .send(listener.local_addr().expect("addr"))
                        .expect("send addr");
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn server thread");
        let addr = addr_rx.recv().expect("server address");
        FakeKube {
            shared: sh,
            addr,
            _guard: Guard::Thread(Some(stop_tx), Some(thread)),
        }
    }
}

enum Guard {
    Task(tokio::task::JoinHandle<()>),
    Thread(
        Option<tokio::sync::oneshot::Sender<()>>,
        Option<std::thread::JoinHandle<()>>,
    ),
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self {
            Guard::Task(t) => t.abort(),
            Guard::Thread(stop, thread) => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// A running fake API server and the test's handle on its state. Dropping it stops the server.
pub struct FakeKube {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _guard: Guard,
}

fn type_of<K: k8s_openapi::Resource>() -> (&'static str, &'static str, &'static str) {
    (K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
}

impl FakeKube {
    /// Settings for a server (bookmark interval, history size, default namespaces).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts a server with default settings on the current tokio runtime.
    pub async fn start() -> FakeKube {
        Builder::default().start().await
    }

    /// Starts a server with default settings on its own thread and runtime (for sync tests).
    pub fn start_blocking() -> FakeKube {
        Builder::default().start_blocking()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig (cluster, context and an empty user `fake-kube`, default namespace
    /// `default`) pointing at this server over plain HTTP.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake-kube\n  cluster:\n    server: {url}\ncontexts:\n- name: fake-kube\n  context:\n    cluster: fake-kube\n    user: fake-kube\n    namespace: default\ncurrent-context: fake-kube\nusers:\n- name: fake-kube\n  user: {{}}\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Writes [`FakeKube::kubeconfig_yaml`] to `path` (point `KUBECONFIG` at it and
    /// `kube::Client::try_default()` talks to this server).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// The fault switches and the request log.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The requests seen so far (same as `faults().requests()`).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.faults.requests()
    }

    /// Serves a further resource type, e.g.
    /// `install_resource("snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot", true)`.
    /// Its objects are not validated beyond names (like a custom resource without schema).
    pub fn install_resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
    ) {
        self.install(ResourceType::new(group, version, plural, kind, namespaced));
    }

    /// Serves a further resource type described in full (status subresource, short names).
    pub fn install(&self, res: ResourceType) {
        let mut r = self
            .shared
            .resources
            .write()
            .unwrap_or_else(|e| e.into_inner());
        r.retain(|x| !x.is(&res.group, &res.version, &res.plural));
        r.push(res);
    }

    /// Stops serving a resource type (404, and gone from discovery; its stored objects are
    /// unreachable): e.g. to make the snapshot API absent again. Returns whether it was served.
    pub fn uninstall_resource(&self, group: &str, version: &str, plural: &str) -> bool {
        let mut r = self
            .shared
            .resources
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let before = r.len();
        r.retain(|x| !x.is(group, version, plural));
        before != r.len()
    }

    /// The current (last handed out) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Forgets the watch history, as etcd compaction does, and advances the resourceVersion by
    /// one (as the unrelated writes of a real cluster would): watches and continue tokens from
    /// any resourceVersion handed out before now answer 410 Expired.
    pub fn compact_history(&self) {
        self.shared.lock().compact();
    }

    /// Ends every open watch stream (clients see the stream close and re-watch).
    pub fn close_watches(&self) {
        self.shared.faults.close_watches();
    }

    /// Stores an object directly (create or overwrite), bypassing validation and namespace
    /// checks, with server fields set as on create (uid, creationTimestamp, generation unless
    /// given) and a new resourceVersion; watches see ADDED or MODIFIED. The type comes from
    /// `apiVersion`/`kind`. Returns the stored object.
    ///
    /// # Panics
    /// If the object has no `apiVersion`/`kind`/`metadata.name`, or its type is not served.
    pub fn insert<T: Serialize>(&self, obj: &T) -> Value {
        let mut v = serde_json::to_value(obj).expect("object serializes");
        let av = v["apiVersion"].as_str().expect("apiVersion").to_string();
        let kind = v["kind"].as_str().expect("kind").to_string();
        let res = self
            .shared
            .resource_for(&av, &kind)
            .unwrap_or_else(|| panic!("{av} {kind} is not served"));
        let name = name_of(&v);
        assert!(!name.is_empty(), "metadata.name is required");
        if !res.namespaced {
            meta_mut(&mut v).remove("namespace");
        } else if namespace_of(&v).is_empty() {
            meta_mut(&mut v).insert("namespace".into(), json!("default"));
        }
        let ns = namespace_of(&v);
        let mut st = self.shared.lock();
        let meta = meta_mut(&mut v);
        let old = st.get(&res, &ns, &name).cloned();
        let old_meta = old
            .as_ref()
            .and_then(|o| o["metadata"].as_object().cloned());
        for (k, fresh) in [
            ("uid", json!(store::new_uid())),
            ("creationTimestamp", json!(store::now_time())),
            ("generation", json!(1)),
        ] {
            if meta.get(k).is_none_or(Value::is_null) {
                let keep = old_meta.as_ref().and_then(|m| m.get(k).cloned());
                meta.insert(k.into(), keep.unwrap_or(fresh));
            }
        }
        let stored = st.put(&res, v, ChangeType::Added);
        drop(st);
        if res.is(resources::CRD_GROUP, "v1", "customresourcedefinitions") {
            self.shared.sync_crds();
        }
        stored
    }

    /// Inserts each object of a YAML stream (`---`-separated), as [`FakeKube::insert`].
    pub fn insert_yaml(&self, yaml: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
        let mut out = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let v = Value::deserialize(doc)?;
            if v.is_null() {
                continue;
            }
            out.push(self.insert(&v));
        }
        Ok(out)
    }

    /// A stored object as JSON, by `(group, version, plural)`; `ns` is ignored for cluster-scoped
    /// types.
    pub fn get_value(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let res = self.shared.resource(group, version, plural)?;
        let ns = if res.namespaced { ns.unwrap_or("") } else { "" };
        self.shared.lock().get(&res, ns, name).cloned()
    }

    /// Stored objects as JSON, in one namespace or all (`None`), sorted by namespace and name.
    pub fn list_values(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Vec<Value> {
        let Some(res) = self.shared.resource(group, version, plural) else {
            return Vec::new();
        };
        let ns = if res.namespaced { ns } else { None };
        self.shared
            .lock()
            .list(&res, ns)
            .into_iter()
            .cloned()
            .collect()
    }

    /// A stored object decoded as `K`, e.g. `fake.get::<Pod>(Some("app"), "db-0")`.
    pub fn get<K: k8s_openapi::Resource + DeserializeOwned>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Option<K> {
        let (g, v, p) = type_of::<K>();
        self.get_value(g, v, p, ns, name)
            .map(|o| serde_json::from_value(o).expect("stored object decodes"))
    }

    /// Stored objects decoded as `K`, in one namespace or all (`None`).
    pub fn list<K: k8s_openapi::Resource + DeserializeOwned>(&self, ns: Option<&str>) -> Vec<K> {
        let (g, v, p) = type_of::<K>();
        self.list_values(g, v, p, ns)
            .into_iter()
            .map(|o| serde_json::from_value(o).expect("stored object decodes"))
            .collect()
    }

    /// Removes an object directly (no finalizers, no cascade); watches see DELETED. Returns
    /// the removed object.
    pub fn delete<K: k8s_openapi::Resource>(&self, ns: Option<&str>, name: &str) -> Option<Value> {
        let (g, v, p) = type_of::<K>();
        let res = self.shared.resource(g, v, p)?;
        let ns = if res.namespaced { ns.unwrap_or("") } else { "" };
        self.shared.lock().remove(&res, ns, name)
    }
}

use serde::Deserialize;
