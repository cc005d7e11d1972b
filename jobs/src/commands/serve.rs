//! `recflow serve`: the HTTP query and collector server. With
//! `outputs.store = "services"` it reads Redis/MongoDB/ClickHouse and
//! produces to Kafka; with the embedded store it also runs the pipeline
//! in-process, fed by the collector.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use recflow_operators::Counters;
use recflow_schemas::{Event, Item, Validator};
use recflow_server::metrics::ExtraMetrics;
use recflow_server::publish::{ChannelPublisher, KafkaPublisher, Publisher};
use recflow_server::state::{EmbeddedState, RedisMongoState, ServicesConfig, StateStore};
use recflow_server::App;
use recflow_sinks::EmbeddedStore;
use recflow_sources::{Catalog, ChannelSource};

use crate::cluster::Cluster;
use crate::commands::run::{run_dataflow, WorkerIo};
use crate::config::{Config, StoreKind};
use crate::outputs::{embedded_sinks, EmbeddedOutputs};
use crate::telemetry::Telemetry;

/// Events the collector may queue ahead of the in-process pipeline (then 503).
const QUEUE: usize = 100_000;

/// Arguments of `recflow serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Config file (TOML); `[server]` holds listen address, API keys and limits.
    #[arg(long, default_value = "configs/embedded.toml")]
    pub config: PathBuf,
    /// Listen address (overrides server.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Embedded mode: item catalog (JSON Lines) for categories and fresh items.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Embedded mode: timely workers (overrides pipeline.workers).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// The in-process pipeline of embedded mode.
pub struct EmbeddedPipeline {
    /// What the pipeline writes and the server reads.
    pub store: Arc<EmbeddedStore>,
    /// Feeds the pipeline (the collector and the demo generator hold clones).
    pub tx: SyncSender<Event>,
    /// The pipeline's Prometheus series.
    pub telemetry: Arc<Telemetry>,
    /// Ends (after flushing) once every sender is dropped.
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl EmbeddedPipeline {
    /// Starts all four jobs on a channel source with `workers` timely workers.
    pub fn start(cfg: &Config, workers: usize, catalog: Catalog) -> anyhow::Result<EmbeddedPipeline> {
        let store = EmbeddedStore::shared();
        let counters = Arc::new(Counters::new(workers));
        let telemetry = Telemetry::new(counters.clone())?;
        let (source, tx) = ChannelSource::new("collector", QUEUE);
        let (cfg, sink_cfg, shared) = (cfg.clone(), cfg.clone(), store.clone());
        let metrics = Some(telemetry.clone());
        let handle = std::thread::Builder::new().name("pipeline".into()).spawn(move || {
            // Idle poll of a few ms, like Kafka: an idle pipeline must not spin.
            run_dataflow(
                &cfg,
                &Cluster::single(workers),
                Arc::new(catalog),
                counters,
                metrics,
                Duration::from_millis(5),
                move |i| {
                    Ok(WorkerIo {
                        source: Box::new(source.clone()),
                        sinks: embedded_sinks(&sink_cfg, &shared, &EmbeddedOutputs::default(), i),
                        profiles: None,
                        after_drain: None,
                    })
                },
            )
        })?;
        // The store's TTLs are wall-clock: drop expired keys now and then.
        let expiring = Arc::downgrade(&store);
        std::thread::Builder::new().name("store-expiry".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(30));
            match expiring.upgrade() {
                Some(s) => {
                    s.expire_now();
                }
                None => break,
            }
        })?;
        Ok(EmbeddedPipeline { store, tx, telemetry, handle })
    }

    /// The app serving this pipeline's store, its collector feeding the pipeline.
    pub fn app(&self, cfg: &Config, items: Vec<Item>) -> anyhow::Result<App> {
        let state: Arc<dyn StateStore> = Arc::new(EmbeddedState::new(self.store.clone(), items));
        let publisher: Arc<dyn Publisher> = Arc::new(ChannelPublisher::new(self.tx.clone()));
        let telemetry = self.telemetry.clone();
        let extra: ExtraMetrics = Arc::new(move || telemetry.render());
        App::new(cfg.server.clone(), state, publisher, Validator::new(cfg.validation()), Some(extra))
            .map_err(anyhow::Error::msg)
    }
}

/// The app of services mode: Redis + MongoDB + ClickHouse state, Kafka publisher.
pub fn services_app(cfg: &Config) -> anyhow::Result<App> {
    let services = ServicesConfig {
        redis_url: cfg.redis.url.clone(),
        redis_timeout: Duration::from_millis(cfg.server.redis_timeout_ms),
        mongo: cfg.mongo.clone(),
        clickhouse: cfg.clickhouse.clone(),
        catalog_ttl: Duration::from_secs(cfg.server.catalog_cache_secs),
    };
    let state: Arc<dyn StateStore> = Arc::new(RedisMongoState::new(&services)?);
    let item_topic = recflow_sources::kafka::ITEM_UPDATES_TOPIC;
    let publisher: Arc<dyn Publisher> =
        Arc::new(KafkaPublisher::new(&cfg.kafka_sink.brokers, cfg.kafka.partitions, item_topic)?);
    App::new(cfg.server.clone(), state, publisher, Validator::new(cfg.validation()), None).map_err(anyhow::Error::msg)
}

/// Serves `app` on `listen` until Ctrl-C/SIGTERM; `on_bound` runs once the port is open.
pub fn run_server(app: App, listen: &str, on_bound: impl FnOnce(SocketAddr) + Send) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(%bound, "recflow server listening");
        on_bound(bound);
        let app = Arc::new(app);
        let served = recflow_server::serve(app.clone(), listener, shutdown_signal()).await;
        // Exposures are written off the response path: send what is still queued.
        if !app.exposures.flush(Duration::from_secs(2)).await {
            tracing::warn!("exposure writes still queued at shutdown were not sent");
        }
        served?;
        anyhow::Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// The catalog file of `--catalog`, as items.
pub fn load_items(path: Option<&PathBuf>) -> anyhow::Result<Vec<Item>> {
    let Some(p) = path else { return Ok(Vec::new()) };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}", p.display(), i + 1)))
        .collect()
}

/// Catalog of the pipeline from items.
pub fn catalog_of(items: &[Item]) -> Catalog {
    let mut c = Catalog::default();
    for it in items {
        c.upsert(it);
    }
    c
}

/// `recflow serve` entry point.
pub fn main(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(l) = &args.listen {
        cfg.server.listen = l.clone();
    }
    let listen = cfg.server.listen.clone();
    match cfg.outputs.store {
        StoreKind::Services => run_server(services_app(&cfg)?, &listen, |_| {}),
        StoreKind::Embedded => {
            let items = load_items(args.catalog.as_ref())?;
            let workers = args.workers.unwrap_or(cfg.pipeline.workers).max(1);
            let pipeline = EmbeddedPipeline::start(&cfg, workers, catalog_of(&items))?;
            let app = pipeline.app(&cfg, items)?;
            let result = run_server(app, &listen, |_| {});
            // The server (and its sender) is gone: the pipeline drains, flushes and ends.
            drop(pipeline.tx);
            pipeline.handle.join().map_err(|_| anyhow::anyhow!("pipeline thread panicked"))??;
            result
        }
    }
}
