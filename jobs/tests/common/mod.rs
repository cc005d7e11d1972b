//! Shared helpers of the end-to-end tests: an event model that renders JSON
//! lines, a naive reference implementation of the four jobs written from
//! MISSION.md ("Behavior event", "Event time", "The four jobs"), a runner of
//! the real pipeline and a tolerant comparison of store dumps.
//!
//! The reference is deliberately simple: it keeps every applied event in a
//! list and recomputes every output from scratch, so its correctness can be
//! checked by reading it against the spec.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use recflow::commands::run::{run_embedded, EmbeddedOutputs};
use recflow::config::Config;
use recflow_operators::Counters;
use recflow_schemas::Reason;
use recflow_sinks::{FileMode, SharedFile};
use recflow_sources::{Catalog, JsonlFile};

/// Action names in the spec's order.
pub const ACTION_NAMES: [&str; 12] = [
    "impression",
    "click",
    "view",
    "play",
    "read",
    "learn",
    "like",
    "share",
    "comment",
    "add_cart",
    "order",
    "payment",
];

/// Default weights from MISSION.md "Event time", same order as [`ACTION_NAMES`].
pub const WEIGHTS: [u64; 12] = [0, 2, 1, 1, 1, 1, 3, 5, 4, 6, 8, 10];

const IMPRESSION: usize = 0;
const CLICK: usize = 1;
const VIEW: usize = 2;
const PLAY: usize = 3;
const LIKE: usize = 6;
const SHARE: usize = 7;
const COMMENT: usize = 8;
const ADD_CART: usize = 9;
const ORDER: usize = 10;
const PAYMENT: usize = 11;

const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Index of an action name.
pub fn action_index(name: &str) -> Option<usize> {
    ACTION_NAMES.iter().position(|a| *a == name)
}

/// A valid behavior event as a test builds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ev {
    /// `None`: the line has no event_id and the pipeline derives one.
    pub event_id: Option<String>,
    pub tenant: String,
    pub scenario: String,
    pub user: String,
    pub item: String,
    pub action: usize,
    pub ts: i64,
    /// Render the timestamp as an RFC 3339 string instead of epoch ms.
    pub ts_rfc3339: bool,
    pub experiment: Option<String>,
    pub variant: Option<String>,
    pub category: Option<String>,
    pub watch_duration: Option<f64>,
    pub completion_rate: Option<f64>,
    pub amount: Option<f64>,
    pub context: bool,
}

impl Ev {
    /// A minimal event.
    pub fn new(tenant: &str, scenario: &str, user: &str, item: &str, action: usize, ts: i64) -> Ev {
        Ev {
            event_id: None,
            tenant: tenant.into(),
            scenario: scenario.into(),
            user: user.into(),
            item: item.into(),
            action,
            ts,
            ts_rfc3339: false,
            experiment: None,
            variant: None,
            category: None,
            watch_duration: None,
            completion_rate: None,
            amount: None,
            context: false,
        }
    }

    /// The event as a JSON object (the wire format of MISSION.md).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(id) = &self.event_id {
            m.insert("event_id".into(), id.as_str().into());
        }
        m.insert("tenant_id".into(), self.tenant.as_str().into());
        m.insert("scenario_id".into(), self.scenario.as_str().into());
        m.insert("user_id".into(), self.user.as_str().into());
        m.insert("item_id".into(), self.item.as_str().into());
        m.insert("action_type".into(), ACTION_NAMES[self.action].into());
        if self.ts_rfc3339 {
            m.insert("timestamp".into(), rfc3339(self.ts).into());
        } else {
            m.insert("timestamp".into(), self.ts.into());
        }
        if let Some(x) = &self.experiment {
            m.insert("experiment_id".into(), x.as_str().into());
        }
        if let Some(x) = &self.variant {
            m.insert("variant".into(), x.as_str().into());
        }
        if let Some(x) = &self.category {
            m.insert("category".into(), x.as_str().into());
        }
        if self.context {
            m.insert("context".into(), json!({"device_type": "mobile", "location": "Chengdu"}));
        }
        let mut extra = Map::new();
        if let Some(v) = self.watch_duration {
            extra.insert("watch_duration".into(), v.into());
        }
        if let Some(v) = self.completion_rate {
            extra.insert("completion_rate".into(), v.into());
        }
        if let Some(v) = self.amount {
            extra.insert("amount".into(), v.into());
        }
        if !extra.is_empty() {
            extra.insert("note".into(), "ignored".into());
            m.insert("extra".into(), Value::Object(extra));
        }
        Value::Object(m)
    }

    /// Reads a valid event back from its JSON (for generator output).
    pub fn from_json(v: &Value) -> Ev {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let extra = |k: &str| v.get("extra").and_then(|x| x.get(k)).and_then(Value::as_f64);
        let ts = match &v["timestamp"] {
            Value::Number(n) => n.as_i64().expect("integer timestamp"),
            Value::String(s) => parse_rfc3339(s),
            other => panic!("bad timestamp {other}"),
        };
        Ev {
            event_id: s("event_id"),
            tenant: s("tenant_id").expect("tenant_id"),
            scenario: s("scenario_id").expect("scenario_id"),
            user: s("user_id").expect("user_id"),
            item: s("item_id").expect("item_id"),
            action: action_index(v["action_type"].as_str().expect("action_type")).expect("known action"),
            ts,
            ts_rfc3339: v["timestamp"].is_string(),
            experiment: s("experiment_id"),
            variant: s("variant"),
            category: s("category"),
            watch_duration: extra("watch_duration"),
            completion_rate: extra("completion_rate"),
            amount: extra("amount"),
            context: v.get("context").is_some_and(|c| !c.is_null()),
        }
    }
}

