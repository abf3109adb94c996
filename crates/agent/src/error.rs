//! What can go wrong in the agent, by what failed and on which object.

use thiserror::Error;

/// An agent error.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The configuration file is unreadable or invalid.
    #[error("configuration {path}: {detail}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A required setting is missing.
    #[error("{0}")]
    Usage(String),
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {what}: {}", kube_message(.source))]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The engine or repository failed.
    #[error(transparent)]
    Engine(#[from] holdfast_engine::EngineError),
    /// The repository failed.
    #[error(transparent)]
    Repo(#[from] holdfast_repo::Error),
    /// One volume cannot be backed up as asked (a missing subpath, an unmounted volume).
    #[error("{0}")]
    Volume(String),
    /// An install manifest could not be rendered (`holdfast agent manifests`).
    #[error("rendering the {kind} manifest: {detail}")]
    Manifest {
        /// The object's kind.
        kind: String,
        /// What failed.
        detail: String,
    },
    /// A database dump (`holdfast.io/backup-command`) failed: no snapshot was written.
    #[error("dump {target}: {detail}")]
    Dump {
        /// `namespace/Kind/name` of the dumped owner.
        target: String,
        /// What failed: the pod, the exit code, the last error output.
        detail: String,
    },
    /// Backing up the cluster's objects failed.
    #[error("Kubernetes objects: {0}")]
    Objects(String),
    /// The kubelet directory does not look like one.
    #[error("{0}")]
    KubeletDir(String),
}

/// Shorthand.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// A kube error in one line: the API server's message and code, not the whole Status.
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} (HTTP {} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}
