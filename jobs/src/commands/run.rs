//! `recflow run`: all four jobs over a JSONL input into the embedded store.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use recflow_operators::{Counters, IngestConfig};
use recflow_schemas::Validator;
use recflow_sinks::{
    BatchConfig, DlqFileSink, EmbeddedSink, EmbeddedStore, FileMode, RawLogFileSink, SharedFile, Sink,
};
use recflow_sources::generator::{write_catalog, write_events, GenConfig};
use recflow_sources::{Catalog, JsonlFile, JsonlSource, Source};

use crate::config::Config;
use crate::progress::{self, Progress};

/// Arguments of `recflow run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Config file (TOML).
    #[arg(long, default_value = "configs/embedded.toml")]
    pub config: PathBuf,
    /// Events, JSON Lines (`-` = stdin).
    #[arg(long, required_unless_present = "generate", conflicts_with = "generate")]
    pub input: Option<String>,
    /// Instead of --input/--catalog: generate this many events (and the
    /// catalog) in memory with the built-in generator.
    #[arg(long)]
    pub generate: Option<u64>,
    /// Generator seed for --generate.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Item catalog, JSON Lines.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Timely workers (overrides pipeline.workers).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Write the final store content as one JSON object here.
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

/// Files the embedded mode writes besides the store.
#[derive(Clone, Default)]
pub struct EmbeddedOutputs {
    /// Dead letters.
    pub dlq: Option<SharedFile>,
    /// Raw-log (ClickHouse) batches; `None` counts rows only.
    pub raw_log: Option<SharedFile>,
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
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let batch = BatchConfig {
        max_rows: cfg.raw_log.batch_rows,
        max_age: Duration::from_secs_f64(cfg.raw_log.batch_max_age_secs),
    };
    let now = recflow_schemas::validate::now_ms();
    let validator = Validator::new(cfg.validation());
    let (cfg, shared_store, shared_errors) = (cfg.clone(), store.clone(), errors.clone());
    let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let index = worker.index();
        let source: Box<dyn Source> = Box::new(JsonlSource::new(file.clone(), validator.clone(), now));
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(EmbeddedSink::new(shared_store.clone()))];
        if let Some(f) = &outputs.dlq {
            sinks.push(Box::new(DlqFileSink::new(f.clone())));
        }
        sinks.push(Box::new(RawLogFileSink::new(index, outputs.raw_log.clone(), batch)));
        let ingest_cfg = IngestConfig {
            allowed_lateness_ms: cfg.pipeline.allowed_lateness_secs as i64 * 1000,
            catalog: catalog.clone(),
            counters: counters.clone(),
            batches_per_step: 1,
        };
        worker.dataflow::<recflow_operators::Minute, _, _>(|scope| {
            let ctx = crate::pipeline::SinkContext {
                errors: shared_errors.clone(),
                metrics: None,
                tick: Duration::from_millis(500),
            };
            crate::pipeline::build(scope, &cfg, source, ingest_cfg, sinks, ctx);
        });
    })
    .map_err(|e| anyhow::anyhow!("starting timely workers: {e}"))?;
    for r in guards.join() {
        r.map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
    }
    let errs = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !errs.is_empty() {
        bail!("sinks failed: {}", errs.join("; "));
    }
    Ok(store)
}

/// Runs the pipeline per `args`; returns the store and statistics.
pub fn run(args: &RunArgs) -> anyhow::Result<(Arc<EmbeddedStore>, RunStats)> {
    let cfg = Config::load(&args.config)?;
    let workers = args.workers.unwrap_or(cfg.pipeline.workers).max(1);
    let (file, catalog) = match (&args.input, args.generate) {
        (Some(input), _) => {
            let catalog = match &args.catalog {
                Some(p) => Catalog::load_jsonl(p)?,
                None => Catalog::default(),
            };
            let file = JsonlFile::open(input, cfg.pipeline.read_block_bytes, cfg.pipeline.max_event_bytes)
                .with_context(|| format!("opening input {input}"))?;
            (file, catalog)
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
            (file, catalog)
        }
        (None, None) => bail!("give --input FILE or --generate N"),
    };
    let counters = Arc::new(Counters::new(workers));
    let open = |p: &str| -> anyhow::Result<Option<SharedFile>> {
        if p.is_empty() || args.parse_only {
            return Ok(None);
        }
        Ok(Some(SharedFile::open(p, FileMode::Truncate)?))
    };
    let outputs = EmbeddedOutputs { dlq: open(&cfg.embedded.dlq_path)?, raw_log: open(&cfg.embedded.raw_log_path)? };

    let progress = Progress::start(counters.clone(), Duration::from_secs(cfg.pipeline.progress_interval_secs));
    let started = Instant::now();
    let store = if args.parse_only {
        let validator = Validator::new(cfg.validation());
        parse_only(&file, &validator, recflow_schemas::validate::now_ms(), workers, &counters);
        EmbeddedStore::shared()
    } else {
        run_embedded(&cfg, file, Arc::new(catalog), workers, outputs, counters.clone())?
    };
    let seconds = started.elapsed().as_secs_f64();
    progress.stop();
    let events = counters.events.load(std::sync::atomic::Ordering::Relaxed);
    let invalid = counters.invalid_total();
    let stats = RunStats {
        events,
        invalid,
        late: counters.late.load(std::sync::atomic::Ordering::Relaxed),
        windows_closed: counters.windows_closed(),
        workers,
        seconds,
        events_per_sec: (events + invalid) as f64 / seconds.max(1e-9),
        peak_rss_bytes: peak_rss_bytes(),
    };
    eprintln!("done {} seconds={seconds:.3}", progress::line(&counters, stats.events_per_sec));
    Ok((store, stats))
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
                                Ok(_) => counters.events.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                                Err(e) => {
                                    counters.reject(e.rejection.reason);
                                    0
                                }
                            };
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
    Ok(())
}
