//! `holdfast agent manifests`: the objects that install the agent, as one multi-document
//! YAML stream in apply order (as `linkerd install` or `velero install --dry-run -o yaml`
//! print theirs): Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, Role,
//! RoleBinding, ConfigMap, DaemonSet, Service (the agents' `/metrics` port, for a
//! ServiceMonitor: deploy/holdfast-servicemonitor.yaml).
//!
//! Every object is a typed `k8s_openapi` value serialised with `serde_yaml_ng`, so a
//! misspelt field is a compile error rather than a manifest the API server rejects; the
//! ConfigMap's `config.yaml` is an [`AgentConfig`] serialised the same way, so the agent's
//! configuration format and the installed file cannot drift apart. What typed objects cannot
//! carry, the reasons, is written as a YAML comment before each document.
//!
//! `deploy/holdfast-agent.yaml` is this module's output for the default
//! [`ManifestArgs`]; a test fails when the two differ (`UPDATE_DEPLOY=1 cargo test -p
//! holdfast-agent manifests` rewrites the file).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HostPathVolumeSource, KeyToPath, Namespace, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::args::ManifestArgs;
use crate::config::AgentConfig;
use crate::error::AgentError;

/// Name of the ServiceAccount, ConfigMap, DaemonSet and RBAC objects.
pub const NAME: &str = "holdfast-agent";
/// Where the ConfigMap's `config.yaml` appears in the container (the `--config` argument).
pub const CONFIG_PATH: &str = "/etc/holdfast/config.yaml";
/// Where the ConfigMap is mounted (its one file is [`CONFIG_PATH`]).
pub const CONFIG_DIR: &str = "/etc/holdfast";
/// The optional Secret whose key `logins` holds the web UI's logins (`read:SECRET` /
/// `restore:SECRET` lines), mounted at `/etc/holdfast/ui/logins` (`--ui-login-file`).
pub const UI_LOGIN_SECRET: &str = "holdfast-ui-login";

/// Where the Secret's `password` key is mounted (`HOLDFAST_PASSWORD_FILE`).
pub const PASSWORD_PATH: &str = "/etc/holdfast/secret/password";
/// The cache directory on each node (`HOLDFAST_CACHE_DIR`, a hostPath).
pub const CACHE_DIR: &str = "/var/cache/holdfast";
/// Where the agent keeps its high-water marks (`HOLDFAST_STATE_DIR`): on the node's
/// hostPath, so rollback detection survives a restart of the pod.
pub const STATE_DIR: &str = "/var/cache/holdfast/state";
/// The pod-template annotation holding a hash of `config.yaml`: a changed configuration
/// changes the template, so `kubectl apply` rolls the agents onto it.
pub const CONFIG_HASH_ANNOTATION: &str = "holdfast.io/config-hash";

/// The labels every object carries.
fn labels() -> BTreeMap<String, String> {
    let mut l = selector_labels();
    l.insert(
        "app.kubernetes.io/version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    l
}

/// The labels that select the agent's pods: fixed across versions, because a DaemonSet's
/// selector cannot be changed once created (a version in it would break every upgrade).
fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "holdfast".into()),
        ("app.kubernetes.io/component".into(), "agent".into()),
    ])
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

