//! Read routes: hot items, a user's profile, realtime metrics, hourly analytics.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::auth::Tenant;
use crate::routes::{int_param, scenario_param, Params};
use crate::state::{keys, HourlyQuery};
use crate::{ids, ApiError, App};

/// The longest `/analytics/hourly` range: 31 days.
const MAX_RANGE_MS: i64 = 31 * 24 * 3_600_000;
const HOUR_MS: i64 = 3_600_000;

/// `GET /api/v1/hot-items?scenario_id=&category=&limit=`.
pub async fn hot_items(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Query(q): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scenario = scenario_param(&q)?;
    let category = q.get("category");
    if let Some(c) = category {
        ids::scenario("category", c)?;
    }
    let limit = int_param(&q, "limit", 1..=500)?.unwrap_or(20) as usize;
    let key = match category {
        Some(c) => keys::hot_category(&tenant, scenario, c),
        None => keys::hot(&tenant, scenario),
    };
    let list = app.store.zsets(vec![key], limit).await?.pop().unwrap_or_default();
    let items: Vec<Value> =
        list.into_iter().map(|(item_id, score)| json!({ "item_id": item_id, "score": score })).collect();
    Ok(Json(json!({ "scenario_id": scenario, "category": category, "items": items })))
}

/// `GET /api/v1/users/{user_id}/profile?scenario_id=`: 404 when the user has none.
pub async fn profile(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(user): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    ids::id("user_id", &user)?;
    let scenario = scenario_param(&q)?;
    let doc = app.store.profile(tenant, user.clone(), scenario.to_string()).await?;
    let doc = doc.ok_or_else(|| ApiError::not_found(format!("no profile for user {user:?} in {scenario:?}")))?;
    serde_json::to_value(doc.as_ref()).map(Json).map_err(|e| ApiError::unavailable(e.to_string()))
}

/// `GET /api/v1/metrics/realtime?scenario_id=`: the latest closed minute, per experiment variant.
pub async fn metrics_realtime(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Query(q): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scenario = scenario_param(&q)?;
    let fields = app.store.hash(keys::metrics(&tenant, scenario)).await?;
    let mut window_start = None;
    let mut variants: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for (k, v) in fields {
        if k == "window_start" {
            window_start = Some(v as i64);
            continue;
        }
        // `{experiment}:{variant}:{metric}`; experiment and variant never contain ':'.
        let mut parts = k.splitn(3, ':');
        if let (Some(e), Some(var), Some(metric)) = (parts.next(), parts.next(), parts.next()) {
            variants.entry((e.to_string(), var.to_string())).or_default().insert(metric.to_string(), v);
        }
    }
    let variants: Vec<Value> =
        variants.into_iter().map(|((e, v), m)| json!({ "experiment_id": e, "variant": v, "metrics": m })).collect();
    Ok(Json(json!({ "scenario_id": scenario, "window_start": window_start, "variants": variants })))
}

/// `GET /api/v1/analytics/hourly?scenario_id=&from=&to=` (epoch ms; default the last 24 h).
pub async fn hourly(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Query(q): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let scenario = scenario_param(&q)?.to_string();
    let to = int_param(&q, "to", 0..=i64::MAX / 2)?.unwrap_or_else(|| (crate::now_ms() / HOUR_MS + 1) * HOUR_MS);
    let from = int_param(&q, "from", 0..=i64::MAX / 2)?.unwrap_or(to - 24 * HOUR_MS);
    if from >= to || to - from > MAX_RANGE_MS {
        return Err(ApiError::invalid("from", "need from < to and a range of at most 31 days"));
    }
    let rows = app.store.hourly(HourlyQuery { tenant, scenario: scenario.clone(), from_ms: from, to_ms: to }).await?;
    Ok(Json(json!({ "scenario_id": scenario, "from": from, "to": to, "rows": rows })))
}
