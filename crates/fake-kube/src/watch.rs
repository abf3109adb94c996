//! Watch streams: `?watch=true&resourceVersion=N`, JSON lines of
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}`.
//!
//! Events after N come from a bounded history; an N older than the history answers a single
//! `ERROR` event with a 410 `Expired` Status, as the real server does. Without N (or with `0`)
//! the stream starts with a synthetic ADDED event per existing object. Selectors apply, and a
//! MODIFIED object that enters or leaves the selection is sent as ADDED or DELETED. BOOKMARKs
//! are sent every bookmark interval when `allowWatchBookmarks=true`; with
//! `sendInitialEvents=true` the initial events end with a bookmark annotated
//! `k8s.io/initial-events-end`. The stream ends at `timeoutSeconds`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures::channel::mpsc;
use futures::SinkExt;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::selectors::Selectors;
use crate::store::{namespace_of, res_key, Change, ChangeType, ResKey};
use crate::verbs::Query;
use crate::Shared;

struct Filter {
    key: ResKey,
    ns: Option<String>,
    sel: Selectors,
}

impl Filter {
    fn selects(&self, obj: &Value) -> bool {
        self.ns.as_ref().is_none_or(|n| *n == namespace_of(obj)) && self.sel.matches(obj)
    }

    /// The event a watcher with this filter sees for a change, if any.
    fn view(&self, c: &Change) -> Option<Bytes> {
        if c.key != self.key {
            return None;
        }
        let now = self.selects(&c.object);
        let kind = match (c.kind, c.old.as_ref().map(|o| self.selects(o))) {
            (ChangeType::Modified, Some(false)) if now => ChangeType::Added,
            (ChangeType::Modified, Some(true)) if !now => ChangeType::Deleted,
            (ChangeType::Modified, Some(false)) => return None,
            (k, _) if now => k,
            _ => return None,
        };
        Some(line(kind.as_str(), &c.object))
    }
}

fn line(kind: &str, obj: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({ "type": kind, "object": obj })).expect("serializes");
    s.push(b'\n');
    Bytes::from(s)
}

fn bookmark(res: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rv.to_string(), "creationTimestamp": null });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line(
        "BOOKMARK",
        &json!({ "kind": res.kind, "apiVersion": res.api_version(), "metadata": meta }),
    )
}

/// Starts a watch and answers with its streaming body.
pub(crate) fn start(
    sh: Arc<Shared>,
    res: ResourceType,
    ns: Option<String>,
    q: &Query,
) -> Result<Response, ApiError> {
    let sel = Selectors::from_query(q, &res)?;
    let timeout = match q.get("timeoutSeconds") {
        None => Duration::from_secs(1800),
        Some(t) => Duration::from_secs(t.parse().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds: Invalid value: \"{t}\""))
        })?),
    };
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let send_initial = q
        .get("sendInitialEvents")
        .is_some_and(|b| b == "true" || b == "1");
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let filter = Filter {
        key: res_key(&res),
        ns,
        sel,
    };

    let mut first: Vec<Bytes> = Vec::new();
    let mut expired = false;
    let (sub, start_rv) = {
        let st = sh.lock();
        let sub = st.tx.subscribe();
        if send_initial || rv_param.is_empty() || rv_param == "0" {
            let list_res = res.clone();
            for o in st.list(&list_res, filter.ns.as_deref()) {
                if filter.sel.matches(o) {
                    first.push(line("ADDED", o));
                }
            }
            if send_initial {
                first.push(bookmark(&res, st.rv, true));
            }
        } else {
            let n: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: \"{rv_param}\": must be a number"
                ))
            })?;
            if n < st.compacted {
                let err = ApiError::expired(format!(
                    "too old resource version: {n} ({})",
                    st.compacted + 1
                ));
                first.push(line("ERROR", &err.status()));
                expired = true;
            } else {
                for c in st.history.iter().filter(|c| c.rv > n) {
                    if let Some(l) = filter.view(c) {
                        first.push(l);
                    }
                }
            }
        }
        (sub, st.rv)
    };

    let (mut tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let interval = sh.bookmark_interval;
    let mut close = sh.faults.watch_closer();
    tokio::spawn(async move {
        for l in first {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let mut sub = sub;
        let mut last_rv = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = close.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let mut pending = Vec::new();
                    let rv_now = {
                        let st = sh.lock();
                        loop {
                            match sub.try_recv() {
                                Ok(c) => pending.push(c),
                                Err(TryRecvError::Empty) => break,
                                Err(_) => return,
                            }
                        }
                        st.rv
                    };
                    for c in pending {
                        if let Some(l) = filter.view(&c) {
                            if tx.send(Ok(l)).await.is_err() {
                                return;
                            }
                        }
                    }
                    last_rv = last_rv.max(rv_now);
                    if tx.send(Ok(bookmark(&res, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                r = sub.recv() => match r {
                    Ok(c) => {
                        last_rv = c.rv;
                        if let Some(l) = filter.view(&c) {
                            if tx.send(Ok(l)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                }
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(rx))
        .expect("valid response"))
}