fn rule(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(api_groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// Whether `s` is a DNS-1123 label (namespace names): lowercase alphanumerics and `-`,
/// starting and ending alphanumeric, at most 63 characters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// Whether `s` is a DNS-1123 subdomain (Secret names): dot-separated labels, at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Rejects flags that would render manifests the API server refuses (or, for the kubelet
/// directory, a DaemonSet that mounts the wrong thing), with the flag to fix.
fn check(args: &ManifestArgs) -> Result<(), AgentError> {
    if !is_dns_label(&args.namespace) {
        return Err(AgentError::Usage(format!(
            "--namespace {:?}: not a valid namespace name (lowercase letters, digits and '-', \
             at most 63 characters)",
            args.namespace
        )));
    }
    if !is_dns_subdomain(&args.secret) {
        return Err(AgentError::Usage(format!(
            "--secret {:?}: not a valid Secret name (lowercase letters, digits, '-' and '.')",
            args.secret
        )));
    }
    if args.image.trim().is_empty() || args.image.chars().any(char::is_whitespace) {
        return Err(AgentError::Usage(format!(
            "--image {:?}: not a container image reference",
            args.image
        )));
    }
    if !args.kubelet_dir.is_absolute() || args.kubelet_dir.to_str().is_none() {
        return Err(AgentError::Usage(format!(
            "--kubelet-dir {}: must be an absolute UTF-8 path (e.g. /var/lib/kubelet)",
            args.kubelet_dir.display()
        )));
    }
    Ok(())
}

/// One document of the stream: why it exists, and the object.
struct Doc {
    comment: &'static str,
    yaml: String,
}

fn doc<T: Serialize>(kind: &str, comment: &'static str, obj: &T) -> Result<Doc, AgentError> {
    let yaml = serde_yaml_ng::to_string(obj).map_err(|e| AgentError::Manifest {
        kind: kind.into(),
        detail: e.to_string(),
    })?;
    Ok(Doc { comment, yaml })
}

/// The ConfigMap's `config.yaml`: the default configuration with the repository and the
/// cluster name from the flags.
pub fn config_yaml(args: &ManifestArgs) -> Result<String, AgentError> {
    let mut cfg = AgentConfig {
        repository: Some(args.repository.clone()),
        cluster_name: Some(args.cluster_name.clone()),
        ..AgentConfig::default()
    };
    cfg.objects.enabled = args.objects;
    serde_yaml_ng::to_string(&cfg).map_err(|e| AgentError::Manifest {
        kind: "ConfigMap".into(),
        detail: e.to_string(),
    })
}

/// The install manifests for `args`, as a multi-document YAML stream in apply order.
///
/// Fails with [`AgentError::Usage`] when a flag would give objects the API server rejects
/// (a namespace or Secret name that is not a DNS name, a relative kubelet directory).
pub fn render(args: &ManifestArgs) -> Result<String, AgentError> {
    check(args)?;
    let ns = args.namespace.as_str();
    let kubelet_pods = args.kubelet_dir.join("pods");
    let kubelet_pods = kubelet_pods
        .to_str()
        .expect("check() accepted only UTF-8 kubelet directories");
    let config = config_yaml(args)?;

    let namespace = Namespace {
        metadata: ObjectMeta {
            labels: Some({
                let mut l = labels();
                for mode in ["enforce", "audit", "warn"] {
                    l.insert(
                        format!("pod-security.kubernetes.io/{mode}"),
                        "privileged".into(),
                    );
                }
                l
            }),
            ..meta(ns, None)
        },
        ..Namespace::default()
    };

    let service_account = ServiceAccount {
        metadata: meta(NAME, Some(ns)),
        ..ServiceAccount::default()
    };

    let cluster_role = ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(vec![
            // Which pods run on this node, which PVCs they mount; the short-lived PVCs made
            // from VolumeSnapshots and the pause pods that mount them on the agent's node
            // (point-in-time reads), and the targets and pods of `agent restore`.
            rule(
                &[""],
                &["pods", "persistentvolumeclaims"],
                &["get", "list", "watch", "create", "delete"],
            ),
            // The namespaces' holdfast.io annotations (schedule, retention, opt-out).
            rule(&[""], &["namespaces"], &["get", "list", "watch"]),
            // Point-in-time copies: a VolumeSnapshot per backup, deleted after it; the
            // classes that serve a driver; the content's handle and creation time.
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshots"],
                &["get", "list", "create", "delete"],
            ),
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshotclasses", "volumesnapshotcontents"],
                &["get", "list"],
            ),
            // A PVC's volume: its driver, and where the kubelet mounted it.
            rule(&[""], &["persistentvolumes"], &["get", "list", "watch"]),
            // The agent's own node (labels, zone) and nothing else about the cluster.
            rule(&[""], &["nodes"], &["get"]),
            // Backup results reported on the PVCs, with both Event APIs.
            rule(&[""], &["events"], &["create", "patch"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            // Whether a volume's storage class is one to skip (or snapshot first).
            rule(&["storage.k8s.io"], &["storageclasses"], &["get", "list"]),
            // Database dumps: the command of a pod annotated holdfast.io/backup-command,
            // run in that pod (WebSocket exec is a GET that servers since 1.30 also
            // authorize as create, so both).
            rule(&[""], &["pods/exec"], &["get", "create"]),
        ]),
        ..ClusterRole::default()
    };

    let subject = || {
        vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(ns.into()),
            ..Subject::default()
        }]
    };

    let cluster_role_binding = ClusterRoleBinding {
        metadata: meta(NAME, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: NAME.into(),
        },
        subjects: Some(subject()),
    };

    // Optional (`--objects`): reading every resource for the objects backup.
    let objects_role = ClusterRole {
        metadata: meta(OBJECTS_READER, None),
        rules: Some(vec![rule(&["*"], &["*"], &["get", "list"])]),
        ..ClusterRole::default()
    };
    let objects_binding = ClusterRoleBinding {
        metadata: meta(OBJECTS_READER, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: OBJECTS_READER.into(),
        },
        subjects: Some(subject()),
    };

    let role = Role {
        metadata: meta(NAME, Some(ns)),
        rules: Some(vec![rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        )]),
    };

    let role_binding = RoleBinding {
        metadata: meta(NAME, Some(ns)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: NAME.into(),
        },
        subjects: Some(subject()),
    };

    let config_map = ConfigMap {
        metadata: meta(NAME, Some(ns)),
        data: Some(BTreeMap::from([("config.yaml".into(), config.clone())])),
        ..ConfigMap::default()
    };

    let daemon_set = daemon_set(args, kubelet_pods, &config);

    let mut docs = vec![
        doc("Namespace", NAMESPACE_COMMENT, &namespace)?,
        doc(
            "ServiceAccount",
            "# The identity the agents use to talk to the API server.\n",
            &service_account,
        )?,
        doc("ClusterRole", CLUSTER_ROLE_COMMENT, &cluster_role)?,
        doc(
            "ClusterRoleBinding",
            "# Grants the ClusterRole above to the agent's ServiceAccount.\n",
            &cluster_role_binding,
        )?,
    ];
    if args.objects {
        docs.push(doc("ClusterRole", OBJECTS_ROLE_COMMENT, &objects_role)?);
        docs.push(doc(
            "ClusterRoleBinding",
            "# Grants the objects reader above to the agent's ServiceAccount.\n",
            &objects_binding,
        )?);
    }
    docs.extend([
        doc("Role", ROLE_COMMENT, &role)?,
        doc(
            "RoleBinding",
            "# Grants the Role above to the agent's ServiceAccount.\n",
            &role_binding,
        )?,
        doc("ConfigMap", CONFIG_MAP_COMMENT, &config_map)?,
        doc("DaemonSet", DAEMON_SET_COMMENT, &daemon_set)?,
        doc("Service", SERVICE_COMMENT, &service(ns))?,
    ]);

    let mut out = format!(
        "# holdfast {} node agent: install manifests, rendered by `holdfast agent manifests`.\n\
         # Apply in this order (kubectl apply -f does). First create the Secret {:?}\n\
         # in namespace {:?}: key `password`, and for S3 AWS_ACCESS_KEY_ID and\n\
         # AWS_SECRET_ACCESS_KEY (see deploy/README.md).\n",
        env!("CARGO_PKG_VERSION"),
        args.secret,
        ns,
    );
    for d in docs {
        out.push_str("---\n");
        out.push_str(d.comment);
        out.push_str(&d.yaml);
    }
    Ok(out)
}

