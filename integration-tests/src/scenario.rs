//! One end-to-end scenario on the real services: a generated workload with
//! this run's own tenant prefix, its per-tenant topics, a services-mode
//! config, the embedded run of the same file as the reference, and the
//! comparisons of Redis, MongoDB and ClickHouse with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recflow::commands::run::{run, RunArgs};
use recflow_sinks::{ClickHouseConfig, MongoConfig};
use serde_json::Value;

use crate::cli::{http_get, recflow_bin};
use crate::compare::{ours, same};
use crate::workload::generate;
use crate::{service, unique};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Everything one scenario needs.
pub struct Setup {
    pub dir: PathBuf,
    pub prefix: String,
    pub events: PathBuf,
    pub catalog: PathBuf,
    pub config: PathBuf,
    pub mongo: MongoConfig,
    pub clickhouse: ClickHouseConfig,
    /// The Kafka bootstrap servers of this scenario.
    pub brokers: String,
}

/// A scenario of `n_events` on the shared services.
pub fn setup(n_events: u64) -> Setup {
    setup_on(n_events, &service("KAFKA_BROKERS"))
}

/// A scenario of `n_events` whose Kafka is `brokers`.
pub fn setup_on(n_events: u64, brokers: &str) -> Setup {
    setup_seeded(n_events, 7, brokers)
}

/// A scenario of `n_events` generated with `seed`, whose Kafka is `brokers`.
pub fn setup_seeded(n_events: u64, seed: u64, brokers: &str) -> Setup {
    let seed = seed.to_string();
    let prefix = unique("e2e").replace('_', "").chars().take(14).collect::<String>();
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let catalog = dir.join("items.jsonl");
    std::fs::write(&events, generate("events", &["--events", &n_events.to_string(), "--seed", &seed], &prefix))
        .unwrap();
    std::fs::write(&catalog, generate("catalog", &["--seed", &seed], &prefix)).unwrap();
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
{sinks}"#,
            sinks = sink_sections(&prefix, brokers),
        ),
    )
    .unwrap();
    Setup { dir, prefix, events, catalog, config, mongo, clickhouse, brokers: brokers.to_string() }
}

/// The config sections of the sinks on the shared services, in databases
/// named `prefix`, the output topics on `brokers`.
pub fn sink_sections(prefix: &str, brokers: &str) -> String {
    format!(
        r#"[kafka_sink]
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
        redis = service("REDIS_URL"),
        mongo = service("MONGO_URL"),
        ch = service("CLICKHOUSE_URL"),
    )
}

/// `recflow run` of this scenario (its config and catalog, 2 workers) as a
/// child process; the caller adds the run's own flags.
pub fn run_command(s: &Setup) -> Command {
    let mut c = Command::new(recflow_bin());
    c.arg("run").arg("--config").arg(&s.config).arg("--catalog").arg(&s.catalog).args(["--workers", "2"]);
    c.stdin(Stdio::null());
    c
}

/// In-process run arguments of this scenario over `input` (Kafka if `None`).
pub fn args(s: &Setup, input: Option<&Path>, config: &Path) -> RunArgs {
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
pub fn embedded_dump(s: &Setup) -> Value {
    let cfg = s.dir.join("embedded.toml");
    std::fs::write(&cfg, "[pipeline]\nprogress_interval_secs = 0\n[telemetry]\nmetrics_addr = \"\"\n[embedded]\ndlq_path = \"\"\nraw_log_path = \"\"\n").unwrap();
    let (store, stats) = run(&args(s, Some(&s.events), &cfg)).unwrap();
    assert!(stats.events > 0);
    store.dump()
}

/// Produces the file to the per-tenant topics (3 partitions each).
pub fn produce(s: &Setup) -> u64 {
    let f = std::io::BufReader::new(std::fs::File::open(&s.events).unwrap());
    let stats = recflow_sources::kafka_admin::produce_jsonl(&s.brokers, f, 3).unwrap();
    assert_eq!(stats.topics, 4);
    stats.produced
}

/// Produces `take` lines of the file from line `skip` on, as [`produce`] does.
pub fn produce_lines(s: &Setup, skip: usize, take: usize) -> u64 {
    let text = std::fs::read_to_string(&s.events).unwrap();
    let part: String = text.lines().skip(skip).take(take).map(|l| format!("{l}\n")).collect();
    recflow_sources::kafka_admin::produce_jsonl(&s.brokers, part.as_bytes(), 3).unwrap().produced
}

pub fn assert_state_equals_embedded(s: &Setup, embedded: &Value) {
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

/// ClickHouse holds every valid event exactly once: `valid` rows, one per
/// Kafka position, and as many distinct event ids as the file has.
pub fn assert_raw_log_exactly_once(s: &Setup, valid: u64) {
    let mut ids = std::collections::HashSet::new();
    for line in std::fs::read_to_string(&s.events).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        ids.insert(v["event_id"].as_str().unwrap_or_default().to_string());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = clickhouse::Client::default().with_url(&s.clickhouse.url).with_validation(false);
    let sql = format!(
        "SELECT count(), uniqExact(source_topic, source_partition, source_offset), uniqExact(event_id) \
         FROM `{}`.user_behaviors",
        s.clickhouse.database
    );
    let (rows, positions, events) = rt.block_on(client.query(&sql).fetch_one::<(u64, u64, u64)>()).unwrap();
    eprintln!("clickhouse: {rows} rows, {positions} distinct Kafka positions, {events} distinct event ids");
    assert_eq!(rows, valid, "user_behaviors rows");
    assert_eq!(positions, rows, "no Kafka record inserted twice");
    assert_eq!(events, ids.len() as u64, "every event id of the input is there");
}

/// ClickHouse: exact row count and the views against counts from the file.
pub fn assert_clickhouse(s: &Setup, valid_events: u64) {
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

/// Sum of `recflow_events_total` over this run's tenants; `None` while /metrics is not up.
pub fn events_seen(addr: &str, prefix: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").ok()?;
    (status == 200).then(|| {
        body.lines()
            .filter(|l| l.starts_with("recflow_events_total{") && l.contains(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

/// Sum of a series over its labels (0 if absent).
pub fn series(addr: &str, name: &str) -> f64 {
    let body = http_get(addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the run has consumed `at_least` events.
pub fn wait_for_events(addr: &str, prefix: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let n = events_seen(addr, prefix).unwrap_or(0.0);
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "the pipeline consumed only {n} events in 180 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}
