//! The Mongo sink against a real MongoDB-protocol server (`MONGO_URL`).
//!
//! Each test uses its own database. The fault test stops and restarts the
//! server, so it holds [`SERVER`] exclusively while the others share it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use recflow_integration_tests::{service, unique};
use recflow_schemas::{ActionCounts, Item, Output, ProfileDoc, Str};
use recflow_sinks::mongo::{latest_profiles, ITEMS, PROFILES, SCENARIOS};
use recflow_sinks::{EmbeddedSink, EmbeddedStore, MongoConfig, MongoDb, MongoSink, Sink};
use serde_json::json;

/// Shared by tests that only need the server up; taken exclusively to stop it or to time.
static SERVER: RwLock<()> = RwLock::new(());

fn config() -> MongoConfig {
    MongoConfig { url: service("MONGO_URL"), database: unique("recflow_test"), ..MongoConfig::default() }
}

/// Drops the test database when the test ends, pass or fail.
struct Cleanup(MongoDb);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.database().drop().run();
    }
}

fn open(cfg: &MongoConfig) -> (MongoDb, Cleanup) {
    let db = MongoDb::new(cfg).expect("client");
    db.ensure_indexes().expect("indexes");
    (db.clone(), Cleanup(db))
}

/// A profile whose content depends only on (user, scenario, window), as the pipeline's does.
fn profile(user: usize, scenario: usize, window: i64) -> ProfileDoc {
    let w = window as u64;
    let mut counts = [0u64; 12];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = (w + i as u64 + user as u64) % 5;
    }
    let a = 1 + (w + user as u64) % 4;
    let b = 1 + w % 3;
    ProfileDoc {
        tenant_id: Str::new(if user.is_multiple_of(3) { "tenant_b" } else { "tenant_a" }),
        user_id: Str::new(format!("user_{user:04}")),
        scenario_id: Str::new(format!("s{scenario}")),
        counts: ActionCounts(counts),
        watch_count: w * 2,
        // Fractional, and on even windows a whole number, which must still render as a float.
        watch_seconds: if w.is_multiple_of(2) { w as f64 } else { w as f64 / 7.0 },
        category_counts: [(Str::new("music"), a), (Str::new("sports"), b)].into_iter().collect(),
        favorite_categories: vec![Str::new("music"), Str::new("sports")],
        active_hours: std::array::from_fn(|h| (h as u64 + w) % 3),
        first_seen: 1_700_000_000_000 + user as i64,
        last_active_at: 1_700_000_000_000 + window * 300_000,
        recent_items: (0..(w % 4)).map(|i| Str::new(format!("item_{}", w + i))).collect(),
        updated_window: 1_700_000_000_000 + window * 300_000,
    }
}

fn out(user: usize, scenario: usize, window: i64) -> Output {
    Output::Profile(Arc::new(profile(user, scenario, window)))
}

/// (applied, stale) the versioned upserts must report for `batches`, replayed on a model.
fn expected_counts(batches: &[Vec<Output>]) -> (u64, u64) {
    let mut stored: HashMap<(Str, Str, Str), i64> = HashMap::new();
    let (mut applied, mut stale) = (0, 0);
    for b in batches {
        for d in latest_profiles(b) {
            let key = (d.tenant_id.clone(), d.user_id.clone(), d.scenario_id.clone());
            match stored.get(&key) {
                Some(&v) if v >= d.updated_window => stale += 1,
                _ => {
                    stored.insert(key, d.updated_window);
                    applied += 1;
                }
            }
        }
    }
    (applied, stale)
}

fn embedded_profiles(batches: &[Vec<Output>]) -> serde_json::Value {
    let store = Arc::new(EmbeddedStore::default());
    let mut sink = EmbeddedSink::new(store.clone());
    for b in batches {
        sink.write(b).unwrap();
    }
    store.dump()["mongo.user_profiles"].clone()
}