const NAMESPACE_COMMENT: &str = "\
# The agents' namespace: their Leases, ConfigMap and Secret live here.
# Pod Security level `privileged`: the agent mounts the kubelet's pod directory as a
# hostPath volume and adds the DAC_READ_SEARCH (and restore's) capabilities, which `baseline`
# (and so `restricted`) forbid. Nothing else should run in this namespace.
";

const CLUSTER_ROLE_COMMENT: &str = "\
# What the agent reads cluster-wide: only metadata. No Secrets (the agent's own Secret
# reaches it as a mounted volume and environment, which needs no RBAC). Writes:
# Events, and short-lived VolumeSnapshots, PVCs and pause pods (labelled
# app.kubernetes.io/managed-by=holdfast, holdfast.io/role) for point-in-time reads and
# restores; never an update of anyone else's object. Exec (pods/exec): only to run the
# dump command a pod's own holdfast.io/backup-command annotation names, in that pod;
# whoever may annotate a pod may already exec into it or change its command.
";

const OBJECTS_ROLE_COMMENT: &str = "\
# Optional (holdfast agent manifests --objects): read every resource for the backup of
# the cluster's objects (one YAML file per object). Kubernetes RBAC cannot grant `*` minus
# one resource, so this includes Secrets; the agent never lists them unless
# objects.includeSecrets is set in its configuration. Leave this out (and objects.enabled
# false) if that is too much; list resources explicitly in a ClusterRole of your own to
# narrow it.
";

/// The optional ClusterRole (and binding) for the objects backup.
pub const OBJECTS_READER: &str = "holdfast-objects-reader";

const ROLE_COMMENT: &str = "\
# The Leases in this namespace: one per volume being backed up (so two agents never back
# up the same volume at once), one for the maintenance (forget, prune, check) and one for
# the database dumps and objects backup that a single elected agent runs, and one per
# running dump. Nothing else in the namespace, and no Secrets.
";

