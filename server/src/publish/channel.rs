//! Events into the in-process pipeline's [`recflow_sources::ChannelSource`].

use std::sync::mpsc::{SyncSender, TrySendError};

use futures_util::future::{ready, BoxFuture, FutureExt};
use recflow_schemas::{Event, Item};

use super::{Accepted, PublishError, Publisher};

/// Sends validated events to the embedded pipeline.
#[derive(Clone, Debug)]
pub struct ChannelPublisher {
    tx: SyncSender<Event>,
}

impl ChannelPublisher {
    /// Publishes into `tx`.
    pub fn new(tx: SyncSender<Event>) -> Self {
        ChannelPublisher { tx }
    }
}

impl Publisher for ChannelPublisher {
    fn publish_events(&self, _tenant: String, events: Vec<Accepted>) -> BoxFuture<'_, Result<(), PublishError>> {
        let mut result = Ok(());
        for a in events {
            // Never block the async runtime: a full queue is backpressure to the client.
            match self.tx.try_send(a.event) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    result = Err(PublishError::Unavailable("pipeline queue full; retry later".into()));
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    result = Err(PublishError::Unavailable("pipeline stopped".into()));
                    break;
                }
            }
        }
        ready(result).boxed()
    }

    fn publish_items(&self, _items: Vec<Item>) -> BoxFuture<'_, Result<(), PublishError>> {
        // The embedded state updates its own catalog; there is no topic to feed.
        ready(Ok(())).boxed()
    }
}
