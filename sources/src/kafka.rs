//! Kafka source: one consumer-group member per timely worker, subscribed by
//! regex to the per-tenant topics `user-behaviors-{tenant}`.
//!
//! Each worker's [`KafkaSource`] owns a `BaseConsumer` polled with timeout 0,
//! so a worker is never blocked. Consecutive records of one partition become
//! one [`Batch`] whose `prior_max_ts` is that partition's max valid event time
//! before the batch; the partition's max is advanced when the batch is handed
//! out. [`Source::max_ts_floor`] is the min over the worker's non-idle
//! partitions (see [`PartitionTracker::floor`]).
//!
//! Offsets: auto-commit is off. Every batch handed out enters a
//! [`CommitLedger`]; the dataflow reports the batch's release time
//! ([`Source::processed`]) and how far every sink has acknowledged
//! ([`Source::sunk_before`]), and the source commits what that covers, at
//! most every `commit_interval_ms`. Each commit carries the partition's max
//! event time before the committed offset as commit metadata (as Kafka
//! Streams stores its partition time), so a restarted member judges lateness
//! of the replayed records exactly as the first run did.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use recflow_schemas::Validator;

use crate::coverage::Coverage;
use crate::handoff::{Handoff, Handoffs, MemberId};
use crate::ledger::CommitLedger;
use crate::{Batch, Origin, Poll, Record, Rejected, Source};

/// Prefix of the per-tenant input topics.
pub const BEHAVIOR_TOPIC_PREFIX: &str = "user-behaviors-";
/// The dead-letter topic; it matches the input pattern, so sources skip it.
pub const DLQ_TOPIC: &str = "user-behaviors-dlq";
/// The catalog upsert topic.
pub const ITEM_UPDATES_TOPIC: &str = "item-updates";

/// Kafka connection and consumption settings (`[kafka]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Consumer group shared by every worker of every process.
    pub group_id: String,
    /// Input topics: a regex starting with `^` (librdkafka pattern subscription), else one literal topic name.
    pub topic_pattern: String,
    /// Topics matching the pattern that are never consumed (the DLQ).
    pub exclude_topics: Vec<String>,
    /// A partition without messages for this long no longer holds the watermark back.
    pub idle_timeout_secs: u64,
    /// `session.timeout.ms`: a member silent this long leaves the group. Also how fast a group
    /// forms: tansu holds a JoinGroup for about half of it.
    pub session_timeout_ms: u64,
    /// How often librdkafka reports statistics, the source of the consumer-lag metric (0 = off).
    pub statistics_interval_ms: u64,
    /// Most records handed out per poll (one batch).
    pub poll_batch: usize,
    /// Partition count of topics recflow creates.
    pub partitions: i32,
    /// How often new topics matching the pattern are discovered (`topic.metadata.refresh.interval.ms`).
    pub metadata_refresh_ms: u64,
    /// End the input after this long without any message or rebalance, counted from the first
    /// assignment (backfills, tests); `None` = run until stopped.
    pub exit_when_idle_ms: Option<u64>,
    /// Most time between offset commits (ms); also bounds what a restart re-reads beyond the
    /// open windows. Commits happen only for records whose outputs every sink acknowledged.
    pub commit_interval_ms: u64,
    /// Most time a newly assigned partition waits for another member of this process that
    /// still holds it to hand it over (ms); after that it is read from the committed offset.
    pub handoff_wait_ms: u64,
    /// Extra librdkafka properties, applied last (they override the above).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "recflow".into(),
            topic_pattern: "^user-behaviors-[a-z0-9_]+$".into(),
            exclude_topics: vec![DLQ_TOPIC.into()],
            idle_timeout_secs: 30,
            session_timeout_ms: 10_000,
            poll_batch: 1000,
            partitions: 3,
            metadata_refresh_ms: 5000,
            statistics_interval_ms: 5000,
            exit_when_idle_ms: None,
            commit_interval_ms: 5000,
            handoff_wait_ms: 60_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The librdkafka consumer configuration of a group member.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Incremental rebalances: a new tenant topic or member moves only the
            // partitions that must move; the others keep being read without a pause
            // (an eager rebalance would revoke everything and re-read uncommitted data).
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("topic.metadata.refresh.interval.ms", self.metadata_refresh_ms.to_string())
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("statistics.interval.ms", self.statistics_interval_ms.to_string());
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// The tenant of an input topic: `user-behaviors-{tenant}` -> `tenant`.
pub fn tenant_of_topic(topic: &str) -> Option<&str> {
    topic.strip_prefix(BEHAVIOR_TOPIC_PREFIX).filter(|t| recflow_schemas::validate::is_valid_tenant(t))
}

/// The input topic of a tenant.
pub fn topic_of_tenant(tenant: &str) -> String {
    format!("{BEHAVIOR_TOPIC_PREFIX}{tenant}")
}

/// A (topic, partition) with the topic name interned.
pub type PartitionKey = (Arc<str>, i32);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Event-time and activity state of one assigned partition.
#[derive(Clone, Debug)]
struct PartState {
    max_ts: i64,
    /// The listening clock at the partition's last message (or assignment).
    last_activity: Duration,
}

/// Longest stretch between two empty polls that counts as listening: time
/// the worker spent elsewhere (blocked in a slow sink, working through a
/// backlog) is not evidence that a partition has nothing to say.
const MAX_LISTEN_STEP: Duration = Duration::from_secs(1);

/// Per-partition state of one worker: max event time handed out and last
/// activity; the pure core of the watermark floor.
///
/// Idleness is measured on a *listening clock* that only advances while the
/// consumer is caught up (a poll found nothing buffered). Wall-clock idleness
/// would misfire when the worker is slower than the input: messages of one
/// partition can sit in the client's queue for longer than the idle timeout
/// behind other partitions' data, and excluding that partition would let the
/// watermark overtake its buffered events.
#[derive(Debug)]
pub struct PartitionTracker {
    parts: HashMap<PartitionKey, PartState>,
    idle_timeout: Duration,
    listened: Duration,
    last_dry: Option<Instant>,
}

