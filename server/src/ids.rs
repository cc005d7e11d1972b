//! Id checks with the event schema's patterns, run before an id touches a
//! store key (so `a:b`, `*` or `../x` can never address another key).

use recflow_schemas::validate::{is_valid_id, is_valid_scenario, is_valid_tenant};

use crate::ApiError;

/// A tenant id (`^[a-z0-9_]{1,64}$`) from `field`.
pub fn tenant(field: &str, v: &str) -> Result<(), ApiError> {
    check(field, v, is_valid_tenant(v), "^[a-z0-9_]{1,64}$")
}

/// A scenario or category id (`^[A-Za-z0-9_.-]{1,64}$`, not `.` or `..`) from `field`.
pub fn scenario(field: &str, v: &str) -> Result<(), ApiError> {
    check(field, v, is_valid_scenario(v) && v != "." && v != "..", "^[A-Za-z0-9_.-]{1,64}$")
}

/// A user or item id (`^[A-Za-z0-9_.@-]{1,128}$`, not `.` or `..`) from `field`.
pub fn id(field: &str, v: &str) -> Result<(), ApiError> {
    check(field, v, is_valid_id(v) && v != "." && v != "..", "^[A-Za-z0-9_.@-]{1,128}$")
}

fn check(field: &str, v: &str, ok: bool, pattern: &str) -> Result<(), ApiError> {
    if ok {
        return Ok(());
    }
    let shown: String = v.chars().take(40).collect();
    Err(ApiError::invalid(field, format!("{field} {shown:?} does not match {pattern}")))
}
