//! End to end on real services: generated events -> per-tenant Kafka topics
//! (3 partitions) -> `recflow run` (2 workers, services mode) -> Redis,
//! MongoDB, ClickHouse; compared with the embedded run of the same file, and
//! ClickHouse aggregates with counts computed here from the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use recflow::commands::run::{run, RunArgs};
use recflow_integration_tests::compare::{ours, same};
use recflow_integration_tests::{service, unique};
use recflow_sinks::{ClickHouseConfig, MongoConfig};
use serde_json::Value;

/// The tests pause shared services; run them one at a time.
static LOCK: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gen_script() -> PathBuf {
    std::env::var("RECFLOW_GEN_EVENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/workload/gen_events.py"))
}

/// Runs gen_events.py and renames its tenants `tenant_*` to `{prefix}_tenant_*`,
/// so this run's topics, keys and rows never mix with other tests'.
fn generate(what: &str, args: &[&str], prefix: &str) -> String {
    let script = gen_script();
    assert!(script.exists(), "workload generator {} is missing (set RECFLOW_GEN_EVENTS)", script.display());
    let out = Command::new("python3").arg(&script).arg(what).args(args).output().expect("python3 runs");
    assert!(out.status.success(), "gen_events.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .replace("\"tenant_id\":\"tenant_", &format!("\"tenant_id\":\"{prefix}_tenant_"))
}

/// Everything one scenario needs.
struct Setup {
    dir: PathBuf,
    prefix: String,
    events: PathBuf,
    catalog: PathBuf,
    config: PathBuf,
    mongo: MongoConfig,
    clickhouse: ClickHouseConfig,
}

fn setup(n_events: u64) -> Setup {
    let prefix = unique("e2e").replace('_', "").chars().take(14).collect::<String>();
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let catalog = dir.join("items.jsonl");
    std::fs::write(&events, generate("events", &["--events", &n_events.to_string(), "--seed", "7"], &prefix)).unwrap();
    std::fs::write(&catalog, generate("catalog", &["--seed", "7"], &prefix)).unwrap();
    let mongo = MongoConfig { url: service("MONGO_URL"), database: prefix.clone(), ..MongoConfig::default() };
    let clickhouse =
        ClickHouseConfig { url: service("CLICKHOUSE_URL"), database: prefix.clone(), ..ClickHouseConfig::default() };
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[pipeline]
workers = 2
progress_interval_secs = 0
[outputs]
store = "services"
[telemetry]
metrics_addr = ""
[kafka]
brokers = "{brokers}"
group_id = "{prefix}"
topic_pattern = "^user-behaviors-{prefix}_[a-z0-9_]+$"
session_timeout_ms = 6000
partitions = 3
[kafka_sink]
brokers = "{brokers}"
[redis]
url = "{redis}"
[mongo]
url = "{mongo}"
database = "{prefix}"
[clickhouse]
url = "{ch}"
database = "{prefix}"
"#,
            brokers = service("KAFKA_BROKERS"),
            redis = service("REDIS_URL"),
            mongo = mongo.url,
            ch = clickhouse.url,
        ),
    )
    .unwrap();
    Setup { dir, prefix, events, catalog, config, mongo, clickhouse }
}

fn args(s: &Setup, input: Option<&Path>, config: &Path) -> RunArgs {
    RunArgs {
        config: config.to_path_buf(),
        input: input.map(|p| p.display().to_string()),
        generate: None,
        seed: 7,
        catalog: Some(s.catalog.clone()),
        workers: Some(2),
        cluster: Default::default(),
        exit_when_idle: Some(12),
        metrics_addr: None,
        dump_state: None,
        stats_json: None,
        parse_only: false,
    }
}

/// The embedded run of the same file: the reference state.
fn embedded_dump(s: &Setup) -> Value {
    let cfg = s.dir.join("embedded.toml");
    std::fs::write(&cfg, "[pipeline]\nprogress_interval_secs = 0\n[telemetry]\nmetrics_addr = \"\"\n[embedded]\ndlq_path = \"\"\nraw_log_path = \"\"\n").unwrap();
    let (store, stats) = run(&args(s, Some(&s.events), &cfg)).unwrap();
    assert!(stats.events > 0);
    store.dump()
}

