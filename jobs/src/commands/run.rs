//! `recflow run`: all four jobs from a JSONL file or Kafka into the embedded
//! store or the real services.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use recflow_operators::profile::ProfileStore;
use recflow_operators::{Counters, IngestConfig};
use recflow_schemas::Validator;
use recflow_sinks::mongo::MongoProfiles;
use recflow_sinks::{EmbeddedStore, FileMode, MongoConfig, SharedFile, Sink};
use recflow_sources::generator::{write_catalog, write_events, GenConfig};
use recflow_sources::{Catalog, Coverage, Handoffs, JsonlFile, JsonlSource, KafkaSource, PartitionTimes, Poll, Source};

use crate::cluster::{Cluster, ClusterArgs};
use crate::config::{Config, StoreKind};
pub use crate::outputs::EmbeddedOutputs;
use crate::outputs::{embedded_sinks, service_sinks};
use crate::partition_times::RedisPartitionTimes;
use crate::pipeline::SinkContext;
use crate::profile_store::MongoProfileStore;
use crate::progress::{self, Progress};
use crate::telemetry::{SinkMetrics, Telemetry};

/// Arguments of `recflow run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Config file (TOML).
    #[arg(long, default_value = "configs/embedded.toml")]
    pub config: PathBuf,
    /// Events, JSON Lines (`-` = stdin). Without --input or --generate, the
    /// input is Kafka (`[kafka]` in the config).
    #[arg(long, conflicts_with = "generate")]
    pub input: Option<String>,
    /// Generate this many events (and the catalog) in memory instead of reading input.
    #[arg(long)]
    pub generate: Option<u64>,
    /// Generator seed for --generate.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Item catalog, JSON Lines.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Timely workers per process (overrides pipeline.workers).
    #[arg(long, env = "RECFLOW_WORKERS")]
    pub workers: Option<usize>,
    /// Timely cluster: several processes forming one dataflow.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Kafka input: stop cleanly (flush, commit) once no message arrived for this many seconds.
    #[arg(long)]
    pub exit_when_idle: Option<u64>,
    /// Prometheus endpoint (overrides telemetry.metrics_addr; `off` disables).
    #[arg(long, env = "RECFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Write the final embedded store content as one JSON object here.
    #[arg(long)]
    pub dump_state: Option<PathBuf>,
    /// Write run statistics (events, seconds, events/s, peak RSS) as JSON here.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Only read and validate (benchmark the parser); no jobs, no sinks.
    #[arg(long)]
    pub parse_only: bool,
}

/// What a run did.
#[derive(Debug, serde::Serialize)]
pub struct RunStats {
    pub events: u64,
    pub invalid: u64,
    pub late: u64,
    pub windows_closed: u64,
    pub workers: usize,
    /// Processes of the timely cluster (the counts above are this process's).
    pub processes: usize,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub peak_rss_bytes: u64,
}

/// Peak resident set size of this process (Linux VmHWM), 0 if unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// What one worker reads from and writes to.
pub struct WorkerIo {
    /// This worker's share of the input.
    pub source: Box<dyn Source>,
    /// This worker's sinks.
    pub sinks: Vec<Box<dyn Sink>>,
    /// Where the profile job reads back profiles of earlier runs (services mode).
    pub profiles: Option<Box<dyn ProfileStore>>,
    /// Runs after the dataflow drained and every sink flushed (offset commits).
    pub after_drain: Option<Box<dyn FnOnce() -> anyhow::Result<()>>>,
}

/// A source that is done from the start: the file input's stand-in on every
/// process but the first of a cluster (the reader cannot be split between processes).
struct NoInput;

impl Source for NoInput {
    fn poll(&mut self) -> Poll {
        Poll::Done
    }
    fn max_ts_floor(&self) -> i64 {
        i64::MAX
    }
}