impl PartitionTracker {
    /// No partitions yet.
    pub fn new(idle_timeout: Duration) -> Self {
        PartitionTracker { parts: HashMap::new(), idle_timeout, listened: Duration::ZERO, last_dry: None }
    }

    /// A poll at `now` found nothing buffered: the consumer is caught up, so
    /// the time since the previous such poll (at most [`MAX_LISTEN_STEP`])
    /// counts as listening.
    pub fn dry(&mut self, now: Instant) {
        if let Some(prev) = self.last_dry {
            self.listened += now.saturating_duration_since(prev).min(MAX_LISTEN_STEP);
        }
        self.last_dry = Some(now);
    }

    /// Total time spent caught up and listening.
    pub fn listened(&self) -> Duration {
        self.listened
    }

    /// A partition was assigned; it counts as active from now. Existing state is kept.
    pub fn assign(&mut self, key: PartitionKey) {
        let now = self.listened;
        self.parts.entry(key).or_insert(PartState { max_ts: i64::MIN, last_activity: now });
    }

    /// The partition's max event time before its committed offset, from
    /// the commit metadata: a replay judges lateness as the first run did.
    pub fn restore(&mut self, key: &PartitionKey, max_ts: i64) {
        if let Some(p) = self.parts.get_mut(key) {
            p.max_ts = p.max_ts.max(max_ts);
        }
    }

    /// A partition was revoked; its state is dropped.
    pub fn revoke(&mut self, key: &PartitionKey) {
        self.parts.remove(key);
    }

    /// True when the partition is assigned.
    pub fn contains(&self, key: &PartitionKey) -> bool {
        self.parts.contains_key(key)
    }

    /// A message arrived on the partition (assigning it if unknown).
    pub fn touch(&mut self, key: &PartitionKey) {
        let now = self.listened;
        match self.parts.get_mut(key) {
            Some(p) => p.last_activity = now,
            None => self.assign(key.clone()),
        }
    }

    /// Max valid event time handed out for the partition (`i64::MIN` if none).
    pub fn max_ts(&self, key: &PartitionKey) -> i64 {
        self.parts.get(key).map_or(i64::MIN, |p| p.max_ts)
    }

    /// A batch of the partition with max valid event time `max_ts` was handed out.
    pub fn advance(&mut self, key: &PartitionKey, max_ts: i64) {
        if let Some(p) = self.parts.get_mut(key) {
            p.max_ts = p.max_ts.max(max_ts);
        }
    }

    /// Assigned partitions.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// True when nothing is assigned.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The watermark basis: min max-ts over active partitions (`i64::MIN` if
    /// one has no data yet); if all are idle, the max over them so windows
    /// can close; `i64::MIN` with no partitions.
    pub fn floor(&self) -> i64 {
        let mut active_min: Option<i64> = None;
        let mut idle_max = i64::MIN;
        for p in self.parts.values() {
            if self.listened.saturating_sub(p.last_activity) < self.idle_timeout {
                active_min = Some(active_min.map_or(p.max_ts, |m| m.min(p.max_ts)));
            } else {
                idle_max = idle_max.max(p.max_ts);
            }
        }
        active_min.unwrap_or(idle_max)
    }
}

/// The batch being filled: consecutive records of one partition.
#[derive(Debug)]
struct OpenBatch {
    key: PartitionKey,
    records: Vec<Record>,
    prior: i64,
    max_ts: i64,
}

/// Groups consecutive records of one partition into batches of at most
/// `max_records`, each with the partition's max event time before it.
#[derive(Debug)]
pub struct BatchAssembler {
    open: Option<OpenBatch>,
    max_records: usize,
}

impl BatchAssembler {
    /// Batches of at most `max_records` (at least 1).
    pub fn new(max_records: usize) -> Self {
        BatchAssembler { open: None, max_records: max_records.max(1) }
    }

    /// Adds a record of `key`; returns the previous batch when it is complete
    /// (other partition, or full). A returned batch advances the tracker.
    pub fn push(&mut self, tracker: &mut PartitionTracker, key: &PartitionKey, record: Record) -> Option<Batch> {
        let done = match &self.open {
            Some(o) if o.key != *key || o.records.len() >= self.max_records => self.take(tracker),
            _ => None,
        };
        let open = self.open.get_or_insert_with(|| OpenBatch {
            key: key.clone(),
            records: Vec::new(),
            prior: tracker.max_ts(key),
            max_ts: i64::MIN,
        });
        if let Ok(e) = &record.parsed {
            open.max_ts = open.max_ts.max(e.ts);
        }
        open.records.push(record);
        done
    }

    /// True when the open batch holds `max_records`.
    pub fn is_full(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.records.len() >= self.max_records)
    }

    /// True when a batch is open.
    pub fn has_open(&self) -> bool {
        self.open.is_some()
    }

    /// Closes and returns the open batch, advancing the tracker.
    pub fn take(&mut self, tracker: &mut PartitionTracker) -> Option<Batch> {
        let o = self.open.take()?;
        tracker.advance(&o.key, o.max_ts);
        Some(Batch {
            origin: Origin::Kafka { topic: o.key.0.clone(), partition: o.key.1 },
            records: o.records,
            prior_max_ts: o.prior,
        })
    }

    /// Drops the open batch if its partition was revoked (the new owner reads it again).
    pub fn drop_if(&mut self, revoked: impl Fn(&PartitionKey) -> bool) -> bool {
        if self.open.as_ref().is_some_and(|o| revoked(&o.key)) {
            self.open = None;
            return true;
        }
        false
    }
}

