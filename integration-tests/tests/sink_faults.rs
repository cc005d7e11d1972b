//! Sink faults during a full pipeline run on the real services: generated
//! events -> per-tenant Kafka topics (3 partitions) -> `recflow run` (a child
//! process, 2 workers) -> Redis, MongoDB, ClickHouse, while one backend is
//! stopped and restarted, or frozen (SIGSTOP). After the drain the state must
//! equal the embedded run of the same events, and ClickHouse must hold every
//! event exactly once. Run one at a time: they stop shared services.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use recflow_integration_tests::cli::free_port;
use recflow_integration_tests::scenario::{
    assert_clickhouse, assert_raw_log_exactly_once, assert_state_equals_embedded, embedded_dump, events_seen,
    produce_lines, run_command, series, setup_seeded, wait_for_events, Setup,
};
use recflow_integration_tests::service;
use serde_json::Value;

/// The tests stop shared services; run them one at a time.
static LOCK: Mutex<()> = Mutex::new(());

/// Events per run: enough for the fault to land mid-run, small enough for ~2 min a test.
const EVENTS: u64 = 50_000;
/// Events consumed before the fault is injected.
const FAULT_AFTER: f64 = 5_000.0;
/// Events produced before the fault; the rest only once it is in place, so
/// the run is still consuming while the backend is away (stopping one can
/// take seconds, and a fast run had read the whole input by then).
const BEFORE_FAULT: usize = 10_000;
/// ClickHouse rows per batch (the sink's default).
const BATCH_ROWS: u64 = 1000;
const WORKERS: u64 = 2;

fn services_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("services")
}

/// Runs a services script (pause.sh, start.sh, resume.sh) with `args`.
fn script(name: &str, args: &[&str]) {
    let ok = Command::new("bash").arg(services_dir().join(name)).args(args).status().expect("bash runs").success();
    assert!(ok, "{name} {args:?} failed");
}

/// A scenario of `EVENTS` (seed 11) on the shared services.
fn scenario() -> Setup {
    setup_seeded(EVENTS, 11, &service("KAFKA_BROKERS"))
}

/// The services run as a child process serving /metrics on `metrics_addr`,
/// exiting once the input is drained.
fn spawn(s: &Setup, metrics_addr: &str) -> Child {
    run_command(s)
        .args(["--exit-when-idle", "12", "--metrics-addr", metrics_addr, "--stats-json"])
        .arg(s.dir.join("stats.json"))
        .spawn()
        .expect("spawn recflow run")
}

/// Waits for the run to exit; its `--stats-json`.
fn finish(s: &Setup, mut child: Child) -> Value {
    let status = child.wait().unwrap();
    assert!(status.success(), "recflow run failed: {status}");
    serde_json::from_slice(&std::fs::read(s.dir.join("stats.json")).unwrap()).unwrap()
}

/// One run with the fault `inject`ed once `FAULT_AFTER` events are in, the
/// rest of the input produced after it, then `observe`d; the run's stats.
fn run_with_fault(s: &Setup, inject: impl FnOnce(), observe: impl FnOnce(&str)) -> Value {
    let embedded = embedded_dump(s);
    assert_eq!(produce_lines(s, 0, BEFORE_FAULT), BEFORE_FAULT as u64);
    let addr = format!("127.0.0.1:{}", free_port());
    let child = spawn(s, &addr);
    let started = Instant::now();
    let at = wait_for_events(&addr, &s.prefix, FAULT_AFTER);
    eprintln!("fault injected after {at} events ({:.1}s)", started.elapsed().as_secs_f64());
    assert!(at < (EVENTS - 2 * WORKERS * BATCH_ROWS) as f64, "the run was nearly done before the fault");
    inject();
    assert_eq!(produce_lines(s, BEFORE_FAULT, usize::MAX), EVENTS - BEFORE_FAULT as u64);
    observe(&addr);
    let stats = finish(s, child);
    eprintln!("run: {} events in {:.1}s", stats["events"], started.elapsed().as_secs_f64());
    assert_eq!(stats["events"], EVENTS, "every produced event consumed exactly once");
    assert_state_equals_embedded(s, &embedded);
    assert_raw_log_exactly_once(s, EVENTS);
    assert_clickhouse(s, EVENTS);
    stats
}

