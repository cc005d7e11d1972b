//! recflow's sinks: every destination of pipeline outputs sits behind the one
//! [`Sink`] trait, so jobs wire sources -> operators -> sinks without knowing
//! whether the state lands in Redis/Mongo/ClickHouse or in the embedded store.

pub mod batcher;
pub mod clickhouse;
pub mod dlq_file;
pub mod embedded;
pub mod error;
pub mod file;
pub mod kafka;
pub mod mongo;
pub mod raw_log_file;
pub mod redis;
pub mod replay;

pub use self::redis::{RedisConfig, RedisSink, RedisStats};
pub use crate::clickhouse::{ClickHouseConfig, ClickHouseSink, ClickHouseStats, RowSource, ServerDialect};
pub use batcher::{retry, retry_if, BatchConfig, BatchTrigger, Batcher, RetryConfig, RetryPolicy};
pub use dlq_file::DlqFileSink;
pub use embedded::{EmbeddedSink, EmbeddedStore, FieldValue};
pub use error::SinkError;
pub use file::{FileMode, SharedFile};
pub use kafka::{KafkaSink, KafkaSinkConfig};
pub use mongo::{MongoConfig, MongoDb, MongoProfiles, MongoSink};
pub use raw_log_file::{RawLogFileSink, RawRow};

/// A destination for pipeline outputs.
pub trait Sink: Send {
    /// Short name for logs/metrics ("embedded", "dlq_file", "raw_log_file", ...).
    fn name(&self) -> &'static str;
    /// Accepts a batch; may buffer. Records of kinds this sink does not handle are ignored.
    fn write(&mut self, batch: &[recflow_schemas::Output]) -> Result<(), SinkError>;
    /// Makes everything accepted so far durable/visible.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Retries this sink made so far (for metrics); sinks without a backend report 0.
    fn retries(&self) -> u64 {
        0
    }
}

/// Boxed sinks are sinks too, so jobs can hold `Vec<Box<dyn Sink>>`.
impl<S: Sink + ?Sized> Sink for Box<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn write(&mut self, batch: &[recflow_schemas::Output]) -> Result<(), SinkError> {
        (**self).write(batch)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        (**self).flush()
    }
    fn retries(&self) -> u64 {
        (**self).retries()
    }
}
