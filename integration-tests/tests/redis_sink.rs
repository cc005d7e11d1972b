//! `RedisSink` against a real Redis (`REDIS_URL`): the same state as the
//! embedded store, TTLs, atomic replace, and a Redis restart mid-stream.
//!
//! Every test uses its own tenant, so runs and tests never share keys. They
//! still run one at a time: the outage test restarts the shared server.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use recflow_integration_tests::{service, unique};
use recflow_schemas::{
    Action, ActionCounts, CategoryMap, HotList, ItemStatsDelta, MetricsRow, MetricsWindow, Output, ProfileDoc, Str,
};
use recflow_sinks::{redis as rsink, EmbeddedSink, EmbeddedStore, RedisConfig, RedisSink, RetryConfig, Sink};
use serde_json::Value;

const MIN: i64 = 60_000;
/// A window end on a 15-min boundary (2026-01-01T01:00Z).
const T0: i64 = 1_767_229_200_000;
const HALF_LIFE: f64 = 1_800_000.0;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn url() -> String {
    service("REDIS_URL")
}

fn sink() -> RedisSink {
    RedisSink::new(&RedisConfig { url: url(), ..Default::default() }).expect("redis sink")
}

fn conn() -> redis::Connection {
    redis::Client::open(url()).unwrap().get_connection_with_timeout(Duration::from_secs(5)).expect("connect to redis")
}

/// The Redis keys of `tenant` in a dump (the tenant is every key's third segment).
fn of_tenant(dump: Value, tenant: &str) -> BTreeMap<String, Value> {
    let Value::Object(m) = dump else { panic!("dump is not an object") };
    m.into_iter().filter(|(k, _)| k.split(':').nth(2) == Some(tenant)).collect()
}

fn keys(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut out: Vec<String> = redis::cmd("KEYS").arg(pattern).query(con).unwrap();
    out.sort();
    out
}

// ---- realistic outputs ------------------------------------------------------

/// A decayed hot score: Σ weight · 2^(−(end − ts)/half_life) over a few events.
fn score(seed: u64) -> f64 {
    (0..1 + seed % 4)
        .map(|j| {
            let weight = [1.0, 2.0, 3.0, 6.0, 10.0][((seed + j) % 5) as usize];
            let age = ((seed * 7919 + j * 104_729) % 3_600_000) as f64;
            weight * (-age / HALF_LIFE).exp2()
        })
        .sum()
}

fn hot(tenant: &str, scenario: &str, category: Option<&str>, end: i64, items: impl IntoIterator<Item = u64>) -> Output {
    let mut entries: Vec<(Str, f64)> = items.into_iter().map(|i| (Str::from(format!("item_{i}")), score(i))).collect();
    entries.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Output::Hot(HotList {
        tenant_id: tenant.into(),
        scenario_id: scenario.into(),
        category: category.map(Str::from),
        window_end: end,
        entries,
    })
}

/// A list with explicit (item, score) entries (ties included).
fn hot_fixed(tenant: &str, scenario: &str, category: Option<&str>, end: i64, entries: &[(&str, f64)]) -> Output {
    Output::Hot(HotList {
        tenant_id: tenant.into(),
        scenario_id: scenario.into(),
        category: category.map(Str::from),
        window_end: end,
        entries: entries.iter().map(|(m, s)| (Str::from(*m), *s)).collect(),
    })
}

/// A delta of `pane_end`'s pane: the sink applies each (scenario, pane) of an item once.
fn stats(tenant: &str, item: &str, pane_end: i64, pairs: &[(Action, u64)]) -> Output {
    let mut counts = [0; 12];
    for (a, c) in pairs {
        counts[a.index()] = *c;
    }
    Output::ItemStats(ItemStatsDelta {
        tenant_id: tenant.into(),
        scenario_id: "vlog".into(),
        item_id: item.into(),
        counts,
        pane_end,
    })
}

fn row(experiment: &str, variant: &str, seed: u64) -> MetricsRow {
    let impressions = 37 + seed * 11;
    let clicks = 5 + seed * 3;
    let (likes, shares, comments) = (seed % 4, seed % 3, 1 + seed % 2);
    let orders = seed % 3;
    let watch: Vec<f64> = (0..3 + seed).map(|k| 12.5 + k as f64 * 7.3).collect();
    let completion: Vec<f64> = (0..2 + seed).map(|k| (k as f64 + 0.37) / 7.0).collect();
    MetricsRow {
        experiment_id: experiment.into(),
        variant: variant.into(),
        impressions,
        clicks,
        views: watch.len() as u64,
        likes,
        shares,
        comments,
        add_carts: seed % 5,
        orders,
        payments: orders,
        ctr: clicks as f64 / impressions as f64,
        avg_watch_duration: watch.iter().sum::<f64>() / watch.len() as f64,
        avg_completion_rate: completion.iter().sum::<f64>() / completion.len() as f64,
        conversion_rate: orders as f64 / clicks as f64,
        interaction_rate: (likes + shares + comments) as f64 / impressions as f64,
        gmv: if orders == 0 { 0.0 } else { 19.99 * orders as f64 + 0.1 },
    }
}

