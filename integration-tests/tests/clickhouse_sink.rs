//! ClickHouse sink against the real server (`CLICKHOUSE_URL`): schema init,
//! batching, the materialized views, and an outage while a batch is pending.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use recflow_integration_tests::{service, unique};
use recflow_schemas::{Action, Event, Output, ValidationLimits, Validator};
use recflow_sinks::clickhouse::{
    init, with_db, ITEM_STATS_DAILY_QUERY, METRICS_HOURLY_QUERY, USER_BEHAVIORS_COUNT_QUERY,
};
use recflow_sinks::{ClickHouseConfig, ClickHouseSink, Sink};
use recflow_sources::generator::{events, GenConfig};
use serde::Deserialize;

/// The fault test stops the server: no other test of this file may run meanwhile.
static SERVER: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERVER.lock().unwrap_or_else(|p| p.into_inner())
}

fn config() -> ClickHouseConfig {
    ClickHouseConfig { url: service("CLICKHOUSE_URL"), database: unique("rf_ch"), ..Default::default() }
}

/// `n` generated events, validated; spread over ~3 days so hours and days vary.
fn gen_events(n: u64, seed: u64) -> Vec<Event> {
    let cfg = GenConfig { events: n, seed, step_ms: 100_000, tenants: 3, items: 300, ..Default::default() };
    let v = Validator::new(ValidationLimits::default());
    let now = recflow_schemas::validate::now_ms();
    events(&cfg).map(|p| v.validate(&p, None, now).expect("generated events are valid")).collect()
}

fn raws(events: &[Event]) -> Vec<Output> {
    events.iter().map(|e| Output::Raw(Box::new(e.clone().into()))).collect()
}

/// Test-side reader: its own client and runtime, independent of the sink's.
struct Reader {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
    db: String,
}

impl Reader {
    fn new(cfg: &ClickHouseConfig) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = clickhouse::Client::default().with_url(&cfg.url).with_validation(false);
        Reader { rt, client, db: cfg.database.clone() }
    }

    fn one<T: clickhouse::RowOwned + clickhouse::RowRead>(&self, sql: &str) -> T {
        self.rt.block_on(self.client.query(&with_db(sql, &self.db)).fetch_one::<T>()).unwrap()
    }

    fn count(&self) -> u64 {
        self.one::<u64>("SELECT count() FROM {db}.user_behaviors")
    }

    /// Exact distinct events over all tenants, via the canonical per-tenant query.
    fn distinct_events(&self, tenants: &[String]) -> u64 {
        tenants
            .iter()
            .map(|t| {
                let q = self.client.query(&with_db(USER_BEHAVIORS_COUNT_QUERY, &self.db)).bind(t.as_str());
                self.rt.block_on(q.fetch_one::<u64>()).unwrap()
            })
            .sum()
    }

    fn drop_db(&self) {
        self.rt.block_on(self.client.query(&format!("DROP DATABASE IF EXISTS `{}`", self.db)).execute()).unwrap();
    }
}

fn tenants(events: &[Event]) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = events.iter().map(|e| e.tenant_id.to_string()).collect();
    set.into_iter().collect()
}

#[test]
fn init_is_idempotent() {
    let _g = lock();
    let cfg = config();
    let t = Instant::now();
    let first = init(&cfg).unwrap();
    let second = init(&cfg).unwrap();
    assert_eq!(first, second);
    let r = Reader::new(&cfg);
    let names = r.rt.block_on(
        r.client
            .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
            .bind(cfg.database.as_str())
            .fetch_all::<String>(),
    );
    assert_eq!(
        names.unwrap(),
        ["item_stats_daily", "item_stats_daily_mv", "metrics_hourly", "metrics_hourly_mv", "user_behaviors"]
    );
    eprintln!("init x2 ({first:?}): {:?}", t.elapsed());
    r.drop_db();
}

/// Writes `events` in chunks of `chunk`, noting each insert's size as it happens.
fn write_noting_batches(sink: &mut ClickHouseSink, events: &[Event], chunk: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut seen = 0;
    let mut note = |s: &ClickHouseSink, sizes: &mut Vec<usize>| {
        let st = s.stats();
        assert!(st.batches_inserted - seen <= 1, "one chunk is smaller than a batch");
        if st.batches_inserted > seen {
            sizes.push(st.last_batch_rows);
            seen = st.batches_inserted;
        }
    };
    for part in raws(events).chunks(chunk) {
        sink.write(part).unwrap();
        note(sink, &mut sizes);
    }
    sink.flush().unwrap();
    note(sink, &mut sizes);
    sizes
}

