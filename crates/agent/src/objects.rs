//! The cluster's Kubernetes objects as one snapshot: every resource the discovery API
//! reports as listable (core `/api/v1` and every group of `/apis` at its preferred
//! version, namespaced and cluster-scoped, custom resources included; subresources and
//! resources without `list` left out), one YAML file per object at
//! `/<namespace or _cluster>/<group or core>/<Kind>/<name>.yaml`.
//!
//! Secrets are never read unless `objects.includeSecrets` is set (the repository is
//! encrypted, but a Secret's copy in a backup is one more place it can leak from). The
//! default `objects.exclude` leaves out what is noise for a restore: Events, Leases,
//! Endpoints and EndpointSlices (recreated by their controllers).
//!
//! Each object is cleaned of what the server sets and changes by itself (`status`,
//! `metadata.managedFields`, `resourceVersion`, `uid`, `creationTimestamp`, `generation`,
//! `selfLink`, and the `kubectl.kubernetes.io/last-applied-configuration` annotation, a
//! second copy of the object that `kubectl apply` writes again on restore), so an
//! unchanged object is byte-for-byte the same file in every run and adds no data. The
//! files are always read (not taken from the parent by size and time: an edit can keep the
//! size), and their time is the object's creation time, which does not change; so an
//! unchanged cluster adds neither data nor trees.

use std::collections::BTreeMap;

use holdfast_engine::feed::{self, Entry};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::Client;
use serde_json::Value;

use crate::config::{ObjectExclude, ObjectsConfig};
use crate::error::{AgentError, Result};

/// The annotation `kubectl apply` writes (a second copy of the object): left out.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The directory of cluster-scoped objects (not a valid namespace name, so no clash).
pub const CLUSTER_DIR: &str = "_cluster";
/// The directory of the core group (`v1`).
pub const CORE_DIR: &str = "core";

/// One resource type to back up.
#[derive(Debug, Clone)]
pub struct Listed {
    /// `apps`, or empty for core.
    pub group: String,
    /// `apps/v1` or `v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// `deployments`.
    pub plural: String,
    /// Whether its objects are namespaced.
    pub namespaced: bool,
}

/// Whether `e` leaves out objects of `group`/`kind` in `namespace` (`None`: cluster-scoped).
fn excluded_by(e: &ObjectExclude, group: &str, kind: &str, namespace: Option<&str>) -> bool {
    e.group.as_deref().is_none_or(|g| g == group)
        && e.kind
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case(kind))
        && e.namespace.as_deref().is_none_or(|n| Some(n) == namespace)
}

/// Whether the configuration leaves out a whole type (an exclude naming no namespace).
pub fn type_excluded(cfg: &ObjectsConfig, group: &str, kind: &str) -> bool {
    (group.is_empty() && kind == "Secret" && !cfg.include_secrets)
        || cfg
            .exclude
            .iter()
            .any(|e| e.namespace.is_none() && excluded_by(e, group, kind, None))
}

/// Removes what the server sets and changes by itself (see the module's docs).
pub fn clean(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
        let empty = match m.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                a.remove(LAST_APPLIED);
                a.is_empty()
            }
            None => false,
        };
        if empty {
            m.remove("annotations");
        }
    }
}

/// The path of an object's file below the snapshot's root.
pub fn object_path(namespace: Option<&str>, group: &str, kind: &str, name: &str) -> String {
    format!(
        "{}/{}/{}/{}.yaml",
        namespace.unwrap_or(CLUSTER_DIR),
        if group.is_empty() { CORE_DIR } else { group },
        kind,
        name
    )
}

/// The types to back up, from the discovery API.
pub async fn discover(client: &Client, cfg: &ObjectsConfig) -> Result<Vec<Listed>> {
    let d = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| AgentError::Kube {
            what: "discover the API's resources".into(),
            source: e,
        })?;
    let mut out = Vec::new();
    for g in d.groups() {
        for (ar, caps) in g.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || ar.plural.contains('/') {
                continue;
            }
            if type_excluded(cfg, &ar.group, &ar.kind) {
                continue;
            }
            out.push(Listed {
                group: ar.group.clone(),
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
                plural: ar.plural.clone(),
                namespaced: caps.scope == Scope::Namespaced,
            });
        }
    }
    out.sort_by(|a, b| (&a.group, &a.kind).cmp(&(&b.group, &b.kind)));
    Ok(out)
}