fn metrics(tenant: &str, scenario: &str, start: i64, rows: Vec<MetricsRow>) -> Output {
    Output::Metrics(MetricsWindow { tenant_id: tenant.into(), scenario_id: scenario.into(), window_start: start, rows })
}

fn profile(tenant: &str, user: &str, scenario: &str, window: i64, seed: u64) -> Output {
    let mut counts = [0u64; 12];
    for (i, c) in counts.iter_mut().enumerate() {
        *c = (seed * 3 + i as u64 * 5) % 9;
    }
    let category_counts: CategoryMap<u64> = [("music", 7 + seed), ("sports", 3), ("news", 1 + seed % 2)]
        .into_iter()
        .map(|(c, n)| (Str::from(c), n))
        .collect();
    let mut active_hours = [0u64; 24];
    active_hours[(seed % 24) as usize] = 4;
    active_hours[13] += 2;
    Output::Profile(Arc::new(ProfileDoc {
        tenant_id: tenant.into(),
        user_id: user.into(),
        scenario_id: scenario.into(),
        counts: ActionCounts(counts),
        watch_count: counts[Action::View.index()] + counts[Action::Play.index()],
        watch_seconds: 93.7 + seed as f64 / 3.0,
        category_counts,
        favorite_categories: vec!["music".into(), "sports".into(), "news".into()],
        active_hours,
        first_seen: window - 40 * MIN,
        last_active_at: window - MIN / 3,
        recent_items: (0..3 + seed).map(|i| Str::from(format!("item_{}", 100 + i))).collect(),
        updated_window: window,
    }))
}

/// Three batches as the jobs would emit them over a few windows.
fn batches(t: &str) -> Vec<Vec<Output>> {
    let (w1, w2, w3) = (T0, T0 + 15 * MIN, T0 + 30 * MIN);
    vec![
        vec![
            hot(t, "vlog", None, w1, 0..40),
            hot(t, "vlog", Some("music"), w1, 0..8),
            hot(t, "vlog", Some("sports"), w1, 20..26),
            hot(t, "news", None, w1, 50..55),
            hot(t, "news", Some("tech"), w1, 50..53),
            stats(t, "item_1", w1, &[(Action::Click, 3), (Action::View, 5), (Action::Impression, 20)]),
            stats(t, "item_2", w1, &[(Action::AddCart, 1), (Action::Payment, 2)]),
            stats(t, "item_3", w1, &[]),
            metrics(t, "vlog", T0 - 2 * MIN, vec![row("exp1", "A", 1), row("exp1", "B", 2), row("exp2", "control", 3)]),
            profile(t, "u1", "vlog", w1, 1),
            profile(t, "u2", "vlog", w1, 2),
        ],
        vec![
            // A newer window replaces the scenario list and the music list; sports keeps w1.
            hot(t, "vlog", None, w2, 10..25),
            hot(t, "vlog", Some("music"), w2, [3, 4, 9]),
            stats(t, "item_1", w2, &[(Action::Click, 2), (Action::Like, 1)]),
            // Minute 2 has only exp1:A: the other fields must disappear.
            metrics(t, "vlog", T0 - MIN, vec![row("exp1", "A", 4)]),
            metrics(t, "news", T0 - MIN, vec![row("exp9", "B", 0)]),
            profile(t, "u1", "vlog", w2, 5),
            profile(t, "u3", "news", w2, 0),
        ],
        vec![
            // Ties: member asc; a stale window after a newer one in the same batch loses.
            hot_fixed(t, "news", None, w3, &[("zeta", 2.0), ("alpha", 2.0), ("mid", 0.1 + 0.2), ("tiny", 1e-9)]),
            hot(t, "news", None, w2, 60..70),
            // An empty list deletes the key.
            hot_fixed(t, "news", Some("tech"), w3, &[]),
            stats(t, "item_2", w3, &[(Action::Payment, 1)]),
        ],
    ]
}

/// Applies `batches` to a fresh embedded store and to Redis; returns the embedded dump of `t`.
fn apply_both(t: &str, redis: &mut RedisSink, batches: &[Vec<Output>]) -> BTreeMap<String, Value> {
    let mut embedded = EmbeddedSink::new(EmbeddedStore::shared());
    for b in batches {
        embedded.write(b).unwrap();
        redis.write(b).unwrap();
    }
    redis.flush().unwrap();
    of_tenant(embedded.store().dump(), t)
}

