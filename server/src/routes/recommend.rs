//! `POST /api/v1/recommend`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::Value;

use crate::auth::Tenant;
use crate::limits::read_body;
use crate::recommend::{new_request_id, recommend as run, RecRequest, RecResponse};
use crate::routes::parse_object;
use crate::{ids, ApiError, App};

/// Most `exclude_items` accepted.
const MAX_EXCLUDE: usize = 1000;

/// Validates the request and runs the flow.
pub async fn recommend(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RecResponse>, ApiError> {
    let bytes = read_body(&headers, body, app.cfg.max_body_bytes).await?;
    let m = parse_object(&bytes, &["scenario_id", "count", "context", "exclude_items", "user_id"])?;
    let scenario_id = match m.get("scenario_id") {
        None | Some(Value::Null) => return Err(ApiError::missing("scenario_id")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::invalid("scenario_id", "scenario_id must be a string")),
    };
    ids::scenario("scenario_id", &scenario_id)?;
    let count = match m.get("count") {
        None | Some(Value::Null) => 20,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=100) => n as usize,
            _ => return Err(ApiError::invalid("count", "count must be an integer in 1..=100")),
        },
    };
    if !matches!(m.get("context"), None | Some(Value::Null) | Some(Value::Object(_))) {
        return Err(ApiError::invalid("context", "context must be an object"));
    }
    let mut exclude = HashSet::new();
    match m.get("exclude_items") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.len() <= MAX_EXCLUDE => {
            for (i, v) in a.iter().enumerate() {
                let field = format!("exclude_items[{i}]");
                let s = v.as_str().ok_or_else(|| ApiError::invalid(&field, "item ids are strings"))?;
                ids::id(&field, s)?;
                exclude.insert(s.to_string());
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "exclude_items",
                format!("exclude_items must be an array of at most {MAX_EXCLUDE} item ids"),
            ))
        }
    }
    let user = user_of(&headers, m.get("user_id"))?;
    let request_id = match headers.get("x-request-id") {
        None => new_request_id(),
        Some(v) => {
            let s = v.to_str().unwrap_or_default();
            let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if !ok {
                return Err(ApiError::invalid("X-Request-Id", "X-Request-Id must be 1..128 printable characters"));
            }
            s.to_string()
        }
    };
    let req = RecRequest { tenant, user, scenario_id, count, exclude, request_id };
    Ok(Json(run(&app, req).await?))
}

/// The user: `X-User-Id` (the gateway contract), else the body's `user_id`.
fn user_of(headers: &HeaderMap, body_user: Option<&Value>) -> Result<String, ApiError> {
    if let Some(v) = headers.get("x-user-id") {
        let s = v.to_str().map_err(|_| ApiError::invalid("X-User-Id", "X-User-Id is not ASCII"))?;
        ids::id("X-User-Id", s)?;
        return Ok(s.to_string());
    }
    match body_user {
        Some(Value::String(s)) => {
            ids::id("user_id", s)?;
            Ok(s.clone())
        }
        Some(_) => Err(ApiError::invalid("user_id", "user_id must be a string")),
        None => Err(ApiError::missing("X-User-Id")),
    }
}
