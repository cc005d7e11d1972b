//! Kafka sink: profiles, hot-item entries, metrics windows and dead letters
//! to their output topics through one `BaseProducer`.
//!
//! - `Output::Profile` -> `user-profile-updates`, key `{tenant}:{user}:{scenario}`, value the profile JSON.
//! - `Output::Hot` (scenario-wide list only) -> `item-stats-updates`, one record per entry,
//!   key `{tenant}:{item}`, value `{tenant_id, scenario_id, item_id, score, rank, window_end}`.
//! - `Output::Metrics` -> `recommendation-metrics`, key `{tenant}:{scenario}`, value the window JSON.
//! - `Output::Dead` -> `user-behaviors-dlq`, no key, value the dead-letter JSON, headers `reason`
//!   and `source_topic`/`source_partition`/`source_offset` (Kafka) or `source_file`/`source_line`.
//!
//! Delivery: librdkafka retries internally until `delivery_timeout_ms`; a
//! record that still fails comes back in the delivery callback and is sent
//! again after a [`RetryPolicy`] backoff. Nothing is dropped: a record that
//! used up `max_attempts` stays queued and `flush` returns an error (the next
//! flush tries again). The producer queue is bounded
//! (`queue_max_messages`): when it is full, `write` waits with backoff while
//! serving acks, so a slow broker slows the pipeline instead of growing
//! memory. Dead letters share that queue: they are small and rare, so a full
//! queue means the broker itself is slow, and waiting (never dropping) is the
//! only option that keeps the DLQ complete.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};

use recflow_schemas::{Output, SourcePos};

use crate::{RetryPolicy, Sink, SinkError};

/// Kafka sink settings (`[kafka_sink]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic of profile updates.
    pub profile_topic: String,
    /// Topic of hot-item entries.
    pub item_stats_topic: String,
    /// Topic of closed metrics minutes.
    pub metrics_topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Bound of the producer queue (`queue.buffering.max.messages`); a full queue makes `write` wait.
    pub queue_max_messages: usize,
    /// How long librdkafka retries one record before handing it back to us (`delivery.timeout.ms`).
    pub delivery_timeout_ms: u64,
    /// `linger.ms`: how long records wait to be batched.
    pub linger_ms: u64,
    /// Extra librdkafka properties, applied last.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            brokers: "127.0.0.1:9092".into(),
            profile_topic: "user-profile-updates".into(),
            item_stats_topic: "item-stats-updates".into(),
            metrics_topic: "recommendation-metrics".into(),
            dlq_topic: "user-behaviors-dlq".into(),
            queue_max_messages: 100_000,
            delivery_timeout_ms: 30_000,
            linger_ms: 5,
            properties: BTreeMap::new(),
        }
    }
}

/// One record to produce.
#[derive(Clone, Debug, PartialEq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Message key, if any.
    pub key: Option<String>,
    /// JSON value.
    pub value: Vec<u8>,
    /// Header (name, value) pairs.
    pub headers: Vec<(&'static str, String)>,
}

/// The value of one `item-stats-updates` record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemStatsUpdate {
    pub tenant_id: String,
    pub scenario_id: String,
    pub item_id: String,
    pub score: f64,
    /// 1-based position in the window's top list.
    pub rank: u32,
    /// Window end (ms), exclusive.
    pub window_end: i64,
}