// ---- tests ------------------------------------------------------------------

#[test]
fn redis_state_equals_the_embedded_store() {
    let _g = serial();
    let t = unique("rs");
    let mut sink = sink();
    let expected = apply_both(&t, &mut sink, &batches(&t));
    let got = of_tenant(rsink::dump(&url()).unwrap(), &t);
    assert_eq!(
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&expected).unwrap(),
        "redis dump differs from the embedded dump"
    );
    assert_eq!(got, expected);

    // Sanity on what the comparison covered.
    let music = &got[&format!("hot:items:{t}:vlog:music")];
    assert_eq!(music.as_array().unwrap().len(), 3, "w2 replaced w1");
    assert_eq!(got[&format!("hot:items:{t}:vlog:sports")].as_array().unwrap().len(), 6, "not replaced by w2");
    assert!(!got.contains_key(&format!("hot:items:{t}:news:tech")), "emptied list deleted");
    assert_eq!(
        got[&format!("hot:items:{t}:news")],
        serde_json::json!([["alpha", 2.0], ["zeta", 2.0], ["mid", 0.1 + 0.2], ["tiny", 1e-9]])
    );
    let stats1 = &got[&format!("item:stats:{t}:item_1")];
    assert_eq!(stats1, &serde_json::json!({"click": 5, "view": 5, "impression": 20, "like": 1}));
    assert!(!got.contains_key(&format!("item:stats:{t}:item_3")), "zero delta creates nothing");
    let m = got[&format!("metrics:realtime:{t}:vlog")].as_object().unwrap();
    assert_eq!(m.len(), 16, "window_start + 15 metrics of exp1:A only");
    assert_eq!(m["window_start"], serde_json::json!(T0 - MIN));
    assert!(m["exp1:A:clicks"].is_u64() && m["exp1:A:ctr"].is_f64());
    assert_eq!(got[&format!("user:profile:{t}:u1:vlog")]["updated_window"], serde_json::json!(T0 + 15 * MIN));
    assert_eq!(got.len(), 11, "4 hot lists, 2 item stats, 2 metrics, 3 profiles");

    // TTLs: hot/metrics/profile keys expire, item stats never.
    let mut con = conn();
    let ttl = |con: &mut redis::Connection, k: &str| -> i64 { redis::cmd("TTL").arg(k).query(con).unwrap() };
    for k in got.keys() {
        let v = ttl(&mut con, k);
        if k.starts_with("item:stats:") {
            assert_eq!(v, -1, "{k} has no TTL");
        } else if k.starts_with("hot:items:") {
            assert!(v > 86_000 && v <= 86_400, "{k} TTL {v}");
        } else {
            assert!(v > 3_500 && v <= 3_600, "{k} TTL {v}");
        }
    }
    assert!(keys(&mut con, &format!("tmp:*{t}*")).is_empty(), "no temp keys left");
    // Versions: beside hot lists with their TTL, beside item stats without one.
    let hot_version = rsink::version_key(&format!("hot:items:{t}:vlog"));
    let v: i64 = redis::cmd("GET").arg(&hot_version).query(&mut con).unwrap();
    assert_eq!(v, T0 + 15 * MIN);
    assert!(ttl(&mut con, &hot_version) > 86_000);
    let stats_version = rsink::version_key(&format!("item:stats:{t}:item_2"));
    let v: i64 = redis::cmd("HGET").arg(&stats_version).arg("vlog").query(&mut con).unwrap();
    assert_eq!(v, T0 + 30 * MIN);
    assert_eq!(ttl(&mut con, &stats_version), -1);

    // Replaying everything, item stats included, is idempotent (a fresh sink, as after a restart).
    let mut again = self::sink();
    for b in &batches(&t) {
        again.write(b).unwrap();
    }
    assert_eq!(of_tenant(rsink::dump(&url()).unwrap(), &t), expected, "replay changed the state");
    assert_eq!((sink.retries(), sink.errors()), (0, 0));
}

