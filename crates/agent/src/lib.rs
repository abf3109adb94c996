//! The holdfast node agent: finds the persistent volumes mounted on its node and backs them
//! up into one repository on their schedules (`holdfast agent`, run as a DaemonSet).
//!
//! Data flows one way: [`discovery`] (objects → this node's volumes), [`selection`]
//! (annotations → schedule, subpaths, retention), [`schedule`] (due or not, from the
//! repository's newest snapshot), [`kubelet`] (where the files are), [`lease`] (which
//! agent does a volume), [`repo`] (the backup itself, through the engine), [`report`]
//! (results, Events); [`maintenance`] runs forget, prune and check on one elected agent,
//! and [`jobs`] the cluster's database dumps ([`dump`]) and objects backup ([`objects`]).
//! [`http`] serves [`metrics`] (rebuilt by [`refresh`]); [`coverage`] audits every PVC.
#![deny(missing_docs)]

pub mod args;
pub mod commands;
pub mod config;
pub mod coverage;
pub mod discovery;
pub mod dump;
pub mod error;
pub mod expose;
pub mod http;
pub mod jobs;
pub mod kube_api;
pub mod kubelet;
pub mod lease;
pub mod maintenance;
pub mod manifests;
pub mod metrics;
pub mod objects;
pub mod priority;
pub mod refresh;
pub mod repo;
pub mod report;
pub mod restore;
pub mod runner;
pub mod schedule;
pub mod selection;
pub mod snapdir;
pub mod snapshot_api;
pub mod temporary;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

pub use error::{AgentError, Result};

use args::{AgentAction, AgentArgs};
use config::AgentConfig;
use repo::RepoSettings;
use runner::{Agent, Settings};

/// Resolves flags, environment and configuration into the run's settings.
pub fn settings(args: &AgentArgs, mut repo: RepoSettings) -> Result<Settings> {
    let r = &args.run;
    let config = AgentConfig::load_or_default(r.config.as_deref())?;
    let node = r
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            AgentError::Usage(
                "no node name: set NODE_NAME (the DaemonSet sets it from spec.nodeName; \
             `holdfast agent` without a subcommand also takes --node-name)"
                    .into(),
            )
        })?;
    // Per-node keys are labelled with the node's name (`holdfast key add --host NODE`).
    repo.key_hint.host.get_or_insert_with(|| node.clone());
    let location = repo
        .location
        .clone()
        .or_else(|| config.repository.clone())
        .ok_or_else(|| {
            AgentError::Usage(
                "no repository: set `repository` in the configuration, -r or \
                 HOLDFAST_REPOSITORY"
                    .into(),
            )
        })?;
    let cluster = r
        .cluster_name
        .clone()
        .or_else(|| config.cluster_name.clone())
        .unwrap_or_else(|| "kubernetes".into());
    let pod = std::env::var("POD_NAME")
        .ok()
        .or_else(hostname_of_process)
        .unwrap_or_else(|| std::process::id().to_string());
    let nonzero = |v: u64| (v > 0).then_some(v);
    repo.limit_upload_kib = repo.limit_upload_kib.or(nonzero(config.limit_upload_kib));
    repo.limit_download_kib = repo
        .limit_download_kib
        .or(nonzero(config.limit_download_kib));
    let concurrency = r.concurrency.unwrap_or(config.concurrency).max(1);
    Ok(Settings {
        identity: format!("{node}/{pod}"),
        node,
        cluster,
        kubelet_dir: r.kubelet_dir.clone(),
        lease_namespace: r.lease_namespace.clone(),
        concurrency,
        location,
        repo,
        maintenance: !r.no_maintenance,
        config,
    })
}

pub(crate) fn hostname_of_process() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// `holdfast agent`: runs the agent (or prints the manifests); returns the exit code.
/// `json`: print `--once`'s report as one JSON document.
pub fn main(args: &AgentArgs, repo: RepoSettings, json: bool) -> Result<i32> {
    if let Some(AgentAction::Manifests(m)) = &args.action {
        print!("{}", manifests::render(m)?);
        return Ok(0);
    }
    let s = settings(args, repo)?;
    let listen = if args.run.once || args.action.is_some() {
        None
    } else {
        http::parse_listen(&args.run.listen)?
    };
    // Before any thread exists, so every thread inherits it (nice is per thread on Linux).
    // A restore is what someone waits for: it keeps the normal priority.
    let restoring = matches!(args.action, Some(AgentAction::Restore(_)));
    if !args.run.no_low_priority && !restoring {
        match priority::lower() {
            Ok(r) => tracing::info!("priority: {r}"),
            Err(e) => tracing::warn!(error = %e, "cannot lower the agent's priority"),
        }
    }
    // A login file that exists but is wrong stops the start, before any work.
    let ui_login = match listen {
        Some(_) => web::load_login(&args.run.ui_login_file)?,
        None => None,
    };
    let (once, tick) = (args.run.once, Duration::from_secs(args.run.interval));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AgentError::Usage(format!("cannot start the async runtime: {e}")))?;
    let restore = match &args.action {
        Some(AgentAction::Restore(r)) => Some(r.clone()),
        _ => None,
    };
    runtime.block_on(async move {
        if let Some(r) = restore {
            // A restore runs beside the daemon in the same pod: it must not sweep the
            // daemon's objects as leftovers.
            let agent = Agent::connect_with(s, false).await?;
            let report = restore::run(&agent, &r).await?;
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                println!(
                    "restored snapshot {} (data from {}) into {}{}: {} files, {} directories, {:.1} MiB{}",
                    &report.snapshot[..8],
                    report.snapshot_time,
                    report.target,
                    if report.path.is_empty() { String::new() } else { format!(" (folder {})", report.path) },
                    report.files,
                    report.dirs,
                    report.bytes as f64 / 1048576.0,
                    if report.created_pvc { "; the PVC was created" } else { "" }
                );
                for w in &report.warnings {
                    println!("warning: {w}");
                }
            }
            return Ok(if report.warnings.is_empty() { 0 } else { 3 });
        }
        let agent = Agent::connect(s).await?;
        if once {
            let report = agent.run_once().await?;
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                for v in &report.volumes {
                    println!("{}: {}: {}", v.key(), v.status, v.reason);
                }
                for j in &report.jobs {
                    println!("{} {}: {}: {}", j.kind, j.key, j.status, j.reason);
                }
                for u in &report.unmounted {
                    println!("{u}: not mounted by any running pod: not backed up");
                }
                if let Some(m) = &report.maintenance {
                    println!("maintenance (this agent was elected): {m}");
                }
            }
            Ok(report.exit_code())
        } else {
            let agent = Arc::new(agent);
            if let Some(addr) = listen {
                let ui = match ui_login {
                    Some(auth) => {
                        tracing::info!(path = web::BASE_PATH, "serving the web UI");
                        Some(web::router(agent.clone(), auth))
                    }
                    None => {
                        tracing::info!(
                            file = %args.run.ui_login_file.display(),
                            "no web UI: its login file does not exist (create the \
                             holdfast-ui-login Secret to serve it at /ui)"
                        );
                        None
                    }
                };
                http::serve(addr, agent.metrics().clone(), ui).await?;
            }
            agent.run_daemon(tick).await?;
            Ok(0)
        }
    })
}
