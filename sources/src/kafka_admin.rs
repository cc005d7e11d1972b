//! Kafka tooling: idempotent topic creation and a JSONL -> per-tenant topics producer.

use std::collections::HashSet;
use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::Deserialize;

use crate::kafka::topic_of_tenant;

/// Why a Kafka tool failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The client or broker failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Creating a topic failed for a reason other than "already exists".
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    /// Some messages were not acknowledged by the broker.
    #[error("{failed} of {sent} messages were not delivered (first error: {first})")]
    Delivery {
        /// Messages whose delivery failed.
        failed: u64,
        /// Messages sent.
        sent: u64,
        /// The first delivery error.
        first: String,
    },
}

/// Creates `names` with `partitions` partitions (replication 1); existing topics are fine.
pub fn create_topics(brokers: &str, names: &[&str], partitions: i32) -> Result<(), AdminError> {
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let topics: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, partitions.max(1), TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics(topics.iter(), &opts))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(AdminError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// What [`produce_jsonl`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProduceStats {
    /// Lines produced and acknowledged.
    pub produced: u64,
    /// Non-blank lines skipped because their `tenant_id` could not be read.
    pub skipped: u64,
    /// Distinct tenant topics written to.
    pub topics: u64,
}

/// Counts acknowledgements and keeps the first delivery error.
#[derive(Default)]
struct AckCounter {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for AckCounter {}

impl ProducerContext for AckCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Just the fields routing needs.
#[derive(Deserialize)]
struct Route<'a> {
    #[serde(borrow, default)]
    tenant_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<std::borrow::Cow<'a, str>>,
}

/// Produces each line of a JSONL events input to `user-behaviors-{tenant_id}`
/// keyed by `user_id`, creating each tenant topic with `partitions` first.
/// Lines whose tenant cannot be read are skipped with a warning and counted.
/// Prints progress on stderr every second; waits for all acks at the end.
pub fn produce_jsonl(brokers: &str, input: impl BufRead, partitions: i32) -> Result<ProduceStats, AdminError> {
    let producer: BaseProducer<AckCounter> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "100000")
        .create_with_context(AckCounter::default())?;
    let mut created: HashSet<String> = HashSet::new();
    let mut stats = ProduceStats::default();
    let mut sent = 0u64;
    let start = Instant::now();
    let mut last_report = start;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let text = line.trim_end_matches('\r');
        if text.trim().is_empty() {
            continue;
        }
        let route = serde_json::from_str::<Route<'_>>(text).ok();
        let tenant = route.as_ref().and_then(|r| r.tenant_id.as_deref());
        let Some(tenant) = tenant.filter(|t| recflow_schemas::validate::is_valid_tenant(t)) else {
            tracing::warn!(line = i + 1, "no valid tenant_id: line skipped");
            stats.skipped += 1;
            continue;
        };
        let topic = topic_of_tenant(tenant);
        if !created.contains(&topic) {
            create_topics(brokers, &[&topic], partitions)?;
            created.insert(topic.clone());
        }
        let key = route.as_ref().and_then(|r| r.user_id.as_deref());
        let mut record = BaseRecord::to(&topic).payload(text);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut backoff = Duration::from_millis(1);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Bounded queue: wait for acks, then try again.
                    record = r;
                    producer.poll(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let acked = producer.context().acked.load(Ordering::Relaxed);
            eprintln!(
                "produce_jsonl: {sent} sent, {acked} acked, {} skipped, {:.0}/s",
                stats.skipped,
                sent as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    // Wait for every ack (librdkafka retries internally until its delivery timeout).
    while producer.in_flight_count() > 0 {
        if let Err(e) = producer.flush(Duration::from_secs(1)) {
            if !matches!(e, KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) {
                return Err(e.into());
            }
        }
    }
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    stats.produced = ctx.acked.load(Ordering::Relaxed);
    stats.topics = created.len() as u64;
    eprintln!(
        "produce_jsonl: done: {} produced, {} skipped, {} topics in {:.1} s",
        stats.produced,
        stats.skipped,
        stats.topics,
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        let first = ctx.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
        return Err(AdminError::Delivery { failed, sent, first });
    }
    Ok(stats)
}