#[test]
fn batches_of_1000_then_flush() {
    let _g = lock();
    let cfg = config();
    let evs = gen_events(2500, 11);
    let mut sink = ClickHouseSink::connect(&cfg).unwrap();
    let t = Instant::now();
    let sizes = write_noting_batches(&mut sink, &evs, 100);
    let took = t.elapsed();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert_eq!((sink.rows_inserted(), sink.retries(), sink.errors()), (2500, 0, 0));
    assert!(sink.last_batch_latency().is_some());
    assert_eq!(sink.buffered_rows(), 0);
    let r = Reader::new(&cfg);
    assert_eq!(r.count(), 2500);
    assert_eq!(r.distinct_events(&tenants(&evs)), 2500);
    eprintln!("2500 rows in 3 inserts: {took:?}, last insert {:?}", sink.last_batch_latency().unwrap());
    r.drop_db();
}

#[test]
fn batch_closes_by_age_on_tick() {
    let _g = lock();
    let cfg = ClickHouseConfig { batch_max_age_secs: 0.2, ..config() };
    let evs = gen_events(10, 12);
    let mut sink = ClickHouseSink::connect(&cfg).unwrap();
    sink.write(&raws(&evs)).unwrap();
    assert_eq!(sink.rows_inserted(), 0);
    std::thread::sleep(Duration::from_millis(250));
    sink.write(&[]).unwrap(); // tick
    assert_eq!((sink.rows_inserted(), sink.buffered_rows()), (10, 0));
    let r = Reader::new(&cfg);
    assert_eq!(r.count(), 10);
    r.drop_db();
}

#[derive(Debug, Deserialize, clickhouse::Row, PartialEq)]
struct HourRow {
    tenant_id: String,
    scenario_id: String,
    experiment_id: String,
    variant: String,
    hour: u32,
    impressions: u64,
    clicks: u64,
    views: u64,
    likes: u64,
    shares: u64,
    comments: u64,
    add_carts: u64,
    orders: u64,
    payments: u64,
    watch_duration_sum: f64,
    watch_duration_count: u64,
    completion_rate_sum: f64,
    completion_rate_count: u64,
    gmv: f64,
}

#[derive(Debug, Deserialize, clickhouse::Row, PartialEq)]
struct DayRow {
    tenant_id: String,
    scenario_id: String,
    item_id: String,
    /// Date: days since the epoch.
    day: u16,
    counts: [u64; 12],
}

