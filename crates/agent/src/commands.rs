//! Scheduled holdfast commands: the jobs of a cluster that are not volumes (a bucket
//! backup, an etcd snapshot through its maintenance API, a k3s snapshot directory on the
//! server nodes, a restore drill) are `holdfast` command lines the agent runs on a
//! schedule, into the same repository, so one retention policy, one check and one set of
//! alerts cover them.
//!
//! Each job's state lives in a Lease (`holdfast-cmd-<hash>`, annotations
//! [`LAST_ATTEMPT`], [`LAST_SUCCESS`], [`LAST_STATUS`]), which is also what makes one agent
//! run it: the elected kind takes the job's one Lease, the each-node kind one Lease per
//! node. A job is due when its schedule fired since its last success; a failed job is
//! tried again after [`RETRY_AFTER`], not every round. The command runs as a child
//! process (this same binary) with the agent's repository settings in its environment;
//! its last lines of output go into the result and, on failure, into a Warning Event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use holdfast_engine::command::{describe_status, Tail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::lease::{Claim, Held, Leases};
use crate::repo::RepoSettings;
use crate::schedule::Schedule;

/// Annotation: when the job was last started (RFC 3339).
pub const LAST_ATTEMPT: &str = "holdfast.io/last-attempt";
/// Annotation: when the job last succeeded (RFC 3339).
pub const LAST_SUCCESS: &str = "holdfast.io/last-success";
/// Annotation: `succeeded` or `failed: <exit status>`.
pub const LAST_STATUS: &str = "holdfast.io/last-status";
/// A failed job is tried again this long after its last attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(30 * 60);

/// Where a job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// On one agent of the cluster (whichever takes the job's Lease first).
    #[default]
    Elected,
    /// On every node where `ifExists` exists (k3s server nodes' snapshot directories).
    EachNode,
}

/// One scheduled command, from the configuration's `commands` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandJob {
    /// Its name (unique; shown in Events, reports and Lease annotations).
    pub name: String,
    /// Cron expression or macro; `@weekly` is the default for `drill` commands, `@daily`
    /// for the others.
    pub schedule: Option<String>,
    /// The holdfast arguments, e.g. `[backup, --bucket, "s3:http://rgw/photos"]`.
    pub args: Vec<String>,
    /// One agent of the cluster, or each node.
    pub placement: Placement,
    /// Run only where this path exists (on the agent's filesystem, e.g. a hostPath mount).
    pub if_exists: Option<PathBuf>,
    /// The command is killed after this long, seconds.
    pub timeout_seconds: u64,
}

impl Default for CommandJob {
    fn default() -> Self {
        CommandJob {
            name: String::new(),
            schedule: None,
            args: Vec::new(),
            placement: Placement::Elected,
            if_exists: None,
            timeout_seconds: 6 * 3600,
        }
    }
}

impl CommandJob {
    /// Its schedule: the one given, else weekly for drills and daily for the rest.
    pub fn schedule(&self) -> Result<Schedule, String> {
        let text = match &self.schedule {
            Some(s) => s.as_str(),
            None if self.args.first().map(String::as_str) == Some("drill") => "@weekly",
            None => "@daily",
        };
        Schedule::parse(text, &format!("commands[{}].schedule", self.name))
            .map_err(|e| e.to_string())
    }

