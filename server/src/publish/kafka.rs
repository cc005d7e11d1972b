//! Events to `user-behaviors-{tenant}` (key user_id) and items to
//! `item-updates` (key `{tenant}:{item}`) with one FutureProducer.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::{try_join_all, BoxFuture, FutureExt};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::util::AsyncRuntime;
use recflow_schemas::Item;

use super::{Accepted, PublishError, Publisher};

/// rdkafka's async glue on the server's tokio runtime (its own `tokio`
/// feature is off workspace-wide; this is all it would add).
pub struct Tokio;

impl AsyncRuntime for Tokio {
    type Delay = tokio::time::Sleep;

    fn spawn<T>(task: T)
    where
        T: std::future::Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(task);
    }

    fn delay_for(duration: Duration) -> Self::Delay {
        tokio::time::sleep(duration)
    }
}

type Producer = FutureProducer<DefaultClientContext, Tokio>;

/// Publishes to Kafka; tenant topics are created on first use.
pub struct KafkaPublisher {
    producer: Producer,
    brokers: String,
    partitions: i32,
    item_topic: String,
    created: Mutex<HashSet<String>>,
}

fn unavailable(e: impl std::fmt::Display) -> PublishError {
    PublishError::Unavailable(format!("kafka: {e}"))
}

impl KafkaPublisher {
    /// A producer for `brokers`; topics it creates get `partitions` partitions.
    pub fn new(brokers: &str, partitions: i32, item_topic: &str) -> Result<Self, PublishError> {
        let producer: Producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "2")
            .set("message.timeout.ms", "10000")
            .create()
            .map_err(unavailable)?;
        Ok(KafkaPublisher {
            producer,
            brokers: brokers.to_string(),
            partitions,
            item_topic: item_topic.to_string(),
            created: Mutex::new(HashSet::new()),
        })
    }

    /// Creates `topic` once per process (idempotent on the broker too).
    async fn ensure_topic(&self, topic: &str) -> Result<(), PublishError> {
        if self.created.lock().unwrap_or_else(|e| e.into_inner()).contains(topic) {
            return Ok(());
        }
        let (brokers, t, p) = (self.brokers.clone(), topic.to_string(), self.partitions);
        tokio::task::spawn_blocking(move || recflow_sources::kafka_admin::create_topics(&brokers, &[&t], p))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        self.created.lock().unwrap_or_else(|e| e.into_inner()).insert(topic.to_string());
        Ok(())
    }

    /// Enqueues one message; the future resolves on the broker's ack.
    fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<DeliveryFuture, PublishError> {
        self.producer.send_result(FutureRecord::to(topic).key(key).payload(payload)).map_err(|(e, _)| unavailable(e))
    }

    async fn acked(futures: Vec<DeliveryFuture>) -> Result<(), PublishError> {
        let waits = futures.into_iter().map(|f| async move {
            match tokio::time::timeout(Duration::from_secs(15), f).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err((e, _)))) => Err(unavailable(e)),
                Ok(Err(_)) => Err(unavailable("delivery cancelled")),
                Err(_) => Err(unavailable("delivery timed out")),
            }
        });
        try_join_all(waits).await.map(|_| ())
    }
}

impl Publisher for KafkaPublisher {
    fn publish_events(&self, tenant: String, events: Vec<Accepted>) -> BoxFuture<'_, Result<(), PublishError>> {
        async move {
            let topic = recflow_sources::kafka::topic_of_tenant(&tenant);
            self.ensure_topic(&topic).await?;
            let futures =
                events.iter().map(|a| self.send(&topic, &a.event.user_id, &a.raw)).collect::<Result<Vec<_>, _>>()?;
            Self::acked(futures).await
        }
        .boxed()
    }

    fn publish_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<(), PublishError>> {
        async move {
            self.ensure_topic(&self.item_topic).await?;
            let mut futures = Vec::with_capacity(items.len());
            for it in &items {
                let payload = serde_json::to_vec(it).map_err(unavailable)?;
                futures.push(self.send(&self.item_topic, &format!("{}:{}", it.tenant_id, it.item_id), &payload)?);
            }
            Self::acked(futures).await
        }
        .boxed()
    }
}
