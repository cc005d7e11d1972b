//! `GET/PUT /api/v1/scenarios/{scenario_id}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::Value;

use crate::auth::Tenant;
use crate::limits::read_body;
use crate::routes::parse_json;
use crate::{ids, ApiError, App};

/// The tenant's config of the scenario (stored, else the template); 404 if none.
pub async fn get_scenario(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ids::scenario("scenario_id", &id)?;
    Ok(Json(app.scenarios.get(app.store.as_ref(), &tenant, &id).await?.config.clone()))
}

/// Validates (400 naming the field), stores and invalidates the cache.
pub async fn put_scenario(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    ids::scenario("scenario_id", &id)?;
    let bytes = read_body(&headers, body, app.cfg.max_body_bytes).await?;
    let mut config = parse_json(&bytes)?;
    if let Value::Object(m) = &mut config {
        match m.get("scenario_id") {
            None => {
                m.insert("scenario_id".into(), Value::String(id.clone()));
            }
            Some(Value::String(s)) if *s == id => {}
            Some(_) => return Err(ApiError::invalid("scenario_id", "scenario_id must equal the path's")),
        }
    }
    app.scenarios.compile(&config)?;
    app.store.put_scenario(tenant.clone(), id.clone(), config.clone()).await?;
    app.scenarios.invalidate(&tenant, &id);
    Ok(Json(config))
}
