//! End to end on real services: generated events -> per-tenant Kafka topics
//! (3 partitions) -> `recflow run` (2 workers, services mode) -> Redis,
//! MongoDB, ClickHouse; compared with the embedded run of the same file, and
//! ClickHouse aggregates with counts computed here from the file.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use recflow::commands::run::run;
use recflow_integration_tests::scenario::{
    args, assert_clickhouse, assert_state_equals_embedded, embedded_dump, produce, root, setup,
};
use recflow_integration_tests::service;
use serde_json::Value;

/// The tests pause shared services; run them one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// Sum of a series over its labels, from a text exposition.
fn series_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| label.is_none_or(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn kafka_to_services_equals_the_embedded_run() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let n = std::env::var("RECFLOW_E2E_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000u64);
    let s = setup(n);
    let embedded = embedded_dump(&s);
    let produced = produce(&s);
    assert_eq!(produced, n);
    let metrics_addr = "127.0.0.1:19464";
    let mut a = args(&s, None, &s.config);
    a.metrics_addr = Some(metrics_addr.into());
    let t = Instant::now();
    let (_, stats) = run(&a).unwrap();
    eprintln!("services run: {} events in {:.1}s", stats.events, t.elapsed().as_secs_f64());
    assert_eq!(stats.events, n, "every produced event consumed exactly once");
    assert_state_equals_embedded(&s, &embedded);
    assert_clickhouse(&s, n);
    // The worker's /metrics agree with the run.
    let text = scrape(metrics_addr);
    assert_eq!(series_sum(&text, "recflow_events_total", Some(&s.prefix)) as u64, n);
    assert_eq!(series_sum(&text, "recflow_invalid_events_total", Some("reason=\"bad_json\"")) as u64, 0);
    assert_eq!(series_sum(&text, "recflow_windows_closed_total", None) as u64, stats.windows_closed);
    assert!(series_sum(&text, "recflow_sink_batch_seconds_count", Some("sink=\"redis\"")) > 0.0);
    assert!(series_sum(&text, "recflow_watermark_ms", None) > 1.7e12);
    // Backpressure's count: every raw-log row the sources handed in was taken by the sinks.
    assert!(text.contains("recflow_in_flight_events"));
    assert_eq!(series_sum(&text, "recflow_in_flight_events", None), 0.0);
    assert!(text.contains("process_resident_memory_bytes"));
    // Lag per partition, reported by librdkafka statistics every 5 s: all 12
    // partitions (4 tenants x 3), and drained at the end.
    let lag: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("recflow_consumer_lag{") && l.contains(&s.prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    eprintln!("consumer lag series after the drain: {lag:?}");
    assert_eq!(lag.len(), 12, "one lag series per partition");
    assert!(lag.iter().all(|l| *l == 0.0), "drained: nothing left to read");
}

#[test]
fn redis_outage_mid_run_loses_nothing() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup(30_000);
    let embedded = embedded_dump(&s);
    produce(&s);
    let services = root().join("integration-tests/services");
    let script = move |name: &str, args: &[&str]| {
        let ok = Command::new("bash").arg(services.join(name)).args(args).status().unwrap().success();
        assert!(ok, "{name} {args:?} failed");
    };
    let outage = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        // A real stop (connection refused), 10 s, then a restart; Redis runs with
        // AOF, so it comes back with what it had acknowledged.
        let t = Instant::now();
        script("pause.sh", &["--down", "redis"]);
        std::thread::sleep(Duration::from_secs(10));
        script("start.sh", &["redis"]);
        t.elapsed()
    });
    let metrics_addr = "127.0.0.1:19465";
    let mut a = args(&s, None, &s.config);
    a.metrics_addr = Some(metrics_addr.into());
    let (_, stats) = run(&a).unwrap();
    let down_for = outage.join().unwrap();
    eprintln!("redis was down for {:.1}s", down_for.as_secs_f64());
    assert_eq!(stats.events, 30_000);
    assert_state_equals_embedded(&s, &embedded);
    let retries = series_sum(&scrape(metrics_addr), "recflow_sink_retries_total", Some("sink=\"redis\""));
    eprintln!("redis retries during the outage: {retries}");
    assert!(retries > 0.0, "the outage shows as retries in /metrics");
}

#[test]
fn a_tenant_topic_created_while_the_pipeline_runs_is_consumed_within_30s() {
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup(5_000);
    produce(&s);
    let metrics_addr = "127.0.0.1:19466";
    let mut a = args(&s, None, &s.config);
    a.metrics_addr = Some(metrics_addr.into());
    let runner = std::thread::spawn(move || run(&a).map(|(_, stats)| stats.events).map_err(|e| e.to_string()));
    let count = |label: &str| {
        std::net::TcpStream::connect(metrics_addr)
            .ok()
            .map_or(0.0, |_| series_sum(&scrape(metrics_addr), "recflow_events_total", Some(label)))
    };
    // The first tenants are consumed: the pipeline is running and caught up.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&s.prefix) < 5_000.0 {
        assert!(Instant::now() < deadline, "the pipeline did not consume the first tenants");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A tenant nobody has seen: its topic does not exist yet. Event times are
    // now, ahead of the file's, so they are applied, not late.
    let tenant = format!("{}_newcomer", s.prefix);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let n = 300;
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{{\"tenant_id\":\"{tenant}\",\"scenario_id\":\"news_main_feed\",\"user_id\":\"u{}\",\"item_id\":\"i{}\",\"action_type\":\"click\",\"timestamp\":{}}}\n",
                i % 10,
                i % 7,
                now - 120_000 + i * 100
            )
        })
        .collect();
    let t = Instant::now();
    let stats = recflow_sources::kafka_admin::produce_jsonl(&service("KAFKA_BROKERS"), lines.as_bytes(), 3).unwrap();
    assert_eq!(stats.produced, n as u64);
    let label = format!("\"{tenant}\"");
    while count(&label) < n as f64 {
        assert!(t.elapsed() < Duration::from_secs(30), "the new tenant's topic was not consumed within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "new tenant topic consumed by the running pipeline {:.1}s after its first event",
        t.elapsed().as_secs_f64()
    );
    let events = runner.join().unwrap().unwrap();
    assert_eq!(events, 5_000 + n as u64, "every event once: the new topic moved no other partition");
    // Through the whole pipeline: the newcomer's profile windows closed (end of input) into Redis.
    let mut con = redis::Client::open(service("REDIS_URL")).unwrap().get_connection().unwrap();
    let profile: Option<String> =
        redis::cmd("GET").arg(format!("user:profile:{tenant}:u0:news_main_feed")).query(&mut con).unwrap();
    let profile: Value = serde_json::from_str(&profile.expect("the new tenant's profile is in Redis")).unwrap();
    assert_eq!(profile["counts"]["click"], n / 10, "u0 clicked every tenth event");
}
