//! The resource types the fake serves: group, version, plural, kind and scope.

/// One served resource type (one entry of an `APIResourceList`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// URL path segment, e.g. `pods`.
    pub plural: String,
    /// Singular name, e.g. `pod`.
    pub singular: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names for discovery, e.g. `po`.
    pub short_names: Vec<String>,
    /// Whether the resource has a `status` subresource (writes to the main resource keep the
    /// stored status; writes to `/status` change only the status).
    pub has_status: bool,
    /// Whether it is one of the fake's built-in types (as opposed to one installed by a test,
    /// which behaves like a custom resource).
    pub builtin: bool,
}

impl ResourceType {
    /// A resource type without short names or status subresource (like a custom resource).
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: Vec::new(),
            has_status: false,
            builtin: false,
        }
    }

    /// `v1` for the core group, `<group>/<version>` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` for the core group, `leases.coordination.k8s.io` otherwise (as in messages).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether this type is `(group, version, plural)`.
    pub fn is(&self, group: &str, version: &str, plural: &str) -> bool {
        self.group == group && self.version == version && self.plural == plural
    }
}

fn builtin(
    group: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    has_status: bool,
) -> ResourceType {
    let mut r = ResourceType::new(group, "v1", plural, kind, namespaced);
    r.short_names = short.iter().map(|s| s.to_string()).collect();
    r.has_status = has_status;
    r.builtin = true;
    r
}

/// The types a fresh fake serves.
pub(crate) fn default_resources() -> Vec<ResourceType> {
    vec![
        builtin("", "namespaces", "Namespace", false, &["ns"], true),
        builtin("", "nodes", "Node", false, &["no"], true),
        builtin("", "pods", "Pod", true, &["po"], true),
        builtin(
            "",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            true,
        ),
        builtin(
            "",
            "persistentvolumes",
            "PersistentVolume",
            false,
            &["pv"],
            true,
        ),
        builtin("", "events", "Event", true, &["ev"], false),
        builtin("", "configmaps", "ConfigMap", true, &["cm"], false),
        builtin("", "secrets", "Secret", true, &[], false),
        builtin(
            "",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
        ),
        builtin(
            "storage.k8s.io",
            "storageclasses",
            "StorageClass",
            false,
            &["sc"],
            false,
        ),
        builtin("coordination.k8s.io", "leases", "Lease", true, &[], false),
        builtin("events.k8s.io", "events", "Event", true, &["ev"], false),
        builtin("apps", "daemonsets", "DaemonSet", true, &["ds"], true),
        {
            // Not decoded as a built-in type (its schema is large); creating one serves
            // the resource it defines (see `Shared::sync_crds`).
            let mut r = ResourceType::new(
                CRD_GROUP,
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            );
            r.short_names = vec!["crd".into(), "crds".into()];
            r.has_status = true;
            r
        },
    ]
}

/// The API group of CustomResourceDefinitions.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";

/// The resource types a CustomResourceDefinition object defines: one per served version of
/// `spec.versions` (none when the object is not a valid definition).
pub fn types_of_crd(crd: &serde_json::Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        spec["names"]["plural"].as_str(),
        spec["names"]["kind"].as_str(),
    ) else {
        return Vec::new();
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| v["name"].as_str())
        .map(|version| {
            let mut r = ResourceType::new(group, version, plural, kind, namespaced);
            if let Some(s) = spec["names"]["singular"].as_str() {
                r.singular = s.to_string();
            }
            r.short_names = spec["names"]["shortNames"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            r.has_status = versions.iter().any(|x| {
                x["name"].as_str() == Some(version) && x["subresources"]["status"].is_object()
            });
            r
        })
        .collect()
}

/// The external-snapshotter's CRDs (`snapshot.storage.k8s.io/v1`), each with a status
/// subresource: `volumesnapshots` (namespaced, short name `vs`), `volumesnapshotcontents`
/// (cluster, `vsc`/`vscs`) and `volumesnapshotclasses` (cluster, `vsclass`/`vsclasses`).
/// Install them with [`crate::FakeKube::install`] (or
/// [`crate::fixtures::ClusterBuilder::snapshot_classes`]).
pub fn volume_snapshot_resources() -> Vec<ResourceType> {
    let mk = |plural: &str, kind: &str, namespaced: bool, short: &[&str]| {
        let mut r = ResourceType::new(SNAPSHOT_GROUP, "v1", plural, kind, namespaced);
        r.short_names = short.iter().map(|s| s.to_string()).collect();
        r.has_status = true;
        r
    };
    vec![
        mk("volumesnapshots", "VolumeSnapshot", true, &["vs"]),
        mk(
            "volumesnapshotcontents",
            "VolumeSnapshotContent",
            false,
            &["vsc", "vscs"],
        ),
        mk(
            "volumesnapshotclasses",
            "VolumeSnapshotClass",
            false,
            &["vsclass", "vsclasses"],
        ),
    ]
}

/// The API group of CSI volume snapshots.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";