/// Expected metrics_hourly rows, computed from the events alone.
fn expected_hours(evs: &[Event]) -> BTreeMap<(String, String, String, String, u32), HourRow> {
    let mut m = BTreeMap::new();
    for e in evs {
        let hour = (e.ts.div_euclid(3_600_000) * 3600) as u32;
        let key = (
            e.tenant_id.to_string(),
            e.scenario_id.to_string(),
            e.experiment_id.to_string(),
            e.variant.to_string(),
            hour,
        );
        let r = m.entry(key.clone()).or_insert_with(|| HourRow {
            tenant_id: key.0,
            scenario_id: key.1,
            experiment_id: key.2,
            variant: key.3,
            hour,
            impressions: 0,
            clicks: 0,
            views: 0,
            likes: 0,
            shares: 0,
            comments: 0,
            add_carts: 0,
            orders: 0,
            payments: 0,
            watch_duration_sum: 0.0,
            watch_duration_count: 0,
            completion_rate_sum: 0.0,
            completion_rate_count: 0,
            gmv: 0.0,
        });
        match e.action {
            Action::Impression => r.impressions += 1,
            Action::Click => r.clicks += 1,
            Action::View | Action::Play => r.views += 1,
            Action::Like => r.likes += 1,
            Action::Share => r.shares += 1,
            Action::Comment => r.comments += 1,
            Action::AddCart => r.add_carts += 1,
            Action::Order => r.orders += 1,
            Action::Payment => {
                r.payments += 1;
                r.gmv += e.amount.unwrap_or(0.0);
            }
            Action::Read | Action::Learn => {}
        }
        if let Some(w) = e.watch_duration {
            r.watch_duration_sum += w;
            r.watch_duration_count += 1;
        }
        if let Some(c) = e.completion_rate {
            r.completion_rate_sum += c;
            r.completion_rate_count += 1;
        }
    }
    m
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn views_match_independent_counts() {
    let _g = lock();
    let cfg = config();
    let evs = gen_events(2500, 13);
    let mut sink = ClickHouseSink::connect(&cfg).unwrap();
    sink.write(&raws(&evs)).unwrap();
    sink.flush().unwrap();
    let r = Reader::new(&cfg);
    let t = Instant::now();

    let want = expected_hours(&evs);
    let mut got = Vec::new();
    for tenant in tenants(&evs) {
        let q = r
            .client
            .query(&with_db(METRICS_HOURLY_QUERY, &r.db))
            .bind(tenant.as_str())
            .bind(0u32)
            .bind(4_000_000_000u32);
        got.extend(r.rt.block_on(q.fetch_all::<HourRow>()).unwrap());
    }
    assert!(want.len() > 10, "the events span several hours and variants");
    assert_eq!(got.len(), want.len());
    for g in &got {
        let w =
            &want[&(g.tenant_id.clone(), g.scenario_id.clone(), g.experiment_id.clone(), g.variant.clone(), g.hour)];
        let counts = |r: &HourRow| {
            [
                r.impressions,
                r.clicks,
                r.views,
                r.likes,
                r.shares,
                r.comments,
                r.add_carts,
                r.orders,
                r.payments,
                r.watch_duration_count,
                r.completion_rate_count,
            ]
        };
        assert_eq!(counts(g), counts(w), "{g:?}");
        assert!(
            close(g.watch_duration_sum, w.watch_duration_sum)
                && close(g.completion_rate_sum, w.completion_rate_sum)
                && close(g.gmv, w.gmv),
            "{g:?} vs {w:?}"
        );
    }

    let mut want_days: BTreeMap<(String, String, String, u16), [u64; 12]> = BTreeMap::new();
    for e in &evs {
        let day = e.ts.div_euclid(86_400_000) as u16;
        want_days
            .entry((e.tenant_id.to_string(), e.scenario_id.to_string(), e.item_id.to_string(), day))
            .or_default()[e.action.index()] += 1;
    }
    let mut got_days = BTreeMap::new();
    for tenant in tenants(&evs) {
        // The canonical query selects 12 count columns; read them as one array-shaped tuple.
        let q = r
            .client
            .query(&with_db(ITEM_STATS_DAILY_QUERY, &r.db))
            .bind(tenant.as_str())
            .bind("1970-01-02")
            .bind("2100-01-01");
        for d in r.rt.block_on(q.fetch_all::<DayRow>()).unwrap() {
            got_days.insert((d.tenant_id, d.scenario_id, d.item_id, d.day), d.counts);
        }
    }
    assert!(want_days.keys().map(|k| k.3).collect::<HashSet<_>>().len() >= 2, "the events span several days");
    assert_eq!(got_days, want_days);
    eprintln!("{} hour rows, {} item-day rows checked in {:?}", got.len(), got_days.len(), t.elapsed());
    r.drop_db();
}

fn services(script: &str) {
    let path = format!("{}/services/{script}", env!("CARGO_MANIFEST_DIR"));
    let st = std::process::Command::new("bash").arg(&path).arg("clickhouse").status().unwrap();
    assert!(st.success(), "{script} clickhouse failed");
}

#[test]
fn outage_while_batch_pending_is_retried_exactly_once() {
    let _g = lock();
    let cfg = config();
    let evs = gen_events(2000, 14);
    let all = raws(&evs);
    let mut sink = ClickHouseSink::connect(&cfg).unwrap();
    sink.write(&all[..500]).unwrap();
    assert_eq!((sink.rows_inserted(), sink.buffered_rows()), (0, 500));

    services("stop.sh");
    let down_at = Instant::now();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        services("start.sh");
        down_at.elapsed()
    });
    // Fills the pending batch: its insert fails until the server is back, then succeeds.
    let t = Instant::now();
    let result = sink.write(&all[500..1000]);
    let blocked = t.elapsed();
    let after_outage = sink.stats();
    let down_for = restarter.join().unwrap();
    result.unwrap();
    sink.write(&all[1000..]).unwrap();
    sink.flush().unwrap();
    assert!(sink.retries() > 0, "the insert was retried");
    assert_eq!((after_outage.batches_inserted, after_outage.last_batch_rows), (1, 1000));
    assert_eq!(sink.errors(), sink.retries(), "every failure was retried");
    assert_eq!((sink.rows_inserted(), sink.buffered_rows()), (2000, 0));

    let r = Reader::new(&cfg);
    assert_eq!(r.count(), 2000);
    assert_eq!(r.distinct_events(&tenants(&evs)), 2000, "no duplicates");
    let hourly_events = r.one::<u64>(
        "SELECT toUInt64(sum(impressions + clicks + views + likes + shares + comments + add_carts + orders + payments)) FROM {db}.metrics_hourly",
    );
    let daily_events = r.one::<u64>(
        "SELECT toUInt64(sum(impressions + clicks + views + plays + reads + learns + likes + shares + comments + add_carts + orders + payments)) FROM {db}.item_stats_daily",
    );
    let counted = evs.iter().filter(|e| !matches!(e.action, Action::Read | Action::Learn)).count() as u64;
    assert_eq!((hourly_events, daily_events), (counted, 2000), "views counted every row once");
    eprintln!(
        "outage: server down {down_for:?}; write blocked {blocked:?}; {} retries; that insert incl. retries {:?}",
        sink.retries(),
        after_outage.last_batch_latency
    );
    r.drop_db();
}