    /// Checks a job as the configuration loader does.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!(
                "commands: the name {:?} must be letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if self.args.is_empty() {
            return Err(format!("commands[{}]: args is empty", self.name));
        }
        if matches!(self.args[0].as_str(), "agent" | "init" | "prune" | "key") {
            return Err(format!(
                "commands[{}]: `holdfast {}` is not a job the agent runs (maintenance runs \
                 prune itself)",
                self.name, self.args[0]
            ));
        }
        if self.placement == Placement::EachNode && self.if_exists.is_none() {
            return Err(format!(
                "commands[{}]: placement eachNode needs ifExists (the path that marks the nodes \
                 to run on)",
                self.name
            ));
        }
        if self.timeout_seconds == 0 {
            return Err(format!(
                "commands[{}]: timeoutSeconds must be at least 1",
                self.name
            ));
        }
        self.schedule().map(|_| ())
    }

    /// The Lease holding this job's state, per node for each-node jobs.
    pub fn lease_name(&self, node: &str) -> String {
        let key = match self.placement {
            Placement::Elected => self.name.clone(),
            Placement::EachNode => format!("{}@{node}", self.name),
        };
        let h = blake3::hash(key.as_bytes());
        format!("holdfast-cmd-{}", &h.to_hex()[..20])
    }
}

/// What happened to a job this round.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// The job's name.
    pub name: String,
    /// `succeeded`, `failed`, `notDue`, `busy` (another agent runs it) or `skipped`.
    pub status: CommandStatus,
    /// Why, or the exit status and last lines of output.
    pub reason: String,
    /// How long the command ran, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// The outcome of a job in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CommandStatus {
    /// Ran and exited 0.
    Succeeded,
    /// Ran and failed (or could not start).
    Failed,
    /// Its schedule has not fired since it last succeeded.
    NotDue,
    /// Another agent holds its Lease.
    Busy,
    /// Not for this node (its `ifExists` path is absent).
    Skipped,
}

/// Whether a job whose Lease has these annotations is due at `now`.
pub fn is_due(
    schedule: &Schedule,
    annotations: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> bool {
    let at = |k: &str| {
        annotations
            .get(k)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    if !schedule.is_due(at(LAST_SUCCESS), now) {
        return false;
    }
    // Failed since its last success: wait before trying again.
    match (at(LAST_ATTEMPT), at(LAST_SUCCESS)) {
        (Some(attempt), success) if success.is_none_or(|s| attempt > s) => {
            now.signed_duration_since(attempt)
                .to_std()
                .unwrap_or_default()
                >= RETRY_AFTER
        }
        _ => true,
    }
}

/// The environment that gives a child `holdfast` the agent's repository, and the cluster's
/// name as the host of the snapshots it writes (a pod's own host name changes with every
/// restart, which would break parent matching and retention groups).
pub fn repo_env(location: &str, repo: &RepoSettings, cluster: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOLDFAST_REPOSITORY".to_string(), location.to_string()),
        ("HOLDFAST_HOST".to_string(), cluster.to_string()),
    ];
    if let Some(f) = &repo.password_file {
        env.push(("HOLDFAST_PASSWORD_FILE".into(), f.display().to_string()));
    }
    if let Some(c) = &repo.password_command {
        env.push(("HOLDFAST_PASSWORD_COMMAND".into(), c.clone()));
    }
    if let Some(d) = &repo.cache_dir {
        env.push(("HOLDFAST_CACHE_DIR".into(), d.display().to_string()));
    }
    env
}

/// Runs `program args...` with `env` added, killing it after `timeout`; returns success
/// and a reason (the exit status and the last lines of its output on failure).
pub async fn run_command(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot start {}: {e}", program.display())),
    };
    let tail = Tail::default();
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(keep_tail(s, tail.clone())));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(keep_tail(s, tail.clone())));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return (false, format!("waiting for the command failed: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            return (
                false,
                format!(
                    "killed after its timeout of {} s; {}",
                    timeout.as_secs(),
                    tail.quoted()
                ),
            );
        }
    };
    for t in [out, err].into_iter().flatten() {
        let _ = t.await;
    }
    let lines = tail.lines().join("\n");
    if status.success() {
        (true, lines)
    } else {
        (
            false,
            format!("{}; {}", describe_status(&status), tail.quoted()),
        )
    }
}

async fn keep_tail(from: impl AsyncRead + Unpin, tail: Tail) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tail.push(line.as_bytes());
    }
}

