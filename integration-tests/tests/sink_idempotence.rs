//! Sinks after a crash: a fresh sink instance (as after a restart) receives
//! a replay — partial recomputations of windows already written (same
//! version), older versions, raw rows whose offsets overlap what is stored —
//! then the newer outputs. Against the real Redis, MongoDB and ClickHouse,
//! the final contents must equal a single clean pass of the same outputs,
//! written by another sink into a separate Redis db / Mongo database /
//! ClickHouse database.

use std::collections::BTreeMap;
use std::sync::Arc;

use recflow_integration_tests::compare::{ours, same};
use recflow_integration_tests::{service, unique};
use recflow_schemas::{
    Action, ActionCounts, Event, HotList, ItemStatsDelta, KafkaPos, MetricsRow, MetricsWindow, Output, ProfileDoc,
    RawEvent, Str, ValidationLimits, Validator,
};
use recflow_sinks::clickhouse::init;
use recflow_sinks::{
    redis as rsink, ClickHouseConfig, ClickHouseSink, MongoConfig, MongoDb, MongoProfiles, MongoSink, RedisConfig,
    RedisSink, Sink,
};
use recflow_sources::generator::{events, GenConfig};
use serde_json::Value;

const MIN: i64 = 60_000;
/// A 15-min boundary (2026-01-01T01:00Z).
const T0: i64 = 1_767_229_200_000;

// ---- outputs ------------------------------------------------------------------

fn hot(tenant: &str, category: Option<&str>, window_end: i64, entries: &[(&str, f64)]) -> Output {
    Output::Hot(HotList {
        tenant_id: tenant.into(),
        scenario_id: "vlog".into(),
        category: category.map(Str::from),
        window_end,
        entries: entries.iter().map(|(m, s)| (Str::from(*m), *s)).collect(),
    })
}

fn stats(tenant: &str, scenario: &str, item: &str, pane_end: i64, clicks: u64, plays: u64) -> Output {
    let mut counts = [0; 12];
    counts[Action::Click.index()] = clicks;
    counts[Action::Play.index()] = plays;
    Output::ItemStats(ItemStatsDelta {
        tenant_id: tenant.into(),
        scenario_id: scenario.into(),
        item_id: item.into(),
        counts,
        pane_end,
    })
}

fn metrics(tenant: &str, window_start: i64, impressions: u64, clicks: u64) -> Output {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Output::Metrics(MetricsWindow {
        tenant_id: tenant.into(),
        scenario_id: "vlog".into(),
        window_start,
        rows: vec![MetricsRow {
            experiment_id: "exp1".into(),
            variant: if clicks.is_multiple_of(2) { "A".into() } else { "B".into() },
            impressions,
            clicks,
            views: 0,
            likes: 0,
            shares: 0,
            comments: 0,
            add_carts: 0,
            orders: 0,
            payments: 0,
            ctr: ratio(clicks, impressions),
            avg_watch_duration: 0.0,
            avg_completion_rate: 0.0,
            conversion_rate: 0.0,
            interaction_rate: 0.0,
            gmv: 0.0,
        }],
    })
}

/// A profile after `events` events (a partial recomputation has fewer for the same window).
fn profile(tenant: &str, user: &str, updated_window: i64, events: u64) -> ProfileDoc {
    let mut counts = [0u64; 12];
    counts[Action::Click.index()] = events;
    ProfileDoc {
        tenant_id: tenant.into(),
        user_id: user.into(),
        scenario_id: "vlog".into(),
        counts: ActionCounts(counts),
        watch_count: 0,
        watch_seconds: events as f64 * 1.25,
        category_counts: [(Str::from("music"), 2 * events)].into_iter().collect(),
        favorite_categories: vec!["music".into()],
        active_hours: [0; 24],
        first_seen: T0 - 3_600_000,
        last_active_at: updated_window - 1,
        recent_items: vec![Str::from(format!("item_{events}"))],
        updated_window,
    }
}

fn prof(tenant: &str, user: &str, updated_window: i64, events: u64) -> Output {
    Output::Profile(Arc::new(profile(tenant, user, updated_window, events)))
}