/// A rebalance seen by the consumer context, applied by the source after its poll.
#[derive(Debug)]
enum Change {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// State shared by the consumer context (rebalance callbacks), the source and committers.
#[derive(Default)]
struct Shared {
    /// Per assigned partition: offset after the last record handed out, and
    /// the partition's max valid event time there.
    positions: Mutex<HashMap<(String, i32), (i64, i64)>>,
    changes: Mutex<Vec<Change>>,
    changed: AtomicBool,
    exclude: Vec<String>,
    /// Consumer lag per partition from the last librdkafka statistics (Fetch high watermark).
    lag: Mutex<HashMap<(String, i32), i64>>,
    /// Batches handed out and not yet committable.
    ledger: Mutex<CommitLedger>,
    /// Committable positions not yet committed: (next offset, max event time before it).
    due: Mutex<HashMap<PartitionKey, (i64, i64)>>,
    /// Where revoked partitions are left for the next member of this process, and this member's id there.
    handoffs: OnceLock<(Handoffs, MemberId)>,
    /// Assigned partitions another local member still held, paused until it hands them over:
    /// when each was assigned.
    waiting: Mutex<HashMap<(String, i32), Instant>>,
    /// When a client-wide error was last logged.
    last_client_error: Mutex<Option<Instant>>,
}

/// True (and remembered) when a repeating error was last logged 10 s ago or never.
fn log_due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    let due = last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10));
    if due {
        *last = Some(now);
    }
    due
}

/// Consumer context recording rebalances and pausing excluded topics.
struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {
    /// Client-wide errors (all brokers down, say) repeat on every poll while
    /// they last: logged once per 10 s instead of flooding the log.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if log_due(&mut lock(&self.0.last_client_error)) {
            tracing::error!(%error, reason, "kafka client error (repeats suppressed for 10 s)");
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let reported = partition_lag(statistics);
        // Partitions no longer fetched report nothing and keep their last known lag.
        lock(&self.0.lag).extend(reported);
    }
}

/// Per-partition lag from a librdkafka statistics document: the partition's
/// end (last stable offset, else high watermark) minus the offset after the
/// last message handed to the application — the records the member has yet
/// to read. librdkafka's own `consumer_lag` counts from the committed offset,
/// which recflow advances only after the sinks acknowledged, so it is only
/// the fallback. Parsed loosely, not into rdkafka's typed `Statistics`:
/// brokers differ in which fields they fill.
fn partition_lag(statistics: &[u8]) -> Vec<((String, i32), i64)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(statistics) else { return Vec::new() };
    let Some(topics) = v.get("topics").and_then(|t| t.as_object()) else { return Vec::new() };
    let field = |p: &serde_json::Value, name: &str| p.get(name).and_then(|x| x.as_i64()).filter(|x| *x >= 0);
    let mut out = Vec::new();
    for (topic, t) in topics {
        let Some(parts) = t.get("partitions").and_then(|p| p.as_object()) else { continue };
        for (partition, p) in parts {
            // Partition -1 is librdkafka's internal queue.
            let Ok(partition) = partition.parse::<i32>() else { continue };
            if partition < 0 {
                continue;
            }
            let end = field(p, "ls_offset").or_else(|| field(p, "hi_offset"));
            let lag = match (end, field(p, "app_offset")) {
                (Some(end), Some(pos)) => Some((end - pos).max(0)),
                _ => field(p, "consumer_lag"),
            };
            if let Some(lag) = lag {
                out.push(((topic.clone(), partition), lag));
            }
        }
    }
    out
}

/// Reads a source's consumer lag from any thread (for metrics); holds no consumer.
#[derive(Clone)]
pub struct LagHandle(Arc<Shared>);

impl LagHandle {
    /// (topic, partition, lag) of the partitions the member fetched, as of their last report.
    pub fn lag(&self) -> Vec<(String, i32, i64)> {
        let lag = lock(&self.0.lag);
        let mut v: Vec<(String, i32, i64)> = lag.iter().map(|((t, p), l)| (t.clone(), *p, *l)).collect();
        v.sort();
        v
    }
}

fn tpl_pairs(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let pairs = tpl_pairs(tpl);
            // Before ownership is lost: no commit may include these partitions any
            // more; what was read past the committed offset goes to the next owner.
            let (mut pos, mut ledger, mut due) = (lock(&self.0.positions), lock(&self.0.ledger), lock(&self.0.due));
            for (t, p) in &pairs {
                let key: PartitionKey = (Arc::from(t.as_str()), *p);
                let runs = ledger.take(&key);
                let due = due.remove(&key);
                let position = pos.remove(&(t.clone(), *p));
                if let Some((handoffs, me)) = self.0.handoffs.get() {
                    let handoff = position.map(|(next_offset, max_ts)| Handoff { next_offset, max_ts, runs, due });
                    handoffs.release(&(t.clone(), *p), *me, handoff);
                }
            }
            drop((pos, ledger, due));
            // A partition revoked while it waited: unpaused, so a later assignment fetches it.
            let mut unpause = TopicPartitionList::new();
            let mut waiting = lock(&self.0.waiting);
            for (t, p) in &pairs {
                if waiting.remove(&(t.clone(), *p)).is_some() {
                    unpause.add_partition(t, *p);
                }
            }
            drop(waiting);
            if unpause.count() > 0 {
                if let Err(e) = c.resume(&unpause) {
                    tracing::warn!(error = %e, "resuming revoked waiting partitions failed");
                }
            }
            tracing::info!(partitions = pairs.len(), list = ?pairs, "kafka partitions revoked");
            lock(&self.0.changes).push(Change::Revoked(pairs));
            self.0.changed.store(true, Ordering::Release);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let pairs = tpl_pairs(tpl);
                let mut paused = TopicPartitionList::new();
                let mut held = TopicPartitionList::new();
                for (t, p) in &pairs {
                    if self.0.exclude.iter().any(|x| x == t) {
                        paused.add_partition(t, *p);
                    } else if let Some((handoffs, me)) = self.0.handoffs.get() {
                        // Paused before its first fetch: reading starts, once resumed, at
                        // the committed offset as for any new assignment.
                        if !handoffs.claim(&(t.clone(), *p), *me) {
                            held.add_partition(t, *p);
                            lock(&self.0.waiting).insert((t.clone(), *p), Instant::now());
                        }
                    }
                }
                if paused.count() > 0 {
                    if let Err(e) = consumer.pause(&paused) {
                        tracing::warn!(error = %e, "pausing excluded topics failed; their messages are skipped");
                    }
                }
                if held.count() > 0 {
                    tracing::info!(
                        list = ?tpl_pairs(&held),
                        "assigned partitions another member of this process still holds; waiting for its hand-off"
                    );
                    if let Err(e) = consumer.pause(&held) {
                        tracing::warn!(error = %e, "pausing partitions still held elsewhere failed; reading them now");
                        let mut waiting = lock(&self.0.waiting);
                        for tp in tpl_pairs(&held) {
                            waiting.remove(&tp);
                        }
                    }
                }
                tracing::info!(partitions = pairs.len(), list = ?pairs, "kafka partitions assigned");
                lock(&self.0.changes).push(Change::Assigned(pairs));
                self.0.changed.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }
}

