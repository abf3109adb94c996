//! The agent's configuration file (`--config`, mounted from a ConfigMap; YAML).
//!
//! Every field has a default, so an empty file (or none) is a valid configuration; an
//! unknown field is an error, so a typo is reported instead of silently ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::commands::CommandJob;
use crate::error::AgentError;
use crate::selection::SnapshotSource;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    /// Host name recorded in every snapshot (`--cluster-name` overrides; default `kubernetes`).
    pub cluster_name: Option<String>,
    /// Repository location (`-r`/`HOLDFAST_REPOSITORY` override it).
    pub repository: Option<String>,
    /// Per-volume defaults, overridden by annotations on the namespace, then the PVC.
    pub defaults: VolumeDefaults,
    /// Which namespaces' PVCs are considered at all.
    pub namespaces: NamespaceFilter,
    /// At most this many volumes backed up at once on one node.
    pub concurrency: usize,
    /// Upload limit for the repository, KiB/s (0: none).
    pub limit_upload_kib: u64,
    /// Download limit for the repository, KiB/s (0: none).
    pub limit_download_kib: u64,
    /// Cluster-wide maintenance done by one elected agent.
    pub maintenance: Maintenance,
    /// Point-in-time reads from CSI VolumeSnapshots.
    pub snapshots: Snapshots,
    /// How long a volume's or the maintenance Lease lasts without renewal, seconds.
    pub lease_seconds: u32,
    /// holdfast commands run on a schedule: bucket backups, etcd snapshots, drills
    /// ([`crate::commands`]).
    pub commands: Vec<CommandJob>,
    /// The cluster's Kubernetes objects as YAML, backed up by one elected agent.
    pub objects: ObjectsConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            cluster_name: None,
            repository: None,
            defaults: VolumeDefaults::default(),
            namespaces: NamespaceFilter::default(),
            concurrency: 1,
            limit_upload_kib: 0,
            limit_download_kib: 0,
            maintenance: Maintenance::default(),
            snapshots: Snapshots::default(),
            lease_seconds: 120,
            commands: Vec::new(),
            objects: ObjectsConfig::default(),
        }
    }
}

/// What a volume gets when neither its PVC nor its namespace says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeDefaults {
    /// Cron expression or `@daily`-style macro; empty opts every volume out by default.
    pub schedule: String,
    /// Retention, as in the `holdfast.io/keep` annotation (`daily=14,weekly=8`).
    pub keep: String,
    /// Globs left out of every volume's backup.
    pub exclude: Vec<String>,
    /// Where volumes are read from (`auto`: a CSI VolumeSnapshot where possible, else the
    /// live mount; `csi`, `live`, `cephfs-snapdir`), as the `holdfast.io/snapshot-source`
    /// annotation.
    pub snapshot_source: SnapshotSource,
}

impl Default for VolumeDefaults {
    fn default() -> Self {
        VolumeDefaults {
            schedule: "@daily".into(),
            keep: "daily=14".into(),
            exclude: Vec::new(),
            snapshot_source: SnapshotSource::Auto,
        }
    }
}

/// How volumes are read from CSI VolumeSnapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshots {
    /// Seconds a VolumeSnapshot may take to become ready to use.
    pub ready_timeout_seconds: u64,
    /// Seconds the PVC made from it may take to be bound.
    pub bind_timeout_seconds: u64,
    /// Seconds the pause pod that mounts it may take to run.
    pub pod_timeout_seconds: u64,
    /// Image of the pause pod (it only holds the volume mounted).
    pub pause_image: String,
    /// Back up PVCs that no pod mounts, from snapshots (by one agent per round).
    pub unmounted: bool,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots {
            ready_timeout_seconds: 600,
            bind_timeout_seconds: 300,
            pod_timeout_seconds: 300,
            pause_image: crate::expose::PAUSE_IMAGE.into(),
            unmounted: true,
        }
    }
}

/// The backup of the cluster's objects (see the `objects` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectsConfig {
    /// Whether it runs (off by default: it needs the optional `holdfast-objects-reader`
    /// ClusterRole, which can read every resource).
    pub enabled: bool,
    /// Cron expression or macro; empty: never.
    pub schedule: String,
    /// Also back up Secrets (off: they are never read).
    pub include_secrets: bool,
    /// Objects left out; each entry matches by every field it sets. A given list replaces
    /// the default (Events, Leases, Endpoints, EndpointSlices).
    pub exclude: Vec<ObjectExclude>,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        let kind = |group: &str, kind: &str| ObjectExclude {
            group: Some(group.into()),
            kind: Some(kind.into()),
            namespace: None,
        };
        ObjectsConfig {
            enabled: false,
            schedule: "@daily".into(),
            include_secrets: false,
            exclude: vec![
                kind("", "Event"),
                kind("events.k8s.io", "Event"),
                kind("coordination.k8s.io", "Lease"),
                kind("", "Endpoints"),
                kind("discovery.k8s.io", "EndpointSlice"),
            ],
        }
    }
}

