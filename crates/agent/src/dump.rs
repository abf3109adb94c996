//! Database dumps in the cluster: a pod annotated `holdfast.io/backup-command` (k8up's
//! convention) has that command run in it through `pods/exec` (`sh -c '<command>'`), and
//! its standard output is streamed into a snapshot as one file, in bounded memory.
//!
//! - `holdfast.io/backup-container`: the container to run it in (default: the first).
//! - `holdfast.io/backup-filename`: the file's name (default `<owner-name>.dump`).
//! - `holdfast.io/schedule` on the pod (else its namespace, else the configuration's
//!   default schedule), as for volumes; an empty value opts out.
//!
//! One dump per owner: the replicas of a StatefulSet or Deployment (a ReplicaSet is taken
//! for its Deployment through the `pod-template-hash` label, with no extra read) are one
//! target, dumped from the Running and Ready replica whose name sorts first. A pod without
//! a controller is its own owner. The snapshot is recorded at
//! `/<namespace>/<owner-name>/<filename>` with host = the cluster's name and the tags
//! `kind=dump`, `namespace=<ns>`, `owner=<Kind>/<name>`, `method=command`.
//!
//! A dump that does not end with a `Success` status (a non-zero exit, the stream breaking
//! off, the pod going away) fails its reader at the end, so the engine writes no snapshot;
//! the error names the pod, the exit code and the last lines of its error output.

use std::collections::BTreeMap;
use std::io::Read;

use holdfast_engine::command::Tail;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status as KubeStatus;
use kube::api::{Api, AttachParams};
use kube::Client;
use tokio::io::AsyncReadExt;

use crate::config::NamespaceFilter;
use crate::error::{AgentError, Result};
use crate::schedule::Schedule;

/// The annotation holding the dump command (run through `sh -c`).
pub const BACKUP_COMMAND: &str = "holdfast.io/backup-command";
/// The annotation naming the container to run it in.
pub const BACKUP_CONTAINER: &str = "holdfast.io/backup-container";
/// The annotation naming the file the output is recorded as.
pub const BACKUP_FILENAME: &str = "holdfast.io/backup-filename";
/// The schedule annotation, shared with volumes.
pub const SCHEDULE: &str = "holdfast.io/schedule";

/// How many chunks of output may wait between the WebSocket and the backup (each at most
/// `CHUNK` bytes): the memory a dump needs, whatever its size.
const QUEUE: usize = 16;
const CHUNK: usize = 64 * 1024;

/// One owner's dump: what to run where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpTarget {
    /// The namespace.
    pub namespace: String,
    /// The owner's kind (`StatefulSet`, `Deployment`, ..., or `Pod`).
    pub owner_kind: String,
    /// The owner's name.
    pub owner_name: String,
    /// The pod chosen to run it.
    pub pod: String,
    /// Its UID (for Events).
    pub pod_uid: Option<String>,
    /// The container (`None`: the pod's first).
    pub container: Option<String>,
    /// The command, run as `sh -c <command>`.
    pub command: String,
    /// The file name the output is recorded as.
    pub filename: String,
    /// The schedule's text (empty: opted out).
    pub schedule: String,
}

impl DumpTarget {
    /// `namespace/Kind/name`: what the dump is known by in reports and Leases.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.owner_kind, self.owner_name)
    }

    /// `Kind/name`, the `owner` tag's value.
    pub fn owner(&self) -> String {
        format!("{}/{}", self.owner_kind, self.owner_name)
    }

    /// Where the output is recorded: `/<namespace>/<owner-name>/<filename>`.
    pub fn recorded_path(&self) -> String {
        format!("/{}/{}/{}", self.namespace, self.owner_name, self.filename)
    }

    /// The parsed schedule; `Ok(None)` when opted out.
    pub fn parsed_schedule(&self) -> Result<Option<Schedule>, String> {
        if self.schedule.trim().is_empty() {
            return Ok(None);
        }
        Schedule::parse(&self.schedule, &self.key())
            .map(Some)
            .map_err(|e| {
                format!(
                    "annotation {SCHEDULE} of pod {}/{}: {e}",
                    self.namespace, self.pod
                )
            })
    }
}

