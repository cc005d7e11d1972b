//! Prometheus metrics of a pipeline worker process and the HTTP endpoint
//! serving them (`--metrics-addr`). Pipeline counters live in
//! [`Counters`] (atomics on the hot path) and are read at scrape time;
//! sink timings and failures are recorded here directly.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use recflow_operators::Counters;
use recflow_schemas::Reason;

/// Sink-side series, shared by every worker's sink operator.
#[derive(Clone)]
pub struct SinkMetrics {
    /// Seconds per `write`/`flush` call, by sink.
    pub batch_seconds: HistogramVec,
    /// Failed calls, by sink.
    pub errors: IntCounterVec,
    /// Retries the sinks reported, by sink.
    pub retries: IntCounterVec,
}

/// The process's registry.
pub struct Telemetry {
    registry: Registry,
    /// Sink series.
    pub sinks: SinkMetrics,
    /// Consumer lag per (topic, partition), read from the Kafka sources at scrape time.
    pub consumer_lag: IntGaugeVec,
    lag_sources: std::sync::Mutex<Vec<recflow_sources::LagHandle>>,
    /// True while the dataflow runs (the cluster formed, input not yet drained): `/health/ready`.
    ready: AtomicBool,
}

/// Reads [`Counters`] at scrape time.
struct PipelineCollector {
    counters: Arc<Counters>,
    descs: Vec<Desc>,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

impl PipelineCollector {
    fn families(&self) -> Vec<MetricFamily> {
        let c = &self.counters;
        let events = counter_vec("recflow_events_total", "Valid events read, by tenant", &["tenant"]);
        for (t, n) in c.tenant_events() {
            events.with_label_values(&[t.as_str()]).inc_by(n);
        }
        let invalid =
            counter_vec("recflow_invalid_events_total", "Rejected events, by reason (late included)", &["reason"]);
        for r in Reason::ALL {
            invalid.with_label_values(&[r.code()]).inc_by(c.rejected(r));
        }
        let late = IntCounter::new("recflow_late_events_total", "Valid events below the watermark on arrival")
            .expect("static metric definition");
        late.inc_by(c.late.load(Relaxed));
        let windows = counter_vec("recflow_windows_closed_total", "Windows closed (per key), by job", &["job"]);
        windows.with_label_values(&["hot_items"]).inc_by(c.hot_windows.load(Relaxed));
        windows.with_label_values(&["profiles"]).inc_by(c.profile_windows.load(Relaxed));
        windows.with_label_values(&["metrics"]).inc_by(c.metrics_windows.load(Relaxed));
        let watermark = IntGauge::new("recflow_watermark_ms", "Min event-time watermark over local workers (epoch ms)")
            .expect("static metric definition");
        let wm = c.watermark();
        watermark.set(if wm == i64::MIN { 0 } else { wm });
        let in_flight = IntGauge::new(
            "recflow_in_flight_events",
            "Raw-log rows and dead letters read and not yet taken by the sinks (backpressure holds it at pipeline.max_in_flight_events)",
        )
        .expect("static metric definition");
        in_flight.set(c.in_flight.load(Relaxed) as i64);
        let mut out = Vec::new();
        out.extend(events.collect());
        out.extend(invalid.collect());
        out.extend(late.collect());
        out.extend(windows.collect());
        out.extend(watermark.collect());
        out.extend(in_flight.collect());
        out
    }
}

impl Collector for PipelineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        self.families()
    }
}

impl Telemetry {
    /// A registry with the pipeline, sink and process series.
    pub fn new(counters: Arc<Counters>) -> anyhow::Result<Arc<Telemetry>> {
        let registry = Registry::new();
        let probe = PipelineCollector { counters: counters.clone(), descs: Vec::new() };
        let descs = probe.families().iter().flat_map(desc_of).collect();
        registry.register(Box::new(PipelineCollector { counters, descs }))?;
        let sinks = SinkMetrics {
            batch_seconds: HistogramVec::new(
                HistogramOpts::new("recflow_sink_batch_seconds", "Time per sink write/flush call")
                    .buckets(prometheus::exponential_buckets(0.0001, 4.0, 10)?),
                &["sink"],
            )?,
            errors: IntCounterVec::new(Opts::new("recflow_sink_errors_total", "Failed sink calls"), &["sink"])?,
            retries: IntCounterVec::new(Opts::new("recflow_sink_retries_total", "Sink retries"), &["sink"])?,
        };
        registry.register(Box::new(sinks.batch_seconds.clone()))?;
        registry.register(Box::new(sinks.errors.clone()))?;
        registry.register(Box::new(sinks.retries.clone()))?;
        let consumer_lag = IntGaugeVec::new(
            Opts::new("recflow_consumer_lag", "Kafka consumer lag (messages) per partition"),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(consumer_lag.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Arc::new(Telemetry {
            registry,
            sinks,
            consumer_lag,
            lag_sources: Default::default(),
            ready: AtomicBool::new(false),
        }))
    }

    /// Marks the process ready (dataflow running) or not (starting, joining the cluster, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// Whether `/health/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// Adds a Kafka source whose partitions' lag is exported.
    pub fn watch_lag(&self, handle: recflow_sources::LagHandle) {
        self.lag_sources.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        self.consumer_lag.reset();
        for h in self.lag_sources.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for (topic, partition, lag) in h.lag() {
                self.consumer_lag.with_label_values(&[topic.as_str(), partition.to_string().as_str()]).set(lag);
            }
        }
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Serves `GET /metrics`, `/health/live` (200 while the process runs) and
    /// `/health/ready` (200 while the dataflow runs, else 503) on `addr` from a
    /// background thread until the process exits.
    pub fn serve(self: &Arc<Self>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        use axum::http::StatusCode;
        use axum::routing::get;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let (me, probe) = (self.clone(), self.clone());
        std::thread::Builder::new().name("metrics-http".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "metrics endpoint: no runtime"),
            };
            rt.block_on(async move {
                let app =
                    axum::Router::new()
                        .route(
                            "/metrics",
                            get(move || {
                                let me = me.clone();
                                async move {
                                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], me.render())
                                }
                            }),
                        )
                        .route("/health/live", get(|| async { "live" }))
                        .route(
                            "/health/ready",
                            get(move || {
                                let ready = probe.is_ready();
                                async move {
                                    match ready {
                                        true => (StatusCode::OK, "ready"),
                                        false => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
                                    }
                                }
                            }),
                        );
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!(error = %e, "metrics endpoint stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "metrics endpoint: bad listener"),
                }
            });
        })?;
        tracing::info!(%bound, "serving Prometheus metrics on /metrics, probes on /health/live and /health/ready");
        Ok(bound)
    }
}

fn desc_of(f: &MetricFamily) -> Option<Desc> {
    Desc::new(f.name().to_string(), f.help().to_string(), Vec::new(), Default::default()).ok()
}

impl SinkMetrics {
    /// Creates a sink's series at zero, so rates and alerts see them before the first failure.
    pub fn register(&self, sink: &str) {
        self.batch_seconds.with_label_values(&[sink]);
        self.errors.with_label_values(&[sink]);
        self.retries.with_label_values(&[sink]);
    }

    /// Records one sink call.
    pub fn observe(&self, sink: &str, took: Duration, ok: bool) {
        self.batch_seconds.with_label_values(&[sink]).observe(took.as_secs_f64());
        if !ok {
            self.errors.with_label_values(&[sink]).inc();
        }
    }
}