/// The outputs of three windows, complete: what an uninterrupted run writes.
fn window(t: &str, i: i64) -> Vec<Output> {
    let end = T0 + i * 15 * MIN;
    let n = i as u64;
    vec![
        hot(t, None, end, &[("a", 3.0 * n as f64), ("b", 1.5), (&format!("only_{i}"), 0.25)]),
        hot(t, Some("music"), end, &[("a", 3.0 * n as f64)]),
        stats(t, "vlog", "a", end, 2 + n, 1),
        // The same item in a second scenario, same pane: a separate delta that also counts.
        stats(t, "news", "a", end, 1, n),
        metrics(t, end - MIN, 100 * n, 7 * n),
        prof(t, "u1", end, 10 * n),
        prof(t, "u2", end, 3 * n),
    ]
}

/// Partial recomputations of window `i`: same versions, less data.
fn partial(t: &str, i: i64) -> Vec<Output> {
    let end = T0 + i * 15 * MIN;
    vec![
        hot(t, None, end, &[("b", 0.5)]),
        hot(t, Some("music"), end, &[("a", 0.1)]),
        stats(t, "vlog", "a", end, 1, 0),
        stats(t, "news", "a", end, 0, 1),
        metrics(t, end - MIN, 10, 1),
        prof(t, "u1", end, 1),
    ]
}

// ---- Redis ----------------------------------------------------------------------

/// The Redis URL with database `db` selected (clean pass and crashed run side by side).
fn redis_url(db: u8) -> String {
    format!("{}/{db}", service("REDIS_URL").trim_end_matches('/'))
}

fn redis_sink(db: u8) -> RedisSink {
    RedisSink::new(&RedisConfig { url: redis_url(db), ..Default::default() }).unwrap()
}

#[test]
fn redis_replay_after_a_restart_equals_a_clean_pass() {
    let prefix = unique("idem").replace('_', "");
    let t = format!("{prefix}_t1");
    let all: Vec<Vec<Output>> = (1..=4).map(|i| window(&t, i)).collect();

    let mut clean = redis_sink(1);
    for b in &all {
        clean.write(b).unwrap();
    }

    // The crashed run wrote windows 1-2 (window 2 in two batches) and part of 3's item stats.
    let mut before = redis_sink(2);
    before.write(&all[0]).unwrap();
    before.write(&all[1][..3]).unwrap();
    before.write(&all[1][3..]).unwrap();
    before.write(&all[2][2..3]).unwrap();
    drop(before);
    // The restarted run replays from the committed offsets: partial window 2, the older
    // window 1, the stats delta of 3 again (as part of its window), then the rest.
    let mut after = redis_sink(2);
    after.write(&partial(&t, 2)).unwrap();
    after.write(&all[0]).unwrap();
    for b in &all[2..] {
        after.write(b).unwrap();
    }
    // A pipeline re-sent whole (as after a connection error) is harmless too.
    after.write(&all[3]).unwrap();

    let want = ours(&rsink::dump(&redis_url(1)).unwrap(), &prefix);
    let got = ours(&rsink::dump(&redis_url(2)).unwrap(), &prefix);
    same(&Value::Object(want.clone().into_iter().collect()), &Value::Object(got.into_iter().collect()), "redis")
        .unwrap();
    // What the comparison covered: hot lists, both scenarios' stats, metrics, profiles.
    assert_eq!(want.len(), 6, "{:?}", want.keys().collect::<Vec<_>>());
    let stats = &want[&format!("item:stats:{t}:a")];
    assert_eq!(stats["click"], 3 + 4 + 5 + 6 + 4, "vlog 2+n and news 1 for n = 1..4");
    assert_eq!(stats["play"], 4 + 10, "vlog 1 and news n for n = 1..4");
    assert_eq!(want[&format!("metrics:realtime:{t}:vlog")]["window_start"], T0 + 60 * MIN - MIN);

    // The versions live under the bookkeeping prefix, which the comparison ignores.
    let mut con = redis::Client::open(redis_url(2)).unwrap().get_connection().unwrap();
    let versions: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*{t}*", rsink::BOOKKEEPING_PREFIX)).query(&mut con).unwrap();
    assert_eq!(versions.len(), 3, "two hot lists and one item: {versions:?}");
    let with_versions: serde_json::Map<String, Value> = versions
        .iter()
        .map(|k| (k.clone(), Value::from(1)))
        .chain([(format!("hot:items:{t}:vlog"), 1.into())])
        .collect();
    assert_eq!(ours(&Value::Object(with_versions), &prefix).len(), 1, "compare::ours skips bookkeeping keys");
}