/// Runs one job if it is due and this agent may: takes its Lease, runs the command while
/// renewing it, records the outcome in the Lease, releases it.
pub async fn run_job(
    job: &CommandJob,
    leases: &Leases,
    node: &str,
    program: &Path,
    env: &[(String, String)],
    now: DateTime<Utc>,
) -> CommandResult {
    let result = |status, reason: String, seconds| CommandResult {
        name: job.name.clone(),
        status,
        reason,
        seconds,
    };
    if let Some(p) = &job.if_exists {
        if !p.exists() {
            return result(
                CommandStatus::Skipped,
                format!("{} does not exist on this node", p.display()),
                None,
            );
        }
    }
    let schedule = match job.schedule() {
        Ok(s) => s,
        Err(e) => return result(CommandStatus::Failed, e, None),
    };
    let name = job.lease_name(node);
    let anns = BTreeMap::from([("holdfast.io/command".to_string(), job.name.clone())]);
    let mut held: Held = match leases.try_acquire(&name, &anns).await {
        Ok(Claim::Acquired(h)) => *h,
        Ok(Claim::Busy { holder }) => {
            return result(CommandStatus::Busy, format!("{holder} runs it"), None)
        }
        Err(e) => {
            return result(
                CommandStatus::Failed,
                format!("cannot take the Lease {name}: {e}"),
                None,
            )
        }
    };
    if !is_due(&schedule, &held.annotations(), now) {
        leases.release(held).await;
        return result(
            CommandStatus::NotDue,
            "ran since its schedule fired".into(),
            None,
        );
    }
    let stamp = now.to_rfc3339();
    if let Err(e) = leases.annotate(&mut held, LAST_ATTEMPT, &stamp).await {
        leases.release(held).await;
        return result(
            CommandStatus::Failed,
            format!("cannot record the attempt on the Lease {name}: {e}"),
            None,
        );
    }
    let renewer = leases.keep_renewed(&held, "command");
    let started = std::time::Instant::now();
    tracing::info!(command = %job.name, args = ?job.args, "running");
    let (ok, reason) = run_command(
        program,
        &job.args,
        env,
        Duration::from_secs(job.timeout_seconds),
    )
    .await;
    renewer.abort();
    let seconds = started.elapsed().as_secs_f64();
    // The renewer advanced the Lease: write the outcome on a fresh copy.
    let _ = leases.renew(&mut held).await;
    let status_text = if ok {
        "succeeded".to_string()
    } else {
        format!("failed: {}", reason.lines().next().unwrap_or(""))
    };
    let mut record = leases.annotate(&mut held, LAST_STATUS, &status_text).await;
    if ok && record.is_ok() {
        record = leases.annotate(&mut held, LAST_SUCCESS, &stamp).await;
    }
    if let Err(e) = record {
        tracing::warn!(lease = %name, error = %e, "cannot record the command's outcome; it may run again");
    }
    leases.release(held).await;
    if ok {
        result(CommandStatus::Succeeded, reason, Some(seconds))
    } else {
        result(CommandStatus::Failed, reason, Some(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> Result<CommandJob, String> {
        let j: CommandJob = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        j.validate().map(|()| j)
    }

    #[test]
    fn the_readme_example_is_a_valid_configuration() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```yaml\ncommands:\n- name: photos-bucket")
            .expect("the README's commands example");
        let block = &readme[start + "```yaml\n".len()..];
        let block = &block[..block.find("```").expect("end of the example")];
        let cfg = crate::config::AgentConfig::parse(block).expect("the example parses");
        let names: Vec<&str> = cfg.commands.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["photos-bucket", "k3s-etcd", "pg-drill", "keep-buckets"]
        );
        assert_eq!(cfg.commands[1].placement, Placement::EachNode);
    }

    #[test]
    fn drills_default_to_weekly_and_others_to_daily() {
        let d = job("name: pg-drill\nargs: [drill, postgres]\n").unwrap();
        let b = job("name: photos\nargs: [backup, --bucket, s3:http://rgw/photos]\n").unwrap();
        let now = Utc::now();
        let week = d.schedule().unwrap().period(now).unwrap();
        let day = b.schedule().unwrap().period(now).unwrap();
        assert_eq!(week.num_days(), 7);
        assert_eq!(day.num_days(), 1);
    }

    #[test]
    fn bad_jobs_are_refused_with_their_name() {
        assert!(job("name: ''\nargs: [backup]\n")
            .unwrap_err()
            .contains("name"));
        assert!(job("name: x\nargs: []\n").unwrap_err().contains("args"));
        assert!(job("name: x\nargs: [prune]\n")
            .unwrap_err()
            .contains("maintenance"));
        assert!(job("name: x\nargs: [backup]\nplacement: eachNode\n")
            .unwrap_err()
            .contains("ifExists"));
        assert!(job("name: x\nargs: [backup]\nschedule: 'not cron'\n").is_err());
        assert!(job("name: x\nargs: [backup]\ntypo: 1\n").is_err());
    }

    #[test]
    fn each_node_jobs_have_a_lease_per_node() {
        let e =
            job("name: k3s\nargs: [backup, /host/k3s]\nplacement: eachNode\nifExists: /host/k3s\n")
                .unwrap();
        assert_ne!(e.lease_name("a"), e.lease_name("b"));
        let one = job("name: k3s\nargs: [backup]\n").unwrap();
        assert_eq!(one.lease_name("a"), one.lease_name("b"));
        assert!(one.lease_name("a").len() <= 63);
    }

    #[test]
    fn due_after_the_schedule_fires_and_failures_wait_before_a_retry() {
        let s = Schedule::parse("@daily", "t").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let anns = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(is_due(&s, &anns(&[]), now), "never ran");
        let ok_today = anns(&[
            (LAST_ATTEMPT, "2026-12-03T00:30:00Z"),
            (LAST_SUCCESS, "2026-12-03T00:30:00Z"),
        ]);
        assert!(!is_due(&s, &ok_today, now), "ran since midnight");
        let ok_yesterday = anns(&[
            (LAST_ATTEMPT, "2026-12-02T00:30:00Z"),
            (LAST_SUCCESS, "2026-12-02T00:30:00Z"),
        ]);
        assert!(is_due(&s, &ok_yesterday, now));
        let failed_recently = anns(&[
            (LAST_ATTEMPT, "2026-12-03T11:50:00Z"),
            (LAST_SUCCESS, "2026-12-02T00:30:00Z"),
        ]);
        assert!(
            !is_due(&s, &failed_recently, now),
            "retried after 30 min, not every round"
        );
        let failed_long_ago = anns(&[(LAST_ATTEMPT, "2026-12-03T11:00:00Z")]);
        assert!(is_due(&s, &failed_long_ago, now));
    }

    #[tokio::test]
    async fn a_command_reports_its_status_and_last_lines() {
        let sh = Path::new("/bin/sh");
        let (ok, out) = run_command(
            sh,
            &["-c".into(), "echo snapshot 1234 saved".into()],
            &[],
            Duration::from_secs(10),
        )
        .await;
        assert!(ok);
        assert!(out.contains("snapshot 1234 saved"), "{out}");
        let (ok, out) = run_command(
            sh,
            &[
                "-c".into(),
                "echo 'cannot reach the bucket' >&2; exit 4".into(),
            ],
            &[("X".into(), "1".into())],
            Duration::from_secs(10),
        )
        .await;
        assert!(!ok);
        assert!(
            out.contains("exited with status 4") && out.contains("cannot reach the bucket"),
            "{out}"
        );
        let (ok, out) = run_command(
            sh,
            &["-c".into(), "sleep 30".into()],
            &[],
            Duration::from_millis(300),
        )
        .await;
        assert!(!ok);
        assert!(out.contains("timeout"), "{out}");
    }
}