/// `2026-01-04T10:00:00.250Z`.
pub fn rfc3339(ms: i64) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).expect("timestamp in range");
    dt.format(&time::format_description::well_known::Rfc3339).expect("formattable")
}

fn parse_rfc3339(s: &str) -> i64 {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    (dt.unix_timestamp_nanos() / 1_000_000) as i64
}

/// One input line.
// Nearly every line is valid: boxing the event would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Line {
    /// A valid event: the event, its exact line bytes and its effective id.
    Valid { ev: Ev, text: Vec<u8>, id: String },
    /// A line the validator must reject with `reason` (a reason code).
    Invalid { text: Vec<u8>, reason: &'static str },
    /// An empty line: skipped, not invalid, but it still counts as a line.
    Blank,
}

impl Line {
    /// A valid line rendered from `ev`.
    pub fn valid(ev: Ev) -> Line {
        let text = serde_json::to_vec(&ev.to_json()).expect("serializable");
        Line::from_valid_text(ev, text)
    }

    /// A valid line with given bytes (they must encode `ev`).
    pub fn from_valid_text(ev: Ev, text: Vec<u8>) -> Line {
        let id = match &ev.event_id {
            Some(id) => id.clone(),
            // The spec only says "a deterministic id derived (hash of the
            // payload)"; which hash is the implementation's choice.
            None => recflow_schemas::validate::derived_event_id(&text).to_string(),
        };
        Line::Valid { ev, text, id }
    }

    /// An invalid line.
    pub fn invalid(text: impl Into<Vec<u8>>, reason: &'static str) -> Line {
        Line::Invalid { text: text.into(), reason }
    }
}

/// The lines joined with '\n' (each line terminated).
pub fn render(lines: &[Line]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        match l {
            Line::Valid { text, .. } | Line::Invalid { text, .. } => out.extend_from_slice(text),
            Line::Blank => {}
        }
        out.push(b'\n');
    }
    out
}

/// The reason code of a [`Reason`].
pub fn reason_of(code: &str) -> Reason {
    *Reason::ALL.iter().find(|r| r.code() == code).unwrap_or_else(|| panic!("unknown reason {code}"))
}

// ---------------------------------------------------------------------------
// Reference implementation
// ---------------------------------------------------------------------------

/// Knobs of the reference (defaults of MISSION.md).
#[derive(Clone, Debug)]
pub struct RefConfig {
    pub allowed_lateness_ms: i64,
    pub top_k: usize,
    pub category_top_k: usize,
    /// (tenant, item) -> category.
    pub catalog: HashMap<(String, String), String>,
}

impl Default for RefConfig {
    fn default() -> Self {
        RefConfig { allowed_lateness_ms: 300_000, top_k: 500, category_top_k: 200, catalog: HashMap::new() }
    }
}

impl RefConfig {
    /// The same catalog for the pipeline.
    pub fn pipeline_catalog(&self) -> Catalog {
        let mut c = Catalog::default();
        for ((tenant, item), category) in &self.catalog {
            let it: recflow_schemas::Item = serde_json::from_value(json!({
                "tenant_id": tenant, "item_id": item, "category": category
            }))
            .expect("catalog item");
            c.upsert(&it);
        }
        c
    }