/// The records an output becomes (none for kinds this sink does not publish).
pub fn records_of(out: &Output, cfg: &KafkaSinkConfig) -> Result<Vec<OutRecord>, serde_json::Error> {
    let rec = |topic: &str, key: Option<String>, value: Vec<u8>| OutRecord {
        topic: topic.to_string(),
        key,
        value,
        headers: Vec::new(),
    };
    Ok(match out {
        Output::Profile(p) => vec![rec(
            &cfg.profile_topic,
            Some(format!("{}:{}:{}", p.tenant_id, p.user_id, p.scenario_id)),
            serde_json::to_vec(p.as_ref())?,
        )],
        Output::Hot(h) if h.category.is_none() => {
            let mut v = Vec::with_capacity(h.entries.len());
            for (i, (item, score)) in h.entries.iter().enumerate() {
                let value = ItemStatsUpdate {
                    tenant_id: h.tenant_id.to_string(),
                    scenario_id: h.scenario_id.to_string(),
                    item_id: item.to_string(),
                    score: *score,
                    rank: i as u32 + 1,
                    window_end: h.window_end,
                };
                v.push(rec(
                    &cfg.item_stats_topic,
                    Some(format!("{}:{}", h.tenant_id, item)),
                    serde_json::to_vec(&value)?,
                ));
            }
            v
        }
        Output::Metrics(m) => {
            vec![rec(&cfg.metrics_topic, Some(format!("{}:{}", m.tenant_id, m.scenario_id)), serde_json::to_vec(m)?)]
        }
        Output::Dead(d) => {
            let mut r = rec(&cfg.dlq_topic, None, serde_json::to_vec(d.as_ref())?);
            r.headers.push(("reason", d.reason.clone()));
            match &d.source {
                SourcePos::Kafka { topic, partition, offset } => {
                    r.headers.push(("source_topic", topic.clone()));
                    r.headers.push(("source_partition", partition.to_string()));
                    r.headers.push(("source_offset", offset.to_string()));
                }
                SourcePos::File { path, line } => {
                    r.headers.push(("source_file", path.clone()));
                    r.headers.push(("source_line", line.to_string()));
                }
            }
            vec![r]
        }
        Output::Hot(_) | Output::Raw(_) | Output::ItemStats(_) => Vec::new(),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A record handed back by a failed delivery, waiting for its next attempt.
struct Failed {
    msg: OwnedMessage,
    /// Attempts made so far.
    attempts: u32,
    error: String,
}

/// Delivery callbacks: counts acks, keeps failed records for a retry.
#[derive(Default)]
struct DeliveryCtx {
    /// Records handed to librdkafka (each ends in exactly one delivery report).
    sent: AtomicU64,
    produced: AtomicU64,
    errors: AtomicU64,
    failed: Mutex<Vec<Failed>>,
}

impl ClientContext for DeliveryCtx {}

impl ProducerContext for DeliveryCtx {
    /// Attempts made for this record, including the current one.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, attempts: usize) {
        match result {
            Ok(_) => {
                self.produced.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                lock(&self.failed).push(Failed { msg: msg.detach(), attempts: attempts as u32, error: e.to_string() });
            }
        }
    }
}

/// A retry waiting for its backoff to pass.
struct Retry {
    failed: Failed,
    due: Instant,
}

/// Publishes pipeline outputs to Kafka; see the module docs for topics and delivery.
pub struct KafkaSink {
    producer: BaseProducer<DeliveryCtx>,
    cfg: KafkaSinkConfig,
    policy: RetryPolicy,
    retries: VecDeque<Retry>,
    retried: u64,
    queue_full_waits: u64,
}

fn backend(e: impl std::fmt::Display) -> SinkError {
    SinkError::Backend { sink: "kafka", message: e.to_string() }
}

impl KafkaSink {
    /// A producer on `cfg.brokers` with the default retry policy.
    pub fn new(cfg: KafkaSinkConfig) -> Result<Self, SinkError> {
        Self::with_policy(cfg, RetryPolicy::default())
    }

    /// A producer with a given retry policy for failed deliveries and full queues.
    pub fn with_policy(cfg: KafkaSinkConfig, policy: RetryPolicy) -> Result<Self, SinkError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers)
            .set("queue.buffering.max.messages", cfg.queue_max_messages.max(1).to_string())
            .set("delivery.timeout.ms", cfg.delivery_timeout_ms.to_string())
            .set("linger.ms", cfg.linger_ms.to_string())
            .set("acks", "all");
        for (k, v) in &cfg.properties {
            cc.set(k, v);
        }
        let producer = cc.create_with_context(DeliveryCtx::default()).map_err(backend)?;
        Ok(KafkaSink { producer, cfg, policy, retries: VecDeque::new(), retried: 0, queue_full_waits: 0 })
    }

    /// Records acknowledged by the broker.
    pub fn produced(&self) -> u64 {
        self.producer.context().produced.load(Ordering::Relaxed)
    }

    /// Failed deliveries seen (each is retried).
    pub fn errors(&self) -> u64 {
        self.producer.context().errors.load(Ordering::Relaxed)
    }

    /// Records sent again after a failed delivery.
    pub fn retries(&self) -> u64 {
        self.retried
    }

    /// Times `write` waited for room in the full producer queue.
    pub fn queue_full_waits(&self) -> u64 {
        self.queue_full_waits
    }

    /// Records queued in librdkafka or waiting for a retry.
    pub fn pending(&self) -> usize {
        self.in_flight() as usize + self.retries.len() + lock(&self.producer.context().failed).len()
    }

    /// Records sent and not yet reported delivered or failed. Counted here, not
    /// with librdkafka's `outq_len` (`in_flight_count`): that one also counts
    /// queued client events, and after a lost broker it was seen to stay above
    /// zero for good with no record in flight, so a flush waiting for it hung.
    fn in_flight(&self) -> u64 {
        let c = self.producer.context();
        let done = c.produced.load(Ordering::Relaxed) + c.errors.load(Ordering::Relaxed);
        c.sent.load(Ordering::Relaxed).saturating_sub(done)
    }

    /// Enqueues one record, waiting with backoff (serving acks) while the queue is full.
    fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        attempt: usize,
    ) -> Result<(), SinkError> {
        let mut record = BaseRecord::with_opaque_to(topic, attempt);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let mut wait = 0u32;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.context().sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.queue_full_waits += 1;
                    // poll() serves delivery callbacks, which is what frees room.
                    self.producer.poll(self.policy.delay(wait).min(Duration::from_millis(500)));
                    wait = wait.saturating_add(1);
                    if wait.is_multiple_of(20) {
                        tracing::warn!(waits = wait, "kafka producer queue full; waiting for the broker");
                    }
                }
                Err((e, _)) => return Err(backend(e)),
            }
        }
    }

    /// Moves failed deliveries to the retry queue with their backoff.
    fn collect_failed(&mut self) {
        let failed = std::mem::take(&mut *lock(&self.producer.context().failed));
        for f in failed {
            let delay = self.policy.delay(f.attempts.saturating_sub(1));
            tracing::warn!(topic = f.msg.topic(), attempts = f.attempts, error = %f.error, "kafka delivery failed; will retry");
            self.retries.push_back(Retry { due: Instant::now() + delay, failed: f });
        }
    }

    /// Resends due retries; errors once a record used up its attempts (it stays queued).
    fn resend_due(&mut self) -> Result<(), SinkError> {
        self.collect_failed();
        let now = Instant::now();
        let max = self.policy.max_attempts.max(1);
        let mut keep = VecDeque::new();
        let mut exhausted: Option<String> = None;
        while let Some(r) = self.retries.pop_front() {
            if r.due > now {
                keep.push_back(r);
                continue;
            }
            if r.failed.attempts >= max && exhausted.is_none() {
                exhausted = Some(format!(
                    "a record to {} failed {} times (last error: {}); kept for the next flush",
                    r.failed.msg.topic(),
                    r.failed.attempts,
                    r.failed.error
                ));
                // Reset so the next flush tries it again with a full backoff schedule.
                let mut r = r;
                r.failed.attempts = 0;
                r.due = now + self.policy.max_delay;
                keep.push_back(r);
                continue;
            }
            let m = &r.failed.msg;
            let headers = m.headers().cloned();
            let (topic, key, payload) =
                (m.topic().to_string(), m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec));
            if let Err(e) =
                self.send(&topic, key.as_deref(), payload.as_deref(), headers, r.failed.attempts as usize + 1)
            {
                keep.push_back(r);
                keep.extend(self.retries.drain(..));
                self.retries = keep;
                return Err(e);
            }
            self.retried += 1;
        }
        self.retries = keep;
        match exhausted {
            Some(msg) => Err(backend(msg)),
            None => Ok(()),
        }
    }
}

