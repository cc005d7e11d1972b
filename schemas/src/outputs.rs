//! What operators hand to sinks.

use serde::{Deserialize, Serialize};

use crate::{Event, ProfileDoc, Str};

/// Where a record came from: file line or Kafka topic/partition/offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourcePos {
    /// 1-based line of a JSONL file (`-` is stdin).
    File { path: String, line: u64 },
    /// A Kafka record.
    Kafka { topic: String, partition: i32, offset: i64 },
}

/// A rejected or late record on its way to the dead-letter topic/file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Reason code: oversize, bad_json, ..., late.
    pub reason: String,
    /// The offending field, when one is to blame.
    pub field: Option<String>,
    /// Human-readable detail.
    pub detail: String,
    pub source: SourcePos,
    /// The payload, lossily decoded and cut to 4 KiB.
    pub payload: String,
}

/// Top-K of one hot-items window for a (tenant, scenario[, category]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HotList {
    pub tenant_id: Str,
    pub scenario_id: Str,
    /// `None` for the scenario-wide top 500.
    pub category: Option<Str>,
    /// Window end (ms), exclusive.
    pub window_end: i64,
    /// (item, score), score desc then item asc.
    pub entries: Vec<(Str, f64)>,
}

impl HotList {
    /// The Redis key this list replaces.
    pub fn key(&self) -> String {
        match &self.category {
            None => format!("hot:items:{}:{}", self.tenant_id, self.scenario_id),
            Some(c) => format!("hot:items:{}:{}:{}", self.tenant_id, self.scenario_id, c),
        }
    }
}

/// Counts per action (index = `Action::index`) of applied events of one item
/// in one hot-items pane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemStatsDelta {
    pub tenant_id: Str,
    /// The scenario whose events these are: an item seen in several scenarios
    /// gets one delta per scenario and pane (from different workers), all
    /// adding to the one `item:stats:{tenant}:{item}` HASH, so a replay guard
    /// must be versioned per (tenant, scenario, item), not per key.
    pub scenario_id: Str,
    pub item_id: Str,
    pub counts: [u64; 12],
    /// End (ms) of the pane the counts cover: the version a replay must not apply twice.
    pub pane_end: i64,
}

impl ItemStatsDelta {
    /// The Redis HASH key.
    pub fn key(&self) -> String {
        format!("item:stats:{}:{}", self.tenant_id, self.item_id)
    }
}

/// One minute of metrics for one (experiment, variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub experiment_id: Str,
    pub variant: Str,
    pub impressions: u64,
    pub clicks: u64,
    pub views: u64,
    pub likes: u64,
    pub shares: u64,
    pub comments: u64,
    pub add_carts: u64,
    pub orders: u64,
    pub payments: u64,
    pub ctr: f64,
    pub avg_watch_duration: f64,
    pub avg_completion_rate: f64,
    pub conversion_rate: f64,
    pub interaction_rate: f64,
    pub gmv: f64,
}

impl MetricsRow {
    /// (metric name, value) pairs in a fixed order, as Redis fields use them.
    pub fn fields(&self) -> [(&'static str, f64); 15] {
        [
            ("impressions", self.impressions as f64),
            ("clicks", self.clicks as f64),
            ("views", self.views as f64),
            ("likes", self.likes as f64),
            ("shares", self.shares as f64),
            ("comments", self.comments as f64),
            ("add_carts", self.add_carts as f64),
            ("orders", self.orders as f64),
            ("payments", self.payments as f64),
            ("ctr", self.ctr),
            ("avg_watch_duration", self.avg_watch_duration),
            ("avg_completion_rate", self.avg_completion_rate),
            ("conversion_rate", self.conversion_rate),
            ("interaction_rate", self.interaction_rate),
            ("gmv", self.gmv),
        ]
    }
}

/// All (experiment, variant) rows of one closed minute of a (tenant, scenario).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsWindow {
    pub tenant_id: Str,
    pub scenario_id: Str,
    /// Minute start (ms).
    pub window_start: i64,
    /// Sorted by (experiment_id, variant).
    pub rows: Vec<MetricsRow>,
}

impl MetricsWindow {
    /// The Redis HASH key.
    pub fn key(&self) -> String {
        format!("metrics:realtime:{}:{}", self.tenant_id, self.scenario_id)
    }
}

/// A Kafka record's position: stored beside raw-log rows so a replay skips them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPos {
    pub topic: Str,
    pub partition: i32,
    pub offset: i64,
}

/// A valid event for the raw analytical log, with its Kafka position (none for files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawEvent {
    pub event: Event,
    pub source: Option<KafkaPos>,
}

impl From<Event> for RawEvent {
    fn from(event: Event) -> Self {
        RawEvent { event, source: None }
    }
}

impl std::ops::Deref for RawEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

/// Everything a sink may receive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// A valid event for the raw analytical log (late ones too).
    Raw(Box<RawEvent>),
    /// A rejected or late record.
    Dead(Box<DeadLetter>),
    /// A closed hot-items window's top-K.
    Hot(HotList),
    /// Cumulative action counts to add to an item's stats.
    ItemStats(ItemStatsDelta),
    /// A user profile after a window closed.
    Profile(std::sync::Arc<ProfileDoc>),
    /// A closed minute of experiment metrics.
    Metrics(MetricsWindow),
}
