//! The `[server]` config table.

use serde::Deserialize;

/// One tenant's API key, stored as the SHA-256 (hex) of the key, never the key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The tenant the key belongs to.
    pub tenant: String,
    /// Lowercase or uppercase hex of SHA-256(key), 64 characters.
    pub key_sha256: String,
}

/// `[server]`: listen address, keys, limits and caches of `recflow serve`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server binds.
    pub listen: String,
    /// API keys; a key is valid only for its tenant.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Requests per second per tenant (token refill rate).
    pub rate_limit_per_sec: f64,
    /// Bucket size: requests a tenant may burst above the rate.
    pub rate_limit_burst: f64,
    /// Largest request body except event batches (bytes).
    pub max_body_bytes: usize,
    /// Largest `/api/v1/events/batch` body (bytes).
    pub max_batch_body_bytes: usize,
    /// Most events in one batch (and items in one `PUT /items`).
    pub max_batch_events: usize,
    /// Requests running longer are answered 504.
    pub request_timeout_ms: u64,
    /// Scenario templates (`*.json`) every tenant gets unless it stored its own.
    pub scenarios_dir: String,
    /// How long a loaded scenario config is served from memory (a local PUT invalidates at once).
    pub scenario_cache_secs: u64,
    /// How long a tenant's item catalog is served from memory before it is reloaded.
    pub catalog_cache_secs: u64,
    /// TTL of `exposed:{tenant}:{user}:{scenario}` sets.
    pub exposure_ttl_secs: u64,
    /// Redis command timeout of the query path (ms); past it Redis counts as unavailable.
    pub redis_timeout_ms: u64,
    /// How long a hot list read from the store is served from memory (ms; 0 = no caching).
    pub hot_cache_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            rate_limit_per_sec: 10_000.0,
            rate_limit_burst: 20_000.0,
            max_body_bytes: 64 * 1024,
            max_batch_body_bytes: 1024 * 1024,
            max_batch_events: 1000,
            request_timeout_ms: 2000,
            scenarios_dir: "configs/scenarios".into(),
            scenario_cache_secs: 60,
            catalog_cache_secs: 60,
            exposure_ttl_secs: 24 * 3600,
            redis_timeout_ms: 500,
            hot_cache_ms: 1000,
        }
    }
}

impl ServerConfig {
    /// Rejects values the server cannot run with, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!("server.listen: not a socket address: {:?}", self.listen));
        }
        // Written so NaN fails too.
        let rate_ok = self.rate_limit_per_sec.is_finite() && self.rate_limit_per_sec > 0.0;
        let burst_ok = self.rate_limit_burst.is_finite() && self.rate_limit_burst >= 1.0;
        if !(rate_ok && burst_ok) {
            return Err("server.rate_limit_per_sec must be > 0 and server.rate_limit_burst >= 1".into());
        }
        if self.max_body_bytes == 0 || self.max_batch_body_bytes == 0 || self.max_batch_events == 0 {
            return Err("server.max_body_bytes, max_batch_body_bytes and max_batch_events must be positive".into());
        }
        if self.request_timeout_ms == 0 || self.redis_timeout_ms == 0 {
            return Err("server.request_timeout_ms and server.redis_timeout_ms must be positive".into());
        }
        for (i, k) in self.api_keys.iter().enumerate() {
            if !recflow_schemas::validate::is_valid_tenant(&k.tenant) {
                return Err(format!("server.api_keys[{i}].tenant: not a valid tenant id: {:?}", k.tenant));
            }
            if crate::auth::parse_hash(&k.key_sha256).is_none() {
                return Err(format!("server.api_keys[{i}].key_sha256: expected 64 hex characters"));
            }
        }
        Ok(())
    }
}
