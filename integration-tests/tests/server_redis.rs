//! The query server on a real Redis it owns: exposures recorded in Redis
//! (off the response path, never repeated), a replaced hot list served within
//! the cache TTL, and answers degrade to the last good hot list when that Redis is killed.
//! The shared Redis (REDIS_URL) is never touched; MongoDB is the shared one.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use recflow_integration_tests::{service, unique};
use recflow_schemas::Validator;
use recflow_server::auth::hash_key;
use recflow_server::publish::ChannelPublisher;
use recflow_server::state::{RedisMongoState, ServicesConfig};
use recflow_server::{router, ApiKeyConfig, App, ServerConfig};
use recflow_sinks::{ClickHouseConfig, MongoConfig};
use serde_json::json;

use common::{call, item_ids};

/// The server's hot-list cache TTL in this test.
const HOT_CACHE_MS: u64 = 300;

/// A redis-server child on a free port, killed on drop.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (integration-tests/services/install.sh installs it)");
        let me = OwnRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while me.conn().is_err() {
            assert!(Instant::now() < deadline, "own redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_millis(500))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn exposures_live_in_redis_and_a_dead_redis_degrades_to_the_last_hot_list() {
    let mut redis_server = OwnRedis::start();
    let tenant = unique("srv");
    let key = "k-redis-test";
    let mut con = redis_server.conn().unwrap();
    let hot = format!("hot:items:{tenant}:vlog_main_feed");
    let scored: Vec<(f64, String)> = (0..12).map(|i| (100.0 - i as f64, format!("it{i:02}"))).collect();
    redis::cmd("ZADD").arg(&hot).arg(&scored).exec(&mut con).unwrap();
    let profile = json!({
        "tenant_id": tenant, "user_id": "u1", "scenario_id": "vlog_main_feed",
        "counts": {}, "watch_count": 0, "watch_seconds": 0.0, "category_counts": {"music": 3},
        "category_scores": {"music": 1.0}, "favorite_categories": ["music"], "active_hours": vec![0; 24],
        "first_seen": 0, "last_active_at": 0, "recent_items": [], "updated_window": 1
    });
    redis::cmd("SET")
        .arg(format!("user:profile:{tenant}:u1:vlog_main_feed"))
        .arg(profile.to_string())
        .exec(&mut con)
        .unwrap();

    // Built outside the runtime: the MongoDB handle uses the blocking driver.
    let services = ServicesConfig {
        redis_url: redis_server.url(),
        redis_timeout: Duration::from_millis(300),
        mongo: MongoConfig { url: service("MONGO_URL"), database: tenant.clone(), ..MongoConfig::default() },
        clickhouse: ClickHouseConfig { url: service("CLICKHOUSE_URL"), ..ClickHouseConfig::default() },
        catalog_ttl: Duration::from_secs(60),
    };
    let state = Arc::new(RedisMongoState::new(&services).unwrap());
    let cfg = ServerConfig {
        api_keys: vec![ApiKeyConfig { tenant: tenant.clone(), key_sha256: hash_key(key) }],
        scenarios_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/scenarios").into(),
        hot_cache_ms: HOT_CACHE_MS,
        ..ServerConfig::default()
    };
    let (tx, _rx) = std::sync::mpsc::sync_channel(1);
    let app = Arc::new(App::new(cfg, state, Arc::new(ChannelPublisher::new(tx)), Validator::default(), None).unwrap());
    let r = router(app.clone());
    let auth = (tenant.as_str(), key);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let body = json!({"scenario_id": "vlog_main_feed", "count": 4, "exclude_items": ["it01"]});
        let (s, first) = call(&r, "POST", "/api/v1/recommend", auth, Some("u1"), Some(body.clone())).await;
        assert_eq!(s, StatusCode::OK, "{first}");
        assert_eq!(first["metadata"]["is_fallback"], false, "{first}");
        let first_ids = item_ids(&first);
        assert_eq!(first_ids, ["it00", "it02", "it03", "it04"], "hot order, it01 excluded");
        let exposed_key = format!("exposed:{tenant}:u1:vlog_main_feed");
        // Exposures are written off the response path (in-process pending until acknowledged).
        assert!(app.exposures.flush(Duration::from_secs(2)).await, "exposure writes acknowledged");
        let mut members: Vec<String> = redis::cmd("SMEMBERS").arg(&exposed_key).query(&mut con).unwrap();
        members.sort();
        assert_eq!(members, first_ids, "exposures are a Redis SET");
        let ttl: i64 = redis::cmd("TTL").arg(&exposed_key).query(&mut con).unwrap();
        assert!((86_000..=86_400).contains(&ttl), "24 h TTL, got {ttl}");
        let (_, second) = call(&r, "POST", "/api/v1/recommend", auth, Some("u1"), Some(body.clone())).await;
        assert_eq!(item_ids(&second), ["it05", "it06", "it07", "it08"], "exposed items are not served again");

        // Back to back, without waiting for the exposure write: still no repeat.
        let (_, a) = call(&r, "POST", "/api/v1/recommend", auth, Some("u1"), Some(body.clone())).await;
        let (_, b) = call(&r, "POST", "/api/v1/recommend", auth, Some("u1"), Some(body.clone())).await;
        assert_eq!(item_ids(&a), ["it09", "it10", "it11"], "{a}");
        assert!(item_ids(&b).is_empty(), "all else exposed or excluded: {b}");
        assert!(app.exposures.flush(Duration::from_secs(2)).await);
        let n: usize = redis::cmd("SCARD").arg(&exposed_key).query(&mut con).unwrap();
        assert_eq!(n, 11, "every page landed in Redis");

        // The pipeline replaces the hot list (temp key + RENAME): served within the cache TTL.
        let fresh: Vec<(f64, String)> = (0..4).map(|i| (10.0 - i as f64, format!("new{i}"))).collect();
        redis::cmd("ZADD").arg("tmp:hot").arg(&fresh).exec(&mut con).unwrap();
        redis::cmd("RENAME").arg("tmp:hot").arg(&hot).exec(&mut con).unwrap();
        let replaced = Instant::now();
        let served_new = loop {
            let page = json!({"scenario_id": "vlog_main_feed", "count": 4});
            let (_, v) = call(&r, "POST", "/api/v1/recommend", auth, Some("u1"), Some(page)).await;
            if item_ids(&v).first().is_some_and(|i| i == "new0") {
                break replaced.elapsed();
            }
            assert!(replaced.elapsed() < Duration::from_secs(3), "the replaced hot list was never served: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(served_new <= Duration::from_millis(HOT_CACHE_MS + 200), "served after {served_new:?}");
        // Back to the first list for the degrade checks below.
        redis::cmd("DEL").arg(&hot).exec(&mut con).unwrap();
        redis::cmd("ZADD").arg(&hot).arg(&scored).exec(&mut con).unwrap();
        tokio::time::sleep(Duration::from_millis(HOT_CACHE_MS + 50)).await;

        let (_, anon) = call(&r, "POST", "/api/v1/recommend", auth, Some("nobody"), Some(body.clone())).await;
        let m = &anon["metadata"];
        assert_eq!((m["is_fallback"].as_bool(), m["fallback_reason"].as_str()), (Some(true), Some("no_profile")));
        assert_eq!(item_ids(&anon), ["it00", "it02", "it03", "it04"]);

        redis_server.kill();
        let started = Instant::now();
        let (s, down) = call(&r, "POST", "/api/v1/recommend", auth, Some("u1"), Some(body.clone())).await;
        assert_eq!(s, StatusCode::OK, "degrades, does not fail: {down}");
        let m = &down["metadata"];
        assert_eq!(
            (m["is_fallback"].as_bool(), m["fallback_reason"].as_str()),
            (Some(true), Some("redis_unavailable"))
        );
        assert_eq!(item_ids(&down), ["it00", "it02", "it03", "it04"], "the last good hot list, minus exclusions");
        assert!(started.elapsed() < Duration::from_secs(2), "bounded by the Redis timeout");
        // Later requests fail fast while Redis stays down.
        let (_, again) = call(&r, "POST", "/api/v1/recommend", auth, Some("u1"), Some(body)).await;
        assert_eq!(again["metadata"]["fallback_reason"], "redis_unavailable");
        let (s, ready) = call(&r, "GET", "/health/ready", auth, None, None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    });
    let text = app.metrics.render();
    assert!(text.contains(r#"recflow_degraded_total{reason="redis_unavailable"} 2"#), "{text}");
    assert!(text.contains(r#"recflow_degraded_total{reason="no_profile"} 1"#), "{text}");
}
