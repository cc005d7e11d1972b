//! Effectively exactly once (MISSION "Delivery guarantees"): the pipeline is
//! killed with SIGKILL at random moments while it works through the
//! workload and restarted each time, or stopped with SIGTERM and restarted;
//! after the drain Redis, MongoDB and ClickHouse hold exactly what the
//! uninterrupted (embedded) run of the same events computes.
//!
//! `RECFLOW_CRASH_EVENTS` (default 200000) sets the workload size,
//! `RECFLOW_CRASH_SEED` the seed of the kill moments (default: the clock,
//! printed so a failure can be replayed).

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use recflow_integration_tests::scenario::{
    assert_clickhouse, assert_raw_log_exactly_once, assert_state_equals_embedded, embedded_dump, produce, run_command,
    setup, Setup,
};

/// The tests share the services and the machine; one at a time.
static LOCK: Mutex<()> = Mutex::new(());

/// `recflow run` over Kafka into the services, as a separate process; its
/// stderr (info logs: assignments, resumed partition times, progress) goes
/// to `{scenario dir}/{name}.log` for the post-mortem of a failure.
fn spawn(s: &Setup, name: &str, exit_when_idle: Option<u64>) -> Child {
    let log = std::fs::File::create(s.dir.join(format!("{name}.log"))).expect("log file");
    let mut cmd = run_command(s);
    cmd.args(["--metrics-addr", "off"]).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log);
    if let Some(secs) = exit_when_idle {
        cmd.args(["--exit-when-idle", &secs.to_string()]);
    }
    cmd.spawn().expect("recflow starts")
}

/// A small deterministic generator for the kill moments (xorshift64*).
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo)
    }
}

fn seed() -> u64 {
    std::env::var("RECFLOW_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    }) | 1
}

/// The final run: drains what is left and exits 0. Its idle exit must
/// outwait the group's eviction of the last killed member (its partitions
/// are assigned only then): several session timeouts (6 s here).
fn drain(s: &Setup) {
    let t = Instant::now();
    let status = spawn(s, "drain", Some(40)).wait().expect("recflow runs");
    assert!(status.success(), "the final run failed: {status}");
    eprintln!("final run drained in {:.1}s", t.elapsed().as_secs_f64());
}

/// A progress line (events, watermark, late) every second in the run logs.
fn progress_in_logs(s: &Setup) {
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(&s.config, text.replace("progress_interval_secs = 0", "progress_interval_secs = 1"))
        .expect("config");
}

fn assert_exact(s: &Setup, embedded: &serde_json::Value, valid: u64) {
    assert_state_equals_embedded(s, embedded);
    assert_raw_log_exactly_once(s, valid);
    assert_clickhouse(s, valid);
}

#[test]
fn kill_9_at_five_random_moments_then_drain_equals_the_uninterrupted_run() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let n = std::env::var("RECFLOW_CRASH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000u64);
    let s = setup(n);
    let embedded = embedded_dump(&s);
    assert_eq!(produce(&s), n);
    progress_in_logs(&s);
    let seed = seed();
    eprintln!("run logs in {}", s.dir.display());
    eprintln!("kill moments seed: {seed} (RECFLOW_CRASH_SEED={seed} replays them)");
    let mut moments = Moments(seed);
    for round in 1..=5 {
        // Late enough to have joined the group and written something, early
        // enough to be mid-run (a run of this workload takes about a minute).
        let after = moments.next_ms(6_000, 30_000);
        let mut child = spawn(&s, &format!("round{round}"), None);
        std::thread::sleep(Duration::from_millis(after));
        let finished = child.try_wait().expect("wait").is_some();
        assert!(!finished, "round {round}: the pipeline exited on its own before the kill");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        eprintln!("round {round}: killed with SIGKILL after {after} ms");
    }
    drain(&s);
    assert_exact(&s, &embedded, n);
}

#[test]
fn sigterm_flushes_commits_and_exits_0_then_a_restart_completes_exactly() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let n = 50_000;
    let s = setup(n);
    let embedded = embedded_dump(&s);
    assert_eq!(produce(&s), n);
    let mut child = spawn(&s, "sigterm", None);
    std::thread::sleep(Duration::from_secs(12));
    let t = Instant::now();
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs").success();
    assert!(ok, "SIGTERM sent");
    let status = child.wait().expect("reaped");
    eprintln!("SIGTERM: exited {status} after {:.1}s", t.elapsed().as_secs_f64());
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    assert!(t.elapsed() < Duration::from_secs(30), "the stop took too long");
    drain(&s);
    assert_exact(&s, &embedded, n);
}