impl Drop for Ctx {
    /// The member is gone (its consumer closed): what it still held is free for the others.
    fn drop(&mut self) {
        if let Some((handoffs, me)) = self.0.handoffs.get() {
            handoffs.leave(*me);
        }
    }
}

impl Drop for KafkaSource {
    /// A member dropped before it finished (its worker failed, its consumer closes) holds the
    /// others back no more, and its partitions count as unowned until the group moves them.
    /// A finished member keeps them: a committer may keep its consumer, hence its
    /// assignment, alive, and nobody else would be given them meanwhile.
    fn drop(&mut self) {
        if let (Some((c, slot)), false) = (&self.coverage, self.done) {
            c.left(*slot);
        }
    }
}

/// A (topic, partition, next offset) to commit.
pub type Position = (String, i32, i64);

/// Commits offsets of one [`KafkaSource`] from any thread (e.g. after the sinks flushed).
///
/// It shares the source's consumer: the member leaves the group only when the
/// source and all its committers are dropped.
#[derive(Clone)]
pub struct KafkaCommitter {
    consumer: Arc<BaseConsumer<Ctx>>,
    shared: Arc<Shared>,
    group: Arc<str>,
    times: Option<Arc<dyn PartitionTimes>>,
}

impl KafkaCommitter {
    /// Per assigned partition, the offset after the last record handed out so far.
    pub fn positions(&self) -> Vec<Position> {
        let mut v: Vec<Position> =
            lock(&self.shared.positions).iter().map(|((t, p), (o, _))| (t.clone(), *p, *o)).collect();
        v.sort();
        v
    }

    /// Synchronously commits `positions` (next offsets) of partitions still
    /// assigned to this member; returns how many were committed.
    pub fn commit(&self, positions: &[Position]) -> KafkaResult<usize> {
        let mut tpl = TopicPartitionList::new();
        {
            let assigned = lock(&self.shared.positions);
            for (t, p, o) in positions {
                if assigned.contains_key(&(t.clone(), *p)) {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
                }
            }
        }
        let n = tpl.count();
        if n > 0 {
            self.consumer.commit(&tpl, CommitMode::Sync)?;
        }
        Ok(n)
    }

    /// Commits everything handed out and processed so far, with each
    /// partition's max event time as metadata (call only once every sink
    /// acknowledged all outputs, e.g. after the drain).
    pub fn commit_processed(&self) -> KafkaResult<usize> {
        self.release(None);
        self.commit_due()
    }

    /// Moves what acknowledged outputs before `frontier` cover (`None`: all) to the due commits.
    pub fn release(&self, frontier: Option<u64>) {
        let released = lock(&self.shared.ledger).release(frontier);
        if !released.is_empty() {
            let mut due = lock(&self.shared.due);
            for (key, offset, max_ts) in released {
                due.insert(key, (offset, max_ts));
            }
        }
    }

