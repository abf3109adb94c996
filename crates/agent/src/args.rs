//! `holdfast agent` command-line arguments (parsed by the CLI, which hands them over).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `holdfast agent`: back up this node's volumes, or print the install manifests.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    /// What to do besides running (default: run as the node's backup agent).
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// How the agent runs.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands of `holdfast agent`.
#[derive(Debug, Clone, Subcommand)]
pub enum AgentAction {
    /// Print the install manifests (Namespace, RBAC, ConfigMap, DaemonSet) as YAML.
    Manifests(ManifestArgs),
    /// Restore a volume's snapshot into a PVC (new, the same, or one folder of it), on this
    /// agent's node: `kubectl exec -n holdfast-system <agent pod> -- holdfast agent restore ...`.
    Restore(RestoreArgs),
}

/// Options of `holdfast agent restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// Namespace of the backed-up PVC (and of the target).
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// The backed-up PVC.
    #[arg(long)]
    pub pvc: String,
    /// Snapshot ID (or unique prefix) of that PVC, or `latest`.
    #[arg(long, default_value = "latest", value_name = "ID")]
    pub snapshot: String,
    /// Restore into this PVC (created when it does not exist) instead of the backed-up one.
    #[arg(long, value_name = "PVC")]
    pub to: Option<String>,
    /// Size of a PVC created by the restore (default: the source's, else the data's plus a
    /// quarter).
    #[arg(long, value_name = "QUANTITY")]
    pub size: Option<String>,
    /// StorageClass of a PVC created by the restore (default: the source's): restoring
    /// with another class migrates a volume.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// Restore only this folder or file of the volume, into the same place in the target.
    #[arg(long, value_name = "SUBPATH")]
    pub path: Option<String>,
    /// Restore into a PVC that running pods use.
    #[arg(long)]
    pub force: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for Loki, Elasticsearch, ...).
    Json,
}

/// Options of the agent itself.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Configuration file (YAML; mounted from the agent's ConfigMap).
    #[arg(long, env = "HOLDFAST_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node this agent backs up (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "NODE_NAME", value_name = "NODE")]
    pub node_name: Option<String>,
    /// The kubelet's root directory, where pods' volumes are mounted (k3s uses the default
    /// too).
    #[arg(
        long,
        env = "HOLDFAST_KUBELET_DIR",
        default_value = "/var/lib/kubelet",
        value_name = "DIR"
    )]
    pub kubelet_dir: PathBuf,
    /// Host name recorded in snapshots (default: the configuration's clusterName, else
    /// `kubernetes`).
    #[arg(long, env = "HOLDFAST_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// The namespace the agent's Leases live in (the DaemonSet sets it from its own
    /// namespace).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "holdfast-system",
        value_name = "NS"
    )]
    pub lease_namespace: String,
    /// Back up every volume this node is responsible for now, whatever the schedule, then
    /// exit: 0 when all succeeded, 3 when some failed, 1 when none could be done.
    #[arg(long)]
    pub once: bool,
    /// How often the daemon looks for due volumes, seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// At most this many volumes at once (default: the configuration's, else 1).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Never do the cluster's maintenance (forget, prune, check) on this agent.
    #[arg(long)]
    pub no_maintenance: bool,
    /// Serve /metrics (Prometheus) and /healthz on this address while running as a
    /// daemon; empty or `none`: no server.
    #[arg(
        long,
        env = "HOLDFAST_AGENT_LISTEN",
        default_value = crate::http::DEFAULT_LISTEN,
        value_name = "ADDR"
    )]
    pub listen: String,
    /// The web UI's logins (`read:SECRET` / `restore:SECRET` lines, or one secret: a
    /// mounted Secret). When the file exists the daemon serves the UI at `/ui` on the
    /// `--listen` address; without it, metrics only (the UI never runs without a login
    /// off loopback).
    #[arg(
        long,
        env = "HOLDFAST_UI_LOGIN_FILE",
        default_value = "/etc/holdfast/ui/logins",
        value_name = "FILE"
    )]
    pub ui_login_file: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Do not lower the agent's CPU and IO priority (it runs at nice 10, IO class idle by
    /// default, so workloads on the node come first).
    #[arg(long)]
    pub no_low_priority: bool,
}

/// Options of `holdfast agent manifests`.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// Namespace to install into.
    #[arg(long, default_value = "holdfast-system")]
    pub namespace: String,
    /// Container image of holdfast.
    #[arg(long, default_value = concat!("ghcr.io/holdfast/holdfast:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Repository location written into the ConfigMap.
    #[arg(
        long,
        value_name = "LOCATION",
        default_value = "s3:http://backup.lan:9000/holdfast/cluster"
    )]
    pub repository: String,
    /// Cluster name written into the ConfigMap (recorded as the snapshots' host).
    #[arg(long, default_value = "kubernetes")]
    pub cluster_name: String,
    /// Secret (in the install namespace) holding `password`, and for S3
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[arg(long, default_value = "holdfast-repository")]
    pub secret: String,
    /// The kubelet's root directory on the nodes.
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Also back up the cluster's Kubernetes objects: adds the ClusterRole
    /// `holdfast-objects-reader` (get and list of every resource, which Kubernetes RBAC
    /// cannot grant without Secrets) and sets `objects.enabled` in the configuration.
    #[arg(long)]
    pub objects: bool,
}

/// Options of `holdfast coverage`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Every PVC of the cluster (kubeconfig: KUBECONFIG or ~/.kube/config, \
or the in-cluster service account) with how it is backed up: by holdfast (ok, stale, \
never), declared external (holdfast.io/covered-by), opted out with holdfast.io/reason, or \
uncovered. Stale: newest backup older than 1.1 x its schedule's interval + 2 h.\n\n\
Exit status: 0 every PVC is covered and fresh; 3 some PVC is uncovered, stale or never \
backed up (for a cron job or CI gate); 1 the cluster or repository could not be read; \
2 usage error."
)]
pub struct CoverageArgs {
    /// The agent's configuration file (its defaults and namespace filter decide what the
    /// agent backs up).
    #[arg(long, env = "HOLDFAST_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The host name the agent records in snapshots (default: the configuration's
    /// clusterName, else `kubernetes`).
    #[arg(long, env = "HOLDFAST_CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// The namespace of the agent's Leases (where command jobs keep their state).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "holdfast-system",
        value_name = "NS"
    )]
    pub lease_namespace: String,
}