/// Stops `service` (connection refused) for 10 s mid-run, then starts it again.
fn stop_and_restart(service: &str) {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let s = scenario();
    let down = || script("pause.sh", &["--down", service]);
    run_with_fault(&s, down, |addr| {
        let t = Instant::now();
        // Down for 10 s, and on until the pipeline is seen blocked on it (consumption flat
        // for 3 s): an outage while no write happens to be due would test nothing.
        let mut timeline: Vec<(u64, f64)> = Vec::new();
        let stalled = |tl: &[(u64, f64)]| {
            tl.len() > 3 && tl[tl.len() - 4].1 == tl[tl.len() - 1].1 && tl[tl.len() - 1].1 < EVENTS as f64
        };
        while t.elapsed() < Duration::from_secs(10) || (!stalled(&timeline) && t.elapsed() < Duration::from_secs(25)) {
            timeline.push((t.elapsed().as_secs(), events_seen(addr, &s.prefix).unwrap_or(f64::NAN)));
            std::thread::sleep(Duration::from_secs(1));
        }
        script("start.sh", &[service]);
        eprintln!("events consumed while {service} was down (s, events): {timeline:?}");
        // Blocked: the sink retrying, or (Mongo) the profile job reading stored profiles back.
        assert!(stalled(&timeline), "the pipeline never waited for {service}");
        eprintln!("{service} was down for {:.1}s", t.elapsed().as_secs_f64());
        // Once the run has caught up, the sink's retries are in /metrics (none when only the
        // profile job's reads were blocked: those retry inside MongoProfiles).
        wait_for_events(addr, &s.prefix, EVENTS as f64);
        let retries = series(addr, &format!("recflow_sink_retries_total{{sink=\"{service}\"}}"));
        eprintln!("{service} sink retries during the outage: {retries}");
    });
}

#[test]
fn mongo_stopped_and_restarted_mid_run_loses_and_duplicates_nothing() {
    stop_and_restart("mongo");
}

#[test]
fn clickhouse_stopped_and_restarted_mid_run_loses_and_duplicates_nothing() {
    stop_and_restart("clickhouse");
}

#[test]
fn clickhouse_frozen_for_20s_pauses_consumption_with_bounded_memory() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let s = scenario();
    let mut growth = None;
    let freeze = || script("pause.sh", &["clickhouse"]);
    let stats = run_with_fault(&s, freeze, |addr| {
        let t = Instant::now();
        let mut timeline = Vec::new();
        while t.elapsed() < Duration::from_secs(20) {
            timeline.push((t.elapsed().as_secs(), events_seen(addr, &s.prefix).unwrap_or(f64::NAN)));
            std::thread::sleep(Duration::from_secs(1));
        }
        script("resume.sh", &["clickhouse"]);
        eprintln!("events consumed during the freeze (s, events): {timeline:?}");
        // Within ~5 s (the batch age) every worker's ClickHouse insert is blocked;
        // from then on nothing more may be consumed than one batch per worker.
        let after = |secs| timeline.iter().find(|(s, _)| *s >= secs).map(|(_, n)| *n).unwrap_or(f64::NAN);
        growth = Some(after(19) - after(7));
    });
    let growth = growth.expect("the fault ran");
    eprintln!("events consumed from 7 s to 19 s into the freeze: {growth}");
    assert!(growth <= (WORKERS * BATCH_ROWS) as f64, "consumption went on while ClickHouse was frozen: {growth}");
    let peak = stats["peak_rss_bytes"].as_u64().unwrap_or(0);
    eprintln!("peak RSS of the pipeline: {:.1} MiB", peak as f64 / (1 << 20) as f64);
    assert!(peak > 0 && peak < 3 << 29, "peak RSS {peak} B not under 1.5 GiB");
}
