//! Timely cluster mode on real services: the same generated events on
//! per-tenant Kafka topics (3 partitions) consumed once by 1 process × 1
//! worker and once by 2 processes × 2 workers (the built `recflow` binary
//! spawned twice, one timely cluster, one consumer group of 4 members).
//! Each configuration writes its own Redis database, Mongo database and
//! ClickHouse database; the resulting states must be identical.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recflow_integration_tests::cli::{free_port, http_get, recflow_bin};
use recflow_integration_tests::compare::{ours, same};
use recflow_integration_tests::workload::generate;
use recflow_integration_tests::{service, unique};
use recflow_sinks::MongoConfig;
use serde_json::Value;

/// One configuration's private outputs.
struct Target {
    label: &'static str,
    config: PathBuf,
    redis_url: String,
    mongo: MongoConfig,
    clickhouse_db: String,
}

/// Writes a services-mode config whose consumer group and databases are the run's own.
fn target(dir: &Path, prefix: &str, label: &'static str, redis_db: u8) -> Target {
    let name = format!("{prefix}{label}");
    let redis_url = format!("{}/{redis_db}", service("REDIS_URL").trim_end_matches('/'));
    let mongo = MongoConfig { url: service("MONGO_URL"), database: name.clone(), ..MongoConfig::default() };
    let config = dir.join(format!("{label}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
[pipeline]
progress_interval_secs = 0
[outputs]
store = "services"
[kafka]
brokers = "{brokers}"
group_id = "{name}"
topic_pattern = "^user-behaviors-{prefix}_[a-z0-9_]+$"
session_timeout_ms = 6000
partitions = 3
[kafka_sink]
brokers = "{brokers}"
[redis]
url = "{redis_url}"
[mongo]
url = "{mongo}"
database = "{name}"
[clickhouse]
url = "{ch}"
database = "{name}"
"#,
            brokers = service("KAFKA_BROKERS"),
            mongo = mongo.url,
            ch = service("CLICKHOUSE_URL"),
        ),
    )
    .unwrap();
    Target { label, config, redis_url, mongo, clickhouse_db: name }
}

/// A started process with its probe address and stats file.
struct Proc {
    child: Child,
    metrics: String,
    stats: PathBuf,
    was_ready: bool,
}

