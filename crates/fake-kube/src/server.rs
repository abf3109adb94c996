//! The HTTP side: one axum fallback handler that parses Kubernetes API paths, applies
//! injected faults, logs requests and dispatches to the verbs.

use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::Value;

use crate::error::ApiError;
use crate::faults::RequestRecord;
use crate::resources::{self, ResourceType};
use crate::verbs::{self, Query, WriteOpts};
use crate::{discovery, exec};
use crate::{watch, Shared};

/// The router serving every path.
pub(crate) fn router(sh: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(sh)
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json");
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(hv) = HeaderValue::from_str(&v) {
            r = r.header("Warning", hv);
        }
    }
    r.body(Body::from(serde_json::to_vec(body).expect("serializes")))
        .expect("valid response")
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.status(), &[]);
    if e.code == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let delay = sh.faults.current_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let exec_target = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, "exec"] => {
            Some((ns.to_string(), name.to_string()))
        }
        _ => None,
    };
    let (resp, injected) = match sh.faults.take_failure(method.as_str(), &target) {
        Some(code) => (error_response(&ApiError::for_code(code)), true),
        // pods/exec keeps its request: the connection is upgraded to a WebSocket.
        None if exec_target.is_some() => {
            let (ns, name) = exec_target.unwrap_or_default();
            let resp = if method == Method::GET || method == Method::POST {
                exec::handle(&sh, req, &ns, &name).unwrap_or_else(|e| error_response(&e))
            } else {
                error_response(&ApiError::method_not_allowed())
            };
            (resp, false)
        }
        None => {
            let resp = match to_bytes(req.into_body(), 64 << 20).await {
                Ok(body) => route(&sh, &method, &path, &query, &headers, body),
                Err(e) => error_response(&ApiError::bad_request(format!("reading body: {e}"))),
            };
            (resp, false)
        }
    };
    sh.faults.record(RequestRecord {
        method: method.to_string(),
        path,
        query,
        status: resp.status().as_u16(),
        injected,
    });
    resp
}

fn route(
    sh: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resources = sh.resources();
    let discovery_doc = match segs.as_slice() {
        ["version"] => Some(Some(discovery::version())),
        ["api"] => Some(Some(discovery::api_versions())),
        ["api", "v1"] => Some(discovery::resource_list(&resources, "", "v1")),
        ["apis"] => Some(Some(discovery::group_list(&resources))),
        ["apis", g] => Some(discovery::group(&resources, g)),
        ["apis", g, v] => Some(discovery::resource_list(&resources, g, v)),
        ["healthz"] | ["livez"] | ["readyz"] => {
            return Response::builder()
                .status(200)
                .body(Body::from("ok"))
                .expect("valid response")
        }
        _ => None,
    };
    if let Some(doc) = discovery_doc {
        if method != Method::GET {
            return error_response(&ApiError::method_not_allowed());
        }
        return match doc {
            Some(d) => json_response(200, &d, &[]),
            None => error_response(&ApiError::path_not_found()),
        };
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return error_response(&ApiError::path_not_found()),
    };
    let find = |plural: &str| {
        resources
            .iter()
            .find(|r| r.is(group, version, plural))
            .cloned()
    };
    let target: Option<Target> = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            let r = find(plural).expect("found");
            match tail {
                [] => Some((r, Some(ns.to_string()), None, None)),
                [name] => Some((r, Some(ns.to_string()), Some(name.to_string()), None)),
                [name, sub] => Some((
                    r,
                    Some(ns.to_string()),
                    Some(name.to_string()),
                    Some(sub.to_string()),
                )),
                _ => None,
            }
        }
        [plural, tail @ ..] => match find(plural) {
            None => None,
            Some(r) => match tail {
                [] => Some((r, None, None, None)),
                [name] if !r.namespaced => Some((r, None, Some(name.to_string()), None)),
                [name, sub] if !r.namespaced => {
                    Some((r, None, Some(name.to_string()), Some(sub.to_string())))
                }
                _ => None,
            },
        },
        _ => None,
    };
    let Some((res, ns, name, sub)) = target else {
        return error_response(&ApiError::path_not_found());
    };
    if let Some(s) = &sub {
        if s != "status" || !res.has_status {
            return error_response(&ApiError::path_not_found());
        }
    }
    let q: Query = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let result = dispatch(sh, method, &res, ns, name, sub, &q, headers, &body);
    if res.is(resources::CRD_GROUP, "v1", "customresourcedefinitions")
        && method != Method::GET
        && result.is_ok()
    {
        // A CustomResourceDefinition written or deleted changes what is served.
        sh.sync_crds();
    }
    match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// (resource, namespace, name, subresource) named by a URL.
type Target = (ResourceType, Option<String>, Option<String>, Option<String>);

fn parse_json(res: &ResourceType, body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::cannot_handle(res, &e.to_string()))
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    sh: &Arc<Shared>,
    method: &Method,
    res: &ResourceType,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let ns_str = ns.clone().unwrap_or_default();
    let written = |w: verbs::Written| {
        let code = if w.created { 201 } else { 200 };
        json_response(code, &w.object, &w.warnings)
    };
    match (method.clone(), name) {
        (Method::GET, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                watch::start(sh.clone(), res.clone(), ns, q)
            } else {
                let list = verbs::list(sh, res, ns.as_deref(), q)?;
                Ok(json_response(200, &list, &[]))
            }
        }
        (Method::POST, None) => {
            let opts = WriteOpts::from_query(q)?;
            let obj = parse_json(res, body)?;
            Ok(written(verbs::create(sh, res, ns.as_deref(), obj, &opts)?))
        }
        (Method::DELETE, None) => {
            let list = verbs::delete_collection(sh, res, ns.as_deref(), q)?;
            Ok(json_response(200, &list, &[]))
        }
        (Method::GET, Some(n)) => Ok(json_response(200, &verbs::get(sh, res, &ns_str, &n)?, &[])),
        (Method::PUT, Some(n)) => {
            let opts = WriteOpts::from_query(q)?;
            let obj = parse_json(res, body)?;
            Ok(written(verbs::replace(
                sh,
                res,
                &ns_str,
                &n,
                sub.as_deref(),
                obj,
                &opts,
            )?))
        }
        (Method::PATCH, Some(n)) => {
            let opts = WriteOpts::from_query(q)?;
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Ok(written(verbs::patch(
                sh,
                res,
                &ns_str,
                &n,
                sub.as_deref(),
                ct,
                body,
                &opts,
            )?))
        }
        (Method::DELETE, Some(n)) => {
            let dry = q.get("dryRun").is_some_and(|d| d == "All");
            let out = verbs::delete(sh, res, &ns_str, &n, body, dry)?;
            Ok(json_response(200, &out, &[]))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