/// The owner a pod's dump is done once for: its controller (a ReplicaSet with a
/// `pod-template-hash` label stands for its Deployment), or the pod itself.
pub fn owner_of(pod: &Pod) -> (String, String) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let Some(r) = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())
    else {
        return ("Pod".into(), name);
    };
    if r.kind == "ReplicaSet" {
        let hash = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"));
        if let Some(deployment) = hash.and_then(|h| r.name.strip_suffix(&format!("-{h}"))) {
            return ("Deployment".into(), deployment.to_string());
        }
    }
    (r.kind.clone(), r.name.clone())
}

fn running_and_ready(pod: &Pod) -> bool {
    let Some(st) = &pod.status else { return false };
    st.phase.as_deref() == Some("Running")
        && st
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A target that cannot be dumped now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDumpable {
    /// `namespace/Kind/name`.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// The dumps the annotated pods ask for: one per owner, run in its Running and Ready
/// replica whose name sorts first; owners with no such replica are returned apart.
pub fn targets(
    pods: &[Pod],
    namespaces: &[Namespace],
    filter: &NamespaceFilter,
    default_schedule: &str,
) -> (Vec<DumpTarget>, Vec<NotDumpable>) {
    let ns_schedule: BTreeMap<&str, &str> = namespaces
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.as_deref()?,
                n.metadata.annotations.as_ref()?.get(SCHEDULE)?.as_str(),
            ))
        })
        .collect();
    // Owner key -> its annotated pods.
    let mut owners: BTreeMap<(String, String, String), Vec<&Pod>> = BTreeMap::new();
    for p in pods {
        let annotated = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.get(BACKUP_COMMAND).is_some_and(|c| !c.trim().is_empty()));
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        if !annotated || !filter.allows(&ns) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (kind, name) = owner_of(p);
        owners.entry((ns, kind, name)).or_default().push(p);
    }
    let (mut found, mut not) = (Vec::new(), Vec::new());
    for ((ns, kind, name), mut replicas) in owners {
        replicas.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let Some(p) = replicas.iter().find(|p| running_and_ready(p)) else {
            not.push(NotDumpable {
                key: format!("{ns}/{kind}/{name}"),
                reason: format!(
                    "none of its {} annotated pod(s) is Running and Ready",
                    replicas.len()
                ),
            });
            continue;
        };
        let ann = p.metadata.annotations.clone().unwrap_or_default();
        let schedule = ann
            .get(SCHEDULE)
            .map(String::as_str)
            .or(ns_schedule.get(ns.as_str()).copied())
            .unwrap_or(default_schedule)
            .to_string();
        found.push(DumpTarget {
            namespace: ns,
            pod: p.metadata.name.clone().unwrap_or_default(),
            pod_uid: p.metadata.uid.clone(),
            container: ann.get(BACKUP_CONTAINER).filter(|c| !c.is_empty()).cloned(),
            command: ann.get(BACKUP_COMMAND).cloned().unwrap_or_default(),
            filename: ann
                .get(BACKUP_FILENAME)
                .filter(|f| !f.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("{name}.dump")),
            owner_kind: kind,
            owner_name: name,
            schedule,
        });
    }
    (found, not)
}

/// The dump's output as a blocking reader for the engine: chunks come through a bounded
/// channel from the task that reads the WebSocket; an error sent at the end (the dump did
/// not succeed) is returned by `read`, which fails the backup.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                // The sender is gone without an error: the end.
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What a finished (or broken) exec says, as one line for the error: the exit code when
/// the status carries one.
pub fn describe_failure(status: Option<&KubeStatus>) -> (Option<i32>, String) {
    let Some(st) = status else {
        return (
            None,
            "the exec stream ended without a status (the connection broke off or the pod went away)"
                .into(),
        );
    };
    let code = st
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse::<i32>().ok());
    let text = match code {
        Some(c) => format!("exited with code {c}"),
        None => format!(
            "failed: {} ({})",
            st.message.as_deref().unwrap_or("no message"),
            st.reason.as_deref().unwrap_or("no reason")
        ),
    };
    (code, text)
}

/// A started dump: its output as a reader, and the pump feeding it.
pub struct Started {
    /// The output, failing at its end unless the command succeeded.
    pub reader: ChannelReader,
    /// Ends with `Ok(())` when the command succeeded, or the failure's message (also sent
    /// to the reader as its error).
    pub done: tokio::task::JoinHandle<std::result::Result<(), String>>,
}