/// Produces the file to the per-tenant topics (3 partitions each).
fn produce(s: &Setup) -> u64 {
    let f = std::io::BufReader::new(std::fs::File::open(&s.events).unwrap());
    let stats = recflow_sources::kafka_admin::produce_jsonl(&service("KAFKA_BROKERS"), f, 3).unwrap();
    assert_eq!(stats.topics, 4);
    stats.produced
}

fn assert_state_equals_embedded(s: &Setup, embedded: &Value) {
    let want = ours(embedded, &s.prefix);
    let got = ours(&recflow_sinks::redis::dump(&service("REDIS_URL")).unwrap(), &s.prefix);
    let (wk, gk): (Vec<_>, Vec<_>) = (want.keys().collect(), got.keys().collect());
    assert_eq!(wk.len(), gk.len(), "Redis key count");
    assert!(wk == gk, "Redis key sets differ");
    for (k, v) in &want {
        same(v, &got[k], k).unwrap();
    }
    let profiles = recflow_sinks::mongo::dump_profiles(&s.mongo).unwrap();
    same(&embedded["mongo.user_profiles"], &Value::Array(profiles), "mongo.user_profiles").unwrap();
    eprintln!(
        "state equal: {} Redis keys, {} profiles",
        want.len(),
        embedded["mongo.user_profiles"].as_array().unwrap().len()
    );
}

/// ClickHouse: exact row count and the views against counts from the file.
fn assert_clickhouse(s: &Setup, valid_events: u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = clickhouse::Client::default().with_url(&s.clickhouse.url).with_validation(false);
    let db = &s.clickhouse.database;
    let q = |sql: String| rt.block_on(client.query(&sql).fetch_all::<(String, u32, u64, u64, u64, u64)>()).unwrap();
    let count: u64 =
        rt.block_on(client.query(&format!("SELECT count() FROM `{db}`.user_behaviors")).fetch_one::<u64>()).unwrap();
    assert_eq!(count, valid_events, "user_behaviors rows");

    // Independent counts from the file: per (tenant, hour) and (tenant, day).
    type Counts = BTreeMap<(String, u32), [u64; 4]>;
    let (mut hourly, mut daily): (Counts, Counts) = (BTreeMap::new(), BTreeMap::new());
    for line in std::fs::read_to_string(&s.events).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamp"].as_i64().unwrap() / 1000;
        let slot = match v["action_type"].as_str().unwrap() {
            "impression" => 0,
            "click" => 1,
            "view" | "play" => 2,
            "payment" => 3,
            _ => continue,
        };
        let t = v["tenant_id"].as_str().unwrap().to_string();
        hourly.entry((t.clone(), (ts - ts % 3600) as u32)).or_default()[slot] += 1;
        daily.entry((t, (ts - ts % 86400) as u32)).or_default()[slot] += 1;
    }
    let rows = |sql: String| -> Counts {
        q(sql)
            .into_iter()
            .map(|(t, at, a, b, c, d)| ((t, at), [a, b, c, d]))
            .filter(|(_, c)| c.iter().any(|n| *n > 0))
            .collect()
    };
    let got_hourly = rows(format!(
        "SELECT tenant_id, toUInt32(hour), sum(impressions), sum(clicks), sum(views), sum(payments) \
         FROM `{db}`.metrics_hourly GROUP BY tenant_id, hour"
    ));
    assert_eq!(got_hourly, hourly, "metrics_hourly per (tenant, hour)");
    let got_daily = rows(format!(
        "SELECT tenant_id, toUInt32(toDateTime(day)), sum(impressions), sum(clicks), sum(views) + sum(plays), sum(payments) \
         FROM `{db}`.item_stats_daily GROUP BY tenant_id, day"
    ));
    assert_eq!(got_daily, daily, "item_stats_daily per (tenant, day)");
    eprintln!("clickhouse: {count} rows, {} hours, {} days match", hourly.len(), daily.len());
    let _ = rt.block_on(client.query(&format!("DROP DATABASE IF EXISTS `{db}`")).execute());
}

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