const CONFIG_MAP_COMMENT: &str = "\
# The agent's configuration (holdfast agent --config). Every field has a default; an
# unknown field is an error. Changing it here and re-rendering rolls the agents (the
# DaemonSet's pod template carries its hash); after `kubectl edit`, run
# `kubectl -n <namespace> rollout restart daemonset/holdfast-agent`.
";

const DAEMON_SET_COMMENT: &str = "\
# One agent per node, backing up the volumes of the pods on that node.
# - runAsUser 0 with every capability dropped but DAC_READ_SEARCH (read any file and
#   directory whatever its owner and mode) and, for `holdfast agent restore`, CHOWN,
#   DAC_OVERRIDE and FOWNER (write the restored files with their owners, modes and times
#   into a volume whose files belong to the application's user). Drop those three if you
#   never restore from the agent. SYS_NICE is not needed: lowering one's own CPU priority
#   (nice 10) and IO class idle need no privilege.
# - The kubelet's pods directory is mounted read-only at the same path as on the host, so
#   the paths the kubelet reports need no translation, with HostToContainer propagation so
#   volumes mounted after the agent started are visible. Note that readOnly is not
#   recursive: the volumes mounted beneath stay writable; the agent opens them read-only.
# - The cache is a hostPath, so an upgrade or restart keeps the index and tree copies an
#   incremental backup would otherwise download again; it holds only encrypted repository
#   files. S3 packs are staged in /tmp (an emptyDir: the root filesystem is read-only).
# - No CPU limit: throttling a backup only stretches it while the node is idle; the agent
#   runs at nice 10 and IO class idle, so workloads come first. Memory is limited to
#   512Mi: measured enough for large files of any size and up to about 2 million small
#   files per volume (the idle agent holds about 67 MiB). Raise it to 1Gi for more small
#   files, a repository past about 5 million blobs (every backup loads its whole index,
#   32 bytes per blob) or concurrency above 1. See BENCHMARKS.md, \"Agent (issue 10)\".
# - The ConfigMap is mounted at /etc/holdfast and the Secret inside it at
#   /etc/holdfast/secret (the kubelet creates the mount point; Kubernetes >= 1.10). The
#   Secret volume holds only the key `password`, mode 0400 (defaultMode 256).
# - Port 9469 serves /metrics (Prometheus) and /healthz; the pod template carries the
#   prometheus.io/scrape annotations for annotation-based scraping, and the Service below
#   serves a ServiceMonitor (deploy/holdfast-servicemonitor.yaml). Scrape with
#   honor_labels: true, so the metrics' `namespace` label is the PVC's.
# - The web UI is served at /ui on the same port once the optional Secret
#   holdfast-ui-login exists (key `logins`: lines `read:SECRET` or `restore:SECRET`) and
#   the agents restart; without it they serve metrics only. Reach it with
#   `kubectl -n NAMESPACE port-forward ds/holdfast-agent 9469` and http://127.0.0.1:9469/ui.
# - No liveness probe: /healthz answers while the process runs, which the kubelet already
#   knows; a restart would cut a running backup short.
";

const SERVICE_COMMENT: &str = "\
# The agents' metrics port, for Prometheus (a headless Service: every agent is its own
# target; deploy/holdfast-servicemonitor.yaml selects it).
";

/// The metrics port (`--listen`'s default).
pub const METRICS_PORT: i32 = 9469;

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// An optional key of the agent's Secret: absent for a repository on a local path.
fn secret_env(name: &str, secret: &str) -> EnvVar {
    secret_key_env(name, secret, name)
}

/// The optional Secret with the maintenance job's S3 keys (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`), where the agents' own keys are writer-only.
pub const MAINTENANCE_SECRET: &str = "holdfast-maintenance";

/// The variable `name` from key `key` of the Secret `secret`, if it exists.
fn secret_key_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(type_.into()),
        }),
        ..Volume::default()
    }
}