/// What one listing gave.
#[derive(Debug, Default)]
pub struct Collected {
    /// The files, in any order.
    pub entries: Vec<Entry>,
    /// Objects written.
    pub objects: usize,
    /// Types listed.
    pub types: usize,
    /// Types that could not be listed (forbidden, gone since discovery), with why: they
    /// are reported, not fatal, so one broken aggregated API does not stop the backup.
    pub warnings: Vec<String>,
}

/// Lists every object of `types` (paged) and renders each as a cleaned YAML file.
pub async fn collect(client: &Client, cfg: &ObjectsConfig, types: &[Listed]) -> Result<Collected> {
    let mut c = Collected::default();
    for t in types {
        let ar = kube::discovery::ApiResource {
            group: t.group.clone(),
            version: t
                .api_version
                .rsplit('/')
                .next()
                .unwrap_or(&t.api_version)
                .to_string(),
            api_version: t.api_version.clone(),
            kind: t.kind.clone(),
            plural: t.plural.clone(),
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let mut lp = ListParams::default().limit(500);
        let mut items = Vec::new();
        let listed = loop {
            match crate::kube_api::retry(&format!("list {}", t.plural), || api.list(&lp)).await {
                Ok(page) => {
                    items.extend(page.items);
                    match page.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(token) => lp = lp.continue_token(&token),
                        None => break true,
                    }
                }
                Err(e) => {
                    c.warnings
                        .push(format!("{} ({}): not listed: {e}", t.plural, t.api_version));
                    break false;
                }
            }
        };
        if !listed {
            continue;
        }
        c.types += 1;
        for o in items {
            let ns = o.metadata.namespace.clone().filter(|_| t.namespaced);
            if cfg
                .exclude
                .iter()
                .any(|e| excluded_by(e, &t.group, &t.kind, ns.as_deref()))
            {
                continue;
            }
            let name = o.metadata.name.clone().unwrap_or_default();
            let mtime_ns = o
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_nanosecond() as i64)
                .unwrap_or(0);
            let mut v = serde_json::to_value(&o).map_err(|e| {
                AgentError::Objects(format!("{} {name}: cannot serialize: {e}", t.kind))
            })?;
            // List items of built-in types carry no kind or apiVersion: a file for
            // `kubectl apply` needs both.
            if let Some(m) = v.as_object_mut() {
                m.insert("apiVersion".into(), Value::String(t.api_version.clone()));
                m.insert("kind".into(), Value::String(t.kind.clone()));
            }
            clean(&mut v);
            let yaml = serde_yaml_ng::to_string(&sorted(v)).map_err(|e| {
                AgentError::Objects(format!("{} {name}: cannot render YAML: {e}", t.kind))
            })?;
            let path = object_path(ns.as_deref(), &t.group, &t.kind, &name);
            let comps = match feed::components(&path) {
                Ok(p) => p,
                Err(e) => {
                    c.warnings.push(format!("{path}: left out: {e}"));
                    continue;
                }
            };
            let mut e = Entry::bytes(comps, mtime_ns, yaml.into_bytes());
            // Always read: an edited object can keep its size and time.
            e.reusable = false;
            c.entries.push(e);
            c.objects += 1;
        }
    }
    Ok(c)
}

/// Whether an API group is Kubernetes' own (custom resources' groups hold a dot and are
/// not `*.k8s.io`).
pub fn is_builtin_group(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io")
}

/// Where an object goes in `kubectl apply` order (lower first): definitions before what
/// uses them, namespaces before what lives in them.
pub fn apply_rank(api_version: &str, kind: &str, namespaced: bool) -> u8 {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    match (kind, namespaced) {
        ("CustomResourceDefinition", _) => 0,
        ("Namespace", _) => 1,
        _ if !is_builtin_group(group) => {
            if namespaced {
                6
            } else {
                5
            }
        }
        (_, false) => 2,
        (
            "ServiceAccount"
            | "Secret"
            | "ConfigMap"
            | "Role"
            | "RoleBinding"
            | "PersistentVolumeClaim"
            | "LimitRange"
            | "ResourceQuota",
            true,
        ) => 3,
        _ => 4,
    }
}