// ---- MongoDB --------------------------------------------------------------------

fn mongo_config() -> MongoConfig {
    MongoConfig { url: service("MONGO_URL"), database: unique("rf_idem"), ..Default::default() }
}

/// Drops the test's database at the end, failed or not.
struct DropDb(MongoDb);

impl Drop for DropDb {
    fn drop(&mut self) {
        let _ = self.0.database().drop().run();
    }
}

fn profiles_of(batches: &[Vec<Output>]) -> Vec<Vec<Output>> {
    batches.iter().map(|b| b.iter().filter(|o| matches!(o, Output::Profile(_))).cloned().collect()).collect()
}

#[test]
fn mongo_replay_after_a_restart_equals_a_clean_pass() {
    let t = unique("idem_t");
    let all = profiles_of(&(1..=4).map(|i| window(&t, i)).collect::<Vec<_>>());
    let (clean_cfg, crash_cfg) = (mongo_config(), mongo_config());
    let _cleanup = [DropDb(MongoDb::new(&clean_cfg).unwrap()), DropDb(MongoDb::new(&crash_cfg).unwrap())];
    for cfg in [&clean_cfg, &crash_cfg] {
        recflow_sinks::mongo::ensure_indexes(cfg).unwrap();
    }

    let mut clean = MongoSink::new(clean_cfg.clone()).unwrap();
    for b in &all {
        clean.write(b).unwrap();
    }
    let mut before = MongoSink::new(crash_cfg.clone()).unwrap();
    before.write(&all[0]).unwrap();
    before.write(&all[1]).unwrap();
    drop(before);
    let mut after = MongoSink::new(crash_cfg.clone()).unwrap();
    after.write(&profiles_of(&[partial(&t, 2)])[0]).unwrap();
    after.write(&all[0]).unwrap();
    for b in &all[2..] {
        after.write(b).unwrap();
    }
    assert_eq!(after.stale(), 2 + 1, "the partial window 2 of u1 and window 1 of u1, u2 were stale");

    let want = recflow_sinks::mongo::dump_profiles(&clean_cfg).unwrap();
    let got = recflow_sinks::mongo::dump_profiles(&crash_cfg).unwrap();
    assert_eq!(want.len(), 2);
    same(&Value::Array(want), &Value::Array(got), "mongo.user_profiles").unwrap();
}

#[test]
fn load_profiles_returns_the_stored_ones_in_key_order() {
    let t = unique("load_t");
    let cfg = mongo_config();
    let _cleanup = DropDb(MongoDb::new(&cfg).unwrap());
    recflow_sinks::mongo::ensure_indexes(&cfg).unwrap();
    // 2,500 users: more than one request's worth of keys.
    let n = 2_500;
    let docs: Vec<ProfileDoc> =
        (0..n).map(|u| profile(&t, &format!("u{u}"), T0 + (u % 7) as i64 * 300_000, u)).collect();
    let mut sink = MongoSink::new(cfg.clone()).unwrap();
    let outputs: Vec<Output> = docs.iter().map(|d| Output::Profile(Arc::new(d.clone()))).collect();
    sink.write(&outputs).unwrap();

    let handle = MongoProfiles::connect(&cfg).unwrap();
    let key = |u: &str, s: &str| (Str::from(t.as_str()), Str::from(u), Str::from(s));
    // Reversed, with absent users, another scenario, another tenant and a repeat mixed in.
    let mut keys: Vec<(Str, Str, Str)> = (0..n).rev().map(|u| key(&format!("u{u}"), "vlog")).collect();
    keys.insert(100, key("nobody", "vlog"));
    keys.insert(7, key("u3", "news"));
    keys.push((Str::from("other_tenant"), Str::from("u1"), Str::from("vlog")));
    keys.push(key("u0", "vlog"));
    let started = std::time::Instant::now();
    let loaded = handle.load_profiles(&keys).unwrap();
    eprintln!("load_profiles: {} keys -> {} profiles in {:?}", keys.len(), loaded.len(), started.elapsed());
    assert_eq!(loaded.len(), n as usize, "each stored key once, absent ones skipped");
    let want: Vec<ProfileDoc> = docs.into_iter().rev().collect();
    assert!(loaded == want, "profiles differ from what was written, or are out of key order");
    assert!(handle.load_profiles(&[]).unwrap().is_empty());
    assert!(handle.load_profiles(&[key("nobody", "vlog")]).unwrap().is_empty());
}

