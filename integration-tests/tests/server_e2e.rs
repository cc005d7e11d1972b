//! End to end on real services: events POSTed to the collector land in
//! `user-behaviors-{tenant}` (keyed by user), and a services-mode pipeline
//! run over them changes the profile and the hot items the server serves.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use recflow::commands::run::{run, RunArgs};
use recflow::commands::serve::services_app;
use recflow::config::Config;
use recflow_integration_tests::scenario::sink_sections;
use recflow_integration_tests::{service, unique};
use serde_json::{json, Value};

use common::{call, item_ids};

const KEY: &str = "k-e2e";

fn write_config(dir: &std::path::Path, prefix: &str, tenant: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"
[pipeline]
workers = 1
progress_interval_secs = 0
[outputs]
store = "services"
[telemetry]
metrics_addr = ""
[kafka]
brokers = "{brokers}"
group_id = "{prefix}"
topic_pattern = "^user-behaviors-{tenant}$"
session_timeout_ms = 6000
partitions = 2
{sinks}[server]
api_keys = [{{ tenant = "{tenant}", key_sha256 = "{hash}" }}]
scenarios_dir = "{scenarios}"
"#,
        brokers = service("KAFKA_BROKERS"),
        sinks = sink_sections(prefix, &service("KAFKA_BROKERS")),
        hash = recflow_server::auth::hash_key(KEY),
        scenarios = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/scenarios"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// (key, payload) of every message of `topic`.
fn read_topic(topic: &str, expect: usize) -> Vec<(String, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", service("KAFKA_BROKERS"))
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < expect && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((key, serde_json::from_slice(m.payload().unwrap_or_default()).unwrap()));
        }
    }
    out
}

#[test]
fn collected_events_flow_through_the_pipeline_into_what_the_server_serves() {
    let prefix = unique("se2e");
    let tenant = format!("{prefix}_t");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&dir, &prefix, &tenant);
    let cfg = Config::load(&config).unwrap();
    let app = Arc::new(services_app(&cfg).unwrap());
    let r = recflow_server::router(app);
    let auth = (tenant.as_str(), KEY);
    // One timestamp for every event: hot scores are then proportional to the
    // weight sums, so the expected order is known exactly.
    let ts = recflow_server::now_ms() - 3_600_000;
    let ev = |user: &str, item: &str, cat: &str, action: &str, n: usize| {
        json!({"tenant_id": tenant, "scenario_id": "vlog_main_feed", "user_id": user, "item_id": item,
               "category": cat, "action_type": action, "timestamp": ts, "request_id": format!("r{n}")})
    };
    // u1 likes m1 x5 .. m5 x1 (music); u2 clicks n1 once (news): weights 15,12,9,6,3,2.
    let mut events = Vec::new();
    for (i, item) in ["m1", "m2", "m3", "m4", "m5"].iter().enumerate() {
        for _ in 0..(5 - i) {
            events.push(ev("u1", item, "music", "like", events.len()));
        }
    }
    events.push(ev("u2", "n1", "news", "click", events.len()));
    let n = events.len();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (s, v) = call(&r, "GET", "/api/v1/users/u1/profile?scenario_id=vlog_main_feed", auth, None, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "no profile before the pipeline ran: {v}");
        let (s, v) = call(&r, "POST", "/api/v1/events/batch", auth, None, Some(Value::Array(events.clone()))).await;
        assert_eq!((s, v["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(n as u64)), "{v}");
        let (s, v) = call(&r, "POST", "/api/v1/events", auth, None, Some(json!({"tenant_id": tenant}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    });

    let topic = format!("user-behaviors-{tenant}");
    let got = read_topic(&topic, n);
    assert_eq!(got.len(), n, "every accepted event is on {topic}");
    for (key, payload) in &got {
        assert_eq!(key, payload["user_id"].as_str().unwrap(), "keyed by user_id");
    }

    let args = RunArgs {
        config: config.clone(),
        input: None,
        generate: None,
        seed: 7,
        catalog: None,
        workers: Some(1),
        exit_when_idle: Some(8),
        metrics_addr: None,
        dump_state: None,
        stats_json: None,
        parse_only: false,
        cluster: Default::default(),
    };
    let (_, stats) = run(&args).expect("pipeline run");
    assert_eq!(stats.events, n as u64, "the pipeline read exactly the collected events");

    rt.block_on(async {
        let (s, p) = call(&r, "GET", "/api/v1/users/u1/profile?scenario_id=vlog_main_feed", auth, None, None).await;
        assert_eq!(s, StatusCode::OK, "{p}");
        assert_eq!(p["counts"]["like"], 15);
        assert_eq!(p["favorite_categories"], json!(["music"]));
        let (_, hot) = call(&r, "GET", "/api/v1/hot-items?scenario_id=vlog_main_feed&limit=10", auth, None, None).await;
        assert_eq!(item_ids(&hot), ["m1", "m2", "m3", "m4", "m5", "n1"], "{hot}");
        let (s, rec) = call(
            &r,
            "POST",
            "/api/v1/recommend",
            auth,
            Some("u1"),
            Some(json!({"scenario_id": "vlog_main_feed", "count": 3})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{rec}");
        assert_eq!(rec["metadata"]["is_fallback"], false, "u1 has a profile now: {rec}");
        let first = &rec["items"][0];
        assert_eq!(first["item_id"], "m1");
        assert!(first["reasons"].as_array().unwrap().contains(&json!("category_affinity")), "{rec}");
        let (_, other) = call(
            &r,
            "POST",
            "/api/v1/recommend",
            auth,
            Some("u9"),
            Some(json!({"scenario_id": "vlog_main_feed", "count": 2})),
        )
        .await;
        assert_eq!(other["metadata"]["fallback_reason"], "no_profile");
        assert_eq!(item_ids(&other), ["m1", "m2"]);
        // Hourly analytics from ClickHouse's metrics_hourly, counts as JSON numbers.
        let (s, h) = call(&r, "GET", "/api/v1/analytics/hourly?scenario_id=vlog_main_feed", auth, None, None).await;
        assert_eq!(s, StatusCode::OK, "{h}");
        let rows = h["rows"].as_array().cloned().unwrap_or_default();
        let sum = |f: &str| rows.iter().map(|r| r[f].as_u64().expect("a count as a JSON number")).sum::<u64>();
        assert_eq!((sum("likes"), sum("clicks"), sum("impressions")), (15, 1, 0), "{h}");
    });
}
