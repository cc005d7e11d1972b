//! The embedded store: the Redis keys and Mongo `user_profiles` documents of
//! MISSION.md, held in-process for `recflow demo` and read by the HTTP server.

mod dump;
mod hourly;
mod sink;
mod store;
mod value;

#[cfg(test)]
mod tests;

pub use hourly::HourlyRow;
pub use sink::EmbeddedSink;
pub use store::{EmbeddedStore, HOT_TTL, METRICS_TTL, PROFILE_TTL};
pub use value::FieldValue;

// The Redis sink writes and reads the same key layout and field typing.
pub(crate) use dump::hash_value;
pub(crate) use store::{
    is_count_metric, metrics_fields, profile_key, ITEM_STATS_PREFIX, METRICS_PREFIX, PROFILE_PREFIX,
};
