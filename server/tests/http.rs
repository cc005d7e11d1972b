//! HTTP behaviour of every route over the embedded store: success, auth
//! (401/403), validation (400 naming the field), 404, 413, 429, tenant
//! isolation, and the recommendation rules (exposures, count, diversity,
//! stable variants, fallbacks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures_util::future::{ready, BoxFuture, FutureExt};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use recflow_schemas::{HotList, Item, MetricsRow, MetricsWindow, Output, ProfileDoc, Str, Validator};
use recflow_server::auth::hash_key;
use recflow_server::publish::{Accepted, PublishError, Publisher};
use recflow_server::state::EmbeddedState;
use recflow_server::{router, ApiKeyConfig, App, ServerConfig};
use recflow_sinks::EmbeddedStore;

const A: (&str, &str) = ("tenant_a", "key-a");
const B: (&str, &str) = ("tenant_b", "key-b");

/// Records what the collector published.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(String, String)>>,
    items: Mutex<Vec<Item>>,
}

impl Publisher for Recorder {
    fn publish_events(&self, tenant: String, events: Vec<Accepted>) -> BoxFuture<'_, Result<(), PublishError>> {
        let mut e = self.events.lock().unwrap();
        e.extend(events.into_iter().map(|a| (tenant.clone(), a.event.user_id.to_string())));
        ready(Ok(())).boxed()
    }
    fn publish_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<(), PublishError>> {
        self.items.lock().unwrap().extend(items);
        ready(Ok(())).boxed()
    }
}

struct Harness {
    router: Router,
    store: Arc<EmbeddedStore>,
    recorder: Arc<Recorder>,
    app: Arc<App>,
}

fn harness_with(tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
    let mut cfg = ServerConfig {
        api_keys: [A, B].iter().map(|(t, k)| ApiKeyConfig { tenant: t.to_string(), key_sha256: hash_key(k) }).collect(),
        scenarios_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/scenarios").into(),
        ..ServerConfig::default()
    };
    tweak(&mut cfg);
    let store = EmbeddedStore::shared();
    let recorder = Arc::new(Recorder::default());
    let state = Arc::new(EmbeddedState::new(store.clone(), Vec::new()));
    let app = Arc::new(App::new(cfg, state, recorder.clone(), Validator::default(), None).unwrap());
    Harness { router: router(app.clone()), store, recorder, app }
}

