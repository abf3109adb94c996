//! The web UI served by the agent (`/ui` on the metrics port): the repository browser of
//! `holdfast-ui` with the cluster side filled in from the agent: the coverage audit, what
//! the agent is doing (its running backups with their progress, recent outcomes and
//! restores), the last repository check, and restores into PVCs through the agent's
//! restore (the one `holdfast agent restore` runs).
//!
//! The UI listens where `/metrics` does, which is not loopback, so it is served only with a
//! login: `--ui-login-file` (a mounted Secret of `read:SECRET` / `restore:SECRET` lines).
//! Without one the agent serves metrics only and says so in its log.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use chrono::{TimeZone, Utc};
use futures::future::BoxFuture;
use holdfast_ui::{ActivityRow, AuthConfig, ClusterView, CoverageRow, Credentials, UiState};

use crate::args::RestoreArgs;
use crate::coverage::{self, CoverageReport};
use crate::error::{AgentError, Result};
use crate::metrics::JobKey;
use crate::restore;
use crate::runner::Agent;

/// Where the UI is mounted on the agent's server.
pub const BASE_PATH: &str = "/ui";

/// How many finished restores the activity list keeps.
const RECENT_RESTORES: usize = 20;

/// Reads the UI's login file. `Ok(None)` when `path` does not exist (the optional Secret
/// is not there: no UI); a file that exists but cannot be parsed is an error.
pub fn load_login(path: &Path) -> Result<Option<AuthConfig>> {
    if !path.exists() {
        return Ok(None);
    }
    let c = Credentials::from_file(path)
        .map_err(|e| AgentError::Usage(format!("--ui-login-file {}: {e}", path.display())))?;
    Ok(Some(AuthConfig::Login(c)))
}

/// The UI's routes for the agent's server: the UI under [`BASE_PATH`] and `/` redirecting
/// to it.
pub fn router(agent: Arc<Agent>, auth: AuthConfig) -> Router {
    let title = format!("holdfast — cluster {}", agent.settings().cluster);
    let repo = agent.repo().shared();
    let view = Arc::new(AgentView {
        agent,
        restores: Mutex::new(VecDeque::new()),
    });
    let state = UiState::new(repo, auth)
        .with_base_path(BASE_PATH)
        .with_cluster(view)
        .with_title(title);
    Router::new()
        .route("/", get(|| async { Redirect::to(BASE_PATH) }))
        .nest(BASE_PATH, holdfast_ui::router(state))
}

/// The agent as the UI's cluster side.
struct AgentView {
    agent: Arc<Agent>,
    /// Restores started from the UI, newest first.
    restores: Mutex<VecDeque<ActivityRow>>,
}

impl AgentView {
    /// The coverage audit: the elected agent's from its last round, or one made now by an
    /// agent that is not elected (a cluster listing and a snapshot listing).
    async fn audit(&self) -> Result<CoverageReport> {
        if let Some(r) = self.agent.metrics().values().coverage {
            return Ok(r);
        }
        let s = self.agent.settings();
        let cl = s.cluster.clone();
        let view = self.agent.with_repo(move |r| r.view(&cl, false)).await?;
        coverage::audit_cluster(
            self.agent.client(),
            &s.config,
            &s.lease_namespace,
            &view,
            &s.cluster,
        )
        .await
    }

    fn push_restore(&self, row: ActivityRow) {
        let mut q = self.restores.lock().unwrap_or_else(|e| e.into_inner());
        q.push_front(row);
        q.truncate(RECENT_RESTORES);
    }
}