    /// Synchronously commits the due positions of partitions still assigned,
    /// each with the partition's max event time before it as metadata.
    pub fn commit_due(&self) -> KafkaResult<usize> {
        let due: Vec<(PartitionKey, (i64, i64))> = lock(&self.shared.due).drain().collect();
        let mut tpl = TopicPartitionList::new();
        {
            let assigned = lock(&self.shared.positions);
            for ((t, p), (offset, max_ts)) in &due {
                if assigned.contains_key(&(t.to_string(), *p)) {
                    let mut e = tpl.add_partition(t, *p);
                    e.set_offset(Offset::Offset(*offset))?;
                    e.set_metadata(max_ts.to_string());
                }
            }
        }
        let n = tpl.count();
        if n > 0 {
            if let Some(times) = &self.times {
                // Saved before the commit: a committed offset always has its time.
                let saved: Vec<(String, i32, i64, i64)> =
                    due.iter().map(|((t, p), (o, m))| (t.to_string(), *p, *o, *m)).collect();
                if let Err(e) = times.save(&self.group, &saved) {
                    let mut d = lock(&self.shared.due);
                    for (k, v) in due {
                        d.entry(k).or_insert(v);
                    }
                    tracing::warn!(error = %e, "saving partition times failed; commit postponed");
                    return Err(rdkafka::error::KafkaError::Canceled);
                }
            }
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                // Keep them due (unless superseded meanwhile): the next commit retries.
                let mut d = lock(&self.shared.due);
                for (k, v) in due {
                    d.entry(k).or_insert(v);
                }
                return Err(e);
            }
        }
        Ok(n)
    }

    /// The group's committed (offset, metadata) of the given partitions.
    fn committed_with_metadata(&self, pairs: &[(String, i32)], timeout: Duration) -> KafkaResult<Vec<CommittedPos>> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in pairs {
            tpl.add_partition(t, *p);
        }
        let tpl = self.consumer.committed_offsets(tpl, timeout)?;
        Ok(tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o, e.metadata().to_string())),
                _ => None,
            })
            .collect())
    }

    /// The group's committed offsets of this member's assigned partitions.
    pub fn committed(&self, timeout: Duration) -> KafkaResult<Vec<Position>> {
        let tpl = self.consumer.committed(timeout)?;
        Ok(tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

/// Where a partition's max event time before a committed offset is kept
/// when the broker does not keep commit metadata (tansu drops it; Kafka keeps it).
pub trait PartitionTimes: Send + Sync {
    /// Records `max_ts` for each (topic, partition, committed offset) of the group.
    fn save(&self, group: &str, positions: &[(String, i32, i64, i64)]) -> Result<(), String>;
    /// The max event time saved for exactly that committed offset.
    fn load(&self, group: &str, topic: &str, partition: i32, offset: i64) -> Result<Option<i64>, String>;
}

/// A committed (topic, partition, offset, metadata).
pub type CommittedPos = (String, i32, i64, String);

/// Per-topic facts, interned once.
struct TopicInfo {
    name: Arc<str>,
    tenant: Option<Box<str>>,
    excluded: bool,
}

/// One worker's member of the consumer group; a [`Source`].
pub struct KafkaSource {
    consumer: Arc<BaseConsumer<Ctx>>,
    shared: Arc<Shared>,
    validator: Validator,
    topics: HashMap<Box<str>, TopicInfo>,
    tracker: PartitionTracker,
    assembler: BatchAssembler,
    stop: Arc<AtomicBool>,
    exit_when_idle: Option<Duration>,
    /// The listening clock at the last message or rebalance: the idle exit
    /// counts only time spent caught up, never time blocked in a slow sink.
    last_message: Duration,
    /// A first assignment (possibly empty) was received.
    joined: bool,
    done: bool,
    last_error_log: Option<Instant>,
    records: u64,
    commit_interval: Duration,
    last_commit: Instant,
    group: Arc<str>,
    times: Option<Arc<dyn PartitionTimes>>,
    /// The process's partition ownership and this member's slot in it.
    coverage: Option<(Coverage, usize)>,
    /// Per partition taken over from another member: records below this
    /// offset were read by it and are skipped (this member fetches from the
    /// committed offset). Entries go once that offset is reached.
    skip_below: HashMap<PartitionKey, u64>,
    /// Most time a partition waits for its hand-off.
    handoff_wait: Duration,
    /// When waiting partitions were last reported.
    last_wait_log: Option<Instant>,
}

impl KafkaSource {
    /// Joins the group and subscribes to `cfg.topic_pattern`.
    pub fn new(cfg: &KafkaConfig, validator: Validator) -> KafkaResult<Self> {
        let shared = Arc::new(Shared { exclude: cfg.exclude_topics.clone(), ..Shared::default() });
        let consumer: BaseConsumer<Ctx> = cfg.consumer_config().create_with_context(Ctx(shared.clone()))?;
        consumer.subscribe(&[cfg.topic_pattern.as_str()])?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            shared,
            validator,
            topics: HashMap::new(),
            tracker: PartitionTracker::new(cfg.idle_timeout()),
            assembler: BatchAssembler::new(cfg.poll_batch),
            stop: Arc::new(AtomicBool::new(false)),
            exit_when_idle: cfg.exit_when_idle_ms.map(Duration::from_millis),
            last_message: Duration::ZERO,
            joined: false,
            done: false,
            last_error_log: None,
            records: 0,
            commit_interval: Duration::from_millis(cfg.commit_interval_ms),
            last_commit: Instant::now(),
            group: Arc::from(cfg.group_id.as_str()),
            times: None,
            coverage: None,
            skip_below: HashMap::new(),
            handoff_wait: Duration::from_millis(cfg.handoff_wait_ms),
            last_wait_log: None,
        })
    }

    /// A handle reading this member's consumer lag.
    pub fn lag_handle(&self) -> LagHandle {
        LagHandle(self.shared.clone())
    }

    /// A handle that commits this source's offsets from any thread.
    pub fn committer(&self) -> KafkaCommitter {
        KafkaCommitter {
            consumer: self.consumer.clone(),
            shared: self.shared.clone(),
            group: self.group.clone(),
            times: self.times.clone(),
        }
    }

    /// Keeps partition times in `times` too, for brokers that drop commit metadata.
    pub fn with_partition_times(mut self, times: Arc<dyn PartitionTimes>) -> Self {
        self.times = Some(times);
        self
    }

    /// Reports this member's partitions to `coverage` as `slot`, and reports no
    /// watermark while some input partition is owned by no member of it.
    pub fn with_coverage(mut self, coverage: Coverage, slot: usize) -> Self {
        self.coverage = Some((coverage, slot));
        self
    }

    /// Leaves revoked partitions in `handoffs` and continues partitions other
    /// members left there where they stopped (see [`crate::handoff`]).
    pub fn with_handoffs(self, handoffs: Handoffs) -> Self {
        // Set once, before the first poll (the only place rebalances run).
        let me = handoffs.join();
        let _ = self.shared.handoffs.set((handoffs, me));
        self
    }

    /// Commits everything handed out so far (see [`KafkaCommitter::commit_processed`]).
    pub fn commit_processed(&self) -> KafkaResult<usize> {
        self.committer().commit_processed()
    }

    /// Commits the given positions (see [`KafkaCommitter::commit`]).
    pub fn commit(&self, positions: &[Position]) -> KafkaResult<usize> {
        self.committer().commit(positions)
    }

    /// Asks the source to end: the open batch is handed out, then `Poll::Done`.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// A flag that, set from any thread, acts like [`Self::request_stop`].
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Partitions currently assigned to this member (excluded topics not counted).
    pub fn assignment(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = self.tracker.parts.keys().map(|(t, p)| (t.to_string(), *p)).collect();
        v.sort();
        v
    }

    /// Records handed out so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Interned facts about `topic` (split borrow: only `topics` is mutated).
    fn intern<'a>(topics: &'a mut HashMap<Box<str>, TopicInfo>, exclude: &[String], topic: &str) -> &'a TopicInfo {
        if !topics.contains_key(topic) {
            let info = TopicInfo {
                name: Arc::from(topic),
                tenant: tenant_of_topic(topic).map(Box::from),
                excluded: exclude.iter().any(|x| x == topic),
            };
            topics.insert(Box::from(topic), info);
        }
        &topics[topic]
    }

    /// Applies rebalances recorded by the context during the last consumer poll.
    fn apply_changes(&mut self) {
        if !self.shared.changed.swap(false, Ordering::AcqRel) {
            return;
        }
        let changes = std::mem::take(&mut *lock(&self.shared.changes));
        // The idle exit counts from the last message or rebalance, never from before joining.
        self.last_message = self.tracker.listened();
        self.joined = true;
        for change in changes {
            match change {
                Change::Assigned(pairs) => {
                    let mut fresh = Vec::new();
                    let waiting = lock(&self.shared.waiting);
                    for (t, p) in pairs {
                        let info = Self::intern(&mut self.topics, &self.shared.exclude, &t);
                        if !info.excluded {
                            let key = (info.name.clone(), p);
                            // A waiting partition resumes once its hand-off is there.
                            if !self.tracker.contains(&key) && !waiting.contains_key(&(t.clone(), p)) {
                                fresh.push((t, p));
                            }
                            self.tracker.assign(key);
                        }
                    }
                    drop(waiting);
                    self.resume(&fresh);
                }
                Change::Revoked(pairs) => {
                    let mut keys = Vec::with_capacity(pairs.len());
                    for (t, p) in pairs {
                        // The new owner reports this partition's lag from now on.
                        lock(&self.shared.lag).remove(&(t.clone(), p));
                        let key = (Self::intern(&mut self.topics, &self.shared.exclude, &t).name.clone(), p);
                        self.tracker.revoke(&key);
                        self.skip_below.remove(&key);
                        keys.push(key);
                    }
                    if self.assembler.drop_if(|k| keys.contains(k)) {
                        tracing::info!(
                            "dropped an unreturned batch of a revoked partition; its new owner reads it again"
                        );
                    }
                }
            }
        }
        if let Some((coverage, slot)) = &self.coverage {
            coverage.set_owned(*slot, self.assignment().into_iter().collect());
        }
    }

    /// Where newly assigned partitions continue: where another member of
    /// this process left them, else at the committed offset with the
    /// partition's max event time there (commit metadata).
    fn resume(&mut self, pairs: &[(String, i32)]) {
        if pairs.is_empty() {
            return;
        }
        let committed = self.committer().committed_with_metadata(pairs, Duration::from_secs(10));
        let mut from_commit = Vec::with_capacity(pairs.len());
        for (t, p) in pairs {
            let handoff = self.shared.handoffs.get().and_then(|(h, _)| h.take(&(t.clone(), *p)));
            let Some(h) = handoff else {
                from_commit.push((t.clone(), *p));
                continue;
            };
            // Another process got further (it committed past where this one stopped).
            let ahead = committed.as_ref().ok().and_then(|c| c.iter().find(|c| c.0 == *t && c.1 == *p)).map(|c| c.2);
            if ahead.is_some_and(|c| c > h.next_offset) {
                tracing::info!(topic = %t, partition = p, "hand-off older than the committed offset; resuming there");
                from_commit.push((t.clone(), *p));
                continue;
            }
            self.take_over(t, *p, h);
        }
        match committed {
            Ok(committed) => {
                for (t, p, offset, meta) in committed {
                    if !from_commit.iter().any(|(ft, fp)| *ft == t && *fp == p) {
                        continue;
                    }
                    let max_ts = match (meta.parse::<i64>(), &self.times) {
                        (Ok(m), _) => Some(m),
                        (Err(_), Some(times)) => match times.load(&self.group, &t, p, offset) {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::warn!(error = %e, topic = %t, partition = p, "reading the partition time failed");
                                None
                            }
                        },
                        (Err(_), None) => None,
                    };
                    if let Some(max_ts) = max_ts {
                        let key = (Self::intern(&mut self.topics, &self.shared.exclude, &t).name.clone(), p);
                        self.tracker.restore(&key, max_ts);
                        tracing::info!(topic = %t, partition = p, offset, max_ts, "resuming partition");
                    }
                }
            }
            // Without it, replayed records are judged against a lower watermark (fewer late).
            Err(e) => tracing::warn!(error = %e, "reading committed partition times failed"),
        }
    }

    /// Starts reading the waiting partitions whose previous holder in this
    /// process has released them (or that waited `handoff_wait`); the others
    /// count as active, so the watermark keeps waiting for them.
    fn check_waiting(&mut self) {
        // Called on every poll: nothing but this check unless a partition waits.
        if lock(&self.shared.waiting).is_empty() {
            return;
        }
        let Some((handoffs, me)) = self.shared.handoffs.get().cloned() else { return };
        let mut ready = Vec::new();
        let mut still = Vec::new();
        {
            let mut waiting = lock(&self.shared.waiting);
            waiting.retain(|tp, since| {
                if handoffs.claim(tp, me) {
                    ready.push(tp.clone());
                    false
                } else if since.elapsed() >= self.handoff_wait {
                    tracing::warn!(
                        topic = %tp.0,
                        partition = tp.1,
                        "no hand-off from the partition's previous holder in this process; reading from the \
                         committed offset (what it read past the commit is read again)"
                    );
                    handoffs.seize(tp, me);
                    ready.push(tp.clone());
                    false
                } else {
                    still.push(tp.clone());
                    true
                }
            });
        }
        for (t, p) in &still {
            let key = (Self::intern(&mut self.topics, &self.shared.exclude, t).name.clone(), *p);
            self.tracker.touch(&key);
        }
        if !still.is_empty() && log_due(&mut self.last_wait_log) {
            tracing::info!(list = ?still, "waiting for another member of this process to hand over partitions");
        }
        if ready.is_empty() {
            return;
        }
        self.resume(&ready);
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &ready {
            tpl.add_partition(t, *p);
        }
        tracing::info!(list = ?ready, "partitions handed over; reading them");
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(error = %e, "resuming handed-over partitions failed");
        }
    }

    /// Continues a partition where another member of this process stopped.
    fn take_over(&mut self, topic: &str, partition: i32, h: Handoff) {
        let key = (Self::intern(&mut self.topics, &self.shared.exclude, topic).name.clone(), partition);
        self.tracker.restore(&key, h.max_ts);
        lock(&self.shared.positions).insert((topic.to_string(), partition), (h.next_offset, h.max_ts));
        let runs = h.runs.len();
        lock(&self.shared.ledger).adopt(&key, h.runs);
        if let Some(d) = h.due {
            lock(&self.shared.due).entry(key.clone()).or_insert(d);
        }
        self.skip_below.insert(key, h.next_offset.max(0) as u64);
        tracing::info!(
            topic,
            partition,
            offset = h.next_offset,
            max_ts = h.max_ts,
            runs,
            "continuing a partition where its previous owner in this process stopped"
        );
    }

    fn log_error(&mut self, e: &rdkafka::error::KafkaError) {
        if log_due(&mut self.last_error_log) {
            tracing::warn!(error = %e, "kafka consumer error (repeats suppressed for 10 s)");
        }
    }

    /// Hands out a batch: records its position for commits.
    fn emit(&mut self, batch: Batch) -> Poll {
        if let (Origin::Kafka { topic, partition }, Some(last)) = (&batch.origin, batch.records.last()) {
            let next = last.offset as i64 + 1;
            let key = (topic.clone(), *partition);
            let max_ts = self.tracker.max_ts(&key);
            lock(&self.shared.positions).insert((topic.to_string(), *partition), (next, max_ts));
            lock(&self.shared.ledger).handed_out(&key, next, max_ts);
        }
        self.records += batch.records.len() as u64;
        Poll::Ready(batch)
    }
}