fn harness() -> Harness {
    harness_with(|_| {})
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        auth: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, uri, auth, &[], body.map(|b| b.to_string())).await
    }

    async fn call_with(
        &self,
        method: &str,
        uri: &str,
        auth: Option<(&str, &str)>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some((tenant, key)) = auth {
            req = req.header("x-tenant-id", tenant).header("authorization", format!("Bearer {key}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn recommend(&self, auth: (&str, &str), user: &str, body: Value) -> (StatusCode, Value) {
        self.call_with("POST", "/api/v1/recommend", Some(auth), &[("x-user-id", user)], Some(body.to_string())).await
    }

    async fn put_plain_scenario(&self, auth: (&str, &str), id: &str, rerank: Value) {
        let cfg = json!({
            "algorithm_version": "plain-v1",
            "recall": [{ "strategy": "hot_items", "weight": 1.0, "limit": 500 }],
            "rerank": rerank,
        });
        let (s, v) = self.call("PUT", &format!("/api/v1/scenarios/{id}"), Some(auth), Some(cfg)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    fn seed_hot(&self, tenant: &str, scenario: &str, category: Option<&str>, items: &[(&str, f64)]) {
        let list = HotList {
            tenant_id: tenant.into(),
            scenario_id: scenario.into(),
            category: category.map(Str::new),
            window_end: 1,
            entries: items.iter().map(|(i, s)| (Str::new(i), *s)).collect(),
        };
        self.store.apply_batch(&[Output::Hot(list)]).unwrap();
    }

    fn seed_profile(&self, tenant: &str, user: &str, scenario: &str, favorites: &[&str]) {
        let mut doc: ProfileDoc = serde_json::from_value(json!({
            "tenant_id": tenant, "user_id": user, "scenario_id": scenario,
            "counts": {}, "watch_count": 0, "watch_seconds": 0.0,
            "category_counts": {}, "category_scores": {}, "favorite_categories": [],
            "active_hours": vec![0; 24], "first_seen": 0, "last_active_at": 0,
            "recent_items": [], "updated_window": 1
        }))
        .unwrap();
        for (i, c) in favorites.iter().enumerate() {
            doc.favorite_categories.push(Str::new(c));
            // Scores (count / total) fall with the rank: 60, 30, 20, ...
            doc.category_counts.insert(Str::new(c), 60 / (i as u64 + 1));
        }
        self.store.upsert_profile(&doc).unwrap();
    }
}

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

fn item_ids(v: &Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap().to_string()).collect()
}

/// Every /api route with a valid request body for tenant A.
fn api_routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let event = json!({"tenant_id": "tenant_a", "scenario_id": "s", "user_id": "u1", "item_id": "i1",
                       "action_type": "click", "timestamp": 1_700_000_000_000i64});
    vec![
        ("POST", "/api/v1/recommend", Some(json!({"scenario_id": "vlog_main_feed", "user_id": "u1"}))),
        ("POST", "/api/v1/events", Some(event.clone())),
        ("POST", "/api/v1/events/batch", Some(json!([event]))),
        ("GET", "/api/v1/hot-items?scenario_id=vlog_main_feed", None),
        ("GET", "/api/v1/users/u1/profile?scenario_id=vlog_main_feed", None),
        ("GET", "/api/v1/metrics/realtime?scenario_id=vlog_main_feed", None),
        ("GET", "/api/v1/analytics/hourly?scenario_id=vlog_main_feed", None),
        ("PUT", "/api/v1/items", Some(json!([{"item_id": "i1", "category": "c"}]))),
        ("GET", "/api/v1/scenarios/vlog_main_feed", None),
        (
            "PUT",
            "/api/v1/scenarios/vlog_main_feed",
            Some(serde_json::from_str(include_str!("../../configs/scenarios/vlog.json")).unwrap()),
        ),
    ]
}

#[tokio::test]
async fn every_api_route_needs_a_key_of_the_requested_tenant() {
    let h = harness();
    for (method, uri, body) in api_routes() {
        let (s, v) = h.call(method, uri, None, body.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri} without key: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
        let (s, _) = h.call(method, uri, Some((A.0, "wrong-key")), body.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri} with a wrong key");
        let (s, v) = h.call(method, uri, Some((B.0, A.1)), body.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}: A's key for tenant B: {v}");
        assert_eq!(field(&v), "X-Tenant-Id");
        let (s, v) = h
            .call_with(method, uri, None, &[("authorization", "Bearer key-a")], body.as_ref().map(|b| b.to_string()))
            .await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "X-Tenant-Id"), "{method} {uri} without tenant");
        // And with the right key each route answers (success, or 404/501 where the state says so).
        let (s, v) = h.call(method, uri, Some(A), body.clone()).await;
        assert!(
            [StatusCode::OK, StatusCode::ACCEPTED, StatusCode::NOT_FOUND, StatusCode::NOT_IMPLEMENTED].contains(&s),
            "{method} {uri} authorized: {s} {v}"
        );
    }
    assert!(h.recorder.events.lock().unwrap().iter().all(|(t, _)| t == A.0), "nothing was published for B");
}

