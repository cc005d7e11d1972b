//! Unit tests of the embedded store and sink.

use std::sync::Arc;
use std::time::SystemTime;

use recflow_schemas::{Action, HotList, ItemStatsDelta, MetricsRow, MetricsWindow, Output, ProfileDoc, Str};
use serde_json::json;

use super::*;
use crate::Sink;

fn hot(category: Option<&str>, window_end: i64, entries: &[(&str, f64)]) -> HotList {
    HotList {
        tenant_id: "t1".into(),
        scenario_id: "vlog".into(),
        category: category.map(Str::from),
        window_end,
        entries: entries.iter().map(|(m, s)| (Str::from(*m), *s)).collect(),
    }
}

fn stats(item: &str, pairs: &[(Action, u64)]) -> ItemStatsDelta {
    let mut counts = [0; 12];
    for (a, c) in pairs {
        counts[a.index()] = *c;
    }
    ItemStatsDelta { tenant_id: "t1".into(), scenario_id: "vlog".into(), item_id: item.into(), counts, pane_end: 0 }
}

fn profile(user: &str, updated_window: i64, clicks: u64) -> ProfileDoc {
    ProfileDoc {
        tenant_id: "t1".into(),
        user_id: user.into(),
        scenario_id: "vlog".into(),
        counts: {
            let mut c = recflow_schemas::ActionCounts::default();
            c.0[recflow_schemas::Action::Click.index()] = clicks;
            c
        },
        watch_count: 0,
        watch_seconds: 0.0,
        category_counts: Default::default(),
        favorite_categories: vec![],
        active_hours: [0; 24],
        first_seen: 1,
        last_active_at: 2,
        recent_items: vec!["i1".into()],
        updated_window,
    }
}

fn metrics(window_start: i64, clicks: u64) -> MetricsWindow {
    MetricsWindow {
        tenant_id: "t1".into(),
        scenario_id: "vlog".into(),
        window_start,
        rows: vec![MetricsRow {
            experiment_id: "exp1".into(),
            variant: "A".into(),
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
        }],
    }
}

#[test]
fn hot_list_replaces_whole_zset() {
    let s = EmbeddedStore::new();
    assert!(s.apply_hot(&hot(None, 100, &[("a", 3.0), ("b", 2.0), ("c", 1.0)])));
    assert!(s.apply_hot(&hot(None, 200, &[("d", 5.0)])));
    assert_eq!(s.get_zset("hot:items:t1:vlog", 10), vec![("d".into(), 5.0)]);
    assert_eq!(s.zset_window_end("hot:items:t1:vlog"), Some(200));
    // An older window (replay) does not regress the key; the same window re-applies.
    assert!(!s.apply_hot(&hot(None, 100, &[("a", 3.0)])));
    assert!(s.apply_hot(&hot(None, 200, &[("d", 5.0)])));
    assert_eq!(s.get_zset("hot:items:t1:vlog", 10).len(), 1);
    // Category key is separate.
    s.apply_hot(&hot(Some("music"), 200, &[("x", 1.0), ("y", 2.0)]));
    assert_eq!(s.get_zset("hot:items:t1:vlog:music", 1), vec![("y".into(), 2.0)]);
    assert_eq!(s.get_zset("hot:items:t1:nope", 10), vec![]);
    // Replacing by an empty list deletes the key, like Redis.
    s.apply_hot(&hot(Some("music"), 300, &[]));
    assert_eq!(s.keys("hot:"), vec!["hot:items:t1:vlog".to_string()]);
}

#[test]
fn item_stats_accumulate_like_hincrby() {
    let s = EmbeddedStore::new();
    s.add_item_stats(&stats("i1", &[(Action::Click, 2), (Action::View, 1)]));
    s.add_item_stats(&stats("i1", &[(Action::Click, 3), (Action::AddCart, 1)]));
    s.add_item_stats(&stats("i2", &[]));
    let h = s.get_hash("item:stats:t1:i1").unwrap();
    let h: Vec<(String, i64)> = h.into_iter().map(|(k, v)| (k, v.as_i64().unwrap())).collect();
    assert_eq!(h, vec![("add_cart".into(), 1), ("click".into(), 5), ("view".into(), 1)]);
    assert_eq!(s.get_hash("item:stats:t1:i2"), None, "zero deltas create no key");
    assert_eq!(s.get_item_stats("t1", "i1").unwrap()[Action::Click.index()], 5);
}

#[test]
fn profile_upsert_is_versioned() {
    let s = EmbeddedStore::new();
    assert!(s.upsert_profile(&profile("u1", 600_000, 1)).unwrap());
    assert!(s.upsert_profile(&profile("u1", 900_000, 2)).unwrap());
    assert!(!s.upsert_profile(&profile("u1", 600_000, 7)).unwrap());
    let doc = s.get_profile("t1", "u1", "vlog").unwrap();
    assert_eq!((doc.updated_window, doc.counts["click"]), (900_000, 2));
    let key = EmbeddedStore::profile_key("t1", "u1", "vlog");
    assert_eq!(key, "user:profile:t1:u1:vlog");
    let cached: ProfileDoc = serde_json::from_str(&s.get_string(&key).unwrap()).unwrap();
    assert_eq!(&cached, doc.as_ref());
    // Same version again (replay) is accepted and idempotent.
    assert!(s.upsert_profile(&profile("u1", 900_000, 2)).unwrap());
    assert_eq!(s.get_profile("t1", "u2", "vlog"), None);
}