    /// The pipeline config with the same knobs.
    pub fn pipeline_config(&self) -> Config {
        let mut cfg = Config::default();
        cfg.pipeline.allowed_lateness_secs = (self.allowed_lateness_ms / 1000) as u64;
        cfg.hot_items.top_k = self.top_k;
        cfg.hot_items.category_top_k = self.category_top_k;
        cfg.embedded.dlq_path = String::new();
        cfg.embedded.raw_log_path = String::new();
        cfg
    }
}

/// (tenant, item) -> category of a catalog in JSON Lines (`gen_events.py catalog`).
pub fn parse_catalog(text: &[u8]) -> HashMap<(String, String), String> {
    let mut m = HashMap::new();
    for line in text.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line).expect("catalog line is JSON");
        if let (Some(t), Some(i), Some(c)) = (v["tenant_id"].as_str(), v["item_id"].as_str(), v["category"].as_str()) {
            m.insert((t.to_string(), i.to_string()), c.to_string());
        }
    }
    m
}

/// Valid lines from JSON Lines text known to hold only valid events.
pub fn valid_lines(text: &[u8]) -> Vec<Line> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_slice(l).expect("event line is JSON");
            Line::from_valid_text(Ev::from_json(&v), l.to_vec())
        })
        .collect()
}

/// What the reference computes.
#[derive(Debug, Default)]
pub struct RefOut {
    /// The expected store dump (hot lists truncated to K).
    pub dump: BTreeMap<String, Value>,
    /// For every hot key: the full ranking of the window it shows (untruncated),
    /// so near-ties caused by float rounding can be told from real errors.
    pub hot_full: BTreeMap<String, Vec<(String, f64)>>,
    /// Valid events (applied + late).
    pub valid: u64,
    /// 1-based line numbers of late events.
    pub late_lines: Vec<u64>,
    /// (line, reason code) of invalid lines.
    pub invalid_lines: Vec<(u64, &'static str)>,
}

impl RefOut {
    /// Expected DLQ content as sorted (line, reason).
    pub fn expected_dlq(&self) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .invalid_lines
            .iter()
            .map(|(l, r)| (*l, r.to_string()))
            .chain(self.late_lines.iter().map(|l| (*l, "late".to_string())))
            .collect();
        v.sort();
        v
    }

    /// Expected count of rejections with reason `code`.
    pub fn invalid_count(&self, code: &str) -> u64 {
        self.invalid_lines.iter().filter(|(_, r)| *r == code).count() as u64
    }
}

/// An applied (non-late) event with its resolved id and category.
struct Applied<'a> {
    ev: &'a Ev,
    id: &'a str,
    category: String,
}

fn floor_to(ts: i64, unit: i64) -> i64 {
    ts.div_euclid(unit) * unit
}

/// Order-independent sum: equal multisets of terms give bit-equal sums.
fn sorted_sum(mut terms: Vec<f64>) -> f64 {
    terms.sort_by(f64::total_cmp);
    terms.iter().sum()
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Runs the four jobs naively over `lines` (file order, one partition).
pub fn reference(lines: &[Line], cfg: &RefConfig) -> RefOut {
    let mut out = RefOut::default();

    // Event time: watermark = max ts of earlier valid events - allowed lateness.
    let mut max_ts: Option<i64> = None;
    let mut applied: Vec<Applied<'_>> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let no = i as u64 + 1;
        match line {
            Line::Blank => {}
            Line::Invalid { reason, .. } => out.invalid_lines.push((no, reason)),
            Line::Valid { ev, id, .. } => {
                out.valid += 1;
                if let Some(m) = max_ts {
                    if ev.ts < m - cfg.allowed_lateness_ms {
                        out.late_lines.push(no);
                        continue;
                    }
                }
                max_ts = Some(max_ts.map_or(ev.ts, |m| m.max(ev.ts)));
                let category = ev
                    .category
                    .clone()
                    .or_else(|| cfg.catalog.get(&(ev.tenant.clone(), ev.item.clone())).cloned())
                    .unwrap_or_else(|| "unknown".to_string());
                applied.push(Applied { ev, id, category });
            }
        }
    }

    hot_items(&applied, cfg, &mut out);
    item_stats(&applied, &mut out);
    profiles(&applied, &mut out);
    metrics(&applied, &mut out);
    out
}

