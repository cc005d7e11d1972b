//! The Kafka broker restarts mid-run: the persistent tansu build (SQLite
//! storage, survives a restart) on a private port is stopped for a few
//! seconds while the pipeline consumes, then started again on the same data.
//! After the drain every sink holds exactly what the uninterrupted run
//! computes. `TANSU_PERSISTENT_BIN` names the binary (default: the one
//! `integration-tests/services/install.sh kafka-persistent` installs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recflow::commands::run::run;
use recflow_integration_tests::cli::free_port;
use recflow_integration_tests::scenario::{
    args, assert_clickhouse, assert_raw_log_exactly_once, assert_state_equals_embedded, embedded_dump, produce,
    setup_on,
};

fn tansu_persistent() -> PathBuf {
    let bin = std::env::var("TANSU_PERSISTENT_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo/bin/tansu")
    });
    assert!(
        bin.exists(),
        "{} missing: run `bash integration-tests/services/install.sh kafka-persistent` (test.sh does)",
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

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

#[test]
#[ignore = "tansu 0.6.0 SQLite storage panics in update_group (service.rs:337 unreachable) during the run; see RELIABILITY.md"]
fn broker_restart_mid_run_loses_and_duplicates_nothing() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("recflow-tansu-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let broker = start_broker(&dir, port);
    let s = setup_on(40_000, &format!("127.0.0.1:{port}"));
    let embedded = embedded_dump(&s);
    assert_eq!(produce(&s), 40_000);
    let restart_dir = dir.clone();
    let outage = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        let t = Instant::now();
        stop(broker);
        std::thread::sleep(Duration::from_secs(5));
        let back = start_broker(&restart_dir, port);
        (t.elapsed(), back)
    });
    let mut a = args(&s, None, &s.config);
    a.exit_when_idle = Some(25);
    let t = Instant::now();
    let result = run(&a);
    let (down, broker) = outage.join().unwrap();
    eprintln!("broker down {:.1}s; run took {:.1}s", down.as_secs_f64(), t.elapsed().as_secs_f64());
    let (_, stats) = result.expect("the run survives the broker restart");
    assert!(t.elapsed() > Duration::from_secs(15), "the run was still going when the broker stopped");
    assert!(stats.events >= 40_000, "everything consumed at least once: {}", stats.events);
    assert_state_equals_embedded(&s, &embedded);
    assert_raw_log_exactly_once(&s, 40_000);
    assert_clickhouse(&s, 40_000);
    stop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
