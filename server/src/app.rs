//! The application state shared by all handlers, and the router.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use axum::Router;
use recflow_schemas::Validator;

use crate::auth::ApiKeys;
use crate::limits::RateLimiter;
use crate::metrics::{ExtraMetrics, ServerMetrics};
use crate::publish::Publisher;
use crate::recall::Candidate;
use crate::recommend::HotCopy;
use crate::routes::{events, health, items, read, recommend, scenarios};
use crate::scenario::Scenarios;
use crate::state::StateStore;
use crate::{auth, limits, metrics, ApiError, ServerConfig};

/// Everything a handler needs.
pub struct App {
    /// `[server]`.
    pub cfg: ServerConfig,
    /// API keys.
    pub keys: ApiKeys,
    /// Per-tenant rate limit.
    pub limiter: RateLimiter,
    /// Where state is read.
    pub store: Arc<dyn StateStore>,
    /// Where events go.
    pub publisher: Arc<dyn Publisher>,
    /// Scenario configs.
    pub scenarios: Scenarios,
    /// The pipeline's event validator.
    pub validator: Validator,
    /// Prometheus series.
    pub metrics: ServerMetrics,
    /// The last hot list read per (tenant, scenario): the answer when Redis is down.
    last_hot: Mutex<HashMap<(String, String), HotCopy>>,
}

impl App {
    /// An app over `store` and `publisher`; loads the scenario templates of `cfg.scenarios_dir`.
    pub fn new(
        cfg: ServerConfig,
        store: Arc<dyn StateStore>,
        publisher: Arc<dyn Publisher>,
        validator: Validator,
        extra_metrics: Option<ExtraMetrics>,
    ) -> Result<App, String> {
        cfg.check()?;
        let scenarios = Scenarios::load(Path::new(&cfg.scenarios_dir), Duration::from_secs(cfg.scenario_cache_secs))?;
        Ok(App {
            keys: ApiKeys::new(&cfg.api_keys),
            limiter: RateLimiter::new(cfg.rate_limit_per_sec, cfg.rate_limit_burst),
            cfg,
            store,
            publisher,
            scenarios,
            validator,
            metrics: ServerMetrics::new(extra_metrics),
            last_hot: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps `list` as the last good hot list of (tenant, scenario).
    pub fn remember_hot(&self, tenant: &str, scenario: &str, list: &[Candidate]) {
        let mut m = self.last_hot.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((tenant.to_string(), scenario.to_string()), Arc::new(list.to_vec()));
    }

    /// The last good hot list of (tenant, scenario).
    pub fn last_hot(&self, tenant: &str, scenario: &str) -> Option<HotCopy> {
        let m = self.last_hot.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&(tenant.to_string(), scenario.to_string())).cloned()
    }
}

/// Every route: /api/v1/* behind auth, rate limit and timeout; /metrics and /health/* open.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/api/v1/recommend", post(recommend::recommend))
        .route("/api/v1/events", post(events::single))
        .route("/api/v1/events/batch", post(events::batch))
        .route("/api/v1/hot-items", get(read::hot_items))
        .route("/api/v1/users/{user_id}/profile", get(read::profile))
        .route("/api/v1/metrics/realtime", get(read::metrics_realtime))
        .route("/api/v1/analytics/hourly", get(read::hourly))
        .route("/api/v1/items", put(items::put_items))
        .route("/api/v1/scenarios/{scenario_id}", get(scenarios::get_scenario).put(scenarios::put_scenario))
        .route_layer(from_fn_with_state(app.clone(), auth::require_tenant))
        .route_layer(from_fn_with_state(app.clone(), limits::timeout));
    let open = Router::new()
        .route("/metrics", get(health::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));
    api.merge(open)
        .route_layer(from_fn_with_state(app.clone(), metrics::record))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await
}
