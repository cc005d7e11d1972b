//! Pure timely-dataflow operators: ingest with watermarks and lateness,
//! event-time windows, hot-item scores with top-K, user profiles and
//! experiment metrics. No I/O here: sources feed in, sinks drain out.

pub mod counters;
pub mod exact;
pub mod hot_items;
pub mod ingest;
pub mod metrics;
pub mod profile;
pub mod route;
pub mod time;
pub mod topk;
pub mod windowed;

pub use counters::Counters;
pub use ingest::{ingest, IngestConfig, IngestStreams};

/// Timely time in this dataflow: event-time minute since the epoch.
pub type Minute = u64;
