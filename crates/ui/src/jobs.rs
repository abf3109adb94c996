//! Restores started from the UI: run in the background (a blocking thread each), listed on
//! `/jobs`, each with a page that refreshes itself while it runs, fed from the engine's
//! restore progress counters.
//!
//! Safety rules on top of the engine's own (which never writes outside the target): the
//! target is an absolute path on the server; it must not exist or must be an empty
//! directory unless the form asks to overwrite; only callers with role restore may start
//! one.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use holdfast_engine::filter::PathFilter;
use holdfast_engine::restorer::{self, RestoreOptions, RestoreProgress};
use maud::html;

use crate::auth::Caller;
use crate::layout::{self, can_restore, size};
use crate::pages::{browse_link, error_page};
use crate::paths::{decode, show, Params};
use crate::App;

/// Where a job is.
#[derive(Debug, Clone)]
pub(crate) enum JobState {
    Running,
    Done(String),
    Failed(String),
}

/// One restore.
pub(crate) struct Job {
    pub what: String,
    pub snapshot: holdfast_repo::Id,
    pub path: Vec<u8>,
    pub target: String,
    pub started: Instant,
    pub started_at: String,
    pub finished: Mutex<Option<Instant>>,
    pub progress: Arc<RestoreProgress>,
    pub state: Mutex<JobState>,
}

/// The jobs of this server, oldest first (kept for the life of the process).
#[derive(Default)]
pub(crate) struct Jobs {
    list: Mutex<Vec<Arc<Job>>>,
}

impl Jobs {
    fn add(&self, job: Arc<Job>) -> usize {
        let mut l = self.list.lock().expect("jobs");
        l.push(job);
        l.len()
    }
    fn get(&self, n: usize) -> Option<Arc<Job>> {
        let l = self.list.lock().expect("jobs");
        n.checked_sub(1).and_then(|i| l.get(i).cloned())
    }
    fn all(&self) -> Vec<Arc<Job>> {
        self.list.lock().expect("jobs").clone()
    }
}

