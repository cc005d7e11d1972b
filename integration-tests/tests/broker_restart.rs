//! The Kafka broker restarts mid-run: a tansu broker on a private port,
//! keeping its data in an S3-protocol object store (moto's server, also on
//! 127.0.0.1), is stopped for a few seconds while the pipeline consumes, then
//! started again on the same data. After the drain every sink holds exactly
//! what the uninterrupted run computes. `RECFLOW_TANSU_BIN` and
//! `RECFLOW_S3_SERVER_BIN` name the binaries (`integration-tests/services/env.sh`
//! prints both; `install.sh` installs them).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recflow_integration_tests::cli::{free_port, recflow_bin};
use recflow_integration_tests::scenario::{
    assert_clickhouse, assert_raw_log_exactly_once, assert_state_equals_embedded, embedded_dump, events_seen, produce,
    run_command, setup_seeded, wait_for_events,
};

/// The bucket holding the broker's topics, offsets and group state.
const BUCKET: &str = "tansu";

fn binary(var: &str) -> PathBuf {
    let bin = std::env::var(var).map(PathBuf::from).unwrap_or_default();
    assert!(
        bin.is_file(),
        "{var}={} is not a file: run `bash integration-tests/services/install.sh` and \
         `eval \"$(bash integration-tests/services/env.sh)\"` (test.sh does)",
        bin.display()
    );
    bin
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).unwrap()
}

/// The object store, killed when dropped (it outlives the broker's restart).
struct ObjectStore {
    child: Child,
    port: u16,
}

impl ObjectStore {
    /// moto's S3 server on a free port, holding one empty bucket.
    fn start(dir: &Path) -> ObjectStore {
        let port = free_port();
        let log = log_file(dir, "s3.log");
        let child = Command::new(binary("RECFLOW_S3_SERVER_BIN"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("moto_server starts");
        let store = ObjectStore { child, port };
        wait_listening(port, "moto_server");
        // CreateBucket is a bare PUT on the bucket's path (the server checks no signature).
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            conn,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "creating the bucket: {reply}");
        store
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tansu process on `port`, its data in `store`'s bucket.
fn start_broker(dir: &Path, port: u16, store: &ObjectStore) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = log_file(dir, "tansu.log");
    let child = Command::new(binary("RECFLOW_TANSU_BIN"))
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", &format!("s3://{BUCKET}/")])
        // object_store's S3 client reads these; moto accepts any credentials.
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", store.port))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "recflow")
        .env("AWS_SECRET_ACCESS_KEY", "recflow")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("tansu starts");
    wait_listening(port, "tansu");
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
    let store = ObjectStore::start(&dir);
    let broker = start_broker(&dir, port, &store);
    let s = setup_seeded(EVENTS, 17, &format!("127.0.0.1:{port}"));
    let embedded = embedded_dump(&s);
    assert_eq!(produce(&s), EVENTS);
    // Like an operator: the output topics exist before the run.
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
    let broker = start_broker(&dir, port, &store);
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
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