fn mongo_write_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[test]
fn versioned_upserts_match_embedded_store() {
    let _shared = SERVER.read().unwrap_or_else(|e| e.into_inner());
    let cfg = config();
    let (db, _cleanup) = open(&cfg);
    let mut sink = MongoSink::new(cfg.clone()).unwrap();

    let batches: Vec<Vec<Output>> = vec![
        // New keys, plus a key repeated inside the batch (window 1 then 2).
        (0..20).map(|u| out(u, u % 2, 1)).chain([out(5, 1, 2)]).collect(),
        // Newer windows for some, and a replay of window 1 (equal version) for others.
        (0..20).map(|u| out(u, u % 2, if u % 2 == 0 { 3 } else { 1 })).collect(),
        // Out of order: older windows after newer ones, across batches and inside this one.
        vec![out(0, 0, 2), out(2, 0, 5), out(2, 0, 4), out(4, 0, 1), out(20, 1, 7), out(20, 1, 6)],
        // Other outputs are ignored; an empty batch is a no-op.
        vec![Output::Metrics(recflow_schemas::MetricsWindow {
            tenant_id: Str::new("tenant_a"),
            scenario_id: Str::new("s0"),
            window_start: 0,
            rows: vec![],
        })],
        vec![],
        // A second scenario for existing users, and a new tenant.
        (0..10).map(|u| out(u, 7, 9)).chain([out(30, 0, 2), out(30, 0, 2)]).collect(),
    ];
    let start = Instant::now();
    for b in &batches {
        sink.write(b).unwrap();
    }
    sink.flush().unwrap();
    let elapsed = start.elapsed();

    let got = db.dump_profiles().unwrap();
    let want = embedded_profiles(&batches);
    assert_eq!(serde_json::Value::Array(got.clone()), want, "Mongo and embedded dumps differ");
    assert_eq!(got.len(), 32);
    let (applied, stale) = expected_counts(&batches);
    assert_eq!((sink.applied(), sink.stale()), (applied, stale));
    assert!(stale >= 12, "replays and older windows were counted stale: {stale}");
    assert_eq!((sink.retries(), sink.errors()), (0, 0));
    // The whole-array equality above covers it, but be explicit about the regressions we guard.
    let find = |u: &str, s: &str| got.iter().find(|d| d["user_id"] == u && d["scenario_id"] == s).unwrap();
    assert_eq!(find("user_0002", "s0")["updated_window"], json!(1_700_000_000_000i64 + 5 * 300_000));
    assert_eq!(find("user_0000", "s0")["updated_window"], json!(1_700_000_000_000i64 + 3 * 300_000));
    // Floats stay floats, even whole ones.
    assert!(find("user_0000", "s0")["watch_seconds"].is_f64());

    // Replaying everything changes nothing.
    for b in &batches {
        sink.write(b).unwrap();
    }
    assert_eq!(db.dump_profiles().unwrap(), got);
    println!("versioned upserts: {} batches in {elapsed:?}; applied {applied}, stale {stale}", batches.len());
}

#[test]
fn unique_index_rejects_duplicate_keys() {
    let _shared = SERVER.read().unwrap_or_else(|e| e.into_inner());
    let cfg = config();
    let (db, _cleanup) = open(&cfg);
    let database = db.database();
    let key = doc! { "tenant_id": "t", "user_id": "u", "scenario_id": "s" };

    let profiles = database.collection::<Document>(PROFILES);
    profiles.insert_one(key.clone()).run().unwrap();
    let err = profiles.insert_one(key.clone()).run().unwrap_err();
    assert_eq!(mongo_write_code(&err), Some(11000), "{err}");
    // Another scenario of the same user is a different key.
    profiles.insert_one(doc! { "tenant_id": "t", "user_id": "u", "scenario_id": "s2" }).run().unwrap();

    let scenarios = database.collection::<Document>(SCENARIOS);
    scenarios.insert_one(doc! { "tenant_id": "t", "scenario_id": "s" }).run().unwrap();
    let err = scenarios.insert_one(doc! { "tenant_id": "t", "scenario_id": "s" }).run().unwrap_err();
    assert_eq!(mongo_write_code(&err), Some(11000), "{err}");

    let items = database.collection::<Document>(ITEMS);
    items.insert_one(doc! { "tenant_id": "t", "item_id": "i" }).run().unwrap();
    let err = items.insert_one(doc! { "tenant_id": "t", "item_id": "i" }).run().unwrap_err();
    assert_eq!(mongo_write_code(&err), Some(11000), "{err}");
    items.insert_one(doc! { "tenant_id": "t2", "item_id": "i" }).run().unwrap();
}