/// Runs `processes` × `workers` to the end of the input; returns each process's stats.
fn run(t: &Target, catalog: &Path, dir: &Path, processes: usize, workers: usize) -> Vec<Value> {
    let hosts = dir.join(format!("{}-hosts.txt", t.label));
    let lines: Vec<String> = (0..processes).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    std::fs::write(&hosts, lines.join("\n")).unwrap();
    let mut procs: Vec<Proc> = (0..processes)
        .map(|i| {
            let metrics = format!("127.0.0.1:{}", free_port());
            let stats = dir.join(format!("{}-stats-{i}.json", t.label));
            let mut cmd = Command::new(recflow_bin());
            cmd.arg("run").arg("--config").arg(&t.config).arg("--catalog").arg(catalog);
            cmd.args(["--workers", &workers.to_string(), "--exit-when-idle", "12", "--metrics-addr", &metrics]);
            cmd.arg("--stats-json").arg(&stats);
            for v in ["RECFLOW_PROCESSES", "RECFLOW_PROCESS_INDEX", "RECFLOW_HOSTS", "RECFLOW_WORKERS"] {
                cmd.env_remove(v);
            }
            if processes > 1 {
                cmd.args(["--processes", &processes.to_string(), "--process", &i.to_string()]);
                cmd.arg("--hosts").arg(&hosts);
            }
            let log = std::fs::File::create(dir.join(format!("{}-{i}.log", t.label))).unwrap();
            cmd.stdout(Stdio::null()).stderr(log);
            Proc { child: cmd.spawn().expect("recflow starts"), metrics, stats, was_ready: false }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while procs.iter_mut().any(|p| p.child.try_wait().unwrap().is_none()) {
        for p in procs.iter_mut() {
            if !p.was_ready {
                p.was_ready = matches!(http_get(&p.metrics, "/health/ready"), Ok((200, _)));
            }
        }
        if Instant::now() > deadline {
            for p in procs.iter_mut() {
                let _ = p.child.kill();
            }
            panic!("{} did not finish within 300 s (logs in {})", t.label, dir.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    procs
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            let status = p.child.wait().unwrap();
            assert!(status.success(), "{} process {i} failed: see {}/{}-{i}.log", t.label, dir.display(), t.label);
            assert!(p.was_ready, "{} process {i} never answered /health/ready with 200", t.label);
            serde_json::from_slice(&std::fs::read(&p.stats).unwrap()).unwrap()
        })
        .collect()
}

/// Redis keys of this test's tenants and the Mongo profiles written by one configuration.
fn state(t: &Target, prefix: &str) -> (Value, Value) {
    let redis = ours(&recflow_sinks::redis::dump(&t.redis_url).unwrap(), prefix);
    let profiles = recflow_sinks::mongo::dump_profiles(&t.mongo).unwrap();
    (Value::Object(redis.into_iter().collect()), Value::Array(profiles))
}

fn clickhouse_rows(db: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = clickhouse::Client::default().with_url(service("CLICKHOUSE_URL")).with_validation(false);
    let n =
        rt.block_on(client.query(&format!("SELECT count() FROM `{db}`.user_behaviors")).fetch_one::<u64>()).unwrap();
    let _ = rt.block_on(client.query(&format!("DROP DATABASE IF EXISTS `{db}`")).execute());
    n
}

fn sum(stats: &[Value], key: &str) -> u64 {
    stats.iter().map(|s| s[key].as_u64().unwrap()).sum()
}

#[test]
fn two_processes_of_two_workers_equal_one_worker() {
    let n: u64 = std::env::var("RECFLOW_CLUSTER_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(60_000);
    let prefix = unique("cl").replace('_', "").chars().take(14).collect::<String>();
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let (events, catalog) = (dir.join("events.jsonl"), dir.join("items.jsonl"));
    std::fs::write(&events, generate("events", &["--events", &n.to_string(), "--seed", "7"], &prefix)).unwrap();
    std::fs::write(&catalog, generate("catalog", &["--seed", "7"], &prefix)).unwrap();
    let f = std::io::BufReader::new(std::fs::File::open(&events).unwrap());
    let produced = recflow_sources::kafka_admin::produce_jsonl(&service("KAFKA_BROKERS"), f, 3).unwrap();
    assert_eq!(produced.produced, n);

    let single = target(&dir, &prefix, "p1w1", 2);
    let cluster = target(&dir, &prefix, "p2w2", 3);
    let t = Instant::now();
    let one = run(&single, &catalog, &dir, 1, 1);
    let t1 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let two = run(&cluster, &catalog, &dir, 2, 2);
    let t2 = t.elapsed().as_secs_f64();
    eprintln!("1x1: {t1:.1}s, 2x2: {t2:.1}s (wall, incl. start, group join and 12 s idle exit)");

    assert_eq!(sum(&one, "events"), n, "1x1 consumed every event once");
    assert_eq!(sum(&two, "events"), n, "the cluster consumed every event exactly once over its processes");
    assert!(two.iter().all(|s| s["processes"] == 2 && s["events"].as_u64().unwrap() > 0), "both processes consumed");

    let (want_redis, want_profiles) = state(&single, &prefix);
    let (got_redis, got_profiles) = state(&cluster, &prefix);
    assert!(want_redis.as_object().unwrap().len() > 100, "the reference wrote state");
    same(&want_redis, &got_redis, "redis").unwrap();
    same(&want_profiles, &got_profiles, "mongo.user_profiles").unwrap();
    assert_eq!(clickhouse_rows(&single.clickhouse_db), n);
    assert_eq!(clickhouse_rows(&cluster.clickhouse_db), n);
    eprintln!(
        "state equal: {} Redis keys, {} profiles",
        want_redis.as_object().unwrap().len(),
        want_profiles.as_array().unwrap().len()
    );
}