/// An RFC 3339 time of `s` seconds since the epoch.
fn rfc3339(s: f64) -> String {
    Utc.timestamp_opt(s as i64, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// How a series is named on the page: `backup ns/pvc`, `dump ns/owner`, `etcd name`.
fn describe(k: &JobKey) -> String {
    let name = if k.kind == "volume" {
        format!("{}/{}", k.namespace, k.pvc)
    } else if k.namespace.is_empty() {
        k.name.clone()
    } else {
        format!("{}/{}", k.namespace, k.name)
    };
    let verb = if k.kind == "volume" {
        "backup"
    } else {
        &k.kind
    };
    format!("{verb} {name}")
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// The volume path of `path` inside a volume snapshot (recorded under `/<ns>/<pvc>`).
fn volume_subpath(path: &str, namespace: &str, pvc: &str) -> std::result::Result<String, String> {
    let root = format!("/{namespace}/{pvc}");
    let p = path.trim_end_matches('/');
    if p.is_empty() || p == root {
        return Ok(String::new());
    }
    match p.strip_prefix(&root) {
        Some(rest) if rest.starts_with('/') => Ok(rest.trim_start_matches('/').to_string()),
        _ => Err(format!(
            "{path} is not inside the volume's folder {root} of this snapshot"
        )),
    }
}

impl ClusterView for AgentView {
    fn coverage(&self) -> BoxFuture<'_, std::result::Result<Vec<CoverageRow>, String>> {
        Box::pin(async move {
            let r = self.audit().await.map_err(|e| e.to_string())?;
            Ok(r.pvcs
                .into_iter()
                .map(|p| CoverageRow {
                    namespace: p.namespace,
                    pvc: p.pvc,
                    status: p.status.as_str().to_string(),
                    method: p.method,
                    detail: p.detail,
                    newest: p.newest_snapshot.map(|s| {
                        if s.id.is_empty() {
                            s.time
                        } else {
                            format!("{} {}", s.id, s.time)
                        }
                    }),
                    age_seconds: p.age_seconds.and_then(|a| u64::try_from(a).ok()),
                })
                .collect())
        })
    }

    fn activity(&self) -> Vec<ActivityRow> {
        let v = self.agent.metrics().values();
        let mut rows: Vec<ActivityRow> = v
            .running
            .values()
            .map(|r| {
                let done = r.progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
                ActivityRow {
                    what: describe(&r.key),
                    started: rfc3339(r.started),
                    state: "running".into(),
                    detail: match r.bytes_expected {
                        Some(t) if t > 0 => format!(
                            "{} of about {} ({:.0} %)",
                            mib(done),
                            mib(t),
                            (done as f64 * 100.0 / t as f64).min(100.0)
                        ),
                        _ => format!("{} read", mib(done)),
                    },
                }
            })
            .collect();
        rows.extend(
            self.restores
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        // Then the last outcome of each series, newest first.
        let mut last: Vec<(f64, ActivityRow)> = v
            .jobs
            .iter()
            .filter(|(k, _)| !v.running.contains_key(k))
            .filter_map(|(k, st)| {
                let at = st.last_attempt.or(st.last_success)?;
                let ok = st.last_ok.unwrap_or(true);
                let detail = match (ok, st.bytes_added, st.duration_seconds) {
                    (true, Some(b), Some(d)) => format!("added {} in {d:.1} s", mib(b)),
                    (true, _, _) => "ok".into(),
                    (false, _, _) => "failed (see the agent's Events and log)".into(),
                };
                Some((
                    at,
                    ActivityRow {
                        what: describe(k),
                        started: rfc3339(at),
                        state: if ok { "ok" } else { "failed" }.into(),
                        detail,
                    },
                ))
            })
            .collect();
        last.sort_by(|a, b| b.0.total_cmp(&a.0));
        rows.extend(last.into_iter().take(50).map(|(_, r)| r));
        rows
    }

    fn last_check(&self) -> Option<String> {
        let r = self.agent.metrics().values().repository?;
        let at = r.last_check?;
        let ok = match r.last_check_ok {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "",
        };
        Some(format!("{} {ok}", rfc3339(at)).trim_end().to_string())
    }

    fn restore_to_pvc(
        &self,
        snapshot: String,
        path: String,
        namespace: String,
        pvc: String,
    ) -> BoxFuture<'_, std::result::Result<String, String>> {
        Box::pin(async move {
            // The snapshot names the volume it is of; the agent's restore starts from it.
            let spec = snapshot.clone();
            let snap = self
                .agent
                .with_repo(move |r| {
                    let (_, s) = r.repository().find_snapshot(
                        &spec,
                        &holdfast_repo::repository::SnapshotFilter::default(),
                    )?;
                    Ok(s)
                })
                .await
                .map_err(|e| e.to_string())?;
            let tag = |k: &str| {
                snap.tags
                    .iter()
                    .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .map(str::to_string)
            };
            let (Some(src_ns), Some(src_pvc)) = (tag("namespace"), tag("pvc")) else {
                return Err(
                    "this snapshot is not of a PVC (no namespace= and pvc= tags): restore it \
                     to a folder instead"
                        .into(),
                );
            };
            if namespace != src_ns {
                return Err(format!(
                    "the snapshot is of {src_ns}/{src_pvc}; a restore into a PVC stays in its \
                     namespace ({src_ns}), not {namespace}"
                ));
            }
            let sub = volume_subpath(&path, &src_ns, &src_pvc)?;
            let args = RestoreArgs {
                namespace: src_ns.clone(),
                pvc: src_pvc.clone(),
                snapshot: snapshot.clone(),
                to: (pvc != src_pvc).then(|| pvc.clone()),
                size: None,
                storage_class: None,
                path: (!sub.is_empty()).then(|| sub.clone()),
                force: false,
            };
            let what = format!(
                "restore {}{} of {src_ns}/{src_pvc} into {namespace}/{pvc}",
                &snapshot[..snapshot.len().min(8)],
                if sub.is_empty() {
                    String::new()
                } else {
                    format!(" /{sub}")
                },
            );
            let started = rfc3339(crate::metrics::now_s());
            // A restore outlives the request: it runs in the agent and reports in the
            // activity list.
            let agent = self.agent.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let r = restore::run(&agent, &args).await;
                let _ = tx.send(r);
            });
            let running = ActivityRow {
                what: what.clone(),
                started: started.clone(),
                state: "running".into(),
                detail: String::new(),
            };
            self.push_restore(running);
            // Short restores answer on the page; long ones say where to look.
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(20), rx).await;
            let finish = |state: &str, detail: String| {
                let mut q = self.restores.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(row) = q
                    .iter_mut()
                    .find(|r| r.what == what && r.started == started)
                {
                    row.state = state.into();
                    row.detail = detail;
                }
            };
            match outcome {
                Ok(Ok(Ok(rep))) => {
                    let msg = format!(
                        "restored {} files, {} into {}{}",
                        rep.files,
                        mib(rep.bytes),
                        rep.target,
                        if rep.created_pvc {
                            " (PVC created)"
                        } else {
                            ""
                        }
                    );
                    finish("ok", msg.clone());
                    Ok(msg)
                }
                Ok(Ok(Err(e))) => {
                    finish("failed", e.to_string());
                    Err(e.to_string())
                }
                Ok(Err(_)) => Err("the restore task ended without an outcome".into()),
                Err(_) => Ok(format!(
                    "{what}: started; it is still running — its outcome appears in the \
                     agent's activity on the coverage page and in the agent's log"
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subpaths_inside_the_volume() {
        assert_eq!(volume_subpath("/ns/data", "ns", "data").unwrap(), "");
        assert_eq!(volume_subpath("/", "ns", "data").unwrap(), "");
        assert_eq!(
            volume_subpath("/ns/data/www/a.txt", "ns", "data").unwrap(),
            "www/a.txt"
        );
        assert!(volume_subpath("/ns/database/x", "ns", "data").is_err());
        assert!(volume_subpath("/other/data/x", "ns", "data").is_err());
    }

    #[test]
    fn login_file_absent_means_no_ui() {
        let d = tempfile::tempdir().unwrap();
        assert!(load_login(&d.path().join("none")).unwrap().is_none());
        let f = d.path().join("logins");
        std::fs::write(&f, "restore:s3cret-s3cret\n").unwrap();
        assert!(matches!(
            load_login(&f).unwrap(),
            Some(AuthConfig::Login(_))
        ));
    }

    #[test]
    fn series_names() {
        assert_eq!(describe(&JobKey::volume("ns", "data")), "backup ns/data");
        assert_eq!(describe(&JobKey::job("etcd", "", "main")), "etcd main");
        assert_eq!(
            describe(&JobKey::job("dump", "db", "StatefulSet/pg")),
            "dump db/StatefulSet/pg"
        );
    }
}