#[tokio::test]
async fn open_routes_health_and_metrics() {
    let h = harness();
    assert_eq!(h.call("GET", "/health/live", None, None).await.0, StatusCode::OK);
    let (s, v) = h.call("GET", "/health/ready", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
    h.call("GET", "/api/v1/hot-items?scenario_id=vlog_main_feed", Some(A), None).await;
    h.call("GET", "/api/v1/hot-items?scenario_id=vlog_main_feed", None, None).await;
    let (s, text) = h.call("GET", "/metrics", None, None).await;
    let text = text.as_str().unwrap().to_string();
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains(r#"recflow_http_requests_total{route="/api/v1/hot-items",status="200"} 1"#), "{text}");
    assert!(text.contains(r#"recflow_http_requests_total{route="/api/v1/hot-items",status="401"} 1"#), "{text}");
    assert!(text.contains("recflow_http_request_seconds_bucket{route=\"/api/v1/hot-items\""), "{text}");
    let (s, v) = h.call("GET", "/nope", None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn recommend_respects_count_and_never_repeats_an_exposed_item() {
    let h = harness();
    h.put_plain_scenario(A, "plain", json!([])).await;
    let hot: Vec<(String, f64)> = (0..30).map(|i| (format!("item_{i:02}"), 100.0 - i as f64)).collect();
    let hot_ref: Vec<(&str, f64)> = hot.iter().map(|(i, s)| (i.as_str(), *s)).collect();
    h.seed_hot(A.0, "plain", None, &hot_ref);
    h.seed_profile(A.0, "u1", "plain", &[]);
    let mut seen = HashSet::new();
    let mut expected = hot.iter().map(|(i, _)| i.clone()).filter(|i| i != "item_03");
    for page in 0..6 {
        let (s, v) =
            h.recommend(A, "u1", json!({"scenario_id": "plain", "count": 5, "exclude_items": ["item_03"]})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let ids = item_ids(&v);
        let want: Vec<String> = expected.by_ref().take(5).collect();
        assert_eq!(ids, want, "page {page}: the next best unexposed items, in hot order");
        for id in ids {
            assert!(seen.insert(id.clone()), "{id} returned twice");
        }
        assert_eq!(v["metadata"]["is_fallback"], false);
        assert_eq!(v["items"][0]["reasons"], json!(["hot_items"]));
    }
    // 29 candidates, 30 served-or-excluded slots: the last page has 4, then nothing is left.
    assert_eq!(seen.len(), 29);
    let (_, v) = h.recommend(A, "u1", json!({"scenario_id": "plain", "count": 5})).await;
    assert_eq!(item_ids(&v), ["item_03"], "all else was exposed; the exclusion was per request");
    let (_, v) = h.recommend(A, "u1", json!({"scenario_id": "plain", "count": 5})).await;
    assert_eq!(item_ids(&v), Vec::<String>::new(), "everything was exposed");
    // Another user of the same tenant has their own exposures.
    h.seed_profile(A.0, "u2", "plain", &[]);
    let (_, v) = h.recommend(A, "u2", json!({"scenario_id": "plain", "count": 3})).await;
    assert_eq!(item_ids(&v), ["item_00", "item_01", "item_02"]);
    let (_, v) = h.recommend(A, "u2", json!({"scenario_id": "plain"})).await;
    assert_eq!(item_ids(&v).len(), 20, "count defaults to 20");
}

#[tokio::test]
async fn diversity_caps_each_category_in_the_page() {
    let h = harness();
    h.put_plain_scenario(A, "div", json!([{ "rule": "diversity", "max_per_category": 2 }])).await;
    // Top 10 all "news", then alternating categories.
    let cats = |i: usize| if i < 10 { "news" } else { ["sports", "music", "tech"][i % 3] };
    let items: Vec<Value> = (0..20).map(|i| json!({"item_id": format!("it{i:02}"), "category": cats(i)})).collect();
    assert_eq!(h.call("PUT", "/api/v1/items", Some(A), Some(Value::Array(items))).await.0, StatusCode::OK);
    let hot: Vec<(String, f64)> = (0..20).map(|i| (format!("it{i:02}"), 50.0 - i as f64)).collect();
    h.seed_hot(A.0, "div", None, &hot.iter().map(|(i, s)| (i.as_str(), *s)).collect::<Vec<_>>());
    h.seed_profile(A.0, "u1", "div", &[]);
    let (s, v) = h.recommend(A, "u1", json!({"scenario_id": "div", "count": 6})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Greedy by rank with at most 2 per category: it00, it01 (news), then it10.. in order.
    assert_eq!(item_ids(&v), ["it00", "it01", "it10", "it11", "it12", "it13"]);
    let mut per_cat: HashMap<&str, usize> = HashMap::new();
    for id in item_ids(&v) {
        let i: usize = id[2..].parse().unwrap();
        *per_cat.entry(cats(i)).or_default() += 1;
    }
    assert!(per_cat.values().all(|&n| n <= 2), "{per_cat:?}");
}

#[tokio::test]
async fn same_user_same_variant_and_fallbacks() {
    let h = harness();
    h.seed_hot(A.0, "vlog_main_feed", None, &[("x1", 9.0), ("x2", 8.0), ("x3", 7.0)]);
    h.seed_hot(A.0, "vlog_main_feed", Some("music"), &[("m1", 5.0), ("x2", 4.0)]);
    for u in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        h.seed_profile(A.0, u, "vlog_main_feed", &["music"]);
        // Independent expectation: xxh3(experiment \0 user) % 100 < 50 is control.
        let bucket = xxhash_rust::xxh3::xxh3_64(format!("exp_001\0{u}").as_bytes()) % 100;
        let want = if bucket < 50 { "control" } else { "treatment" };
        for _ in 0..3 {
            let (s, v) = h.recommend(A, u, json!({"scenario_id": "vlog_main_feed", "count": 2})).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let m = &v["metadata"];
            assert_eq!((m["experiment_id"].as_str(), m["variant"].as_str()), (Some("exp_001"), Some(want)), "{u}");
            let version = if want == "control" { "vlog-v1" } else { "vlog-v1-affinity" };
            assert_eq!(m["algorithm_version"], version);
            assert_eq!((m["is_fallback"].as_bool(), m["fallback_reason"].as_str()), (Some(false), None));
        }
    }
    // Profile recall shows in the reasons: x2 is hot and in the favourite category.
    let (_, v) = h.recommend(A, "zed", json!({"scenario_id": "vlog_main_feed", "count": 5})).await;
    assert_eq!(
        (v["metadata"]["is_fallback"].as_bool(), v["metadata"]["fallback_reason"].as_str()),
        (Some(true), Some("no_profile"))
    );
    assert_eq!(item_ids(&v), ["x1", "x2", "x3"], "no profile: the hot list");
    h.seed_profile(A.0, "yan", "vlog_main_feed", &["music"]);
    let (_, v) = h.recommend(A, "yan", json!({"scenario_id": "vlog_main_feed", "count": 5})).await;
    let x2 = v["items"].as_array().unwrap().iter().find(|i| i["item_id"] == "x2").unwrap();
    assert_eq!(x2["reasons"], json!(["hot_items", "category_affinity"]));
    let text = h.app.metrics.render();
    assert!(text.contains(r#"recflow_degraded_total{reason="no_profile"} 1"#), "{text}");
    assert!(text.contains(r#"recflow_recall_hits_total{source="category_affinity"}"#), "{text}");
}

#[tokio::test]
async fn tenants_never_see_each_others_data() {
    let h = harness();
    h.seed_hot(B.0, "vlog_main_feed", None, &[("secret_b", 9.0)]);
    h.seed_profile(B.0, "bob", "vlog_main_feed", &["music"]);
    let (_, v) = h.call("GET", "/api/v1/hot-items?scenario_id=vlog_main_feed", Some(B), None).await;
    assert_eq!(item_ids(&v), ["secret_b"], "B sees its own");
    let (_, v) = h.call("GET", "/api/v1/hot-items?scenario_id=vlog_main_feed", Some(A), None).await;
    assert_eq!(item_ids(&v), Vec::<String>::new(), "A sees nothing of B");
    let (s, _) = h.call("GET", "/api/v1/users/bob/profile?scenario_id=vlog_main_feed", Some(A), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.call("GET", "/api/v1/users/bob/profile?scenario_id=vlog_main_feed", Some(B), None).await;
    assert_eq!((s, v["user_id"].as_str()), (StatusCode::OK, Some("bob")));
    let (_, v) = h.recommend(A, "bob", json!({"scenario_id": "vlog_main_feed"})).await;
    assert_eq!((item_ids(&v).len(), v["metadata"]["fallback_reason"].as_str()), (0, Some("no_profile")));
    // A's scenario change does not touch B's.
    h.put_plain_scenario(A, "vlog_main_feed", json!([])).await;
    let (_, v) = h.call("GET", "/api/v1/scenarios/vlog_main_feed", Some(B), None).await;
    assert_eq!(v["algorithm_version"], "vlog-v1");
    // An event claiming tenant B sent with A's key is refused.
    let ev = json!({"tenant_id": "tenant_b", "scenario_id": "s", "user_id": "u", "item_id": "i", "action_type": "click", "timestamp": 1_700_000_000_000i64});
    let (s, v) = h.call("POST", "/api/v1/events", Some(A), Some(ev)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), field(&v)),
        (StatusCode::BAD_REQUEST, Some("tenant_mismatch"), "tenant_id")
    );
    assert!(h.recorder.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_ids_are_rejected_naming_the_field() {
    let h = harness();
    let long = "x".repeat(200);
    for bad in ["a:b", "*", "../x", long.as_str()] {
        let enc: String = bad.bytes().map(|b| format!("%{b:02X}")).collect();
        let cases = [
            (format!("/api/v1/users/{enc}/profile?scenario_id=s"), "user_id"),
            (format!("/api/v1/users/u/profile?scenario_id={enc}"), "scenario_id"),
            (format!("/api/v1/hot-items?scenario_id={enc}"), "scenario_id"),
            (format!("/api/v1/hot-items?scenario_id=s&category={enc}"), "category"),
            (format!("/api/v1/metrics/realtime?scenario_id={enc}"), "scenario_id"),
            (format!("/api/v1/analytics/hourly?scenario_id={enc}"), "scenario_id"),
            (format!("/api/v1/scenarios/{enc}"), "scenario_id"),
        ];
        for (uri, want) in cases {
            let (s, v) = h.call("GET", &uri, Some(A), None).await;
            assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, want), "{uri}: {v}");
        }
        let (s, v) = h.recommend(A, "u1", json!({"scenario_id": bad})).await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "scenario_id"), "{v}");
        let (s, v) = h.recommend(A, "u1", json!({"scenario_id": "vlog_main_feed", "exclude_items": ["ok", bad]})).await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "exclude_items[1]"), "{v}");
        if bad != long {
            let (s, v) = h.recommend(A, bad, json!({"scenario_id": "vlog_main_feed"})).await;
            assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "X-User-Id"), "{v}");
        }
        let (s, v) = h.call("PUT", "/api/v1/items", Some(A), Some(json!([{"item_id": bad}]))).await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "items[0].item_id"), "{v}");
        let (s, v) = h.call("PUT", "/api/v1/items", Some(A), Some(json!([{"item_id": "i", "category": bad}]))).await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "items[0].category"), "{v}");
    }
    let (s, v) = h
        .call_with(
            "GET",
            "/api/v1/hot-items?scenario_id=s",
            None,
            &[("x-tenant-id", "A:B"), ("authorization", "Bearer key-a")],
            None,
        )
        .await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "X-Tenant-Id"));
}

