//! Where accepted events and catalog updates go: Kafka (services mode) or
//! the in-process pipeline (embedded mode and `recflow demo`).

pub mod channel;
pub mod kafka;

use futures_util::future::BoxFuture;
use recflow_schemas::{Event, Item};

pub use channel::ChannelPublisher;
pub use kafka::KafkaPublisher;

/// A valid event and the exact bytes it was validated from.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The validated event.
    pub event: Event,
    /// The payload as received (what Kafka consumers validate again).
    pub raw: Vec<u8>,
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The destination is full or down; the client may retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Hands accepted events and item updates on.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes one tenant's events; resolves once all are acknowledged.
    fn publish_events(&self, tenant: String, events: Vec<Accepted>) -> BoxFuture<'_, Result<(), PublishError>>;
    /// Publishes catalog updates (`item-updates`).
    fn publish_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<(), PublishError>>;
}