impl Sink for KafkaSink {
    fn retries(&self) -> u64 {
        KafkaSink::retries(self)
    }

    fn name(&self) -> &'static str {
        "kafka"
    }

    fn write(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        if !self.retries.is_empty() || !lock(&self.producer.context().failed).is_empty() {
            self.resend_due()?;
        }
        for out in batch {
            for r in records_of(out, &self.cfg)? {
                let headers = (!r.headers.is_empty()).then(|| {
                    r.headers
                        .iter()
                        .fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v.as_str()) }))
                });
                self.send(&r.topic, r.key.as_deref().map(str::as_bytes), Some(&r.value), headers, 1)?;
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        loop {
            self.resend_due()?;
            if self.in_flight() > 0 {
                // Serves delivery reports (and sends at once what lingers).
                match self.producer.flush(Duration::from_millis(10)) {
                    Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
                    Err(e) => return Err(backend(e)),
                }
            } else if let Some(due) = self.retries.iter().map(|r| r.due).min() {
                self.producer.poll(due.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)));
            }
            self.collect_failed();
            if self.in_flight() == 0 && self.retries.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recflow_schemas::{DeadLetter, HotList, MetricsWindow};

    #[test]
    fn outputs_map_to_topics_keys_and_headers() {
        let cfg = KafkaSinkConfig::default();
        let hot = HotList {
            tenant_id: "t".into(),
            scenario_id: "s".into(),
            category: None,
            window_end: 3_600_000,
            entries: vec![("i1".into(), 5.0), ("i2".into(), 2.5)],
        };
        let recs = records_of(&Output::Hot(hot.clone()), &cfg).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].topic, "item-stats-updates");
        assert_eq!(recs[1].key.as_deref(), Some("t:i2"));
        let v: ItemStatsUpdate = serde_json::from_slice(&recs[1].value).unwrap();
        assert_eq!((v.rank, v.score, v.window_end, v.scenario_id.as_str()), (2, 2.5, 3_600_000, "s"));
        let cat = HotList { category: Some("news".into()), ..hot };
        assert!(records_of(&Output::Hot(cat), &cfg).unwrap().is_empty(), "category lists are not published");

        let m = MetricsWindow { tenant_id: "t".into(), scenario_id: "s".into(), window_start: 60_000, rows: vec![] };
        let recs = records_of(&Output::Metrics(m), &cfg).unwrap();
        assert_eq!((recs[0].topic.as_str(), recs[0].key.as_deref()), ("recommendation-metrics", Some("t:s")));

        let dead = |source| {
            Output::Dead(Box::new(DeadLetter {
                reason: "late".into(),
                field: None,
                detail: "d".into(),
                source,
                payload: "{}".into(),
            }))
        };
        let recs =
            records_of(&dead(SourcePos::Kafka { topic: "user-behaviors-t".into(), partition: 2, offset: 9 }), &cfg)
                .unwrap();
        assert_eq!(recs[0].topic, "user-behaviors-dlq");
        assert_eq!(recs[0].key, None);
        assert_eq!(
            recs[0].headers,
            vec![
                ("reason", "late".to_string()),
                ("source_topic", "user-behaviors-t".to_string()),
                ("source_partition", "2".to_string()),
                ("source_offset", "9".to_string())
            ]
        );
        let recs = records_of(&dead(SourcePos::File { path: "in.jsonl".into(), line: 3 }), &cfg).unwrap();
        assert_eq!(recs[0].headers[1..], [("source_file", "in.jsonl".to_string()), ("source_line", "3".to_string())]);
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let c: KafkaSinkConfig = serde_json::from_str(r#"{"brokers":"h:1"}"#).unwrap();
        assert_eq!(c.dlq_topic, "user-behaviors-dlq");
        assert!(serde_json::from_str::<KafkaSinkConfig>(r#"{"broker":"h:1"}"#).is_err());
    }
}