// ---- ClickHouse -----------------------------------------------------------------

/// `n` valid events of one tenant, each with its Kafka position: partition `i % 2`, offsets in order.
fn positioned(tenant: &str, n: u64) -> Vec<Output> {
    let cfg = GenConfig { events: n, seed: 5, step_ms: 20_000, tenants: 1, items: 200, ..Default::default() };
    let v = Validator::new(ValidationLimits::default());
    let now = recflow_schemas::validate::now_ms();
    let topic = Str::from(format!("user-behaviors-{tenant}"));
    events(&cfg)
        .enumerate()
        .map(|(i, p)| {
            let mut e: Event = v.validate(&p, None, now).expect("generated events are valid");
            e.tenant_id = tenant.into();
            let source = KafkaPos { topic: topic.clone(), partition: (i % 2) as i32, offset: (i / 2) as i64 };
            Output::Raw(Box::new(RawEvent { event: e, source: Some(source) }))
        })
        .collect()
}

fn offset_of(o: &Output) -> (i32, i64) {
    match o {
        Output::Raw(r) => r.source.as_ref().map_or((-1, -1), |s| (s.partition, s.offset)),
        _ => (-1, -1),
    }
}

struct ClickHouse {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
}

impl ClickHouse {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = clickhouse::Client::default().with_url(service("CLICKHOUSE_URL")).with_validation(false);
        ClickHouse { rt, client }
    }

    /// (event_id, partition, offset) of every row, sorted.
    fn rows(&self, db: &str) -> Vec<(String, i32, i64)> {
        let sql = format!(
            "SELECT event_id, source_partition, source_offset FROM `{db}`.user_behaviors ORDER BY source_partition, source_offset, event_id"
        );
        self.rt.block_on(self.client.query(&sql).fetch_all()).unwrap()
    }

    /// Per (hour, action) counts of the hourly view: replays must not reach it either.
    fn hourly(&self, db: &str) -> BTreeMap<u32, (u64, u64, u64)> {
        let sql = format!(
            "SELECT toUInt32(hour), sum(impressions), sum(clicks), sum(views) FROM `{db}`.metrics_hourly GROUP BY hour"
        );
        let rows: Vec<(u32, u64, u64, u64)> = self.rt.block_on(self.client.query(&sql).fetch_all()).unwrap();
        rows.into_iter().map(|(h, a, b, c)| (h, (a, b, c))).collect()
    }

    fn drop_db(&self, db: &str) {
        let _ = self.rt.block_on(self.client.query(&format!("DROP DATABASE IF EXISTS `{db}`")).execute());
    }
}

