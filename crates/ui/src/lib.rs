//! The holdfast web UI: server-rendered HTML over one opened repository.
//!
//! What it serves (all under a configurable base path, see [`UiState::with_base_path`]):
//! * `/`: the repository's health (snapshot count, size, growth, last check) and its
//!   snapshots grouped by host and PVC / job, newest first, with their freshness;
//! * `/s/ID?p=PATH`: a file browser of any snapshot, paged ([`PAGE_SIZE`] entries a page),
//!   with `/s/ID/file?p=` (a file, streamed) and `/s/ID/tar?p=` (a folder as a tar archive,
//!   streamed as it is read, never held in memory);
//! * `/restore` (POST): restores a file or folder to a path on the server (role
//!   [`Role::Restore`]), as a background job listed on `/jobs`;
//! * `/diff?a=ID&b=ID`: what changed between two snapshots;
//! * `/drills`: the drill history; `/coverage`: every PVC and how it is backed up (from a
//!   [`ClusterView`], which the Kubernetes agent provides).
//!
//! Paths inside snapshots travel in URLs as percent-encoded bytes, so names that are not
//! UTF-8 stay browsable and downloadable. Every value in a page goes through maud, which
//! escapes it. Logins, sessions and CSRF protection are in [`auth`].
//!
//! It is not: a JSON API (the CLI's `--json` is that), or a way to change the repository
//! (no forget, prune or backup from here).
#![deny(missing_docs)]

pub mod auth;
mod catalog;
mod download;
mod jobs;
mod layout;
mod pages;
pub mod paths;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use futures::future::BoxFuture;
use holdfast_repo::repository::Repository;

pub use auth::{AuthConfig, Credentials, Role};

/// Entries shown on one page of the file browser (and of a diff).
pub const PAGE_SIZE: usize = 500;

/// What went wrong setting up the UI (serving errors become HTTP responses instead).
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The request cannot work as given: a login file in a bad format, a non-loopback
    /// address without a login. The CLI exits with its usage code.
    #[error("{0}")]
    Usage(String),
    /// A login file could not be read.
    #[error("cannot read the login file {}: {source}", path.display())]
    LoginFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Listening or serving failed.
    #[error("serving the web UI on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// One PVC as the coverage audit sees it (plain data, so this crate does not depend on
/// the agent's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CoverageRow {
    /// The PVC's namespace.
    pub namespace: String,
    /// The PVC's name.
    pub pvc: String,
    /// `ok`, `stale`, `never`, `external`, `opted-out` or `uncovered`.
    pub status: String,
    /// How it is backed up (`live`, `snapshot`, `command`, what the covered-by annotation
    /// says), empty if it is not.
    pub method: String,
    /// Why it has this status, in words (schedule, reason, what covers it).
    pub detail: String,
    /// The newest snapshot's time (RFC 3339), if there is one.
    pub newest: Option<String>,
    /// The newest snapshot's age in seconds, if there is one.
    pub age_seconds: Option<u64>,
}

/// Something the agent is doing or did lately (a backup, a dump, maintenance).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActivityRow {
    /// What (`backup shop/data`, `prune`).
    pub what: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// `running`, `ok` or `failed`.
    pub state: String,
    /// Progress or outcome in words (`1.2 GiB of 4 GiB`, the error).
    pub detail: String,
}

/// The cluster side of the UI, provided by the Kubernetes agent: the coverage audit, what
/// the agent is doing, and restores into PVCs. `holdfast ui` on its own has none; its
/// pages say so.
pub trait ClusterView: Send + Sync {
    /// Every PVC in the cluster with how it is covered.
    fn coverage(&self) -> BoxFuture<'_, Result<Vec<CoverageRow>, String>>;
    /// The agent's current and recent jobs, newest first.
    fn activity(&self) -> Vec<ActivityRow>;
    /// When the repository was last checked and how it went (`2025-01-02T03:04:05Z ok`),
    /// if known.
    fn last_check(&self) -> Option<String> {
        None
    }
    /// Restores `path` (absolute, inside snapshot `snapshot`, full hex ID) into the PVC
    /// `namespace/pvc`; returns a line saying what was started or done.
    fn restore_to_pvc(
        &self,
        snapshot: String,
        path: String,
        namespace: String,
        pvc: String,
    ) -> BoxFuture<'_, Result<String, String>>;
}

