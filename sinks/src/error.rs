//! The one error type every sink returns.

use std::path::PathBuf;

/// Why a sink could not accept or persist records.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An output file could not be opened or created.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file that failed to open.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or flushing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be serialized.
    #[error("serialization error: {0}")]
    Json(#[from] serde_json::Error),
    /// A remote backend (Redis, Mongo, ClickHouse, Kafka) refused or is down.
    #[error("{sink} backend error: {message}")]
    Backend {
        /// The sink's name.
        sink: &'static str,
        /// What the backend said.
        message: String,
    },
    /// A lock was poisoned because another worker panicked while holding it.
    #[error("{0}: lock poisoned by a panicked worker")]
    Poisoned(&'static str),
}