#[test]
fn ensure_indexes_twice_is_fine() {
    let _shared = SERVER.read().unwrap_or_else(|e| e.into_inner());
    let cfg = config();
    let (db, _cleanup) = open(&cfg);
    db.ensure_indexes().unwrap();
    recflow_sinks::mongo::ensure_indexes(&cfg).unwrap();

    // Field names and uniqueness only: nx-27017 lists a descending key as 1 (we send -1).
    let keys = |coll: &str| -> Vec<(Vec<String>, bool)> {
        let mut v: Vec<(Vec<String>, bool)> = db
            .database()
            .collection::<Document>(coll)
            .list_indexes()
            .run()
            .unwrap()
            .map(|m| {
                let m = m.unwrap();
                let unique = m.options.as_ref().and_then(|o| o.unique).unwrap_or(false);
                (m.keys.keys().cloned().collect::<Vec<_>>(), unique)
            })
            .filter(|(k, _)| k != &["_id"])
            .collect();
        v.sort();
        v
    };
    let names = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(keys(PROFILES), vec![(names(&["tenant_id", "user_id", "scenario_id"]), true)]);
    assert_eq!(keys(SCENARIOS), vec![(names(&["tenant_id", "scenario_id"]), true)]);
    assert_eq!(
        keys(ITEMS),
        vec![(names(&["tenant_id", "item_id"]), true), (names(&["tenant_id", "scenario_id", "publish_time"]), false)]
    );
}

#[test]
fn five_thousand_upserts_in_batches_of_1000() {
    // Exclusive so the timing is not shared with the other tests.
    let _alone = SERVER.write().unwrap_or_else(|e| e.into_inner());
    let cfg = config();
    let (db, _cleanup) = open(&cfg);
    let mut sink = MongoSink::new(cfg.clone()).unwrap();
    let round = |window: i64| -> Vec<Vec<Output>> {
        (0..5).map(|b| (0..1000).map(|i| out(b * 1000 + i, 0, window)).collect()).collect()
    };
    let mut time = |what: &str, batches: &[Vec<Output>]| {
        let start = Instant::now();
        for b in batches {
            sink.write(b).unwrap();
        }
        let t = start.elapsed();
        println!("mongo {what}: 5000 profile upserts in 5 batches of 1000: {t:?} ({:.0}/s)", 5000.0 / t.as_secs_f64());
    };
    time("insert (new keys)", &round(1));
    time("update (newer window)", &round(2));
    time("replay (all stale)", &round(2));
    assert_eq!((sink.applied(), sink.stale()), (10_000, 5_000));
    let start = Instant::now();
    let dump = db.dump_profiles().unwrap();
    println!("mongo dump_profiles of 5000 documents: {:?}", start.elapsed());
    let want = embedded_profiles(&round(2));
    assert_eq!(serde_json::Value::Array(dump), want);
}