#[test]
fn replace_is_atomic_and_leaves_no_temp_keys() {
    let _g = serial();
    let t = unique("rs_atomic");
    let key = format!("hot:items:{t}:vlog");
    let mut sink = sink();
    let big = |end| hot(&t, "vlog", None, end, 0..500);
    let small = |end| hot(&t, "vlog", None, end, [7, 8, 9]);
    sink.write(&[big(T0)]).unwrap();
    let mut con = conn();
    let zcard = |con: &mut redis::Connection| -> u64 { redis::cmd("ZCARD").arg(&key).query(con).unwrap() };
    assert_eq!(zcard(&mut con), 500);
    sink.write(&[small(T0 + 15 * MIN)]).unwrap();
    assert_eq!(zcard(&mut con), 3);
    assert!(keys(&mut con, &format!("tmp:*{t}*")).is_empty(), "no temp keys left");

    // A reader polling during 40 alternating replaces only ever sees a whole list.
    let done = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, reading, key) = (done.clone(), reading.clone(), key.clone());
        std::thread::spawn(move || {
            let mut con = conn();
            let mut seen = BTreeMap::<u64, u64>::new();
            while !done.load(Ordering::Relaxed) {
                let n: u64 = redis::cmd("ZCARD").arg(&key).query(&mut con).unwrap();
                *seen.entry(n).or_default() += 1;
                reading.store(true, Ordering::Relaxed);
            }
            seen
        })
    };
    // Start replacing only once the reader is polling (a loaded machine may start it late).
    while !reading.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for i in 0..40 {
        let end = T0 + (2 + i) * 15 * MIN;
        sink.write(&[if i % 2 == 0 { big(end) } else { small(end) }]).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(seen.keys().all(|n| *n == 3 || *n == 500), "reader saw a partial list: {seen:?}");
    assert!(seen.values().sum::<u64>() > 0);
    eprintln!("atomic replace: ZCARD readings {seen:?}");
    assert_eq!(zcard(&mut con), 3);
    assert!(keys(&mut con, &format!("tmp:*{t}*")).is_empty(), "no temp keys left");
}

fn services(script: &str) {
    let path = format!("{}/services/{script}", env!("CARGO_MANIFEST_DIR"));
    let status =
        Command::new("bash").arg(&path).arg("redis").stdin(Stdio::null()).status().expect("run services script");
    assert!(status.success(), "{script} redis failed: {status}");
}

fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn writes_survive_a_redis_restart() {
    let _g = serial();
    let started = Instant::now();
    let t = unique("rs_outage");
    let config = RedisConfig {
        url: url(),
        timeout_ms: 1000,
        retry: RetryConfig { max_attempts: 100, initial_backoff_ms: 50, backoff_factor: 2.0, max_backoff_ms: 400 },
        ..Default::default()
    };
    let mut sink = RedisSink::new(&config).unwrap();
    let counters = sink.stats();
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // Every batch replaces the same keys, so the final state is the last batch's,
    // whatever the restart (Redis runs without persistence) wiped before it.
    let writer = {
        let (t, written, stop) = (t.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut embedded = EmbeddedSink::new(EmbeddedStore::shared());
            let mut i = 0u64;
            loop {
                let last = stop.load(Ordering::Relaxed);
                let end = T0 + i as i64 * 15 * MIN;
                let mut batch = vec![
                    hot(&t, "vlog", None, end, i..i + 50),
                    hot(&t, "vlog", Some("music"), end, i + 3..i + 8),
                    metrics(&t, "vlog", T0 + i as i64 * MIN, vec![row("exp1", "A", i % 7), row("exp1", "B", 2)]),
                    profile(&t, "u1", "vlog", end, i),
                ];
                if last {
                    // After the restart: item stats, which a wipe would have lost.
                    batch.push(stats(&t, "item_1", end, &[(Action::Click, 2), (Action::Order, 1)]));
                    batch.push(stats(&t, "item_1", end + 15 * MIN, &[(Action::Click, 1)]));
                }
                embedded.write(&batch).unwrap();
                sink.write(&batch).expect("write eventually succeeds");
                written.fetch_add(1, Ordering::SeqCst);
                i += 1;
                if last {
                    return (sink, of_tenant(embedded.store().dump(), &t));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    wait_until("first writes", Duration::from_secs(5), || written.load(Ordering::SeqCst) >= 3);
    services("stop.sh");
    let at_stop = written.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    assert!(written.load(Ordering::SeqCst) <= at_stop + 1, "writes went on while redis was down");
    assert!(counters.errors() > 0, "the writer noticed the outage");
    services("start.sh");
    wait_until("writes after the restart", Duration::from_secs(10), || written.load(Ordering::SeqCst) >= at_stop + 3);
    stop.store(true, Ordering::Relaxed);
    let (sink, expected) = writer.join().expect("writer thread");

    assert!(sink.retries() > 0, "no retry seen");
    assert!(sink.errors() >= sink.retries());
    let got = of_tenant(rsink::dump(&url()).unwrap(), &t);
    assert_eq!(got, expected, "final state incomplete after the outage");
    assert_eq!(got[&format!("item:stats:{t}:item_1")], serde_json::json!({"click": 3, "order": 1}));
    eprintln!(
        "outage test: {} writes, {} retries, {} errors, {:.1?}",
        written.load(Ordering::SeqCst),
        sink.retries(),
        sink.errors(),
        started.elapsed()
    );
}