/// Starts `t`'s command through `pods/exec`: its standard output flows to the returned
/// reader, its error output's last lines are kept for the failure message.
pub async fn start(client: &Client, t: &DumpTarget) -> Result<Started> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &t.namespace);
    let mut ap = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    if let Some(c) = &t.container {
        ap = ap.container(c.clone());
    }
    let what = format!("pod {}/{}", t.namespace, t.pod);
    let mut proc = pods
        .exec(&t.pod, vec!["sh", "-c", t.command.as_str()], &ap)
        .await
        .map_err(|e| AgentError::Kube {
            what: format!("exec the backup command in {what}"),
            source: e,
        })?;
    let (Some(mut stdout), Some(stderr), Some(status)) =
        (proc.stdout(), proc.stderr(), proc.take_status())
    else {
        return Err(AgentError::Dump {
            target: t.key(),
            detail: format!("the exec in {what} gave no output streams"),
        });
    };
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    let tail = Tail::default();
    // Error output is read beside standard output: left unread, it would fill and stall
    // the whole stream.
    let tail_w = tail.clone();
    let errs = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match tokio::io::AsyncBufReadExt::read_until(&mut lines, b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => tail_w.push(&line),
            }
        }
    });
    let done = tokio::spawn(async move {
        // Keep the process handle alive (dropping it aborts the stream) until the end.
        let _proc = proc;
        let mut broke = None;
        loop {
            let mut buf = vec![0u8; CHUNK];
            match stdout.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(buf)).await.is_err() {
                        // The backup stopped reading (it failed on its own).
                        return Err("the backup stopped reading the dump".to_string());
                    }
                }
                Err(e) => {
                    broke = Some(format!("reading its output failed: {e}"));
                    break;
                }
            }
        }
        let st = status.await;
        let _ = errs.await;
        let ok = st.as_ref().and_then(|s| s.status.as_deref()) == Some("Success");
        if ok && broke.is_none() {
            return Ok(());
        }
        let (_, text) = describe_failure(st.as_ref());
        let msg = format!(
            "the backup command in {what} {text}{}; {}",
            broke.map(|b| format!(" ({b})")).unwrap_or_default(),
            tail.quoted()
        );
        let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
        Err(msg)
    });
    Ok(Started {
        reader: ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        },
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(name: &str, owner: Option<(&str, &str)>, hash: Option<&str>, ready: bool) -> Pod {
        let mut labels = BTreeMap::new();
        if let Some(h) = hash {
            labels.insert("pod-template-hash".to_string(), h.to_string());
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("db".into()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    BACKUP_COMMAND.to_string(),
                    "pg_dumpall".to_string(),
                )])),
                owner_references: owner.map(|(k, n)| {
                    vec![OwnerReference {
                        kind: k.into(),
                        name: n.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_dump_per_owner_from_the_first_ready_replica() {
        let pods = vec![
            pod("pg-1", Some(("StatefulSet", "pg")), None, true),
            pod("pg-0", Some(("StatefulSet", "pg")), None, false),
            pod("pg-2", Some(("StatefulSet", "pg")), None, true),
            pod(
                "web-7d9f-abcde",
                Some(("ReplicaSet", "web-7d9f")),
                Some("7d9f"),
                true,
            ),
            pod("lone", None, None, true),
            pod("down-0", Some(("StatefulSet", "down")), None, false),
        ];
        let (t, not) = targets(&pods, &[], &NamespaceFilter::default(), "@daily");
        let keys: Vec<_> = t.iter().map(|t| (t.key(), t.pod.clone())).collect();
        assert_eq!(
            keys,
            [
                (
                    "db/Deployment/web".to_string(),
                    "web-7d9f-abcde".to_string()
                ),
                ("db/Pod/lone".to_string(), "lone".to_string()),
                ("db/StatefulSet/pg".to_string(), "pg-1".to_string()),
            ]
        );
        assert_eq!(t[2].filename, "pg.dump");
        assert_eq!(t[2].recorded_path(), "/db/pg/pg.dump");
        assert_eq!(not.len(), 1);
        assert_eq!(not[0].key, "db/StatefulSet/down");
    }

    #[test]
    fn failures_name_the_exit_code() {
        let st: KubeStatus = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "2"}]}
        }))
        .unwrap();
        assert_eq!(
            describe_failure(Some(&st)),
            (Some(2), "exited with code 2".into())
        );
        assert_eq!(describe_failure(None).0, None);
    }
}