/// Everything the UI serves from: the opened repository, the login configuration and,
/// from the agent, the cluster view. Build with [`UiState::new`], then [`router`].
pub struct UiState {
    pub(crate) repo: Arc<Repository>,
    pub(crate) auth: AuthConfig,
    pub(crate) cluster: Option<Arc<dyn ClusterView>>,
    pub(crate) base: String,
    pub(crate) secure_cookie: bool,
    pub(crate) title: String,
}

impl UiState {
    /// The UI over `repo` with the login `auth`, served at the root path, without a
    /// cluster view.
    pub fn new(repo: Arc<Repository>, auth: AuthConfig) -> UiState {
        UiState {
            title: repo.backend().location(),
            repo,
            auth,
            cluster: None,
            base: String::new(),
            secure_cookie: false,
        }
    }

    /// Serves under `base` (`/ui`): every link and cookie path starts with it. Mount the
    /// router with `Router::nest(base, router(state))`. An empty base or `/` is the root.
    pub fn with_base_path(mut self, base: impl Into<String>) -> UiState {
        let b: String = base.into();
        self.base = b.trim_end_matches('/').to_string();
        if !self.base.is_empty() && !self.base.starts_with('/') {
            self.base.insert(0, '/');
        }
        self
    }

    /// Adds the cluster side (coverage, agent activity, restores into PVCs).
    pub fn with_cluster(mut self, view: Arc<dyn ClusterView>) -> UiState {
        self.cluster = Some(view);
        self
    }

    /// Marks the session cookie `Secure` (set it when the UI is reached over HTTPS, e.g.
    /// behind a TLS-terminating proxy; the server cannot tell by itself). A request with
    /// `X-Forwarded-Proto: https` gets a `Secure` cookie either way.
    pub fn with_secure_cookie(mut self, secure: bool) -> UiState {
        self.secure_cookie = secure;
        self
    }

    /// The name shown in the page header (default: the repository's location).
    pub fn with_title(mut self, title: impl Into<String>) -> UiState {
        self.title = title.into();
        self
    }
}

/// Shared state of the handlers.
pub(crate) struct App {
    pub(crate) state: UiState,
    pub(crate) sessions: auth::Sessions,
    pub(crate) catalog: catalog::Catalog,
    pub(crate) jobs: jobs::Jobs,
}

impl App {
    /// A link to `path` (which starts with `/`) under the base path.
    pub(crate) fn link(&self, path: &str) -> String {
        if path == "/" && !self.state.base.is_empty() {
            // `Router::nest` serves the nested root at `/base`, not `/base/`.
            return self.state.base.clone();
        }
        format!("{}{}", self.state.base, path)
    }
}

/// The UI's routes, ready to serve or to mount (`Router::nest`) into another server. It
/// does not use `/metrics` or `/healthz`, which the agent serves itself.
pub fn router(state: UiState) -> Router {
    let app = Arc::new(App {
        sessions: auth::Sessions::default(),
        catalog: catalog::Catalog::new(state.repo.clone()),
        jobs: jobs::Jobs::default(),
        state,
    });
    Router::new()
        .route("/", get(pages::index))
        .route("/group", get(pages::group))
        .route("/s/{id}", get(pages::browse))
        .route("/s/{id}/file", get(download::file))
        .route("/s/{id}/tar", get(download::tar))
        .route("/diff", get(pages::diff))
        .route("/drills", get(pages::drills))
        .route("/coverage", get(pages::coverage))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{n}", get(jobs::show_job))
        .route("/restore", post(jobs::restore))
        .route("/logout", post(auth::logout))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/style.css", get(layout::style))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .with_state(app)
}

/// Whether the UI may serve on `addr` with `auth`: without a login only on a loopback
/// address (127.0.0.0/8, ::1), where whoever can connect already runs as this host's user.
pub fn check_listen(addr: &SocketAddr, auth: &AuthConfig) -> Result<(), UiError> {
    if matches!(auth, AuthConfig::Open) && !addr.ip().is_loopback() {
        return Err(UiError::Usage(format!(
            "refusing to serve the web UI on {addr} without a login: anyone who can reach it \
             could read and restore every snapshot. Give --login-password-file or \
             --login-token-file (a file of `read:SECRET` / `restore:SECRET` lines, or one \
             secret), or listen on a loopback address such as 127.0.0.1:9470"
        )));
    }
    Ok(())
}

/// Serves `router` on `listener` until the process ends (axum's server, with the peer
/// address available to the handlers).
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> Result<(), UiError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    axum::serve(listener, router)
        .await
        .map_err(|source| UiError::Serve { addr, source })
}

#[cfg(test)]
mod tests;
