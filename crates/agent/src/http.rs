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

    /// Scrape latency and memory with 200 volumes and a 200-PVC coverage report (figures
    /// for BENCHMARKS.md: `cargo test -p holdfast-agent --release scrape_of_200_volumes
    /// -- --nocapture`); fails if one scrape takes longer than 100 ms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrape_of_200_volumes() {
        use crate::coverage::{CoverageReport, CoverageStatus, PvcCoverage};
        use crate::metrics::{JobKey, JobState};
        let rss = || -> u64 {
            let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
            s.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
                * 4096
        };
        let before = rss();
        let m = Arc::new(MetricsState::new("node-a"));
        m.update(|v| {
            for i in 0..200 {
                v.jobs.insert(
                    JobKey::volume(&format!("ns-{}", i % 20), &format!("data-{i}")),
                    JobState {
                        method: "snapshot".into(),
                        last_success: Some(1.7e9 + i as f64),
                        last_attempt: Some(1.7e9 + i as f64),
                        last_ok: Some(true),
                        duration_seconds: Some(12.5),
                        bytes_added: Some(123456),
                        files: Some(10000),
                        errors: Some(0),
                        bytes_total: Some(1 << 30),
                        interval_seconds: Some(86400.0),
                    },
                );
            }
            v.coverage = Some(CoverageReport {
                generated_at: String::new(),
                cluster: "c".into(),
                pvcs: (0..200)
                    .map(|i| PvcCoverage {
                        namespace: format!("ns-{}", i % 20),
                        pvc: format!("data-{i}"),
                        status: CoverageStatus::Ok,
                        method: "snapshot".into(),
                        detail: "backed up by holdfast (@daily)".into(),
                        newest_snapshot: None,
                        age_seconds: Some(3600),
                        schedule_interval_seconds: Some(86400),
                    })
                    .collect(),
                counts: Default::default(),
                uncovered: 0,
                problems: 0,
            });
        });
        let grown = rss().saturating_sub(before);
        let addr = serve("127.0.0.1:0".parse().unwrap(), m.clone(), None)
            .await
            .unwrap();
        let n = 200;
        let t0 = std::time::Instant::now();
        let mut worst = std::time::Duration::ZERO;
        let mut size = 0;
        for _ in 0..n {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let t = std::time::Instant::now();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            size = out.len();
            worst = worst.max(t.elapsed());
        }
        let mean = t0.elapsed() / n;
        println!(
            "scrape of 200 volumes + 200 coverage rows: {size} bytes, mean {mean:?}, worst {worst:?}; \
             state RSS growth {} KiB",
            grown / 1024
        );
        assert!(worst < std::time::Duration::from_millis(100), "{worst:?}");
    }
}