/// The headless Service of the agents' metrics port.
fn service(ns: &str) -> Service {
    Service {
        metadata: meta(NAME, Some(ns)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels()),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn daemon_set(args: &ManifestArgs, kubelet_pods: &str, config: &str) -> DaemonSet {
    let kubelet_dir = args
        .kubelet_dir
        .to_str()
        .expect("check() accepted only UTF-8 kubelet directories");
    let container = Container {
        name: "agent".into(),
        image: Some(args.image.clone()),
        // Settings come from the environment, not flags, so that `kubectl exec ... holdfast
        // agent restore` in this container runs with the same configuration.
        args: Some(strings(&["agent"])),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            value_env("HOLDFAST_AGENT_CONFIG", CONFIG_PATH),
            value_env("HOLDFAST_KUBELET_DIR", kubelet_dir),
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            value_env("HOLDFAST_PASSWORD_FILE", PASSWORD_PATH),
            secret_env("AWS_ACCESS_KEY_ID", &args.secret),
            secret_env("AWS_SECRET_ACCESS_KEY", &args.secret),
            // Keys that may delete, for the elected agent's forget and prune, where the
            // agents' own are writer-only (README "Writer-only credentials for the agents").
            secret_key_env(
                crate::repo::MAINTENANCE_KEY_VARS[0],
                MAINTENANCE_SECRET,
                "AWS_ACCESS_KEY_ID",
            ),
            secret_key_env(
                crate::repo::MAINTENANCE_KEY_VARS[1],
                MAINTENANCE_SECRET,
                "AWS_SECRET_ACCESS_KEY",
            ),
            value_env("HOLDFAST_CACHE_DIR", CACHE_DIR),
            value_env("HOLDFAST_STATE_DIR", STATE_DIR),
            value_env("TMPDIR", "/tmp"),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: Some(true),
                mount_propagation: Some("HostToContainer".into()),
                ..mount("kubelet-pods", kubelet_pods)
            },
            VolumeMount {
                read_only: Some(true),
                ..mount("config", CONFIG_DIR)
            },
            VolumeMount {
                read_only: Some(true),
                ..mount("secret", "/etc/holdfast/secret")
            },
            VolumeMount {
                read_only: Some(true),
                ..mount("ui-login", "/etc/holdfast/ui")
            },
            mount("cache", CACHE_DIR),
            mount("tmp", "/tmp"),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("50m".into())),
                ("memory".into(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                Quantity("512Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(strings(&["ALL"])),
                add: Some(strings(&[
                    "DAC_READ_SEARCH",
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "FOWNER",
                ])),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    let volumes = vec![
        host_path("kubelet-pods", kubelet_pods, "Directory"),
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: NAME.into(),
                items: Some(vec![KeyToPath {
                    key: "config.yaml".into(),
                    path: "config.yaml".into(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "secret".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(args.secret.clone()),
                // Only the password is a file; the S3 keys arrive as environment.
                items: Some(vec![KeyToPath {
                    key: "password".into(),
                    path: "password".into(),
                    ..KeyToPath::default()
                }]),
                // 0400, printed as 256: the manifest is JSON-compatible YAML, without octal.
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        // The web UI's logins: optional, so the agents start without it (metrics only)
        // and serve the UI at /ui once it exists (after a restart).
        Volume {
            name: "ui-login".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(UI_LOGIN_SECRET.into()),
                optional: Some(true),
                items: Some(vec![KeyToPath {
                    key: "logins".into(),
                    path: "logins".into(),
                    ..KeyToPath::default()
                }]),
                default_mode: Some(0o400),
            }),
            ..Volume::default()
        },
        host_path("cache", CACHE_DIR, "DirectoryOrCreate"),
        Volume {
            name: "tmp".into(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        },
    ];

    let toleration = |key: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    };

    DaemonSet {
        metadata: meta(NAME, Some(&args.namespace)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..RollingUpdateDaemonSet::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    annotations: Some(BTreeMap::from([
                        (
                            CONFIG_HASH_ANNOTATION.into(),
                            blake3::hash(config.as_bytes()).to_hex()[..16].to_string(),
                        ),
                        ("prometheus.io/scrape".into(), "true".into()),
                        ("prometheus.io/port".into(), METRICS_PORT.to_string()),
                        ("prometheus.io/path".into(), "/metrics".into()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    // The agent's API token, for the reads and Leases above.
                    automount_service_account_token: Some(true),
                    enable_service_links: Some(false),
                    node_selector: Some(BTreeMap::from([(
                        "kubernetes.io/os".into(),
                        "linux".into(),
                    )])),
                    tolerations: Some(vec![
                        toleration("node-role.kubernetes.io/control-plane"),
                        toleration("node-role.kubernetes.io/master"),
                    ]),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde::Deserialize;
    use serde_yaml_ng::Value;

    /// `ManifestArgs` as clap fills it from `flags` (defaults included).
    fn args(flags: &[&str]) -> ManifestArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            m: ManifestArgs,
        }
        let mut argv = vec!["manifests"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().m
    }

    /// The documents of a YAML stream.
    fn documents(yaml: &str) -> Vec<Value> {
        serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|d| Value::deserialize(d).expect("a valid YAML document"))
            .collect()
    }

    fn kind(d: &Value) -> &str {
        d["kind"].as_str().expect("every document has a kind")
    }

    /// The one document of type `T` (by kind), typed.
    fn typed<T: k8s_openapi::Resource + for<'de> Deserialize<'de>>(docs: &[Value]) -> T {
        let mut found = docs.iter().filter(|d| kind(d) == T::KIND);
        let d = found.next().unwrap_or_else(|| panic!("no {}", T::KIND));
        assert!(found.next().is_none(), "two {}", T::KIND);
        serde_yaml_ng::from_value(d.clone()).unwrap()
    }

    #[test]
    fn kinds_in_apply_order() {
        let docs = documents(&render(&args(&[])).unwrap());
        let kinds: Vec<&str> = docs.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "ConfigMap",
                "DaemonSet",
                "Service"
            ]
        );
        for d in &docs {
            let labels = &d["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"].as_str(), Some("holdfast"));
            assert_eq!(
                labels["app.kubernetes.io/component"].as_str(),
                Some("agent")
            );
            assert_eq!(
                labels["app.kubernetes.io/version"].as_str(),
                Some(env!("CARGO_PKG_VERSION")),
                "{}",
                kind(d)
            );
        }
        let ns: Namespace = typed(&docs);
        let labels = ns.metadata.labels.unwrap();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("privileged")
        );
    }

    #[test]
    fn metrics_port_is_declared_annotated_and_behind_a_headless_service() {
        let docs = documents(&render(&args(&[])).unwrap());
        let ds: DaemonSet = typed(&docs);
        let spec = ds.spec.unwrap();
        let tpl = spec.template;
        let c = &tpl.spec.unwrap().containers[0];
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.container_port, port.name.as_deref()),
            (METRICS_PORT, Some("metrics"))
        );
        // The agent listens there by default.
        assert_eq!(
            crate::http::parse_listen(crate::http::DEFAULT_LISTEN)
                .unwrap()
                .unwrap()
                .port() as i32,
            METRICS_PORT
        );
        let a = tpl.metadata.unwrap().annotations.unwrap();
        assert_eq!(a["prometheus.io/scrape"], "true");
        assert_eq!(a["prometheus.io/port"], METRICS_PORT.to_string());
        let svc: Service = typed(&docs);
        let sspec = svc.spec.unwrap();
        assert_eq!(sspec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(sspec.selector, spec.selector.match_labels);
        let sp = &sspec.ports.unwrap()[0];
        assert_eq!(sp.port, METRICS_PORT);
        assert_eq!(sp.target_port, Some(IntOrString::String("metrics".into())));
    }

    fn all_rules(docs: &[Value]) -> Vec<PolicyRule> {
        let cr: ClusterRole = typed(docs);
        let r: Role = typed(docs);
        cr.rules
            .unwrap()
            .into_iter()
            .chain(r.rules.unwrap())
            .collect()
    }

    #[test]
    fn rbac_grants_no_secrets_and_no_wildcards() {
        let docs = documents(&render(&args(&[])).unwrap());
        let rules = all_rules(&docs);
        assert!(rules.len() >= 6);
        for r in &rules {
            let resources = r.resources.as_deref().unwrap_or_default();
            let groups = r.api_groups.as_deref().unwrap_or_default();
            assert!(!resources.is_empty(), "a rule without resources: {r:?}");
            assert!(!resources.iter().any(|x| x == "secrets"), "{r:?}");
            assert!(!resources.iter().any(|x| x.contains('*')), "{r:?}");
            assert!(!groups.iter().any(|x| x.contains('*')), "{r:?}");
            assert!(!r.verbs.iter().any(|v| v.contains('*')), "{r:?}");
            assert!(r.non_resource_urls.is_none(), "{r:?}");
            assert!(
                !r.verbs
                    .iter()
                    .any(|v| ["escalate", "bind", "impersonate"].contains(&v.as_str())),
                "{r:?}"
            );
        }
        let verbs_on = |group: &str, resource: &str| -> Vec<String> {
            rules
                .iter()
                .filter(|r| {
                    r.api_groups
                        .as_deref()
                        .unwrap_or_default()
                        .iter()
                        .any(|g| g == group)
                        && r.resources
                            .as_deref()
                            .unwrap_or_default()
                            .iter()
                            .any(|x| x == resource)
                })
                .flat_map(|r| r.verbs.clone())
                .collect()
        };
        assert_eq!(verbs_on("", "nodes"), ["get"]);
        assert_eq!(
            verbs_on("", "pods"),
            ["get", "list", "watch", "create", "delete"]
        );
        assert_eq!(
            verbs_on("snapshot.storage.k8s.io", "volumesnapshots"),
            ["get", "list", "create", "delete"]
        );
        assert_eq!(
            verbs_on("snapshot.storage.k8s.io", "volumesnapshotcontents"),
            ["get", "list"]
        );
        assert_eq!(verbs_on("", "persistentvolumes"), ["get", "list", "watch"]);
        assert_eq!(verbs_on("", "events"), ["create", "patch"]);
        assert_eq!(verbs_on("events.k8s.io", "events"), ["create", "patch"]);
        assert_eq!(
            verbs_on("storage.k8s.io", "storageclasses"),
            ["get", "list"]
        );
        // Exec, deliberately: the dumps that pods ask for with holdfast.io/backup-command.
        assert_eq!(verbs_on("", "pods/exec"), ["get", "create"]);
        assert!(verbs_on("coordination.k8s.io", "leases").contains(&"delete".to_string()));
        // The only cluster-wide writes are Events and the short-lived objects of
        // point-in-time reads and restores; no update or patch of anyone's objects.
        let cr: ClusterRole = typed(&docs);
        for r in cr.rules.unwrap() {
            let writes = r
                .verbs
                .iter()
                .any(|v| !["get", "list", "watch"].contains(&v.as_str()));
            if writes {
                let res = r.resources.clone().unwrap_or_default();
                let ok = res == ["events"]
                    || res == ["pods/exec"]
                    || res == ["pods", "persistentvolumeclaims"]
                    || res == ["volumesnapshots"];
                assert!(ok, "{r:?}");
                if res != ["events"] {
                    assert!(
                        !r.verbs.iter().any(|v| v == "update" || v == "patch"),
                        "{r:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn objects_reader_is_separate_read_only_and_opt_in() {
        let plain = documents(&render(&args(&[])).unwrap());
        assert!(
            !plain
                .iter()
                .any(|d| d["metadata"]["name"] == OBJECTS_READER),
            "the wildcard reader is rendered only with --objects"
        );
        let docs = documents(&render(&args(&["--objects"])).unwrap());
        let reader: ClusterRole = docs
            .iter()
            .find(|d| kind(d) == "ClusterRole" && d["metadata"]["name"] == OBJECTS_READER)
            .map(|d| serde_yaml_ng::from_value(d.clone()).unwrap())
            .expect("objects reader");
        let rules = reader.rules.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].verbs, ["get", "list"]);
        assert_eq!(rules[0].resources.as_deref().unwrap(), ["*"]);
        assert!(docs
            .iter()
            .any(|d| kind(d) == "ClusterRoleBinding" && d["roleRef"]["name"] == OBJECTS_READER));
        let cm = docs.iter().find(|d| kind(d) == "ConfigMap").unwrap();
        let cfg = AgentConfig::parse(cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
        assert!(cfg.objects.enabled);
    }

    #[test]
    fn kubelet_dir_is_read_only_with_host_to_container_at_the_same_path() {
        let docs = documents(&render(&args(&["--kubelet-dir", "/var/lib/k0s/kubelet"])).unwrap());
        let ds: DaemonSet = typed(&docs);
        let pod = ds.spec.unwrap().template.spec.unwrap();
        let c = &pod.containers[0];
        let m = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "kubelet-pods")
            .unwrap();
        assert_eq!(m.mount_path, "/var/lib/k0s/kubelet/pods");
        assert_eq!(m.read_only, Some(true));
        assert_eq!(m.mount_propagation.as_deref(), Some("HostToContainer"));
        let v = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "kubelet-pods")
            .unwrap();
        assert_eq!(
            v.host_path.as_ref().unwrap().path,
            "/var/lib/k0s/kubelet/pods",
            "the same path inside as on the host"
        );
        assert_eq!(c.args.as_deref().unwrap(), ["agent"]);
        // In the environment, so that `kubectl exec ... holdfast agent restore` sees them.
        let env = |k: &str| {
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == k)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(env("HOLDFAST_AGENT_CONFIG").as_deref(), Some(CONFIG_PATH));
        assert_eq!(
            env("HOLDFAST_KUBELET_DIR").as_deref(),
            Some("/var/lib/k0s/kubelet")
        );
        // Every other writable mount is the cache or scratch; the secret is 0400.
        for m in c.volume_mounts.as_ref().unwrap() {
            if m.read_only != Some(true) {
                assert!(["cache", "tmp"].contains(&m.name.as_str()), "{m:?}");
            }
        }
        let secret = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.secret.as_ref())
            .unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
        let keys: Vec<&str> = secret
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(keys, ["password"]);
    }

    #[test]
    fn container_is_locked_down() {
        let docs = documents(&render(&args(&[])).unwrap());
        let ds: DaemonSet = typed(&docs);
        let pod = ds.spec.unwrap().template.spec.unwrap();
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_ne!(sc.privileged, Some(true));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop.unwrap(), ["ALL"]);
        assert_eq!(
            caps.add.unwrap(),
            ["DAC_READ_SEARCH", "CHOWN", "DAC_OVERRIDE", "FOWNER"]
        );
        assert_eq!(pod.host_network, None);
        assert_eq!(pod.host_pid, None);
        assert_eq!(pod.priority_class_name, None);
        let res = pod.containers[0].resources.clone().unwrap();
        assert!(!res.limits.unwrap().contains_key("cpu"), "no CPU limit");
        let env = pod.containers[0].env.clone().unwrap();
        let optional_secret_keys: Vec<&str> = env
            .iter()
            .filter(|e| {
                e.value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .is_some_and(|s| s.optional == Some(true) && s.name == "holdfast-repository")
            })
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            optional_secret_keys,
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        );
        // The files the arguments and environment name are where the volumes put them.
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
                .unwrap()
        };
        let mounted = |name: &str| {
            pod.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.name == name)
                .unwrap()
                .mount_path
                .clone()
        };
        assert_eq!(
            value("HOLDFAST_PASSWORD_FILE"),
            format!("{}/password", mounted("secret"))
        );
        assert_eq!(format!("{}/config.yaml", mounted("config")), CONFIG_PATH);
        assert_eq!(value("HOLDFAST_CACHE_DIR"), mounted("cache"));
    }

    #[test]
    fn namespace_flag_reaches_every_namespaced_object_and_the_subjects() {
        let docs = documents(&render(&args(&["--namespace", "x"])).unwrap());
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
        for d in &docs {
            let ns = d["metadata"]["namespace"].as_str();
            if cluster_scoped.contains(&kind(d)) {
                assert_eq!(ns, None, "{}", kind(d));
            } else {
                assert_eq!(ns, Some("x"), "{}", kind(d));
            }
        }
        let ns: Namespace = typed(&docs);
        assert_eq!(ns.metadata.name.as_deref(), Some("x"));
        let rb: RoleBinding = typed(&docs);
        let crb: ClusterRoleBinding = typed(&docs);
        for s in rb.subjects.unwrap().iter().chain(&crb.subjects.unwrap()) {
            assert_eq!(s.kind, "ServiceAccount");
            assert_eq!(s.name, NAME);
            assert_eq!(s.namespace.as_deref(), Some("x"));
        }
        assert_eq!(rb.role_ref.kind, "Role");
        assert_eq!(crb.role_ref.kind, "ClusterRole");
    }

    #[test]
    fn config_map_is_an_agent_config_with_the_flags() {
        let docs = documents(
            &render(&args(&[
                "--repository",
                "s3:http://minio.lan:9000/b/p",
                "--cluster-name",
                "homelab",
            ]))
            .unwrap(),
        );
        let cm: ConfigMap = typed(&docs);
        let text = &cm.data.unwrap()["config.yaml"];
        let cfg = AgentConfig::parse(text).unwrap();
        assert_eq!(
            cfg.repository.as_deref(),
            Some("s3:http://minio.lan:9000/b/p")
        );
        assert_eq!(cfg.cluster_name.as_deref(), Some("homelab"));
        assert_eq!(
            AgentConfig {
                repository: None,
                cluster_name: None,
                ..cfg
            },
            AgentConfig::default(),
            "everything else is the default"
        );
        // The hash in the pod template follows the configuration.
        let hash = |docs: &[Value]| {
            let ds: DaemonSet = typed(docs);
            ds.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let other = documents(&render(&args(&["--repository", "/mnt/backup"])).unwrap());
        assert_ne!(hash(&docs), hash(&other));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for flags in [
            &["--namespace", "Holdfast"][..],
            &["--namespace=-x"],
            &["--secret", "a b"],
            &["--image", ""],
            &["--kubelet-dir", "var/lib/kubelet"],
        ] {
            assert!(
                matches!(render(&args(flags)), Err(AgentError::Usage(_))),
                "{flags:?}"
            );
        }
    }

    /// The path of `deploy/holdfast-agent.yaml` in the source tree.
    fn deploy_file() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/holdfast-agent.yaml")
    }

    /// deploy/holdfast-agent.yaml is the default render; `UPDATE_DEPLOY=1` rewrites it.
    #[test]
    fn deploy_file_is_current() {
        let want = render(&args(&[])).unwrap();
        let path = deploy_file();
        if std::env::var_os("UPDATE_DEPLOY").is_some_and(|v| !v.is_empty() && v != "0") {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is not the current render of `holdfast agent manifests` with default flags; \
             regenerate it with:\n  UPDATE_DEPLOY=1 cargo test -p holdfast-agent manifests",
            path.display()
        );
    }
}
