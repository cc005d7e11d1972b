//! The embedded store: the Redis keys and Mongo `user_profiles` documents of
//! MISSION.md, held in-process for `recflow demo` and read by the HTTP server.

mod dump;
mod sink;
mod store;
mod value;

#[cfg(test)]
mod tests;

pub use sink::EmbeddedSink;
pub use store::{EmbeddedStore, HOT_TTL, METRICS_TTL, PROFILE_TTL};
pub use value::FieldValue;
