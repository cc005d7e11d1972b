//! Loads the item catalog from the `item-updates` topic (JSON [`Item`], key
//! `{tenant}:{item}`): every partition from the beginning, until caught up.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use recflow_schemas::Item;

use crate::kafka::KafkaConfig;
pub use crate::kafka::ITEM_UPDATES_TOPIC;
use crate::Catalog;

/// Reads `item-updates` into `catalog`; returns the number of items applied.
pub fn consume_item_updates(cfg: &KafkaConfig, catalog: &mut Catalog, timeout: Duration) -> KafkaResult<u64> {
    consume_items_from(cfg, ITEM_UPDATES_TOPIC, catalog, timeout)
}

/// [`consume_item_updates`] from any topic. "Caught up" is each partition's
/// end-of-partition event (the Fetch high watermark, not ListOffsets); an
/// error is returned if that is not reached within `timeout`. A missing topic
/// is an empty catalog.
pub fn consume_items_from(
    cfg: &KafkaConfig,
    topic: &str,
    catalog: &mut Catalog,
    timeout: Duration,
) -> KafkaResult<u64> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", format!("{}-catalog", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc.create()?;
    let deadline = Instant::now() + timeout;
    let meta = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = meta.topics().iter().find(|t| t.name() == topic) else {
        return Ok(0);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        tracing::info!(topic, "catalog topic not found: starting with an empty catalog");
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut pending: HashSet<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let (mut applied, mut bad) = (0u64, 0u64);
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut));
        }
        match consumer.poll(left.min(Duration::from_millis(200))) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(m)) => {
                // More data after an EOF means the partition is not caught up after all.
                pending.insert(m.partition());
                match m.payload().map(serde_json::from_slice::<Item>) {
                    Some(Ok(item)) => {
                        catalog.upsert(&item);
                        applied += 1;
                    }
                    _ => {
                        bad += 1;
                        tracing::warn!(
                            partition = m.partition(),
                            offset = m.offset(),
                            "bad item-updates record skipped"
                        );
                    }
                }
            }
        }
    }
    tracing::info!(applied, bad, items = catalog.len(), "catalog loaded from {topic}");
    Ok(applied)
}
