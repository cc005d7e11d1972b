//! Exposures written off the response path: a user's next request excludes
//! the previous page even while its write is still in flight, and the write
//! lands in the store afterwards.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::{BoxFuture, FutureExt};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use recflow_schemas::{HotList, Item, Output, ProfileDoc, Str, Validator};
use recflow_server::auth::hash_key;
use recflow_server::publish::ChannelPublisher;
use recflow_server::state::{EmbeddedState, HourlyQuery, Ranked, StateStore, StoreResult, TenantCatalog};
use recflow_server::{router, ApiKeyConfig, App, ServerConfig};
use recflow_sinks::EmbeddedStore;

/// The embedded state posing as a remote store whose exposure writes wait
/// for a permit (so a test decides when a write is acknowledged).
struct SlowWrites {
    inner: EmbeddedState,
    permits: Semaphore,
    batches: AtomicUsize,
}

impl StateStore for SlowWrites {
    fn zsets(&self, keys: Vec<String>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Ranked>>> {
        self.inner.zsets(keys, limit)
    }
    fn profile(&self, t: String, u: String, s: String) -> BoxFuture<'_, StoreResult<Option<Arc<ProfileDoc>>>> {
        self.inner.profile(t, u, s)
    }
    fn members(&self, key: String) -> BoxFuture<'_, StoreResult<HashSet<String>>> {
        self.inner.members(key)
    }
    fn add_members(&self, key: String, items: Vec<String>, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        self.add_members_batch(vec![(key, items)], ttl)
    }
    fn add_members_batch(&self, sets: Vec<(String, Vec<String>)>, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            self.permits.acquire().await.expect("semaphore open").forget();
            self.batches.fetch_add(1, Ordering::SeqCst);
            for (key, items) in sets {
                self.inner.add_members(key, items, ttl).await?;
            }
            Ok(())
        }
        .boxed()
    }
    fn hash(&self, key: String) -> BoxFuture<'_, StoreResult<BTreeMap<String, f64>>> {
        self.inner.hash(key)
    }
    fn catalog(&self, tenant: String) -> BoxFuture<'_, StoreResult<Arc<TenantCatalog>>> {
        self.inner.catalog(tenant)
    }
    fn upsert_items(&self, tenant: String, items: Vec<Item>) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.upsert_items(tenant, items)
    }
    fn get_scenario(&self, tenant: String, id: String) -> BoxFuture<'_, StoreResult<Option<Value>>> {
        self.inner.get_scenario(tenant, id)
    }
    fn put_scenario(&self, tenant: String, id: String, config: Value) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.put_scenario(tenant, id, config)
    }
    fn hourly(&self, q: HourlyQuery) -> BoxFuture<'_, StoreResult<Vec<Value>>> {
        self.inner.hourly(q)
    }
    fn ready(&self) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.ready()
    }
}

async fn recommend(r: &axum::Router, user: &str, count: usize) -> Vec<String> {
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/recommend")
        .header("x-tenant-id", "tenant_a")
        .header("authorization", "Bearer key-a")
        .header("x-user-id", user)
        .header("content-type", "application/json")
        .body(Body::from(json!({"scenario_id": "plain", "count": count}).to_string()))
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["metadata"]["is_fallback"], false, "{v}");
    v["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_request_excludes_a_page_whose_write_is_still_in_flight() {
    let embedded = EmbeddedStore::shared();
    let list = HotList {
        tenant_id: "tenant_a".into(),
        scenario_id: "plain".into(),
        category: None,
        window_end: 1,
        entries: (0..12).map(|i| (Str::from(format!("it{i:02}")), 100.0 - i as f64)).collect(),
    };
    embedded.apply_batch(&[Output::Hot(list)]).unwrap();
    let mut doc: ProfileDoc = serde_json::from_value(json!({
        "tenant_id": "tenant_a", "user_id": "u1", "scenario_id": "plain",
        "counts": {}, "watch_count": 0, "watch_seconds": 0.0, "category_counts": {},
        "category_scores": {}, "favorite_categories": [], "active_hours": vec![0; 24],
        "first_seen": 0, "last_active_at": 0, "recent_items": [], "updated_window": 1
    }))
    .unwrap();
    embedded.upsert_profile(&doc).unwrap();
    doc.user_id = "u2".into();
    embedded.upsert_profile(&doc).unwrap();

    let store = Arc::new(SlowWrites {
        inner: EmbeddedState::new(embedded, Vec::new()),
        permits: Semaphore::new(0),
        batches: 0.into(),
    });
    let cfg = ServerConfig {
        api_keys: vec![ApiKeyConfig { tenant: "tenant_a".into(), key_sha256: hash_key("key-a") }],
        scenarios_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/scenarios").into(),
        ..ServerConfig::default()
    };
    let (tx, _rx) = std::sync::mpsc::sync_channel(1);
    let app = Arc::new(
        App::new(cfg, store.clone(), Arc::new(ChannelPublisher::new(tx)), Validator::default(), None).unwrap(),
    );
    let plain = json!({"scenario_id": "plain", "algorithm_version": "p1", "recall": [{"strategy": "hot_items", "weight": 1.0}]});
    store.put_scenario("tenant_a".into(), "plain".into(), plain).await.unwrap();
    let r = router(app.clone());

    // No write is acknowledged yet: the pages still never repeat.
    assert_eq!(recommend(&r, "u1", 4).await, ["it00", "it01", "it02", "it03"]);
    assert_eq!(recommend(&r, "u1", 4).await, ["it04", "it05", "it06", "it07"]);
    assert_eq!(recommend(&r, "u2", 4).await, ["it00", "it01", "it02", "it03"], "exposures are per user");
    assert_eq!(store.batches.load(Ordering::SeqCst), 0);
    let exposed = |u: &str| store.inner.members(format!("exposed:tenant_a:{u}:plain"));
    assert!(exposed("u1").await.unwrap().is_empty(), "nothing written yet");
    assert!(!app.exposures.flush(Duration::from_millis(50)).await, "writes are pending");

    // Acknowledge every write: they land in the store and the pending copies go.
    store.permits.add_permits(100);
    assert!(app.exposures.flush(Duration::from_secs(2)).await);
    assert_eq!(exposed("u1").await.unwrap().len(), 8);
    assert_eq!(recommend(&r, "u1", 4).await, ["it08", "it09", "it10", "it11"]);
    assert!(app.exposures.flush(Duration::from_secs(2)).await);
    let text = app.metrics.render();
    assert!(text.contains(r#"recflow_exposure_writes_total{outcome="written"} 4"#), "{text}");
}
