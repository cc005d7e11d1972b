//! Calling the server's router in-process (no port, no client library).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// One request with tenant credentials and optional user and JSON body.
pub async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    auth: (&str, &str),
    user: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-tenant-id", auth.0)
        .header("authorization", format!("Bearer {}", auth.1))
        .header("content-type", "application/json");
    if let Some(u) = user {
        req = req.header("x-user-id", u);
    }
    let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

/// The item ids of a recommend or hot-items answer.
pub fn item_ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|i| i["item_id"].as_str().unwrap().to_string()).collect())
}