impl Source for KafkaSource {
    fn poll(&mut self) -> Poll {
        if self.done {
            return Poll::Done;
        }
        self.check_waiting();
        let consumer = self.consumer.clone();
        let now_ms = recflow_schemas::validate::now_ms();
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let msg = consumer.poll(Duration::ZERO);
            self.apply_changes();
            let msg = match msg {
                None => {
                    self.tracker.dry(Instant::now());
                    break;
                }
                Some(Err(e)) => {
                    self.log_error(&e);
                    break;
                }
                Some(Ok(m)) => m,
            };
            self.last_message = self.tracker.listened();
            let info = Self::intern(&mut self.topics, &self.shared.exclude, msg.topic());
            if info.excluded {
                continue;
            }
            let key = (info.name.clone(), msg.partition());
            let offset = msg.offset().max(0) as u64;
            if !self.skip_below.is_empty() {
                if let Some(&from) = self.skip_below.get(&key) {
                    if offset < from {
                        continue; // handed to the dataflow by the partition's previous owner
                    }
                    self.skip_below.remove(&key);
                }
            }
            let payload = msg.payload().unwrap_or(&[]);
            let parsed = self
                .validator
                .validate(payload, info.tenant.as_deref(), now_ms)
                .map_err(|r| Box::new(Rejected::new(r, payload)));
            let record = Record { offset, parsed };
            self.tracker.touch(&key);
            if let Some(batch) = self.assembler.push(&mut self.tracker, &key, record) {
                return self.emit(batch);
            }
            if self.assembler.is_full() {
                break;
            }
        }
        if let Some(batch) = self.assembler.take(&mut self.tracker) {
            return self.emit(batch);
        }
        let idle_exit = self.joined
            && self.exit_when_idle.is_some_and(|d| self.tracker.listened().saturating_sub(self.last_message) >= d)
            && lock(&self.shared.waiting).is_empty();
        if self.stop.load(Ordering::Acquire) || idle_exit {
            self.done = true;
            if let Some((c, slot)) = &self.coverage {
                c.finished(*slot);
            }
            return Poll::Done;
        }
        Poll::Pending
    }

    fn max_ts_floor(&self) -> i64 {
        let own = self.tracker.floor();
        match &self.coverage {
            // A finished member waits for nobody, and must not count among those still reading.
            Some(_) if self.done => own,
            Some((c, slot)) => {
                let lowest = c.floor_with(*slot, own);
                // Event time waits until every input partition is read by someone.
                if c.is_complete() {
                    lowest
                } else {
                    i64::MIN
                }
            }
            None => own,
        }
    }

    fn processed(&mut self, release: u64) {
        lock(&self.shared.ledger).processed(release);
    }

    fn sunk_before(&mut self, frontier: Option<u64>, now: bool) {
        let committer = self.committer();
        committer.release(frontier);
        if !now && self.last_commit.elapsed() < self.commit_interval {
            return;
        }
        self.last_commit = Instant::now();
        match committer.commit_due() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(partitions = n, "offsets committed"),
            Err(e) => self.log_error(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recflow_schemas::Reason;

    fn rec(offset: u64, ts: Option<i64>) -> Record {
        let parsed = match ts {
            Some(ts) => {
                let line = format!(
                    r#"{{"tenant_id":"t","scenario_id":"s","user_id":"u","item_id":"i","action_type":"click","timestamp":{ts}}}"#
                );
                Ok(Validator::default().validate(line.as_bytes(), Some("t"), i64::MAX / 2).unwrap())
            }
            None => Err(Box::new(Rejected::new(Validator::default().validate(b"{", None, 0).unwrap_err(), b"{"))),
        };
        Record { offset, parsed }
    }

    fn key(t: &str, p: i32) -> PartitionKey {
        (Arc::from(t), p)
    }

    #[test]
    fn lag_is_end_minus_the_applications_position() {
        let stats = br#"{"topics":{"user-behaviors-a":{"partitions":{
            "0":{"ls_offset":500,"hi_offset":500,"app_offset":468,"consumer_lag":-1},
            "1":{"ls_offset":-1001,"hi_offset":90,"app_offset":90,"consumer_lag":-1},
            "2":{"ls_offset":-1001,"hi_offset":-1001,"app_offset":-1001,"consumer_lag":-1},
            "3":{"hi_offset":-1001,"app_offset":-1001,"consumer_lag":7},
            "-1":{"ls_offset":10,"app_offset":0}}}}}"#;
        let mut lag = partition_lag(stats);
        lag.sort();
        let t = "user-behaviors-a".to_string();
        assert_eq!(lag, vec![((t.clone(), 0), 32), ((t.clone(), 1), 0), ((t, 3), 7)]);
        assert!(partition_lag(b"not json").is_empty());
    }

    #[test]
    fn topic_tenant_parsing() {
        assert_eq!(tenant_of_topic("user-behaviors-acme_1"), Some("acme_1"));
        assert_eq!(tenant_of_topic("user-behaviors-"), None);
        assert_eq!(tenant_of_topic("user-behaviors-Acme"), None);
        assert_eq!(tenant_of_topic("item-updates"), None);
        assert_eq!(topic_of_tenant("acme"), "user-behaviors-acme");
        let v = Validator::default();
        let line =
            br#"{"tenant_id":"b","scenario_id":"s","user_id":"u","item_id":"i","action_type":"click","timestamp":1}"#;
        let err = v.validate(line, tenant_of_topic("user-behaviors-a"), i64::MAX / 2).unwrap_err();
        assert_eq!(err.reason, Reason::TenantMismatch);
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: KafkaConfig = toml::from_str("brokers = \"h:1\"").unwrap();
        assert_eq!(c.brokers, "h:1");
        assert_eq!(c.group_id, "recflow");
        assert_eq!(c.topic_pattern, "^user-behaviors-[a-z0-9_]+$");
        assert_eq!((c.idle_timeout_secs, c.poll_batch, c.partitions), (30, 1000, 3));
        assert_eq!(c.exclude_topics, vec![DLQ_TOPIC.to_string()]);
        assert!(toml::from_str::<KafkaConfig>("brokerz = \"h:1\"").is_err());
    }

    /// Listens (caught up, empty polls every 100 ms) for `secs` seconds from `*t`.
    fn listen(tr: &mut PartitionTracker, t: &mut Instant, secs: u64) {
        for _ in 0..secs * 10 {
            *t += Duration::from_millis(100);
            tr.dry(*t);
        }
    }

    #[test]
    fn floor_ignores_idle_partitions() {
        let mut t = Instant::now();
        let idle = Duration::from_secs(30);
        let mut tr = PartitionTracker::new(idle);
        tr.dry(t);
        assert_eq!(tr.floor(), i64::MIN, "no partitions");
        let (a, b) = (key("x", 0), key("x", 1));
        tr.assign(a.clone());
        tr.assign(b.clone());
        tr.advance(&a, 100);
        assert_eq!(tr.floor(), i64::MIN, "an active partition without data holds the floor");
        tr.advance(&b, 50);
        assert_eq!(tr.floor(), 50);
        // b idle after 30 s of listening without its messages; a keeps receiving.
        listen(&mut tr, &mut t, 20);
        tr.touch(&a);
        listen(&mut tr, &mut t, 9);
        assert_eq!(tr.floor(), 50, "29 s: b still holds it");
        listen(&mut tr, &mut t, 2);
        assert_eq!(tr.floor(), 100, "idle b no longer holds it back");
        // All idle: the max over them, so windows can close.
        tr.advance(&b, 70);
        listen(&mut tr, &mut t, 30);
        assert_eq!(tr.floor(), 100);
        // b wakes up: active again, min.
        tr.touch(&b);
        assert_eq!(tr.floor(), 70);
        tr.revoke(&b);
        assert_eq!(tr.floor(), 100);
        assert_eq!(tr.len(), 1);
        // max never goes back.
        tr.advance(&a, 10);
        assert_eq!(tr.max_ts(&a), 100);
    }

    #[test]
    fn time_not_spent_listening_does_not_make_partitions_idle() {
        let mut t = Instant::now();
        let mut tr = PartitionTracker::new(Duration::from_secs(30));
        let (a, b) = (key("x", 0), key("x", 1));
        tr.assign(a.clone());
        tr.assign(b.clone());
        tr.advance(&a, 100);
        tr.advance(&b, 50);
        tr.dry(t);
        // A backlog: 120 s of a's buffered messages, never an empty poll; b's
        // messages wait in the client queue behind them.
        for _ in 0..1200 {
            t += Duration::from_millis(100);
            tr.touch(&a);
        }
        assert_eq!(tr.floor(), 50, "b is not idle: the consumer never caught up");
        // Blocked in a sink for 60 s, then one empty poll: counts as 1 s at most.
        t += Duration::from_secs(60);
        tr.dry(t);
        assert_eq!(tr.listened(), Duration::from_secs(1));
        assert_eq!(tr.floor(), 50);
    }

    #[test]
    fn batches_group_consecutive_records_of_one_partition() {
        let mut tr = PartitionTracker::new(Duration::from_secs(30));
        let (a, b) = (key("x", 0), key("x", 1));
        tr.assign(a.clone());
        tr.assign(b.clone());
        let mut asm = BatchAssembler::new(3);
        let mut out = Vec::new();
        let input = [
            (&a, 0, Some(10)),
            (&a, 1, Some(30)),
            (&a, 2, None),
            (&a, 3, Some(20)), // full at 3: new batch
            (&b, 0, Some(5)),
            (&a, 4, Some(40)),
            (&a, 5, Some(1)),
        ];
        for (k, off, ts) in input {
            out.extend(asm.push(&mut tr, k, rec(off, ts)));
        }
        assert_eq!(tr.max_ts(&a), 30, "the open batch (a 4..) is not counted yet");
        assert_eq!(tr.floor(), 5);
        out.extend(asm.take(&mut tr));
        let summary: Vec<(i32, Vec<u64>, i64)> = out
            .iter()
            .map(|b| {
                let Origin::Kafka { partition, .. } = &b.origin else { panic!() };
                (*partition, b.records.iter().map(|r| r.offset).collect(), b.prior_max_ts)
            })
            .collect();
        let m = i64::MIN;
        assert_eq!(
            summary,
            vec![(0, vec![0, 1, 2], m), (0, vec![3], 30), (1, vec![0], m), (0, vec![4, 5], 30)],
            "prior = partition max before the batch; invalid records do not count"
        );
        assert_eq!(tr.max_ts(&a), 40);
        assert_eq!(tr.max_ts(&b), 5);
        assert_eq!(tr.floor(), 5);
        // A revoked partition's open batch is dropped.
        assert!(asm.push(&mut tr, &b, rec(1, Some(9))).is_none());
        assert!(asm.drop_if(|k| *k == b));
        assert!(!asm.has_open());
    }
}
