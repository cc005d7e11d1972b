//! The application state shared by all handlers, and the router.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};
use axum::Router;
use recflow_schemas::Validator;

use crate::auth::ApiKeys;
use crate::exposures::ExposureLog;
use crate::hotcache::HotCache;
use crate::limits::RateLimiter;
use crate::metrics::{ExtraMetrics, ServerMetrics};
use crate::publish::Publisher;
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
    /// Hot lists cached in-process; also the last good copy served when Redis is down.
    pub hot: HotCache,
    /// Records exposures off the response path.
    pub exposures: ExposureLog,
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
        let metrics = ServerMetrics::new(extra_metrics);
        let exposure_ttl = Duration::from_secs(cfg.exposure_ttl_secs);
        Ok(App {
            hot: HotCache::new(Duration::from_millis(cfg.hot_cache_ms)),
            exposures: ExposureLog::new(store.clone(), exposure_ttl, metrics.exposure_writes.clone()),
            keys: ApiKeys::new(&cfg.api_keys),
            limiter: RateLimiter::new(cfg.rate_limit_per_sec, cfg.rate_limit_burst),
            cfg,
            store,
            publisher,
            scenarios,
            validator,
            metrics,
        })
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
