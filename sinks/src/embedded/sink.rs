//! `Sink` adapter applying pipeline outputs to a shared [`EmbeddedStore`].

use std::sync::Arc;

use recflow_schemas::Output;

use super::EmbeddedStore;
use crate::{Sink, SinkError};

/// Applies Hot/ItemStats/Profile/Metrics outputs to the store; ignores Raw/Dead.
///
/// Cheap to create: give each dataflow worker its own, all sharing one store.
#[derive(Clone, Debug)]
pub struct EmbeddedSink {
    store: Arc<EmbeddedStore>,
}

impl EmbeddedSink {
    /// A sink writing into `store`.
    pub fn new(store: Arc<EmbeddedStore>) -> Self {
        EmbeddedSink { store }
    }

    /// The store written to.
    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.store
    }
}

impl Sink for EmbeddedSink {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn write(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        self.store.apply_batch(batch)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // Every write is visible to readers as soon as `write` returns.
        Ok(())
    }
}