/// Job 2: sliding 1 h windows every 15 min, decayed weighted score, top-K.
fn hot_items(applied: &[Applied<'_>], cfg: &RefConfig, out: &mut RefOut) {
    const SLIDE: i64 = 15 * MIN_MS;
    const WINDOW: i64 = HOUR_MS;
    const HALF_LIFE: f64 = 30.0 * MIN_MS as f64;

    // (tenant, scenario) -> window start -> item -> events in that window.
    type Panes<'b> = BTreeMap<(String, String), BTreeMap<i64, BTreeMap<String, Vec<usize>>>>;
    let mut panes: Panes<'_> = BTreeMap::new();
    for (idx, a) in applied.iter().enumerate() {
        let first = floor_to(a.ev.ts, SLIDE) - WINDOW + SLIDE;
        let mut s = first;
        while s <= a.ev.ts {
            assert!(s <= a.ev.ts && a.ev.ts < s + WINDOW);
            panes
                .entry((a.ev.tenant.clone(), a.ev.scenario.clone()))
                .or_default()
                .entry(s)
                .or_default()
                .entry(a.ev.item.clone())
                .or_default()
                .push(idx);
            s += SLIDE;
        }
    }

    let rank = |mut v: Vec<(String, f64)>| {
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    // key -> (window start, full ranking); later windows overwrite earlier ones.
    let mut latest: BTreeMap<String, (usize, Vec<(String, f64)>)> = BTreeMap::new();
    for ((tenant, scenario), windows) in &panes {
        for (&s, items) in windows {
            let end = s + WINDOW;
            let mut all = Vec::new();
            let mut by_cat: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
            for (item, idxs) in items {
                let terms = idxs
                    .iter()
                    .map(|&i| {
                        let e = applied[i].ev;
                        let age = (end - e.ts) as f64;
                        WEIGHTS[e.action] as f64 * (-age / HALF_LIFE).exp2()
                    })
                    .collect();
                let score = sorted_sum(terms);
                if score <= 0.0 {
                    continue;
                }
                // The item's category in this window: that of its latest (ts, event_id).
                let last = idxs
                    .iter()
                    .map(|&i| &applied[i])
                    .max_by(|a, b| (a.ev.ts, a.id).cmp(&(b.ev.ts, b.id)))
                    .expect("non-empty");
                all.push((item.clone(), score));
                by_cat.entry(last.category.clone()).or_default().push((item.clone(), score));
            }
            if !all.is_empty() {
                latest.insert(format!("hot:items:{tenant}:{scenario}"), (cfg.top_k, rank(all)));
            }
            for (cat, list) in by_cat {
                latest.insert(format!("hot:items:{tenant}:{scenario}:{cat}"), (cfg.category_top_k, rank(list)));
            }
        }
    }
    for (key, (k, full)) in latest {
        let shown: Vec<Value> = full.iter().take(k).map(|(m, s)| json!([m, s])).collect();
        out.dump.insert(key.clone(), Value::Array(shown));
        out.hot_full.insert(key, full);
    }
}

/// `item:stats:{tenant}:{item}`: cumulative counts per action of applied events.
fn item_stats(applied: &[Applied<'_>], out: &mut RefOut) {
    let mut stats: BTreeMap<(String, String), [u64; 12]> = BTreeMap::new();
    for a in applied {
        stats.entry((a.ev.tenant.clone(), a.ev.item.clone())).or_insert([0; 12])[a.ev.action] += 1;
    }
    for ((tenant, item), counts) in stats {
        let fields: Map<String, Value> = ACTION_NAMES
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(a, c)| (a.to_string(), Value::from(c)))
            .collect();
        out.dump.insert(format!("item:stats:{tenant}:{item}"), Value::Object(fields));
    }
}

/// Job 3: cumulative profile per (tenant, user, scenario).
fn profiles(applied: &[Applied<'_>], out: &mut RefOut) {
    let mut groups: BTreeMap<(String, String, String), Vec<&Applied<'_>>> = BTreeMap::new();
    for a in applied {
        groups.entry((a.ev.tenant.clone(), a.ev.user.clone(), a.ev.scenario.clone())).or_default().push(a);
    }
    let mut docs = Vec::new();
    for ((tenant, user, scenario), evs) in groups {
        let mut counts = [0u64; 12];
        let mut watch_seconds = Vec::new();
        let mut cat_weight: BTreeMap<String, u64> = BTreeMap::new();
        let mut hours = [0u64; 24];
        let mut recent: HashMap<&str, (i64, &str)> = HashMap::new();
        for a in &evs {
            let e = a.ev;
            counts[e.action] += 1;
            if e.action == VIEW || e.action == PLAY {
                if let Some(d) = e.watch_duration {
                    watch_seconds.push(d);
                }
            }
            *cat_weight.entry(a.category.clone()).or_default() += WEIGHTS[e.action];
            if e.action != IMPRESSION {
                hours[e.ts.div_euclid(HOUR_MS).rem_euclid(24) as usize] += 1;
                let slot = recent.entry(e.item.as_str()).or_insert((e.ts, a.id));
                if (e.ts, a.id) > *slot {
                    *slot = (e.ts, a.id);
                }
            }
        }
        let first_seen = evs.iter().map(|a| a.ev.ts).min().expect("non-empty");
        let last_active = evs.iter().map(|a| a.ev.ts).max().expect("non-empty");
        cat_weight.retain(|_, w| *w > 0);
        let total: u64 = cat_weight.values().sum();
        let scores: Map<String, Value> =
            cat_weight.iter().map(|(c, w)| (c.clone(), Value::from(*w as f64 / total as f64))).collect();
        let mut fav: Vec<(&String, &u64)> = cat_weight.iter().collect();
        fav.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let fav: Vec<Value> = fav.iter().take(3).map(|(c, _)| Value::from(c.as_str())).collect();
        let mut recent: Vec<(&str, (i64, &str))> = recent.into_iter().collect();
        recent.sort_by(|a, b| b.1.cmp(&a.1));
        let recent: Vec<Value> = recent.iter().take(20).map(|(i, _)| Value::from(*i)).collect();
        let counts_obj: Map<String, Value> =
            ACTION_NAMES.iter().zip(counts).map(|(a, c)| (a.to_string(), Value::from(c))).collect();
        let doc = json!({
            "tenant_id": tenant,
            "user_id": user,
            "scenario_id": scenario,
            "counts": counts_obj,
            "watch_count": counts[VIEW] + counts[PLAY],
            "watch_seconds": watch_seconds.iter().sum::<f64>(),
            "category_counts": cat_weight,
            "category_scores": scores,
            "favorite_categories": fav,
            "active_hours": hours.to_vec(),
            "first_seen": first_seen,
            "last_active_at": last_active,
            "recent_items": recent,
            "updated_window": floor_to(last_active, 5 * MIN_MS) + 5 * MIN_MS,
        });
        out.dump.insert(format!("user:profile:{tenant}:{user}:{scenario}"), doc.clone());
        docs.push(doc);
    }
    out.dump.insert("mongo.user_profiles".to_string(), Value::Array(docs));
}

/// Job 4: the latest minute with data per (tenant, scenario).
fn metrics(applied: &[Applied<'_>], out: &mut RefOut) {
    let mut last_minute: BTreeMap<(String, String), i64> = BTreeMap::new();
    for a in applied {
        let m = floor_to(a.ev.ts, MIN_MS);
        let slot = last_minute.entry((a.ev.tenant.clone(), a.ev.scenario.clone())).or_insert(m);
        *slot = (*slot).max(m);
    }
    for ((tenant, scenario), minute) in last_minute {
        let mut rows: BTreeMap<(String, String), Vec<&Ev>> = BTreeMap::new();
        for a in applied {
            let e = a.ev;
            if e.tenant == tenant && e.scenario == scenario && floor_to(e.ts, MIN_MS) == minute {
                let exp = e.experiment.clone().unwrap_or_else(|| "none".into());
                let var = e.variant.clone().unwrap_or_else(|| "none".into());
                rows.entry((exp, var)).or_default().push(e);
            }
        }
        let mut fields = Map::new();
        fields.insert("window_start".into(), minute.into());
        for ((exp, var), evs) in rows {
            let n = |acts: &[usize]| evs.iter().filter(|e| acts.contains(&e.action)).count() as u64;
            let impressions = n(&[IMPRESSION]);
            let clicks = n(&[CLICK]);
            let views = n(&[VIEW, PLAY]);
            let likes = n(&[LIKE]);
            let shares = n(&[SHARE]);
            let comments = n(&[COMMENT]);
            let add_carts = n(&[ADD_CART]);
            let orders = n(&[ORDER]);
            let payments = n(&[PAYMENT]);
            let watch: Vec<f64> = evs.iter().filter_map(|e| e.watch_duration).collect();
            let completion: Vec<f64> = evs.iter().filter_map(|e| e.completion_rate).collect();
            let gmv: f64 = evs.iter().filter(|e| e.action == PAYMENT).filter_map(|e| e.amount).sum();
            let values: [(&str, Value); 15] = [
                ("impressions", impressions.into()),
                ("clicks", clicks.into()),
                ("views", views.into()),
                ("likes", likes.into()),
                ("shares", shares.into()),
                ("comments", comments.into()),
                ("add_carts", add_carts.into()),
                ("orders", orders.into()),
                ("payments", payments.into()),
                ("ctr", ratio(clicks, impressions).into()),
                ("avg_watch_duration", mean(&watch).into()),
                ("avg_completion_rate", mean(&completion).into()),
                ("conversion_rate", ratio(orders, clicks).into()),
                ("interaction_rate", ratio(likes + shares + comments, impressions).into()),
                ("gmv", gmv.into()),
            ];
            for (name, v) in values {
                fields.insert(format!("{exp}:{var}:{name}"), v);
            }
        }
        out.dump.insert(format!("metrics:realtime:{tenant}:{scenario}"), Value::Object(fields));
    }
}

// ---------------------------------------------------------------------------
// Running the pipeline
// ---------------------------------------------------------------------------

/// What one pipeline run produced.
pub struct Run {
    pub dump: Value,
    pub counters: Arc<Counters>,
    /// DLQ records (parsed JSON lines), if a DLQ file was requested.
    pub dlq: Vec<Value>,
}

impl Run {
    /// DLQ content as sorted (line, reason).
    pub fn dlq_lines(&self) -> Vec<(u64, String)> {
        let mut v: Vec<(u64, String)> = self
            .dlq
            .iter()
            .map(|d| {
                let line =
                    d["source"]["line"].as_u64().unwrap_or_else(|| panic!("DLQ record without source line: {d}"));
                (line, d["reason"].as_str().unwrap_or("?").to_string())
            })
            .collect();
        v.sort();
        v
    }
}

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "recflow-test-{}-{}-{}.jsonl",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs all four jobs over `input` with `workers` workers and `block_bytes` blocks.
pub fn run_pipeline(
    cfg: &Config,
    input: Vec<u8>,
    catalog: Arc<Catalog>,
    workers: usize,
    block_bytes: usize,
    with_dlq: bool,
) -> Run {
    let file = JsonlFile::from_reader("mem", Box::new(Cursor::new(input)), block_bytes, cfg.pipeline.max_event_bytes);
    let dlq_path = with_dlq.then(|| temp_path("dlq"));
    let dlq = dlq_path.as_ref().map(|p| SharedFile::open(p, FileMode::Truncate).expect("open dlq"));
    let counters = Arc::new(Counters::new(workers));
    let outputs = EmbeddedOutputs { dlq: dlq.clone(), raw_log: None };
    let store = run_embedded(cfg, file, catalog, workers, outputs, counters.clone()).expect("pipeline run");
    let mut records = Vec::new();
    if let (Some(f), Some(p)) = (dlq, dlq_path) {
        f.flush().expect("flush dlq");
        drop(f);
        let text = std::fs::read_to_string(&p).expect("read dlq");
        let _ = std::fs::remove_file(&p);
        for l in text.lines() {
            records.push(serde_json::from_str(l).expect("DLQ line is JSON"));
        }
    }
    Run { dump: store.dump(), counters, dlq: records }
}

// ---------------------------------------------------------------------------
// Comparing dumps
// ---------------------------------------------------------------------------

/// Floats: within 1e-9 relative or 1e-12 absolute.
pub fn close(a: f64, b: f64) -> bool {
    let d = (a - b).abs();
    d <= 1e-12 || d <= 1e-9 * a.abs().max(b.abs())
}

fn cmp_value(path: &str, actual: &Value, expected: &Value, errs: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            if e.is_f64() {
                match a.as_f64() {
                    Some(af) if close(af, e.as_f64().unwrap_or(f64::NAN)) => {}
                    _ => errs.push(format!("{path}: got {a}, expected {e}")),
                }
            } else if a.is_f64() || a.as_i64() != e.as_i64() || a.as_u64() != e.as_u64() {
                errs.push(format!("{path}: got {a}, expected integer {e}"));
            }
        }
        (Value::Object(a), Value::Object(e)) => {
            for k in e.keys().filter(|k| !a.contains_key(*k)) {
                errs.push(format!("{path}.{k}: missing (expected {})", e[k]));
            }
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                errs.push(format!("{path}.{k}: unexpected (got {})", a[k]));
            }
            for (k, ev) in e {
                if let Some(av) = a.get(k) {
                    cmp_value(&format!("{path}.{k}"), av, ev, errs);
                }
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                errs.push(format!("{path}: length {} expected {}: got {actual} expected {expected}", a.len(), e.len()));
                return;
            }
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                cmp_value(&format!("{path}[{i}]"), av, ev, errs);
            }
        }
        _ => {
            if actual != expected {
                errs.push(format!("{path}: got {actual}, expected {expected}"));
            }
        }
    }
}

