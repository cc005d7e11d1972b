//! The server's Prometheus series and the middleware recording requests.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::App;

/// Renders more series (e.g. the in-process pipeline's) after the server's.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Request, latency, degrade and recall series.
pub struct ServerMetrics {
    registry: Registry,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// Seconds per request, by route.
    pub latency: HistogramVec,
    /// Degraded recommendations by reason.
    pub degraded: IntCounterVec,
    /// Returned items per recall source.
    pub recall_hits: IntCounterVec,
    /// Exposure writes by outcome (written, failed, dropped).
    pub exposure_writes: IntCounterVec,
    extra: Option<ExtraMetrics>,
}

impl ServerMetrics {
    /// A fresh registry; `extra` is appended to every scrape.
    pub fn new(extra: Option<ExtraMetrics>) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, label: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), label).expect("static metric definition");
            registry.register(Box::new(c.clone())).expect("unique metric name");
            c
        };
        let requests =
            counter("recflow_http_requests_total", "HTTP requests by route and status", &["route", "status"]);
        let degraded = counter("recflow_degraded_total", "Recommendations served degraded, by reason", &["reason"]);
        let recall_hits = counter("recflow_recall_hits_total", "Returned items per recall source", &["source"]);
        let exposure_writes = counter(
            "recflow_exposure_writes_total",
            "Pages recorded as exposed, by outcome (written, failed, dropped)",
            &["outcome"],
        );
        let buckets = vec![0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let latency = HistogramVec::new(
            HistogramOpts::new("recflow_http_request_seconds", "HTTP request latency by route").buckets(buckets),
            &["route"],
        )
        .expect("static metric definition");
        registry.register(Box::new(latency.clone())).expect("unique metric name");
        ServerMetrics { registry, requests, latency, degraded, recall_hits, exposure_writes, extra }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(extra) = &self.extra {
            text.push_str(&extra());
        }
        text
    }
}

/// Middleware: counts every request by matched route and status, and times it.
pub async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &app.metrics;
    m.latency.with_label_values(&[route.as_str()]).observe(started.elapsed().as_secs_f64());
    m.requests.with_label_values(&[route.as_str(), resp.status().as_str()]).inc();
    resp
}