#[test]
fn items_and_scenarios_round_trip() {
    let _shared = SERVER.read().unwrap_or_else(|e| e.into_inner());
    let cfg = config();
    let (_db, _cleanup) = open(&cfg);
    let item = |t: &str, id: &str, cat: Option<&str>, publish: Option<i64>| Item {
        tenant_id: Str::new(t),
        scenario_id: Some(Str::new("vlog")),
        item_id: Str::new(id),
        category: cat.map(Str::new),
        tags: vec!["a".to_string(), "b".to_string()],
        publish_time: publish,
        status: Some("active".to_string()),
    };
    let first = vec![
        item("t1", "i2", Some("news"), Some(5)),
        item("t1", "i1", None, None),
        item("t2", "i1", Some("x"), Some(1)),
    ];
    recflow_sinks::mongo::upsert_items(&cfg, &first).unwrap();
    // An update of i2 (repeated: the last wins) and a new item.
    let mut i2 = item("t1", "i2", Some("sports"), Some(9));
    i2.scenario_id = None;
    i2.tags.clear();
    let second = vec![item("t1", "i2", Some("ignored"), None), i2.clone(), item("t1", "i3", None, Some(3))];
    recflow_sinks::mongo::upsert_items(&cfg, &second).unwrap();
    let loaded = recflow_sinks::mongo::load_items(&cfg).unwrap();
    assert_eq!(loaded, vec![item("t1", "i1", None, None), i2, item("t1", "i3", None, Some(3)), first[2].clone()]);

    use recflow_sinks::mongo::{get_scenario, put_scenario};
    assert_eq!(get_scenario(&cfg, "t1", "vlog").unwrap(), None);
    let config = json!({
        "scenario_id": "vlog",
        "recall": [{"strategy": "hot_items", "weight": 0.6, "count": 200}, {"strategy": "fresh", "weight": 1.0}],
        "rerank": {"diversity": {"max_per_category": 3}, "freshness_half_life_hours": 24.5},
        "enabled": true,
        "note": null,
        "big": 9_007_199_254_740_993i64,
    });
    put_scenario(&cfg, "t1", "vlog", &config).unwrap();
    assert_eq!(get_scenario(&cfg, "t1", "vlog").unwrap(), Some(config.clone()));
    assert_eq!(get_scenario(&cfg, "t2", "vlog").unwrap(), None, "per tenant");
    let changed = json!({"scenario_id": "vlog", "recall": []});
    put_scenario(&cfg, "t1", "vlog", &changed).unwrap();
    assert_eq!(get_scenario(&cfg, "t1", "vlog").unwrap(), Some(changed));
}

fn services_script(name: &str) -> std::process::Command {
    let mut c = std::process::Command::new("bash");
    c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/services/").to_string() + name).arg("mongo");
    c
}

#[test]
fn write_survives_a_server_restart() {
    let _alone = SERVER.write().unwrap_or_else(|e| e.into_inner());
    let cfg = MongoConfig {
        retry_initial_ms: 200,
        retry_max_delay_ms: 1000,
        retry_max_attempts: 60,
        server_selection_timeout_ms: 500,
        ..config()
    };
    let (db, _cleanup) = open(&cfg);
    let mut sink = MongoSink::new(cfg.clone()).unwrap();
    let before: Vec<Output> = (0..500).map(|u| out(u, 0, 1)).collect();
    sink.write(&before).unwrap();
    assert_eq!(sink.retries(), 0);

    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let restarter = std::thread::spawn(move || {
        let st = services_script("stop.sh").status().expect("stop.sh");
        assert!(st.success(), "stop.sh failed");
        stopped_tx.send(Instant::now()).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let st = services_script("start.sh").status().expect("start.sh");
        assert!(st.success(), "start.sh failed");
        Instant::now()
    });
    let stopped_at = stopped_rx.recv().expect("server stopped");
    // Newer windows for half the keys plus new keys, written while the server is down.
    let during: Vec<Output> = (250..1000).map(|u| out(u, 0, 2)).collect();
    sink.write(&during).expect("write retried until the server was back");
    let written_at = Instant::now();
    let restarted_at = restarter.join().expect("restarter");
    println!(
        "mongo fault: write returned {:?} after the stop (start.sh returned after {:?}), retries {}",
        written_at - stopped_at,
        restarted_at - stopped_at,
        sink.retries()
    );
    assert!(sink.retries() > 0, "the write must have been retried");
    assert_eq!(sink.errors(), 0);
    // Nothing lost: the server kept the first batch on disk and has the second.
    let got = db.dump_profiles().unwrap();
    let want = embedded_profiles(&[before, during]);
    assert_eq!(serde_json::Value::Array(got), want);
}
