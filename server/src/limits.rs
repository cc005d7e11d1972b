//! Per-tenant token buckets, the request timeout and bounded body reads.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, App};

/// A token bucket per tenant: `rate` tokens per second, at most `burst` saved.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter refilling `rate` per second up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token of `tenant`'s bucket; false when it is empty.
    pub fn allow(&self, tenant: &str) -> bool {
        self.allow_at(tenant, Instant::now())
    }

    fn allow_at(&self, tenant: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Only authenticated tenants get here, so the map is bounded by the configured keys.
        let (tokens, last) = buckets.entry(tenant.to_string()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Middleware: answers 504 when the handler runs longer than `request_timeout_ms`.
pub async fn timeout(State(app): State<std::sync::Arc<App>>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(app.cfg.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", format!("request took longer than {limit:?}"))
            .into_response(),
    }
}

/// The request body, at most `limit` bytes (413 beyond, checked on the
/// declared length first so an oversize upload is refused before it is read).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(format!("body larger than {limit} bytes")));
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(format!("body larger than {limit} bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_rate_and_caps_at_the_burst() {
        let l = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.allow_at("a", t0)), "burst of 3");
        assert!(!l.allow_at("a", t0), "then empty");
        assert!(l.allow_at("b", t0), "other tenants have their own bucket");
        assert!(l.allow_at("a", t0 + Duration::from_millis(100)), "one token per 100 ms");
        assert!(!l.allow_at("a", t0 + Duration::from_millis(150)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| l.allow_at("a", later)).count(), 3, "capped at the burst");
    }
}