/// Runs all four jobs on this process's workers of `cluster`, each built by
/// `make_io` (given the worker's cluster-wide index), until every source of
/// every process is done and every sink flushed. `telemetry` (if any) gets
/// the sink series and is marked ready once the cluster formed.
pub fn run_dataflow<F>(
    cfg: &Config,
    cluster: &Cluster,
    catalog: Arc<Catalog>,
    counters: Arc<Counters>,
    telemetry: Option<Arc<Telemetry>>,
    idle_poll: Duration,
    make_io: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> anyhow::Result<WorkerIo> + Send + Sync + 'static,
{
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let metrics: Option<SinkMetrics> = telemetry.as_ref().map(|t| t.sinks.clone());
    let shutdown = shutdown_flag()?;
    let (cfg, shared_errors) = (cfg.clone(), errors.clone());
    if cluster.processes > 1 {
        tracing::info!(process = cluster.process, hosts = ?cluster.hosts, "joining the timely cluster");
    }
    // Returns once every peer process is connected (timely retries until then).
    let guards = timely::execute(cluster.timely_config(), move |worker| -> Result<(), String> {
        let io = make_io(worker.index()).map_err(|e| format!("worker {}: {e:#}", worker.index()))?;
        let ingest_cfg = IngestConfig {
            allowed_lateness_ms: cfg.pipeline.allowed_lateness_secs as i64 * 1000,
            catalog: catalog.clone(),
            counters: counters.clone(),
            batches_per_step: 1,
            idle_poll,
            release: cfg.release(),
            shutdown: shutdown.clone(),
            max_in_flight: cfg.pipeline.max_in_flight_events,
        };
        let flushed = Arc::new(AtomicBool::new(false));
        let ctx = SinkContext {
            errors: shared_errors.clone(),
            metrics: metrics.clone(),
            tick: Duration::from_millis(500),
            checkpoint: Duration::from_millis(cfg.kafka.commit_interval_ms.max(1)),
            shutdown: shutdown.clone(),
            stop_timeout: Duration::from_secs_f64(cfg.pipeline.stop_timeout_secs),
            flushed: flushed.clone(),
        };
        let (source, sinks, profiles) = (io.source, io.sinks, io.profiles);
        worker.dataflow::<recflow_operators::Minute, _, _>(|scope| {
            crate::pipeline::build(scope, &cfg, source, ingest_cfg, sinks, profiles, ctx);
        });
        let mut stopped_at: Option<Instant> = None;
        while worker.step_or_park(Some(Duration::from_millis(50))) {
            if !shutdown.load(Ordering::Acquire) {
                continue;
            }
            // Stopping: the sinks flush, their acknowledgement reaches every
            // worker's probe and the sources commit it; then leave, windows open.
            if flushed.load(Ordering::Acquire) {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= STOP_GRACE {
                    // Open windows are left to the replay: drop the dataflow unfinished
                    // (timely would otherwise step until it completes).
                    for id in worker.installed_dataflows() {
                        worker.drop_dataflow(id);
                    }
                    tracing::info!(worker = worker.index(), "stopped: sinks flushed, offsets committed");
                    return Ok(());
                }
            }
        }
        if let Some(done) = io.after_drain {
            done().map_err(|e| format!("worker {}: {e:#}", worker.index()))?;
        }
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("starting timely workers: {e}"))?;
    if let Some(t) = &telemetry {
        t.set_ready(true);
    }
    let results = guards.join();
    if let Some(t) = &telemetry {
        t.set_ready(false);
    }
    for r in results {
        r.map_err(|e| anyhow::anyhow!("worker failed: {e}"))?.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let errs = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !errs.is_empty() {
        bail!("sinks failed: {}", errs.join("; "));
    }
    Ok(())
}

/// How long a stopping worker keeps stepping after its sinks flushed, so the
/// acknowledgement reaches every worker's probe and gets committed.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// A flag set by SIGTERM or SIGINT (graceful stop); a second signal ends the process at once.
fn shutdown_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first: a signal while the flag is already set exits with 130.
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

/// Runs all four jobs over `file` with `workers` timely workers into a new
/// embedded store; returns the store once the input is drained.
pub fn run_embedded(
    cfg: &Config,
    file: Arc<JsonlFile>,
    catalog: Arc<Catalog>,
    workers: usize,
    outputs: EmbeddedOutputs,
    counters: Arc<Counters>,
) -> anyhow::Result<Arc<EmbeddedStore>> {
    let store = EmbeddedStore::shared();
    let (shared_store, sink_cfg) = (store.clone(), cfg.clone());
    let validator = Validator::new(cfg.validation());
    let now = recflow_schemas::validate::now_ms();
    run_dataflow(cfg, &Cluster::single(workers), catalog, counters, None, Duration::ZERO, move |index| {
        Ok(WorkerIo {
            source: Box::new(JsonlSource::new(file.clone(), validator.clone(), now)),
            sinks: embedded_sinks(&sink_cfg, &shared_store, &outputs, index),
            profiles: None,
            after_drain: None,
        })
    })?;
    Ok(store)
}

/// The file input of a run (`--input` or `--generate`), with its catalog.
fn file_input(args: &RunArgs, cfg: &Config) -> anyhow::Result<Option<(Arc<JsonlFile>, Catalog)>> {
    let load_catalog = || -> anyhow::Result<Catalog> {
        Ok(match &args.catalog {
            Some(p) => Catalog::load_jsonl(p)?,
            None => Catalog::default(),
        })
    };
    Ok(match (&args.input, args.generate) {
        (Some(input), _) => {
            let file = JsonlFile::open(input, cfg.pipeline.read_block_bytes, cfg.pipeline.max_event_bytes)
                .with_context(|| format!("opening input {input}"))?;
            Some((file, load_catalog()?))
        }
        (None, Some(n)) => {
            let gen = GenConfig { events: n, seed: args.seed, ..GenConfig::default() };
            let (mut events, mut items) = (Vec::new(), Vec::new());
            write_events(&gen, &mut events)?;
            write_catalog(&gen, &mut items)?;
            eprintln!("generated {n} events (seed {}) and their item catalog", args.seed);
            let catalog = Catalog::from_reader("generated catalog", std::io::Cursor::new(items))?;
            let reader = Box::new(std::io::Cursor::new(events));
            let file = JsonlFile::from_reader(
                "generated",
                reader,
                cfg.pipeline.read_block_bytes,
                cfg.pipeline.max_event_bytes,
            );
            Some((file, catalog))
        }
        (None, None) => None,
    })
}

/// The catalog of a Kafka run: `--catalog`, else Mongo `items` (services
/// mode) plus everything on `item-updates`.
fn kafka_catalog(args: &RunArgs, cfg: &Config) -> anyhow::Result<Catalog> {
    if let Some(p) = &args.catalog {
        return Ok(Catalog::load_jsonl(p)?);
    }
    let mut catalog = Catalog::default();
    if cfg.outputs.store == StoreKind::Services {
        for item in recflow_sinks::mongo::load_items(&cfg.mongo)? {
            catalog.upsert(&item);
        }
    }
    let n = recflow_sources::kafka_catalog::consume_item_updates(&cfg.kafka, &mut catalog, Duration::from_secs(5))
        .context("reading item-updates")?;
    tracing::info!(items = catalog.len(), from_topic = n, "catalog loaded");
    Ok(catalog)
}

/// Runs the pipeline per `args`; returns the embedded store (empty in
/// services mode) and statistics.
pub fn run(args: &RunArgs) -> anyhow::Result<(Arc<EmbeddedStore>, RunStats)> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(secs) = args.exit_when_idle {
        cfg.kafka.exit_when_idle_ms = Some(secs * 1000);
    }
    let workers = args.workers.unwrap_or(cfg.pipeline.workers).max(1);
    let cluster = args.cluster.resolve(workers)?;
    check_cluster_args(args, &cluster)?;
    let counters = Arc::new(Counters::new(workers));
    let telemetry = Telemetry::new(counters.clone())?;
    let addr = args.metrics_addr.clone().unwrap_or_else(|| cfg.telemetry.metrics_addr.clone());
    if !addr.is_empty() && addr != "off" && !args.parse_only {
        match addr.parse() {
            Ok(a) => {
                if let Err(e) = telemetry.serve(a) {
                    tracing::warn!(%addr, error = %e, "metrics endpoint not started");
                }
            }
            Err(e) => bail!("bad metrics address {addr:?}: {e}"),
        }
    }
    let input = file_input(args, &cfg)?;
    let progress = Progress::start(counters.clone(), Duration::from_secs(cfg.pipeline.progress_interval_secs));
    let started = Instant::now();
    let store = EmbeddedStore::shared();
    let validator = Validator::new(cfg.validation());
    let now = recflow_schemas::validate::now_ms();
    // One sink factory for either input: the embedded store (+ files for file
    // inputs) or the services, whose ClickHouse schema is prepared once here.
    let dialect = match cfg.outputs.store {
        StoreKind::Services if !args.parse_only => Some(recflow_sinks::clickhouse::init(&cfg.clickhouse)?),
        _ => None,
    };
    let files = match (&input, cfg.outputs.store) {
        // Only the process reading the file writes these (the others would truncate them).
        (Some(_), StoreKind::Embedded) if !args.parse_only && cluster.is_first() => {
            let open = |p: &str| -> anyhow::Result<Option<SharedFile>> {
                Ok(if p.is_empty() { None } else { Some(SharedFile::open(p, FileMode::Truncate)?) })
            };
            EmbeddedOutputs { dlq: open(&cfg.embedded.dlq_path)?, raw_log: open(&cfg.embedded.raw_log_path)? }
        }
        _ => EmbeddedOutputs::default(),
    };
    let (sink_cfg, shared_store) = (cfg.clone(), store.clone());
    let make_sinks = move |index: usize| -> anyhow::Result<Vec<Box<dyn Sink>>> {
        match dialect {
            Some(d) => service_sinks(&sink_cfg, d),
            None => Ok(embedded_sinks(&sink_cfg, &shared_store, &files, index)),
        }
    };
    let metrics = Some(telemetry.clone());
    let mongo = dialect.map(|_| cfg.mongo.clone());
    match input {
        Some((file, _)) if args.parse_only => parse_only(&file, &validator, now, workers, &counters),
        Some((file, catalog)) => {
            let reads = cluster.is_first();
            run_dataflow(&cfg, &cluster, Arc::new(catalog), counters.clone(), metrics, Duration::ZERO, move |index| {
                let source: Box<dyn Source> = match reads {
                    true => Box::new(JsonlSource::new(file.clone(), validator.clone(), now)),
                    false => Box::new(NoInput),
                };
                Ok(WorkerIo { source, sinks: make_sinks(index)?, profiles: profile_store(&mongo)?, after_drain: None })
            })?;
        }
        None => {
            let catalog = kafka_catalog(args, &cfg)?;
            let (kafka_cfg, lag_telemetry) = (cfg.kafka.clone(), telemetry.clone());
            let idle_poll = Duration::from_millis(5);
            // Partition times beside the offsets in Redis, when the services are the store.
            let times: Option<Arc<dyn PartitionTimes>> = match dialect {
                Some(_) => Some(Arc::new(RedisPartitionTimes::new(&cfg.redis.url)?)),
                None => None,
            };
            // Event time waits for every input partition to be owned (e.g. after a
            // crash, until the group drops the dead run's members). Per process:
            // the members of other processes are not seen.
            // Likewise per process: a partition moved between two of its members
            // continues where the old one stopped instead of at the committed offset.
            let (coverage, handoffs) = match cluster.processes {
                1 => (Some(Coverage::polling(&cfg.kafka).map_err(|e| anyhow::anyhow!(e))?), Some(Handoffs::new())),
                _ => (None, None),
            };
            run_dataflow(&cfg, &cluster, Arc::new(catalog), counters.clone(), metrics, idle_poll, move |index| {
                let mut source = KafkaSource::new(&kafka_cfg, validator.clone())?;
                if let Some(t) = &times {
                    source = source.with_partition_times(t.clone());
                }
                if let Some(c) = &coverage {
                    source = source.with_coverage(c.clone(), index);
                }
                if let Some(h) = &handoffs {
                    source = source.with_handoffs(h.clone());
                }
                let committer = source.committer();
                lag_telemetry.watch_lag(source.lag_handle());
                Ok(WorkerIo {
                    source: Box::new(source),
                    sinks: make_sinks(index)?,
                    profiles: profile_store(&mongo)?,
                    // Offsets are committed only after every sink flushed what came before them.
                    after_drain: Some(Box::new(move || {
                        let n = committer.commit_processed()?;
                        tracing::info!(partitions = n, "offsets committed");
                        Ok(())
                    })),
                })
            })?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.stop();
    let events = counters.events.load(Relaxed);
    let invalid = counters.invalid_total();
    let stats = RunStats {
        events,
        invalid,
        late: counters.late.load(Relaxed),
        windows_closed: counters.windows_closed(),
        workers,
        processes: cluster.processes,
        seconds,
        events_per_sec: (events + invalid) as f64 / seconds.max(1e-9),
        peak_rss_bytes: peak_rss_bytes(),
    };
    eprintln!("done {} seconds={seconds:.3}", progress::line(&counters, stats.events_per_sec));
    Ok((store, stats))
}

/// Services mode: each user's profile continues from its Mongo document.
fn profile_store(mongo: &Option<MongoConfig>) -> anyhow::Result<Option<Box<dyn ProfileStore>>> {
    Ok(match mongo {
        Some(m) => Some(Box::new(MongoProfileStore::new(MongoProfiles::connect(m)?))),
        None => None,
    })
}

/// Rejects what a multi-process run cannot do instead of doing it wrong.
fn check_cluster_args(args: &RunArgs, cluster: &Cluster) -> anyhow::Result<()> {
    if cluster.processes == 1 {
        return Ok(());
    }
    if args.dump_state.is_some() {
        // State is partitioned by key over the processes: no process holds all of it.
        bail!("--dump-state needs all state in one process; with --processes > 1 use outputs.store = \"services\" and read Redis/MongoDB");
    }
    if args.parse_only {
        bail!("--parse-only measures one process; run it without --processes");
    }
    if (args.input.is_some() || args.generate.is_some()) && !cluster.is_first() {
        tracing::info!("file input is read by process 0 only; this process works on what the cluster exchanges to it");
    }
    Ok(())
}

/// Reads and validates with `workers` threads, nothing else.
fn parse_only(file: &Arc<JsonlFile>, validator: &Validator, now: i64, workers: usize, counters: &Arc<Counters>) {
    std::thread::scope(|s| {
        for _ in 0..workers {
            let mut src = JsonlSource::new(file.clone(), validator.clone(), now);
            s.spawn(move || loop {
                match src.poll() {
                    recflow_sources::Poll::Ready(b) => {
                        for r in b.records {
                            match r.parsed {
                                Ok(_) => {
                                    counters.events.fetch_add(1, Relaxed);
                                }
                                Err(e) => counters.reject(e.rejection.reason),
                            }
                        }
                    }
                    recflow_sources::Poll::Pending => std::thread::yield_now(),
                    recflow_sources::Poll::Done => break,
                }
            });
        }
    });
}

/// `recflow run` entry point.
pub fn main(args: RunArgs) -> anyhow::Result<()> {
    let (store, stats) = run(&args)?;
    if let Some(p) = &args.dump_state {
        store.dump_to_file(p)?;
    }
    if let Some(p) = &args.stats_json {
        std::fs::write(p, serde_json::to_vec_pretty(&stats)?)?;
    }
    // The process ends here: freeing ~100 K profile documents one by one
    // costs more than the OS taking the pages back (1.7 % of a 1 M-event run).
    std::mem::forget(store);
    Ok(())
}
