//! The Kafka broker restarts mid-run: the persistent tansu build (SQLite
//! storage, survives a restart) on a private port is stopped for a few
//! seconds while the pipeline consumes, then started again on the same data.
//! After the drain every sink holds exactly what the uninterrupted run
//! computes. `TANSU_PERSISTENT_BIN` names the binary (default: the one
//! `integration-tests/services/install-tansu-persistent.sh` installs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recflow_integration_tests::cli::{free_port, recflow_bin};
use recflow_integration_tests::scenario::{
    assert_clickhouse, assert_raw_log_exactly_once, assert_state_equals_embedded, embedded_dump, events_seen, produce,
    run_command, setup_seeded, wait_for_events,
};

fn tansu_persistent() -> PathBuf {
    let bin = std::env::var("TANSU_PERSISTENT_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo/bin/tansu")
    });
    assert!(
        bin.exists(),
        "{} missing: run `bash integration-tests/services/install-tansu-persistent.sh` (test.sh does)",
        bin.display()
    );
    bin
}

/// One tansu process on `port`, its SQLite database in `dir`.
fn start_broker(dir: &Path, port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("tansu.log")).unwrap();
    let child = Command::new(tansu_persistent())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        // A relative sqlite path: tansu 0.6 rejects absolute ones.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("tansu starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Kills the broker (SIGKILL: a crash). tansu 0.6's graceful stop cancels its
/// storage before it closes client connections, and keeps answering them with
/// storage errors for seconds — a state no real broker restart goes through.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Events in the run: the broker stops after `STOP_AFTER` of them are consumed.
const EVENTS: u64 = 40_000;
const STOP_AFTER: f64 = 8_000.0;

#[test]
fn broker_restart_mid_run_loses_and_duplicates_nothing() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("recflow-tansu-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let broker = start_broker(&dir, port);
    let s = setup_seeded(EVENTS, 17, &format!("127.0.0.1:{port}"));
    let embedded = embedded_dump(&s);
    assert_eq!(produce(&s), EVENTS);
    // Like an operator: the output topics exist before the run (this broker, unlike the
    // test services' one, does not create topics on first produce).
    let init = Command::new(recflow_bin()).arg("init").arg("--config").arg(&s.config).status().unwrap();
    assert!(init.success(), "recflow init failed");

    // The pipeline as a child process (its log kept beside the scenario), serving /metrics.
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(s.dir.join("run.log")).unwrap();
    let stats_path = s.dir.join("stats.json");
    let mut child = run_command(&s)
        .args(["--exit-when-idle", "20", "--metrics-addr", &addr, "--stats-json"])
        .arg(&stats_path)
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .expect("spawn recflow run");
    let t = Instant::now();
    let at = wait_for_events(&addr, &s.prefix, STOP_AFTER);
    assert!(at < EVENTS as f64 * 0.8, "the run was nearly done before the broker stopped ({at})");
    stop(broker);
    std::thread::sleep(Duration::from_secs(5));
    let consumed_while_down = events_seen(&addr, &s.prefix).unwrap_or(f64::NAN);
    let broker = start_broker(&dir, port);
    eprintln!(
        "broker stopped after {at} events ({:.1}s), down 5 s; {consumed_while_down} consumed by its restart; log {}",
        t.elapsed().as_secs_f64(),
        s.dir.join("run.log").display()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "recflow run failed: {status}");
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats_path).unwrap()).unwrap();
    eprintln!("run: {} events read in {:.1}s", stats["events"], t.elapsed().as_secs_f64());
    assert_state_equals_embedded(&s, &embedded);
    assert_raw_log_exactly_once(&s, EVENTS);
    assert_clickhouse(&s, EVENTS);
    // Nothing read twice into the windows: partitions that changed hands between the
    // run's members continued where they stopped.
    assert_eq!(stats["events"], EVENTS, "every produced event read once");
    stop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