#[test]
fn clickhouse_replay_after_a_restart_equals_a_clean_pass() {
    let tenant = unique("idem_t");
    let n = 6_000;
    let raws = positioned(&tenant, n);
    let cfg = |db: &str| ClickHouseConfig {
        url: service("CLICKHOUSE_URL"),
        database: db.to_string(),
        batch_rows: 1000,
        ..Default::default()
    };
    let (clean_db, crash_db) = (unique("rf_idem_clean"), unique("rf_idem_crash"));
    let ch = ClickHouse::new();
    let dialect = init(&cfg(&clean_db)).unwrap();
    init(&cfg(&crash_db)).unwrap();

    let mut clean = ClickHouseSink::new(&cfg(&clean_db), dialect).unwrap();
    clean.write(&raws).unwrap();
    clean.flush().unwrap();

    // The crashed run: 4,000 rows in (batches of 1000), 500 more accepted but never
    // inserted (lost with the process).
    let mut before = ClickHouseSink::new(&cfg(&crash_db), dialect).unwrap();
    before.write(&raws[..4_000]).unwrap();
    before.write(&raws[4_000..4_500]).unwrap();
    assert_eq!((before.rows_inserted(), before.buffered_rows()), (4_000, 500));
    drop(before);

    // The restart resumes from committed offsets well behind that: partition 0 from
    // offset 300, partition 1 from 1,200 (rows interleave p0, p1 as the source reads them).
    let committed = [300, 1_200];
    let replay: Vec<Output> =
        raws.iter().filter(|o| offset_of(o).1 >= committed[offset_of(o).0 as usize]).cloned().collect();
    let mut after = ClickHouseSink::new(&cfg(&crash_db), dialect).unwrap();
    after.write(&replay[..2_500]).unwrap();
    // Partition 1 is revoked and re-assigned mid-run: it rewinds to offset 1,500.
    let rewind: Vec<Output> = raws.iter().filter(|o| offset_of(o).0 == 1 && offset_of(o).1 >= 1_500).cloned().collect();
    let p1_seen = replay[..2_500].iter().filter(|o| offset_of(o).0 == 1).map(|o| offset_of(o).1).max().unwrap();
    let rewound: Vec<Output> = rewind.into_iter().filter(|o| offset_of(o).1 <= p1_seen).collect();
    after.write(&rewound).unwrap();
    after.write(&replay[2_500..]).unwrap();
    after.flush().unwrap();
    let stats = after.stats();
    eprintln!(
        "clickhouse ({dialect:?}): replay of {} + {} rewound rows: {} skipped as stored, {} inserted, {} look-ups",
        replay.len(),
        rewound.len(),
        stats.rows_skipped,
        stats.rows_inserted,
        stats.offset_lookups
    );

    let (want, got) = (ch.rows(&clean_db), ch.rows(&crash_db));
    assert_eq!(want.len(), n as usize);
    assert_eq!(got.len(), want.len(), "row count after the replay");
    assert!(got == want, "rows differ from the clean pass");
    assert_eq!(ch.hourly(&crash_db), ch.hourly(&clean_db), "metrics_hourly counted a replayed row");
    // Every row of the replay up to the crash's last insert, and the rewound ones, was skipped.
    let stored_before = |o: &Output| raws[..4_000].iter().any(|r| offset_of(r) == offset_of(o));
    let expected_skips = replay.iter().filter(|o| stored_before(o)).count() + rewound.len();
    assert_eq!(stats.rows_skipped as usize, expected_skips);
    assert_eq!(stats.offset_lookups, 3, "one per partition, one more for the rewind");
    ch.drop_db(&clean_db);
    ch.drop_db(&crash_db);
}

#[test]
fn clickhouse_rows_without_a_kafka_position_are_not_deduplicated() {
    let tenant = unique("idem_f");
    let db = unique("rf_idem_file");
    let cfg = ClickHouseConfig { url: service("CLICKHOUSE_URL"), database: db.clone(), ..Default::default() };
    let dialect = init(&cfg).unwrap();
    let rows: Vec<Output> = positioned(&tenant, 50)
        .into_iter()
        .map(|o| match o {
            Output::Raw(r) => Output::Raw(Box::new(RawEvent { event: r.event, source: None })),
            other => other,
        })
        .collect();
    let mut sink = ClickHouseSink::new(&cfg, dialect).unwrap();
    sink.write(&rows).unwrap();
    sink.flush().unwrap();
    // A file read twice is two inputs: the sink has no position to dedupe by.
    let mut again = ClickHouseSink::new(&cfg, dialect).unwrap();
    again.write(&rows).unwrap();
    again.flush().unwrap();
    let ch = ClickHouse::new();
    assert_eq!(ch.rows(&db).len(), 100);
    assert_eq!((again.stats().rows_skipped, again.stats().offset_lookups), (0, 0));
    ch.drop_db(&db);
}