/// Whether `target` may be restored into: it does not exist, or is an empty directory, or
/// `overwrite` is set and it is a directory. The error says why not.
pub(crate) fn check_target(target: &std::path::Path, overwrite: bool) -> Result<(), String> {
    if !target.is_absolute() {
        return Err(format!(
            "the target {} is not an absolute path",
            target.display()
        ));
    }
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot look at {}: {e}", target.display())),
        Ok(m) if !m.is_dir() => Err(format!(
            "the target {} exists and is not a directory",
            target.display()
        )),
        Ok(_) if overwrite => Ok(()),
        Ok(_) => {
            let mut entries = std::fs::read_dir(target)
                .map_err(|e| format!("cannot list {}: {e}", target.display()))?;
            if entries.next().is_some() {
                Err(format!(
                    "the target {} is not empty: choose an empty or new directory, or tick \
                     overwrite",
                    target.display()
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// `POST /restore`: starts a restore to a server path (or, with `namespace` and `pvc`,
/// asks the cluster view to restore into a PVC).
pub(crate) async fn restore(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    body: String,
) -> Response {
    if !can_restore(&caller) {
        return error_page(
            &app,
            &caller,
            StatusCode::FORBIDDEN,
            "restoring needs the restore role",
        );
    }
    let form = Params::parse(&body);
    let hex = form.text("snapshot").unwrap_or("").to_string();
    // The path travels percent-encoded inside the form field, so any bytes survive.
    let path = crate::paths::normalize(&decode(form.text("path_enc").unwrap_or("")));
    let (_, id, snap) = match app.catalog.snapshot(&hex).await {
        Ok(x) => x,
        Err(e) => return error_page(&app, &caller, StatusCode::NOT_FOUND, &e),
    };
    if let (Some(ns), Some(pvc)) = (form.text("namespace"), form.text("pvc")) {
        let Some(view) = app.state.cluster.clone() else {
            return error_page(
                &app,
                &caller,
                StatusCode::BAD_REQUEST,
                "restoring into a PVC needs the agent",
            );
        };
        let path_text = if path.is_empty() {
            "/".to_string()
        } else {
            show(&path)
        };
        let r = view
            .restore_to_pvc(id.to_hex(), path_text, ns.to_string(), pvc.to_string())
            .await;
        let body = match r {
            Ok(msg) => html! { p.okmsg #pvc-result { (msg) } },
            Err(e) => html! { p.error #pvc-result { (e) } },
        };
        return layout::page(&app, &caller, "Restore into a PVC", body).into_response();
    }
    let target_text = form.text("target").unwrap_or("").trim().to_string();
    if target_text.is_empty() {
        return error_page(
            &app,
            &caller,
            StatusCode::BAD_REQUEST,
            "give a target directory",
        );
    }
    let target = PathBuf::from(&target_text);
    let overwrite = form.text("overwrite") == Some("1");
    if let Err(e) = check_target(&target, overwrite) {
        return error_page(&app, &caller, StatusCode::BAD_REQUEST, &e);
    }
    let opts = RestoreOptions {
        target: target.clone(),
        subpath: (!path.is_empty()).then(|| path.clone()),
        includes: PathFilter::default(),
        excludes: PathFilter::default(),
        owners: holdfast_engine::fsmeta::is_root(),
    };
    let job = Arc::new(Job {
        what: if path.is_empty() {
            format!("snapshot {}", id.short())
        } else {
            format!("{} of snapshot {}", show(&path), id.short())
        },
        snapshot: id,
        path,
        target: target_text,
        started: Instant::now(),
        started_at: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        finished: Mutex::new(None),
        progress: Arc::new(RestoreProgress::default()),
        state: Mutex::new(JobState::Running),
    });
    let n = app.jobs.add(job.clone());
    let repo = app.catalog.repo().clone();
    tracing::info!("web UI: restoring {} to {}", job.what, job.target);
    tokio::task::spawn_blocking(move || {
        let r = restorer::restore_snapshot(&repo, id, &snap, &opts, &job.progress);
        let state = match r {
            Ok(rep) if rep.is_complete() => JobState::Done(format!(
                "restored {} files, {} directories, {} other entries, {} in {:.1} s",
                rep.summary.files,
                rep.summary.dirs,
                rep.summary.others,
                size(rep.summary.bytes),
                rep.duration_ns as f64 / 1e9
            )),
            Ok(rep) => JobState::Failed(format!(
                "restored with {} problems: {}",
                rep.summary.warnings.len(),
                rep.summary.warnings.join("; ")
            )),
            Err(e) => JobState::Failed(e.to_string()),
        };
        *job.finished.lock().expect("job") = Some(Instant::now());
        *job.state.lock().expect("job") = state;
    });
    Redirect::to(&app.link(&format!("/jobs/{n}"))).into_response()
}

fn state_cell(job: &Job) -> maud::Markup {
    let state = job.state.lock().expect("job").clone();
    match state {
        JobState::Running => html! { span.state.running { span class="dot warn" {} "running" } },
        JobState::Done(m) => {
            html! { span.state.done { span class="dot ok" {} "done" } " " span.muted { (m) } }
        }
        JobState::Failed(m) => {
            html! { span.state.failed { span class="dot bad" {} "failed" } " " span.error { (m) } }
        }
    }
}

fn progress_cell(job: &Job) -> maud::Markup {
    let p = &job.progress;
    let (done, total) = (
        p.bytes.load(Ordering::Relaxed),
        p.bytes_total.load(Ordering::Relaxed),
    );
    let pct = (done.min(total) * 100).checked_div(total).unwrap_or(100) as u32;
    html! {
        div.bar { div style=(format!("width:{pct}%")) {} }
        span.muted { (size(done)) " of " (size(total)) " · " (p.entries.load(Ordering::Relaxed)) " entries" }
    }
}

/// `GET /jobs`: every restore of this server, newest first, and the agent's activity.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let jobs = app.jobs.all();
    let running = jobs
        .iter()
        .any(|j| matches!(*j.state.lock().expect("job"), JobState::Running));
    let activity = app
        .state
        .cluster
        .as_ref()
        .map(|c| c.activity())
        .unwrap_or_default();
    let body = html! {
        @if jobs.is_empty() { p.muted { "No restore has been started from this server yet." } }
        @else {
            table #jobs {
                thead { tr { th { "#" } th { "what" } th { "to" } th { "started (UTC)" } th { "progress" } th { "state" } } }
                tbody { @for (i, j) in jobs.iter().enumerate().rev() { tr {
                    td { a href=(app.link(&format!("/jobs/{}", i + 1))) { (i + 1) } }
                    td { a href=(browse_link(&app, &j.snapshot, &j.path)) { (j.what) } }
                    td.mono { (j.target) }
                    td { (j.started_at) }
                    td { (progress_cell(j)) }
                    td { (state_cell(j)) }
                } } }
            }
        }
        @if !activity.is_empty() {
            h2 { "Agent activity" }
            table #activity { thead { tr { th { "what" } th { "started" } th { "state" } th { "detail" } } }
                tbody { @for a in &activity { tr { td { (a.what) } td { (a.started) } td { (a.state) } td { (a.detail) } } } } }
        }
    };
    layout::page_with(&app, &caller, "Jobs", running.then_some(2), body).into_response()
}

/// `GET /jobs/N`: one restore; refreshes every second while it runs.
pub(crate) async fn show_job(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(n): Path<usize>,
) -> Response {
    let Some(job) = app.jobs.get(n) else {
        return error_page(&app, &caller, StatusCode::NOT_FOUND, "no such job");
    };
    let running = matches!(*job.state.lock().expect("job"), JobState::Running);
    let elapsed = job
        .finished
        .lock()
        .expect("job")
        .unwrap_or_else(Instant::now)
        .duration_since(job.started);
    let body = html! {
        table #job {
            tr { th { "restoring" } td { a href=(browse_link(&app, &job.snapshot, &job.path)) { (job.what) } } }
            tr { th { "to" } td.mono #job-target { (job.target) } }
            tr { th { "started (UTC)" } td { (job.started_at) } }
            tr { th { "time" } td { (format!("{:.1} s", elapsed.as_secs_f64())) } }
            tr { th { "progress" } td { (progress_cell(&job)) } }
            tr { th { "state" } td #job-state { (state_cell(&job)) } }
        }
        p { a href=(app.link("/jobs")) { "All jobs" } }
    };
    layout::page_with(
        &app,
        &caller,
        &format!("Job {n}"),
        running.then_some(1),
        body,
    )
    .into_response()
}
