//! The agent's HTTP server (`holdfast agent --listen`, default `0.0.0.0:9469`):
//! `/metrics` (Prometheus text format 0.0.4) and `/healthz`. More routes (the web UI)
//! are merged in through [`serve`]'s `extra` router; every route shares one server and
//! one port.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::error::{AgentError, Result};
use crate::metrics::MetricsState;

/// The default `--listen` address (9469 is unassigned in Prometheus's list of exporter
/// ports).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9469";

/// The content type of the text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Parses `--listen`: an address (`0.0.0.0:9469`, `[::]:9469`, `127.0.0.1:0`), or `""`
/// or `none` to serve nothing.
pub fn parse_listen(v: &str) -> Result<Option<SocketAddr>> {
    let v = v.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    // `:9469` as Prometheus exporters write it: every address.
    let full = if v.starts_with(':') {
        format!("0.0.0.0{v}")
    } else {
        v.to_string()
    };
    full.parse().map(Some).map_err(|e| {
        AgentError::Usage(format!(
            "--listen {v:?}: {e} (expected ADDRESS:PORT like 0.0.0.0:9469, or none)"
        ))
    })
}

/// The agent's routes: `/metrics` and `/healthz`, over `metrics`.
pub fn router(metrics: Arc<MetricsState>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics)
}

async fn scrape(State(m): State<Arc<MetricsState>>) -> impl IntoResponse {
    // Formatting only: the values are in memory (see crate::metrics).
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], m.render())
}

/// Binds `listen` and serves [`router`] merged with `extra` (e.g. the web UI's routes)
/// in a task; returns the bound address (a port of 0 is chosen by the system). A port
/// that cannot be bound is an error now, not a log line later.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<MetricsState>,
    extra: Option<Router>,
) -> Result<SocketAddr> {
    let mut app = router(metrics);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        AgentError::Usage(format!(
            "cannot listen on {listen} for /metrics: {e} (--listen, or --listen none)"
        ))
    })?;
    let bound = listener.local_addr().unwrap_or(listen);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics and /healthz");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(parse_listen("").unwrap(), None);
        assert_eq!(parse_listen("none").unwrap(), None);
        assert_eq!(
            parse_listen(":9469").unwrap(),
            Some("0.0.0.0:9469".parse().unwrap())
        );
        assert_eq!(
            parse_listen("[::1]:80").unwrap(),
            Some("[::1]:80".parse().unwrap())
        );
        let e = parse_listen("localhost").unwrap_err().to_string();
        assert!(e.contains("--listen"), "{e}");
    }

    #[tokio::test]
    async fn metrics_and_healthz_are_served() {
        let m = Arc::new(MetricsState::new("node-a"));
        let addr = serve("127.0.0.1:0".parse().unwrap(), m, None)
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.0 200"), "{m}");
        assert!(m.contains("text/plain; version=0.0.4"), "{m}");
        assert!(m.contains("holdfast_agent_info{version="), "{m}");
        assert!(get("/healthz").await.ends_with("ok\n"));
    }
}