#[tokio::test]
async fn invalid_bodies_and_params_name_the_field() {
    let h = harness();
    for (body, want) in [
        (json!({"count": 5}), "scenario_id"),
        (json!({"scenario_id": 7}), "scenario_id"),
        (json!({"scenario_id": "vlog_main_feed", "count": 0}), "count"),
        (json!({"scenario_id": "vlog_main_feed", "count": 101}), "count"),
        (json!({"scenario_id": "vlog_main_feed", "count": "5"}), "count"),
        (json!({"scenario_id": "vlog_main_feed", "context": [1]}), "context"),
        (json!({"scenario_id": "vlog_main_feed", "exclude_items": "x"}), "exclude_items"),
        (json!({"scenario_id": "vlog_main_feed", "cuont": 5}), "cuont"),
    ] {
        let (s, v) = h.recommend(A, "u1", body.clone()).await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, want), "{body}: {v}");
    }
    let (s, v) = h.call("POST", "/api/v1/recommend", Some(A), Some(json!({"scenario_id": "vlog_main_feed"}))).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "X-User-Id"), "no user");
    let (s, v) =
        h.call_with("POST", "/api/v1/recommend", Some(A), &[("x-user-id", "u")], Some("{not json".into())).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_json")));
    for (uri, want) in [
        ("/api/v1/hot-items", "scenario_id"),
        ("/api/v1/hot-items?scenario_id=s&limit=0", "limit"),
        ("/api/v1/hot-items?scenario_id=s&limit=abc", "limit"),
        ("/api/v1/analytics/hourly?scenario_id=s&from=10&to=5", "from"),
        ("/api/v1/users/u/profile", "scenario_id"),
    ] {
        let (s, v) = h.call("GET", uri, Some(A), None).await;
        assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, want), "{uri}: {v}");
    }
    let (s, v) = h.call("PUT", "/api/v1/items", Some(A), Some(json!([{"item_id": "i", "publish_time": -5}]))).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "items[0].publish_time"));
    let (s, v) = h.call("PUT", "/api/v1/items", Some(A), Some(json!([{"item_id": "i", "colour": "red"}]))).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "items[0].colour"));
    let (s, v) =
        h.call("PUT", "/api/v1/items", Some(A), Some(json!([{"item_id": "i", "tenant_id": "tenant_b"}]))).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "items[0].tenant_id"));
    let mut sc: Value = serde_json::from_str(include_str!("../../configs/scenarios/news.json")).unwrap();
    sc["recall"][0]["weight"] = json!("heavy");
    let (s, v) = h.call("PUT", "/api/v1/scenarios/news_main_feed", Some(A), Some(sc)).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "recall[0].weight"), "{v}");
    let (s, v) =
        h.call("PUT", "/api/v1/scenarios/other", Some(A), Some(json!({"scenario_id": "news_main_feed"}))).await;
    assert_eq!((s, field(&v)), (StatusCode::BAD_REQUEST, "scenario_id"), "{v}");
}

