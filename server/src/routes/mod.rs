//! HTTP handlers, one module per resource.

pub mod events;
pub mod health;
pub mod items;
pub mod read;
pub mod recommend;
pub mod scenarios;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::{ids, ApiError};

/// Query parameters.
pub type Params = HashMap<String, String>;

/// The body as a JSON value (400 `bad_json` otherwise).
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_json", format!("body is not valid JSON: {e}"))
    })
}

/// The body as a JSON object whose keys are all in `allowed`.
pub fn parse_object(bytes: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(m) = parse_json(bytes)? else {
        return Err(ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_json", "body must be a JSON object"));
    };
    check_keys(&m, allowed, "")?;
    Ok(m)
}

/// Rejects keys of `m` not in `allowed`, naming `{prefix}{key}`.
pub fn check_keys(m: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), ApiError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(format!("{prefix}{k}"), format!("unknown field {k:?}"))),
        None => Ok(()),
    }
}

/// The required `scenario_id` query parameter, validated.
pub fn scenario_param(q: &Params) -> Result<&str, ApiError> {
    let s = q.get("scenario_id").ok_or_else(|| ApiError::missing("scenario_id"))?;
    ids::scenario("scenario_id", s)?;
    Ok(s)
}

/// An optional integer query parameter within `range`.
pub fn int_param(q: &Params, name: &str, range: std::ops::RangeInclusive<i64>) -> Result<Option<i64>, ApiError> {
    let Some(raw) = q.get(name) else { return Ok(None) };
    match raw.parse::<i64>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(ApiError::invalid(name, format!("{name} must be an integer in {}..={}", range.start(), range.end()))),
    }
}
