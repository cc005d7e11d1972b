//! The collector: `POST /api/v1/events` and `/api/v1/events/batch`,
//! validated by the pipeline's own [`recflow_schemas::Validator`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::auth::Tenant;
use crate::limits::read_body;
use crate::publish::{Accepted, PublishError};
use crate::{ApiError, App};

/// One rejected row of a batch.
#[derive(Debug, Serialize)]
struct RowError {
    index: usize,
    code: &'static str,
    field: Option<&'static str>,
    message: String,
}

/// Validates `payload` as an event of `tenant`.
fn validate(app: &App, tenant: &str, payload: &[u8]) -> Result<Accepted, recflow_schemas::Rejection> {
    let event = app.validator.validate(payload, Some(tenant), crate::now_ms())?;
    Ok(Accepted { event, raw: payload.to_vec() })
}

async fn publish(app: &App, tenant: String, accepted: Vec<Accepted>) -> Result<(), ApiError> {
    app.publisher
        .publish_events(tenant, accepted)
        .await
        .map_err(|PublishError::Unavailable(m)| ApiError::unavailable(m))
}

/// One event; 202 once it is acknowledged downstream.
pub async fn single(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = read_body(&headers, body, app.cfg.max_body_bytes).await?;
    let accepted = validate(&app, &tenant, &bytes).map_err(|r| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: r.reason.code(),
        message: r.detail,
        field: r.field.map(str::to_string),
    })?;
    let event_id = accepted.event.event_id.to_string();
    publish(&app, tenant, vec![accepted]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": 1, "rejected": 0, "event_id": event_id }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// A batch (a JSON array, or `{"events": [...]}`): valid rows are published,
/// invalid ones reported by index; 202 if any was accepted, else 400.
pub async fn batch(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = read_body(&headers, body, app.cfg.max_batch_body_bytes).await?;
    let bad_json = |e: serde_json::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("expected a JSON array of events: {e}"))
            .with_field("events")
    };
    let rows: Vec<&RawValue> = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice::<Wrapped<'_>>(&bytes).map_err(bad_json)?.events,
        _ => serde_json::from_slice(&bytes).map_err(bad_json)?,
    };
    let max = app.cfg.max_batch_events;
    if rows.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!("{} events; at most {max} per batch", rows.len()),
        )
        .with_field("events"));
    }
    if rows.is_empty() {
        return Err(ApiError::invalid("events", "the batch is empty"));
    }
    let mut accepted = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for (index, raw) in rows.iter().enumerate() {
        match validate(&app, &tenant, raw.get().as_bytes()) {
            Ok(a) => accepted.push(a),
            Err(r) => errors.push(RowError { index, code: r.reason.code(), field: r.field, message: r.detail }),
        }
    }
    let n = accepted.len();
    if n > 0 {
        publish(&app, tenant, accepted).await?;
    }
    let status = if n > 0 { StatusCode::ACCEPTED } else { StatusCode::BAD_REQUEST };
    Ok((status, Json(json!({ "accepted": n, "rejected": errors.len(), "errors": errors }))))
}