#[tokio::test]
async fn unknown_scenario_is_404() {
    let h = harness();
    let (s, v) = h.recommend(A, "u1", json!({"scenario_id": "nope"})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{v}");
    let (s, _) = h.call("GET", "/api/v1/scenarios/nope", Some(A), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversize_requests_are_413() {
    let h = harness_with(|c| c.max_body_bytes = 1024);
    let big = json!({"scenario_id": "vlog_main_feed", "exclude_items": vec!["abcdefgh"; 200]});
    let (s, v) = h.recommend(A, "u1", big).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    let ev = json!({"tenant_id": "tenant_a", "scenario_id": "s", "user_id": "u", "item_id": "i", "action_type": "click", "timestamp": 1_700_000_000_000i64});
    let (s, v) = h.call("POST", "/api/v1/events/batch", Some(A), Some(json!(vec![ev.clone(); 1001]))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_many_events")));
    let padded = json!({"events": [ev], "pad": "x".repeat(1_100_000)});
    let (s, _) = h.call("POST", "/api/v1/events/batch", Some(A), Some(padded)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "over 1 MiB");
    let (s, _) = h.call("POST", "/api/v1/events/batch", Some(A), Some(json!(vec![ev; 1000]))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "1000 events are fine");
}

#[tokio::test]
async fn rate_limit_is_per_tenant() {
    let h = harness_with(|c| {
        c.rate_limit_per_sec = 0.001;
        c.rate_limit_burst = 3.0;
    });
    let uri = "/api/v1/hot-items?scenario_id=vlog_main_feed";
    for _ in 0..3 {
        assert_eq!(h.call("GET", uri, Some(A), None).await.0, StatusCode::OK);
    }
    let (s, v) = h.call("GET", uri, Some(A), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert_eq!(h.call("GET", uri, Some(B), None).await.0, StatusCode::OK, "B has its own bucket");
}

#[tokio::test]
async fn collector_validates_with_the_pipeline_rules() {
    let h = harness();
    let now = recflow_server::now_ms();
    let ev = |user: &str| json!({"tenant_id": "tenant_a", "scenario_id": "s", "user_id": user, "item_id": "i", "action_type": "like", "timestamp": now});
    let (s, v) = h.call("POST", "/api/v1/events", Some(A), Some(ev("u1"))).await;
    assert_eq!((s, v["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(1)), "{v}");
    let mut missing = ev("u2");
    missing.as_object_mut().unwrap().remove("user_id");
    let (s, v) = h.call("POST", "/api/v1/events", Some(A), Some(missing.clone())).await;
    assert_eq!(
        (s, v["error"]["code"].as_str(), field(&v)),
        (StatusCode::BAD_REQUEST, Some("missing_field"), "user_id")
    );
    let mut future = ev("u3");
    future["timestamp"] = json!(now + 3_600_000);
    let mut unknown = ev("u4");
    unknown["action_type"] = json!("teleport");
    let batch = json!({"events": [ev("u5"), missing, future, ev("u6"), unknown]});
    let (s, v) = h.call("POST", "/api/v1/events/batch", Some(A), Some(batch)).await;
    assert_eq!((s, v["accepted"].as_u64(), v["rejected"].as_u64()), (StatusCode::ACCEPTED, Some(2), Some(3)), "{v}");
    let errs: Vec<(u64, &str)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(errs, [(1, "missing_field"), (2, "future_timestamp"), (4, "unknown_action")]);
    let users: Vec<String> = h.recorder.events.lock().unwrap().iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(users, ["u1", "u5", "u6"]);
    let (s, v) = h.call("POST", "/api/v1/events/batch", Some(A), Some(json!([{"tenant_id": "tenant_a"}]))).await;
    assert_eq!(
        (s, v["accepted"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(0)),
        "nothing valid: 400 with the row errors"
    );
}

#[tokio::test]
async fn scenario_put_is_served_at_once_and_read_routes_answer() {
    let h = harness();
    let (s, v) = h.call("GET", "/api/v1/scenarios/news_main_feed", Some(A), None).await;
    assert_eq!((s, v["algorithm_version"].as_str()), (StatusCode::OK, Some("news-v1")));
    h.seed_profile(A.0, "u1", "news_main_feed", &[]);
    let (_, v) = h.recommend(A, "u1", json!({"scenario_id": "news_main_feed"})).await;
    assert_eq!(v["metadata"]["experiment_id"], "exp_news_fresh");
    let mut changed: Value = serde_json::from_str(include_str!("../../configs/scenarios/news.json")).unwrap();
    changed["algorithm_version"] = json!("news-v9");
    changed.as_object_mut().unwrap().remove("experiment");
    assert_eq!(h.call("PUT", "/api/v1/scenarios/news_main_feed", Some(A), Some(changed)).await.0, StatusCode::OK);
    let (_, v) = h.recommend(A, "u1", json!({"scenario_id": "news_main_feed"})).await;
    let m = &v["metadata"];
    assert_eq!(
        (m["algorithm_version"].as_str(), m["experiment_id"].as_str(), m["variant"].as_str()),
        (Some("news-v9"), Some("none"), Some("none"))
    );

    // Realtime metrics grouped per variant.
    let row = |variant: &str, clicks: u64| MetricsRow {
        experiment_id: "exp_001".into(),
        variant: variant.into(),
        impressions: 10,
        clicks,
        views: 0,
        likes: 0,
        shares: 0,
        comments: 0,
        add_carts: 0,
        orders: 0,
        payments: 0,
        ctr: clicks as f64 / 10.0,
        avg_watch_duration: 0.0,
        avg_completion_rate: 0.0,
        conversion_rate: 0.0,
        interaction_rate: 0.0,
        gmv: 0.0,
    };
    let w = MetricsWindow {
        tenant_id: "tenant_a".into(),
        scenario_id: "s1".into(),
        window_start: 60_000,
        rows: vec![row("control", 2), row("treatment", 5)],
    };
    h.store.apply_batch(&[Output::Metrics(w)]).unwrap();
    let (s, v) = h.call("GET", "/api/v1/metrics/realtime?scenario_id=s1", Some(A), None).await;
    assert_eq!((s, v["window_start"].as_i64()), (StatusCode::OK, Some(60_000)));
    assert_eq!(v["variants"][1]["variant"], "treatment");
    assert_eq!(v["variants"][1]["metrics"]["ctr"], 0.5);
    assert_eq!(v["variants"][0]["metrics"]["clicks"], 2.0);
    let (_, v) = h.call("GET", "/api/v1/metrics/realtime?scenario_id=s1", Some(B), None).await;
    assert_eq!(v["variants"], json!([]), "B has no metrics");
    // Hourly analytics from the raw-log rows: two clicks and a play of A in the
    // current hour, one click of B.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let hour = now - now % 3_600_000;
    let raw = |id: &str, tenant: &str, action: &str, watch: Option<f64>| {
        let e = json!({
            "event_id": id, "tenant_id": tenant, "scenario_id": "s1", "user_id": "u1", "item_id": "i1",
            "action": action, "ts": hour + 1, "request_id": null, "experiment_id": "exp_001", "variant": "control",
            "category": null, "context": null, "watch_duration": watch, "completion_rate": null, "amount": null
        });
        Output::Raw(Box::new(serde_json::from_value::<recflow_schemas::Event>(e).unwrap().into()))
    };
    h.store
        .apply_batch(&[
            raw("h1", A.0, "click", None),
            raw("h2", A.0, "click", None),
            raw("h3", A.0, "play", Some(40.0)),
            raw("h4", B.0, "click", None),
        ])
        .unwrap();
    let (s, v) = h.call("GET", "/api/v1/analytics/hourly?scenario_id=s1", Some(A), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!((rows[0]["clicks"].as_u64(), rows[0]["views"].as_u64()), (Some(2), Some(1)));
    assert_eq!((rows[0]["hour_ms"].as_i64(), rows[0]["avg_watch_duration"].as_f64()), (Some(hour), Some(40.0)));
    let (_, v) = h.call("GET", "/api/v1/analytics/hourly?scenario_id=s1", Some(B), None).await;
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.iter().map(|r| r["clicks"].as_u64()).collect::<Vec<_>>(), vec![Some(1)], "B sees only its own");
    h.seed_hot(A.0, "s1", Some("music"), &[("m1", 3.0), ("m2", 2.0), ("m3", 1.0)]);
    let (_, v) = h.call("GET", "/api/v1/hot-items?scenario_id=s1&category=music&limit=2", Some(A), None).await;
    assert_eq!(v["items"], json!([{"item_id": "m1", "score": 3.0}, {"item_id": "m2", "score": 2.0}]));
    let (s, v) = h
        .call(
            "PUT",
            "/api/v1/items",
            Some(A),
            Some(json!({"items": [{"item_id": "n1", "scenario_id": "s1", "publish_time": 5}]})),
        )
        .await;
    assert_eq!((s, v["upserted"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(h.recorder.items.lock().unwrap()[0].tenant_id, "tenant_a", "items carry the caller's tenant");
}
