//! `pods/exec` over WebSocket, as the real API server (and the kubelet behind it) serves it:
//! `GET`/`POST /api/v1/namespaces/<ns>/pods/<name>/exec?command=..&container=..&stdout=true`
//! upgraded to a WebSocket speaking `v5.channel.k8s.io` or `v4.channel.k8s.io`.
//!
//! There is no container runtime here: the command runs **on this machine**, with this
//! process's environment plus the literal `env` values of the pod's container (so a
//! Bitnami-style pod whose `POSTGRES_PASSWORD` is in its spec works). Its output is streamed
//! in chunks as it comes, with the WebSocket's backpressure reaching the command through its
//! pipe: a 50 GB dump needs no more memory than one chunk.
//!
//! Channel framing: the first byte of each binary message is the stream (0 stdin, 1 stdout,
//! 2 stderr, 3 error/status, 4 resize; v5 adds 255 close). At the end a `metav1.Status` on
//! channel 3 says `Success`, or `Failure` with reason `NonZeroExitCode` and the code in
//! `details.causes[0].message`, as the kubelet writes it.
//!
//! Strict as the real server: 404 for a missing pod, 400 for a container not in the pod or
//! no container named on a pod with several, 400 for a pod that is not Running, 400 when the
//! client offers no supported subprotocol or no command.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::ApiError;
use crate::Shared;

/// Stream ids of the channel protocols.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
/// v5: the peer closed one of its streams.
const CLOSE: u8 = 255;

/// The subprotocols served, in order of preference.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The size of one chunk of output sent as one message.
const CHUNK: usize = 32 * 1024;

/// What an exec request asks for, parsed from its query.
#[derive(Debug, Clone)]
pub(crate) struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The container named, if any.
    pub container: Option<String>,
    /// Whether stdout is wanted.
    pub stdout: bool,
    /// Whether stderr is wanted.
    pub stderr: bool,
}

fn flag(v: &str) -> bool {
    v == "true" || v == "1"
}

impl ExecRequest {
    fn parse(query: &str) -> Result<ExecRequest, ApiError> {
        let mut r = ExecRequest {
            command: Vec::new(),
            container: None,
            stdout: false,
            stderr: false,
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "command" => r.command.push(v.into_owned()),
                "container" => r.container = Some(v.into_owned()).filter(|c| !c.is_empty()),
                "stdout" => r.stdout = flag(&v),
                "stderr" => r.stderr = flag(&v),
                "tty" if flag(&v) => {
                    return Err(ApiError::bad_request(
                        "tty is not supported by the fake API server",
                    ))
                }
                _ => {}
            }
        }
        if r.command.is_empty() {
            return Err(ApiError::bad_request("you must specify at least 1 command"));
        }
        if !r.stdout && !r.stderr {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(r)
    }
}

/// Checks the pod and container and returns the container's literal `env` values.
fn resolve(
    sh: &Shared,
    ns: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<(String, Vec<(String, String)>), ApiError> {
    let res = sh
        .resource("", "v1", "pods")
        .ok_or_else(ApiError::path_not_found)?;
    let obj = sh
        .lock()
        .get(&res, ns, pod)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&res, pod))?;
    let containers: Vec<&Value> = obj["spec"]["containers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let chosen = match container {
        Some(c) => containers
            .iter()
            .find(|x| x["name"].as_str() == Some(c))
            .ok_or_else(|| {
                ApiError::bad_request(format!("container {c} is not valid for pod {pod}"))
            })?,
        None if containers.len() == 1 => &containers[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                names.join(" ")
            )))
        }
    };
    let phase = obj["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a pod that is not running; current phase is {phase}"
        )));
    }
    let env = chosen["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_string(),
                        e["value"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((chosen["name"].as_str().unwrap_or_default().to_string(), env))
}

/// The subprotocol to speak: the first of ours the client offers.
fn negotiate(req: &Request) -> Option<&'static str> {
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    PROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
}