/// A ZSET against the reference's full ranking of the same window: same
/// length, scores close position by position, members equal, except that
/// two members may swap when their reference scores differ by float noise
/// only (exact ties must follow item_id order).
fn cmp_zset(key: &str, actual: &Value, full: &[(String, f64)], k: usize, errs: &mut Vec<String>) {
    let Some(arr) = actual.as_array() else {
        errs.push(format!("{key}: not an array: {actual}"));
        return;
    };
    let want = full.len().min(k);
    let shown = || {
        let exp: Vec<_> = full.iter().take(want + 2).collect();
        format!("got {actual}, expected (first {} of {}) {exp:?}", want, full.len())
    };
    if arr.len() != want {
        errs.push(format!("{key}: {} entries, expected {want}; {}", arr.len(), shown()));
        return;
    }
    let score_of: HashMap<&str, f64> = full.iter().map(|(m, s)| (m.as_str(), *s)).collect();
    let mut seen = BTreeSet::new();
    for (i, entry) in arr.iter().enumerate() {
        let (Some(m), Some(s)) = (entry[0].as_str(), entry[1].as_f64()) else {
            errs.push(format!("{key}[{i}]: malformed entry {entry}"));
            return;
        };
        if !seen.insert(m) {
            errs.push(format!("{key}: duplicate member {m}"));
        }
        let (em, es) = (&full[i].0, full[i].1);
        if !close(s, es) {
            errs.push(format!("{key}[{i}]: score {s} expected {es} ({em}); {}", shown()));
            return;
        }
        if m != em {
            let ok = score_of.get(m).is_some_and(|&rs| close(rs, es) && rs != es);
            if !ok {
                errs.push(format!("{key}[{i}]: member {m} expected {em}; {}", shown()));
                return;
            }
        }
    }
}

