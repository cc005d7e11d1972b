//! recflow's HTTP server: recommendations, state reads and the event
//! collector, over one [`state::StateStore`] seam (Redis + MongoDB, or the
//! embedded store) and one [`publish::Publisher`] seam (Kafka, or the
//! in-process pipeline).

pub mod ab;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod exposures;
pub mod hotcache;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod publish;
pub mod recall;
pub mod recommend;
pub mod rerank;
pub mod routes;
pub mod scenario;
pub mod state;

pub use app::{router, serve, App};
pub use config::{ApiKeyConfig, ServerConfig};
pub use error::ApiError;

/// Wall-clock now in epoch milliseconds.
pub fn now_ms() -> i64 {
    recflow_schemas::validate::now_ms()
}