/// Serves one exec request: checks, then the 101 answer and the command on its own task.
pub(crate) fn handle(
    sh: &Arc<Shared>,
    mut req: Request,
    ns: &str,
    pod: &str,
) -> Result<Response, ApiError> {
    let q = ExecRequest::parse(req.uri().query().unwrap_or(""))?;
    let (container, env) = resolve(sh, ns, pod, q.container.as_deref())?;
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return Err(ApiError::bad_request(
            "Upgrade request required (a WebSocket with the v5.channel.k8s.io or \
             v4.channel.k8s.io subprotocol)",
        ));
    };
    let Some(protocol) = negotiate(&req) else {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: none of the offered subprotocols is supported \
             (supported: {})",
            PROTOCOLS.join(", ")
        )));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let what = format!("{ns}/{pod}/{container}");
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(pod = %what, error = %e, "exec: the upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run(ws, q, env, &what).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).map_err(|e| ApiError::bad_request(e.to_string()))?,
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Body::empty())
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// The final `Status` for an exit: `Success`, or the kubelet's `NonZeroExitCode`.
pub(crate) fn exit_status(code: Option<i32>, signal: Option<i32>) -> Value {
    match (code, signal) {
        (Some(0), _) => json!({"metadata": {}, "status": "Success"}),
        (code, signal) => {
            // A signal is reported as the shell does: 128 + its number.
            let c = code.unwrap_or(128 + signal.unwrap_or(0));
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {c}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]}
            })
        }
    }
}

/// Runs the command and streams it over `ws`; the command is killed when the client goes.
async fn run<S>(ws: WebSocketStream<S>, q: ExecRequest, env: Vec<(String, String)>, what: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, mut rx) = ws.split();
    let mut cmd = tokio::process::Command::new(&q.command[0]);
    cmd.args(&q.command[1..])
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            // As the runtime answers a missing executable: a failure on the status channel.
            let st = json!({
                "metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("failed to exec in container: starting {:?}: {e}", q.command[0]),
            });
            let _ = tx.send(framed(STATUS, st.to_string().as_bytes())).await;
            let _ = tx.close().await;
            return;
        }
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    // The client's messages: only a close (or the connection ending) matters here.
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(m) = rx.next().await {
            match m {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(Message::Binary(b)) if b.first() == Some(&CLOSE) => {} // stdin closed
                Ok(_) => {}
            }
        }
        let _ = gone_tx.send(());
    });
    let (mut obuf, mut ebuf) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut client_gone = false;
    while out.is_some() || err.is_some() {
        tokio::select! {
            n = async { match out.as_mut() { Some(o) => o.read(&mut obuf).await, None => std::future::pending().await } } => {
                match n {
                    Ok(0) | Err(_) => out = None,
                    Ok(n) => if q.stdout && tx.send(framed(STDOUT, &obuf[..n])).await.is_err() { client_gone = true; break },
                }
            }
            n = async { match err.as_mut() { Some(e) => e.read(&mut ebuf).await, None => std::future::pending().await } } => {
                match n {
                    Ok(0) | Err(_) => err = None,
                    Ok(n) => if q.stderr && tx.send(framed(STDERR, &ebuf[..n])).await.is_err() { client_gone = true; break },
                }
            }
            _ = &mut gone => { client_gone = true; break }
        }
    }
    if client_gone {
        tracing::info!(pod = %what, "exec: the client went away; killing the command");
        let _ = child.kill().await;
        reader.abort();
        return;
    }
    let status = match child.wait().await {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            exit_status(s.code(), s.signal())
        }
        Err(e) => json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
            "message": format!("waiting for the command: {e}")}),
    };
    let _ = tx.send(framed(STATUS, status.to_string().as_bytes())).await;
    let _ = tx.close().await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_the_kubelets() {
        assert_eq!(exit_status(Some(0), None)["status"], "Success");
        let s = exit_status(Some(2), None);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "2");
        assert_eq!(
            exit_status(None, Some(9))["details"]["causes"][0]["message"],
            "137"
        );
    }

    #[test]
    fn a_request_needs_a_command_and_an_output() {
        assert!(ExecRequest::parse("stdout=true").is_err());
        assert!(ExecRequest::parse("command=ls").is_err());
        let r =
            ExecRequest::parse("command=sh&command=-c&command=echo+hi&stdout=true&container=db")
                .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert_eq!(r.container.as_deref(), Some("db"));
    }
}