/// Compares a pipeline dump with the reference; returns every difference.
pub fn diff_dump(actual: &Value, expected: &RefOut, cfg: &RefConfig) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(a) = actual.as_object() else {
        return vec!["dump is not an object".into()];
    };
    let akeys: BTreeSet<&String> = a.keys().collect();
    let ekeys: BTreeSet<&String> = expected.dump.keys().collect();
    for k in ekeys.difference(&akeys) {
        errs.push(format!("missing key {k}: expected {}", expected.dump[*k]));
    }
    for k in akeys.difference(&ekeys) {
        errs.push(format!("unexpected key {k}: {}", a[*k]));
    }
    for (k, ev) in &expected.dump {
        let Some(av) = a.get(k) else { continue };
        if let Some(full) = expected.hot_full.get(k) {
            let kk = if k.matches(':').count() == 3 { cfg.top_k } else { cfg.category_top_k };
            cmp_zset(k, av, full, kk, &mut errs);
        } else {
            cmp_value(k, av, ev, &mut errs);
        }
    }
    errs
}

/// Panics with the first differences if the dump does not match.
pub fn assert_dump_matches(actual: &Value, expected: &RefOut, cfg: &RefConfig, what: &str) {
    let errs = diff_dump(actual, expected, cfg);
    if !errs.is_empty() {
        let n = errs.len();
        let head: Vec<_> = errs.into_iter().take(15).collect();
        panic!("{what}: {n} differences from the reference:\n  {}", head.join("\n  "));
    }
}

/// A tiny deterministic PRNG (SplitMix64) for tests that need randomness
/// outside proptest.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
