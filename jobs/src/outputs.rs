//! Which sinks a worker writes to: the embedded store and files, or the
//! real services (Redis, MongoDB, ClickHouse, Kafka).

use std::sync::Arc;
use std::time::Duration;

use recflow_sinks::{
    BatchConfig, ClickHouseSink, DlqFileSink, EmbeddedSink, EmbeddedStore, KafkaSink, MongoSink, RawLogFileSink,
    RedisSink, ServerDialect, SharedFile, Sink,
};

use crate::config::Config;

/// Files the embedded mode writes besides the store.
#[derive(Clone, Default)]
pub struct EmbeddedOutputs {
    /// Dead letters.
    pub dlq: Option<SharedFile>,
    /// Raw-log (ClickHouse) batches; `None` counts rows only.
    pub raw_log: Option<SharedFile>,
}

/// The raw-log batching of `[clickhouse]`.
pub fn raw_log_batching(cfg: &Config) -> BatchConfig {
    BatchConfig {
        max_rows: cfg.clickhouse.batch_rows,
        max_age: Duration::from_secs_f64(cfg.clickhouse.batch_max_age_secs),
    }
}

/// Sinks of one worker in embedded mode.
pub fn embedded_sinks(
    cfg: &Config,
    store: &Arc<EmbeddedStore>,
    files: &EmbeddedOutputs,
    worker: usize,
) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(EmbeddedSink::new(store.clone()))];
    if let Some(f) = &files.dlq {
        sinks.push(Box::new(DlqFileSink::new(f.clone())));
    }
    sinks.push(Box::new(RawLogFileSink::new(worker, files.raw_log.clone(), raw_log_batching(cfg))));
    sinks
}

/// Sinks of one worker in services mode (each opens its own connections).
pub fn service_sinks(cfg: &Config, dialect: ServerDialect) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    Ok(vec![
        Box::new(RedisSink::new(&cfg.redis)?),
        Box::new(MongoSink::new(cfg.mongo.clone())?),
        Box::new(ClickHouseSink::new(&cfg.clickhouse, dialect)?),
        Box::new(KafkaSink::new(cfg.kafka_sink.clone())?),
    ])
}