/// An object file that cannot be ordered.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct OrderError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub detail: String,
}

/// The YAML files below `dir` (a restored objects snapshot) in the order `kubectl apply`
/// needs: CustomResourceDefinitions, Namespaces, cluster-scoped built-in objects (RBAC,
/// StorageClasses, ...), namespaced configuration (ServiceAccounts, ConfigMaps, Roles,
/// PVCs), other namespaced built-in objects, then custom resources (cluster-scoped first);
/// by path within each step. Every file is parsed, so a broken one is named here.
pub fn apply_order(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, OrderError> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let err = |p: &std::path::Path, detail: String| OrderError {
        path: p.display().to_string(),
        detail,
    };
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| err(&d, e.to_string()))?;
        for e in rd {
            let p = e.map_err(|e| err(&d, e.to_string()))?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "yaml" && x != "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&p).map_err(|e| err(&p, e.to_string()))?;
            let v: Value =
                serde_yaml_ng::from_str(&text).map_err(|e| err(&p, format!("not YAML: {e}")))?;
            let (Some(av), Some(kind)) = (v["apiVersion"].as_str(), v["kind"].as_str()) else {
                return Err(err(&p, "no apiVersion or kind".into()));
            };
            let namespaced = v["metadata"]["namespace"].is_string();
            found.push((apply_rank(av, kind, namespaced), p));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// `v` with every map's keys in order, so the same object renders the same bytes.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, sorted(v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cleaning_leaves_what_a_restore_needs() {
        let mut v = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "n", "uid": "u", "resourceVersion": "5",
                "creationTimestamp": "2020-01-01T00:00:00Z", "generation": 2, "managedFields": [],
                "labels": {"app": "x"},
                "annotations": {LAST_APPLIED: "{}"}},
            "data": {"k": "v"},
            "status": {"phase": "x"}
        });
        clean(&mut v);
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "n", "labels": {"app": "x"}},
                "data": {"k": "v"}})
        );
    }

    #[test]
    fn apply_order_puts_definitions_and_namespaces_first() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, body: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        };
        put(
            "app/example.com/Widget/w.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: app}\n",
        );
        put(
            "app/apps/Deployment/d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: app}\n",
        );
        put(
            "app/core/ConfigMap/c.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: app}\n",
        );
        put(
            "_cluster/core/Namespace/app.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n",
        );
        put(
            "_cluster/rbac.authorization.k8s.io/ClusterRole/r.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\n",
        );
        put("_cluster/apiextensions.k8s.io/CustomResourceDefinition/widgets.example.com.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n");
        put("notes.txt", "ignored");
        let order: Vec<String> = apply_order(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            order,
            [
                "widgets.example.com.yaml",
                "app.yaml",
                "r.yaml",
                "c.yaml",
                "d.yaml",
                "w.yaml"
            ]
        );
        put("bad.yaml", "kind: [");
        let e = apply_order(dir.path()).unwrap_err();
        assert!(e.path.ends_with("bad.yaml"), "{e}");
    }

    #[test]
    fn secrets_and_excludes() {
        let mut cfg = ObjectsConfig::default();
        assert!(type_excluded(&cfg, "", "Secret"));
        assert!(type_excluded(&cfg, "", "Event"));
        assert!(type_excluded(&cfg, "coordination.k8s.io", "Lease"));
        assert!(!type_excluded(&cfg, "", "ConfigMap"));
        assert!(
            !type_excluded(&cfg, "apps", "Secret"),
            "only the core Secret"
        );
        cfg.include_secrets = true;
        assert!(!type_excluded(&cfg, "", "Secret"));
        let e = ObjectExclude {
            group: None,
            kind: Some("ConfigMap".into()),
            namespace: Some("scratch".into()),
        };
        assert!(excluded_by(&e, "", "configmap", Some("scratch")));
        assert!(!excluded_by(&e, "", "ConfigMap", Some("app")));
        assert_eq!(
            object_path(None, "", "Namespace", "app"),
            "_cluster/core/Namespace/app.yaml"
        );
    }
}