#[test]
fn metrics_replace_is_monotone() {
    let s = EmbeddedStore::new();
    assert!(s.apply_metrics(&metrics(120_000, 4)));
    assert!(!s.apply_metrics(&metrics(60_000, 9)));
    let h = s.get_hash("metrics:realtime:t1:vlog").unwrap();
    assert_eq!(h["window_start"], FieldValue::Int(120_000));
    assert_eq!(h["exp1:A:clicks"], FieldValue::Int(4));
    assert_eq!(h["exp1:A:ctr"], FieldValue::Float(0.4));
    assert_eq!(h.len(), 1 + 15);
    assert!(s.apply_metrics(&metrics(180_000, 1)));
    assert_eq!(s.get_hash("metrics:realtime:t1:vlog").unwrap()["exp1:A:clicks"], FieldValue::Int(1));
}

fn fill(s: &EmbeddedStore, reverse: bool) {
    let mut outs = vec![
        Output::Hot(hot(None, 100, &[("b", 2.0), ("a", 2.0), ("c", 9.0), ("d", 1.0)])),
        Output::ItemStats(stats("i2", &[(Action::Like, 1)])),
        Output::ItemStats(stats("i1", &[(Action::Click, 1)])),
        Output::Metrics(metrics(60_000, 3)),
        Output::Profile(std::sync::Arc::new(profile("u2", 300_000, 1))),
        Output::Profile(std::sync::Arc::new(profile("u1", 300_000, 1))),
    ];
    if reverse {
        outs.reverse();
    }
    for o in outs {
        s.apply_batch(std::slice::from_ref(&o)).unwrap();
    }
}

