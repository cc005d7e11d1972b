//! `PUT /api/v1/items`: catalog upserts into the store and `item-updates`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use recflow_schemas::{Item, Str};
use serde_json::{json, Map, Value};

use crate::auth::Tenant;
use crate::limits::read_body;
use crate::publish::PublishError;
use crate::routes::{check_keys, parse_json};
use crate::{ids, ApiError, App};

const FIELDS: [&str; 7] = ["tenant_id", "scenario_id", "item_id", "category", "tags", "publish_time", "status"];

/// Upserts a JSON array of items (or `{"items": [...]}`) of the caller's tenant.
pub async fn put_items(
    State(app): State<Arc<App>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&headers, body, app.cfg.max_batch_body_bytes).await?;
    let rows = match parse_json(&bytes)? {
        Value::Array(a) => a,
        Value::Object(mut m) if m.len() == 1 && m.contains_key("items") => match m.remove("items") {
            Some(Value::Array(a)) => a,
            _ => return Err(ApiError::invalid("items", "items must be an array")),
        },
        _ => return Err(ApiError::invalid("items", "expected an array of items or {\"items\": [...]}")),
    };
    if rows.is_empty() || rows.len() > app.cfg.max_batch_events {
        return Err(ApiError::invalid("items", format!("send 1..={} items", app.cfg.max_batch_events)));
    }
    let items = rows
        .iter()
        .enumerate()
        .map(|(i, v)| item(&tenant, v, &format!("items[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let n = items.len();
    app.store.upsert_items(tenant, items.clone()).await?;
    app.publisher.publish_items(items).await.map_err(|PublishError::Unavailable(m)| ApiError::unavailable(m))?;
    Ok(Json(json!({ "upserted": n })))
}

/// One item, every field checked; ids with the event patterns.
fn item(tenant: &str, v: &Value, prefix: &str) -> Result<Item, ApiError> {
    let m: &Map<String, Value> =
        v.as_object().ok_or_else(|| ApiError::invalid(prefix.trim_end_matches('.'), "not an object"))?;
    check_keys(m, &FIELDS, prefix)?;
    let f = |name: &str| format!("{prefix}{name}");
    let opt_str = |name: &str| -> Result<Option<&str>, ApiError> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::invalid(f(name), format!("{name} must be a string"))),
        }
    };
    if let Some(t) = opt_str("tenant_id")? {
        if t != tenant {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "tenant_mismatch", "tenant_id must equal X-Tenant-Id")
                .with_field(f("tenant_id")));
        }
    }
    let item_id = opt_str("item_id")?.ok_or_else(|| ApiError::missing(f("item_id")))?;
    ids::id(&f("item_id"), item_id)?;
    let scenario_id = opt_str("scenario_id")?;
    if let Some(s) = scenario_id {
        ids::scenario(&f("scenario_id"), s)?;
    }
    let category = opt_str("category")?;
    if let Some(c) = category {
        // Categories become part of `hot:items:{tenant}:{scenario}:{category}`.
        ids::scenario(&f("category"), c)?;
    }
    let status = opt_str("status")?;
    if status.is_some_and(|s| s.is_empty() || s.len() > 32) {
        return Err(ApiError::invalid(f("status"), "status must be 1..=32 characters"));
    }
    let publish_time = match m.get("publish_time") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().filter(|t| *t >= 0).ok_or_else(|| {
            ApiError::invalid(f("publish_time"), "publish_time must be a non-negative integer (epoch ms)")
        })?),
    };
    let tags = match m.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= 32 => a
            .iter()
            .map(|t| t.as_str().filter(|s| !s.is_empty() && s.len() <= 64).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid(f("tags"), "tags must be strings of 1..=64 characters"))?,
        Some(_) => return Err(ApiError::invalid(f("tags"), "tags must be an array of at most 32 strings")),
    };
    Ok(Item {
        tenant_id: Str::new(tenant),
        scenario_id: scenario_id.map(Str::new),
        item_id: Str::new(item_id),
        category: category.map(Str::new),
        tags,
        publish_time,
        status: status.map(str::to_string),
    })
}
