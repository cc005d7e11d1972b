//! API keys: SHA-256 hashes per tenant, compared in constant time.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiKeyConfig;
use crate::{ids, ApiError, App};

/// The tenant a request authenticated as (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant(pub String);

/// The 32 bytes of a hex SHA-256, if well-formed.
pub fn parse_hash(hex_str: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).ok()?;
    Some(out)
}

/// Hex SHA-256 of a key: what `server.api_keys[].key_sha256` holds.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The configured keys.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl ApiKeys {
    /// Keys from config entries; malformed hashes are skipped (config checking reports them).
    pub fn new(cfg: &[ApiKeyConfig]) -> Self {
        ApiKeys { keys: cfg.iter().filter_map(|k| Some((k.tenant.clone(), parse_hash(&k.key_sha256)?))).collect() }
    }

    /// The tenant owning `key`, if any. Every stored hash is compared, each in
    /// constant time, so timing reveals neither which entry nor how much matched.
    pub fn tenant_of(&self, key: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (tenant, hash) in &self.keys {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(tenant.as_str());
            }
        }
        found
    }
}

/// Checks `Authorization: Bearer` (401), `X-Tenant-Id` (400) and that the key
/// belongs to that tenant (403); returns the tenant.
pub fn authenticate(keys: &ApiKeys, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m).with_field("Authorization");
    let auth = headers.get("authorization").ok_or_else(|| unauthorized("missing Authorization: Bearer <key>"))?;
    let key = auth
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| unauthorized("Authorization must be `Bearer <key>`"))?;
    let owner = keys.tenant_of(key).ok_or_else(|| unauthorized("unknown API key"))?;
    let tenant = headers
        .get("x-tenant-id")
        .ok_or_else(|| ApiError::missing("X-Tenant-Id"))?
        .to_str()
        .map_err(|_| ApiError::invalid("X-Tenant-Id", "X-Tenant-Id is not ASCII"))?;
    ids::tenant("X-Tenant-Id", tenant)?;
    if owner != tenant {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the API key does not belong to this tenant")
            .with_field("X-Tenant-Id"));
    }
    Ok(Tenant(tenant.to_string()))
}

/// Middleware of every /api route: authenticate, then rate-limit per tenant.
pub async fn require_tenant(State(app): State<std::sync::Arc<App>>, mut req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let tenant = match authenticate(&app.keys, req.headers()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    if !app.limiter.allow(&tenant.0) {
        return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "tenant request rate exceeded")
            .into_response();
    }
    req.extensions_mut().insert(tenant);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_belongs_to_exactly_its_tenant() {
        let keys = ApiKeys::new(&[
            ApiKeyConfig { tenant: "a".into(), key_sha256: hash_key("ka") },
            ApiKeyConfig { tenant: "b".into(), key_sha256: hash_key("kb").to_uppercase() },
        ]);
        assert_eq!(keys.tenant_of("ka"), Some("a"));
        assert_eq!(keys.tenant_of("kb"), Some("b"));
        assert_eq!(keys.tenant_of("kc"), None);
        // Known vector: SHA-256("abc").
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