/// Objects left out of the objects backup: those of this API group (empty: core), kind and
/// namespace; an unset field matches anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
#[derive(Default)]
pub struct ObjectExclude {
    /// The API group (`""` for core, `apps`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The kind (`ConfigMap`; compared without case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The namespace (only namespaced objects in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Namespace allow and deny lists: a namespace is considered when the allow list is empty
/// or names it, and the deny list does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceFilter {
    /// Only these namespaces (empty: all).
    pub include: Vec<String>,
    /// Never these namespaces.
    pub exclude: Vec<String>,
}

impl Default for NamespaceFilter {
    fn default() -> Self {
        NamespaceFilter {
            include: Vec::new(),
            exclude: vec![
                "kube-system".into(),
                "kube-public".into(),
                "kube-node-lease".into(),
            ],
        }
    }
}

impl NamespaceFilter {
    /// Whether PVCs in `ns` are considered.
    pub fn allows(&self, ns: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|n| n == ns))
            && !self.exclude.iter().any(|n| n == ns)
    }
}

/// Forget, prune and check, run by the agent that holds the maintenance Lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Maintenance {
    /// Whether forget and prune run after backups (each PVC's retention).
    pub prune: bool,
    /// Forget and prune run at most this often, hours (the elected agent runs them after
    /// a round of backups once this long has passed since the last time).
    pub interval_hours: u32,
    /// Schedule of `check --read-data-subset` (cron or macro; empty: never).
    pub check_schedule: String,
    /// The share of packs each check reads, as `check --read-data-subset` (`5%`, `1/7`).
    pub check_read_data_subset: String,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            prune: true,
            interval_hours: 12,
            check_schedule: "@weekly".into(),
            check_read_data_subset: "5%".into(),
        }
    }
}

impl AgentConfig {
    /// The configuration of `--config`, or the defaults when none is given.
    pub fn load_or_default(path: Option<&Path>) -> Result<AgentConfig, AgentError> {
        path.map_or_else(|| Ok(AgentConfig::default()), AgentConfig::load)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Config {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Self::parse(&text).map_err(|detail| AgentError::Config {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Parses and validates configuration text (an empty text is the default configuration).
    pub fn parse(text: &str) -> Result<AgentConfig, String> {
        let cfg: AgentConfig = if text.trim().is_empty() {
            AgentConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        if cfg.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        let t = &cfg.snapshots;
        if t.ready_timeout_seconds == 0 || t.bind_timeout_seconds == 0 || t.pod_timeout_seconds == 0
        {
            return Err("snapshots: timeouts must be at least 1 second".into());
        }
        if cfg.objects.enabled && !cfg.objects.schedule.trim().is_empty() {
            crate::schedule::Schedule::parse(&cfg.objects.schedule, "objects")
                .map_err(|e| format!("objects.schedule: {e}"))?;
        }
        if cfg.lease_seconds < 15 {
            return Err("leaseSeconds must be at least 15".into());
        }
        let mut names = std::collections::HashSet::new();
        for job in &cfg.commands {
            job.validate()?;
            if !names.insert(job.name.as_str()) {
                return Err(format!("commands: the name {:?} is used twice", job.name));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_default() {
        assert_eq!(AgentConfig::parse("").unwrap(), AgentConfig::default());
        assert_eq!(
            AgentConfig::parse("\n# nothing\n").unwrap(),
            AgentConfig::default()
        );
    }

    #[test]
    fn fields_are_camel_case_and_partial() {
        let c = AgentConfig::parse(
            "clusterName: homelab\ndefaults:\n  keep: daily=7\nnamespaces:\n  exclude: [scratch]\nconcurrency: 2\n",
        )
        .unwrap();
        assert_eq!(c.cluster_name.as_deref(), Some("homelab"));
        assert_eq!(c.defaults.keep, "daily=7");
        assert_eq!(
            c.defaults.schedule, "@daily",
            "unset fields keep their default"
        );
        assert!(!c.namespaces.allows("scratch"));
        assert!(
            c.namespaces.allows("kube-system"),
            "a given list replaces the default"
        );
        assert_eq!(c.concurrency, 2);
    }

    #[test]
    fn a_typo_is_an_error() {
        let e = AgentConfig::parse("clustername: x\n").unwrap_err();
        assert!(e.contains("clustername"), "{e}");
        assert!(AgentConfig::parse("concurrency: 0\n").is_err());
    }
}