#[test]
fn dump_is_sorted_and_deterministic() {
    let (a, b) = (EmbeddedStore::new(), EmbeddedStore::new());
    fill(&a, false);
    fill(&b, true);
    let (da, db) = (a.dump(), b.dump());
    let text = serde_json::to_string_pretty(&da).unwrap();
    assert_eq!(text, serde_json::to_string_pretty(&db).unwrap());

    // Ties by member ascending.
    assert_eq!(da["hot:items:t1:vlog"], json!([["c", 9.0], ["a", 2.0], ["b", 2.0], ["d", 1.0]]));
    assert_eq!(da["item:stats:t1:i1"], json!({"click": 1}));
    assert_eq!(da["metrics:realtime:t1:vlog"]["window_start"], json!(60_000));
    assert_eq!(da["metrics:realtime:t1:vlog"]["exp1:A:impressions"], json!(10));
    assert_eq!(da["metrics:realtime:t1:vlog"]["exp1:A:ctr"], json!(0.3));
    assert!(da["user:profile:t1:u1:vlog"].is_object(), "parsed, not a string");
    assert_eq!(da["user:profile:t1:u1:vlog"]["updated_window"], json!(300_000));
    let users: Vec<&str> =
        da["mongo.user_profiles"].as_array().unwrap().iter().map(|d| d["user_id"].as_str().unwrap()).collect();
    assert_eq!(users, vec!["u1", "u2"]);
    let keys: Vec<&String> = da.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    let path = std::env::temp_dir().join(format!("recflow-dump-{}.json", std::process::id()));
    a.dump_to_file(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text + "\n");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn sink_keeps_raw_out_of_the_dump_and_concurrent_writers_add_up() {
    let store = EmbeddedStore::shared();
    let threads: Vec<_> = (0..2)
        .map(|w| {
            let mut sink = EmbeddedSink::new(Arc::clone(&store));
            std::thread::spawn(move || {
                for i in 0..500i64 {
                    let batch = vec![
                        Output::ItemStats(stats("shared", &[(Action::Click, 1)])),
                        Output::ItemStats(stats(&format!("w{w}"), &[(Action::View, 2)])),
                        Output::Hot(hot(None, i, &[("x", i as f64)])),
                        Output::Profile(std::sync::Arc::new(profile(&format!("u{w}"), i, i as u64))),
                        Output::Metrics(metrics(i * 60_000, 1)),
                    ];
                    sink.write(&batch).unwrap();
                }
                sink.flush().unwrap();
            })
        })
        .collect();
    // A concurrent reader never sees a torn ZSET.
    for _ in 0..100 {
        let z = store.get_zset("hot:items:t1:vlog", 10);
        assert!(z.len() <= 1);
        let _ = store.dump();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.get_item_stats("t1", "shared").unwrap()[Action::Click.index()], 1000);
    assert_eq!(store.get_item_stats("t1", "w0").unwrap()[Action::View.index()], 1000);
    assert_eq!(store.get_item_stats("t1", "w1").unwrap()[Action::View.index()], 1000);
    assert_eq!(store.zset_window_end("hot:items:t1:vlog"), Some(499));
    assert_eq!(store.get_profile("t1", "u1", "vlog").unwrap().updated_window, 499);
    assert_eq!(store.get_hash("metrics:realtime:t1:vlog").unwrap()["window_start"], FieldValue::Int(499 * 60_000));

    let mut sink = EmbeddedSink::new(Arc::clone(&store));
    assert_eq!(sink.name(), "embedded");
    let before = store.dump();
    let raw: recflow_schemas::Event = serde_json::from_value(json!({
        "event_id":"e","tenant_id":"t1","scenario_id":"vlog","user_id":"u","item_id":"i",
        "action":"click","ts":1,"request_id":null,"experiment_id":"none","variant":"none",
        "category":null,"context":null,"watch_duration":null,"completion_rate":null,"amount":null
    }))
    .unwrap();
    sink.write(&[Output::Raw(Box::new(raw.into()))]).unwrap();
    assert_eq!(store.dump(), before);
}

#[test]
fn ttl_expiry_is_explicit() {
    let s = EmbeddedStore::new();
    fill(&s, false);
    assert_eq!(s.expire_now(), 0, "nothing expires during a run");
    let later = SystemTime::now() + PROFILE_TTL + std::time::Duration::from_secs(1);
    // Metrics hash and two profile strings expire after 1 h; ZSET (24 h) and stats stay.
    assert_eq!(s.expire_at(later), 3);
    assert_eq!(s.keys(""), vec!["hot:items:t1:vlog", "item:stats:t1:i1", "item:stats:t1:i2"]);
    assert!(s.get_profile("t1", "u1", "vlog").is_some(), "Mongo documents stay");
    assert_eq!(s.expire_at(later + HOT_TTL), 1);
}

/// A raw-log row of t1 (experiment exp1) as the pipeline emits it.
fn raw(id: &str, scenario: &str, variant: &str, action: &str, ts: i64, extra: serde_json::Value) -> Output {
    let mut v = json!({
        "event_id": id, "tenant_id": "t1", "scenario_id": scenario, "user_id": "u", "item_id": "i",
        "action": action, "ts": ts, "request_id": null, "experiment_id": "exp1", "variant": variant,
        "category": null, "context": null, "watch_duration": null, "completion_rate": null, "amount": null
    });
    for (k, x) in extra.as_object().cloned().unwrap_or_default() {
        v[k] = x;
    }
    Output::Raw(Box::new(serde_json::from_value::<recflow_schemas::Event>(v).unwrap().into()))
}

#[test]
fn hourly_rows_sum_raw_rows_like_the_clickhouse_view() {
    const H: i64 = 3_600_000;
    let store = EmbeddedStore::new();
    store
        .apply_batch(&[
            raw("e1", "vlog", "a", "impression", 10 * H, json!({})),
            raw("e2", "vlog", "a", "click", 10 * H + 5, json!({})),
            raw("e3", "vlog", "a", "play", 11 * H - 1, json!({"watch_duration": 30.0, "completion_rate": 0.5})),
            raw("e4", "vlog", "a", "view", 10 * H + 9, json!({"watch_duration": 10.0})),
            // The first millisecond of the next hour.
            raw("e5", "vlog", "a", "payment", 11 * H, json!({"amount": 12.5})),
            raw("e6", "vlog", "b", "order", 10 * H, json!({"amount": 99.0})),
            raw("e7", "news", "a", "click", 10 * H, json!({})),
            raw("e8", "vlog", "a", "read", 10 * H, json!({})),
        ])
        .unwrap();
    let rows = store.hourly("t1", "vlog", 10 * H, 12 * H);
    let key: Vec<(i64, &str)> = rows.iter().map(|r| (r.hour_ms, r.variant.as_str())).collect();
    assert_eq!(key, vec![(10 * H, "a"), (10 * H, "b"), (11 * H, "a")], "by hour, then variant");
    let a10 = &rows[0];
    assert_eq!((a10.impressions, a10.clicks, a10.views, a10.payments), (1, 1, 2, 0), "view + play are views");
    assert_eq!((a10.watch_duration_count, a10.completion_rate_count), (2, 1));
    assert_eq!((a10.avg_watch_duration(), a10.avg_completion_rate()), (20.0, 0.5));
    assert_eq!((rows[1].orders, rows[1].gmv), (1, 0.0), "gmv counts payments only");
    assert_eq!((rows[2].payments, rows[2].gmv, rows[2].avg_watch_duration()), (1, 12.5, 0.0));
    // [from, to) on hour starts; other scenarios and tenants are apart.
    assert_eq!(store.hourly("t1", "vlog", 10 * H + 1, 12 * H).len(), 1);
    assert_eq!(store.hourly("t1", "vlog", 10 * H, 11 * H).len(), 2);
    assert_eq!(store.hourly("t1", "news", 0, 24 * H).len(), 1);
    assert!(store.hourly("t2", "vlog", 0, 24 * H).is_empty());
}
