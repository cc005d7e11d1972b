//! Event validation, exactly per MISSION.md "Behavior event": each rejection
//! has one reason code, and checks run in the documented order.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{json_fields, Action, Event, Str};

/// Why an event was rejected (or diverted), in check order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Oversize,
    BadJson,
    MissingField,
    InvalidField,
    UnknownAction,
    TenantMismatch,
    FutureTimestamp,
    /// Valid, but below the watermark on arrival (not a validation failure).
    Late,
}

impl Reason {
    /// All reasons, for metrics.
    pub const ALL: [Reason; 8] = [
        Reason::Oversize,
        Reason::BadJson,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::UnknownAction,
        Reason::TenantMismatch,
        Reason::FutureTimestamp,
        Reason::Late,
    ];

    /// The reason code used in the DLQ and metric labels.
    pub const fn code(self) -> &'static str {
        match self {
            Reason::Oversize => "oversize",
            Reason::BadJson => "bad_json",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::UnknownAction => "unknown_action",
            Reason::TenantMismatch => "tenant_mismatch",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::Late => "late",
        }
    }
}

/// A rejected event: reason, the field to blame (if any) and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {detail}", reason.code(), field.map(|f| format!(" ({f})")).unwrap_or_default())]
pub struct Rejection {
    pub reason: Reason,
    pub field: Option<&'static str>,
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, field: Option<&'static str>, detail: impl Into<String>) -> Self {
        Rejection { reason, field, detail: detail.into() }
    }
    fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Reason::InvalidField, Some(field), detail)
    }
}

/// Validation knobs (config `[validation]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidationLimits {
    /// Largest accepted payload in bytes (64 KiB).
    pub max_payload_bytes: usize,
    /// How far ahead of the wall clock a timestamp may be (5 min).
    pub max_future_skew_ms: i64,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits { max_payload_bytes: 64 * 1024, max_future_skew_ms: 5 * 60_000 }
    }
}

/// Validates raw payloads into [`Event`]s.
#[derive(Clone, Debug, Default)]
pub struct Validator {
    pub limits: ValidationLimits,
}

/// Top-level fields, kept raw so that a wrong type is `invalid_field` of
/// that field. serde reads them only when the fast path declines.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tenant_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    scenario_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    item_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    action_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    experiment_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    variant: Option<&'a RawValue>,
    #[serde(borrow, default)]
    category: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    extra: Option<&'a RawValue>,
}

/// The event's fields as raw JSON text, in [`RawEvent`]'s order.
type EventFields<'a> = [Option<&'a str>; 13];

impl<'a> RawEvent<'a> {
    /// Where `key`'s value goes in [`EventFields`].
    fn slot(key: &[u8]) -> Option<usize> {
        Some(match key {
            b"event_id" => 0,
            b"tenant_id" => 1,
            b"scenario_id" => 2,
            b"user_id" => 3,
            b"item_id" => 4,
            b"action_type" => 5,
            b"timestamp" => 6,
            b"request_id" => 7,
            b"experiment_id" => 8,
            b"variant" => 9,
            b"category" => 10,
            b"context" => 11,
            b"extra" => 12,
            _ => return None,
        })
    }

    fn into_fields(self) -> EventFields<'a> {
        [
            self.event_id,
            self.tenant_id,
            self.scenario_id,
            self.user_id,
            self.item_id,
            self.action_type,
            self.timestamp,
            self.request_id,
            self.experiment_id,
            self.variant,
            self.category,
            self.context,
            self.extra,
        ]
        .map(|f| f.map(RawValue::get))
    }
}

/// `extra`: numbers only; other keys are ignored.
#[derive(Deserialize)]
struct RawExtra<'a> {
    #[serde(borrow, default)]
    watch_duration: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_rate: Option<&'a RawValue>,
    #[serde(borrow, default)]
    amount: Option<&'a RawValue>,
}

impl<'a> RawExtra<'a> {
    fn slot(key: &[u8]) -> Option<usize> {
        Some(match key {
            b"watch_duration" => 0,
            b"completion_rate" => 1,
            b"amount" => 2,
            _ => return None,
        })
    }

    fn into_fields(self) -> [Option<&'a str>; 3] {
        [self.watch_duration, self.completion_rate, self.amount].map(|f| f.map(RawValue::get))
    }
}

/// The named top-level fields of the object `text` (`null` as absent): from
/// the one-pass reader when the input is plain, else from serde_json, which
/// then also decides whether it is JSON at all.
fn read_fields<'a, T: Deserialize<'a>, const N: usize>(
    text: &'a str,
    slot: fn(&[u8]) -> Option<usize>,
    into_fields: fn(T) -> [Option<&'a str>; N],
) -> Result<[Option<&'a str>; N], serde_json::Error> {
    match json_fields::top_level_fields(text, slot) {
        Some(fields) => Ok(fields),
        None => serde_json::from_str(text).map(into_fields),
    }
}

/// Character classes of the id patterns.
#[derive(Clone, Copy)]
enum Class {
    /// `^[a-z0-9_]{1,64}$`
    Tenant,
    /// `^[A-Za-z0-9_.-]{1,64}$`
    Scenario,
    /// `^[A-Za-z0-9_.@-]{1,128}$`
    Id,
    /// Printable ASCII without spaces, 1..=128 (event_id, request_id).
    Token,
}

impl Class {
    fn max_len(self) -> usize {
        match self {
            Class::Tenant | Class::Scenario => 64,
            Class::Id | Class::Token => 128,
        }
    }
    /// This class's bit in [`CLASS_BITS`].
    const fn bit(self) -> u8 {
        match self {
            Class::Tenant => 1,
            Class::Scenario => 2,
            Class::Id => 4,
            Class::Token => 8,
        }
    }
    /// The rule of each class, byte by byte (the source of [`CLASS_BITS`]).
    const fn rule(self, b: u8) -> bool {
        let alnum = b.is_ascii_alphanumeric();
        match self {
            Class::Tenant => b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_',
            Class::Scenario => alnum || b == b'_' || b == b'.' || b == b'-',
            Class::Id => alnum || b == b'_' || b == b'.' || b == b'@' || b == b'-',
            Class::Token => b >= 0x21 && b <= 0x7e,
        }
    }
    /// One table lookup per byte: ids are checked on every event.
    fn allows(self, b: u8) -> bool {
        CLASS_BITS[b as usize] & self.bit() != 0
    }
    fn describe(self) -> &'static str {
        match self {
            Class::Tenant => "^[a-z0-9_]{1,64}$",
            Class::Scenario => "^[A-Za-z0-9_.-]{1,64}$",
            Class::Id => "^[A-Za-z0-9_.@-]{1,128}$",
            Class::Token => "1..128 printable ASCII characters",
        }
    }
    fn check(self, s: &str) -> bool {
        !s.is_empty() && s.len() <= self.max_len() && s.bytes().all(|b| self.allows(b))
    }
}

/// Per byte, the bits of the classes that allow it.
const CLASS_BITS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let mut bits = 0;
        let classes = [Class::Tenant, Class::Scenario, Class::Id, Class::Token];
        let mut i = 0;
        while i < classes.len() {
            if classes[i].rule(b as u8) {
                bits |= classes[i].bit();
            }
            i += 1;
        }
        t[b] = bits;
        b += 1;
    }
    t
};

/// True when `s` matches the tenant id pattern.
pub fn is_valid_tenant(s: &str) -> bool {
    Class::Tenant.check(s)
}

/// True when `s` matches the user/item id pattern.
pub fn is_valid_id(s: &str) -> bool {
    Class::Id.check(s)
}

/// True when `s` matches the scenario id pattern.
pub fn is_valid_scenario(s: &str) -> bool {
    Class::Scenario.check(s)
}

/// A JSON string without escapes is borrowed straight from the input.
fn raw_str(t: &str) -> Option<Cow<'_, str>> {
    let b = t.as_bytes();
    if b.len() >= 2 && b[0] == b'"' && !t.contains('\\') {
        return Some(Cow::Borrowed(&t[1..t.len() - 1]));
    }
    if b.first() != Some(&b'"') {
        return None;
    }
    serde_json::from_str::<String>(t).ok().map(Cow::Owned)
}

/// A required field already checked to be present.
fn req(v: Option<&str>) -> &str {
    v.expect("checked present above")
}

fn id_field(t: &str, field: &'static str, class: Class) -> Result<Str, Rejection> {
    // Fast path, the usual case: a quoted string of class characters other
    // than '\\' has no escapes, so it is its own value and already valid.
    // Anything else takes the full path below, which decides every verdict.
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        let inner = &t[1..t.len() - 1];
        if !inner.is_empty() && inner.len() <= class.max_len() && inner.bytes().all(|b| b != b'\\' && class.allows(b)) {
            return Ok(Str::new(inner));
        }
    }
    let s = raw_str(t).ok_or_else(|| Rejection::invalid(field, format!("{field} must be a string")))?;
    if !class.check(&s) {
        return Err(Rejection::invalid(field, format!("{field} must match {}", class.describe())));
    }
    Ok(Str::new(s))
}

fn opt_id(raw: Option<&str>, field: &'static str, class: Class) -> Result<Option<Str>, Rejection> {
    raw.map(|t| id_field(t, field, class)).transpose()
}

fn number(t: &str, field: &'static str) -> Result<f64, Rejection> {
    let b = t.as_bytes().first().copied().unwrap_or(b'x');
    if !(b == b'-' || b.is_ascii_digit()) {
        return Err(Rejection::invalid(field, format!("{field} must be a number")));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Rejection::invalid(field, format!("{field} must be a finite number"))),
    }
}

fn opt_number(raw: Option<&str>, field: &'static str, range: (f64, f64)) -> Result<Option<f64>, Rejection> {
    let Some(t) = raw else { return Ok(None) };
    let v = number(t, field)?;
    if v < range.0 || v > range.1 {
        return Err(Rejection::invalid(field, format!("{field} must be within {}..{}", range.0, range.1)));
    }
    Ok(Some(v))
}

/// Epoch milliseconds from an integer or an RFC 3339 string.
fn timestamp(t: &str) -> Result<i64, Rejection> {
    if t.starts_with('"') {
        let s = raw_str(t).ok_or_else(|| Rejection::invalid("timestamp", "timestamp is not a valid string"))?;
        let dt = time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| Rejection::invalid("timestamp", format!("timestamp is not RFC 3339: {e}")))?;
        let ms = dt.unix_timestamp_nanos() / 1_000_000;
        return i64::try_from(ms)
            .ok()
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| Rejection::invalid("timestamp", "timestamp before 1970 or out of range"));
    }
    match t.parse::<i64>() {
        Ok(ms) if ms >= 0 => Ok(ms),
        Ok(_) => Err(Rejection::invalid("timestamp", "timestamp must not be negative")),
        Err(_) => {
            Err(Rejection::invalid("timestamp", "timestamp must be integer epoch milliseconds or an RFC 3339 string"))
        }
    }
}

/// Stable id for events without one: xxh3 of the payload.
pub fn derived_event_id(payload: &[u8]) -> Str {
    let h = xxhash_rust::xxh3::xxh3_64(payload);
    let mut buf = [0u8; 17];
    buf[0] = b'h';
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..16 {
        buf[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    // The buffer is ASCII by construction.
    Str::new(std::str::from_utf8(&buf).expect("hex is ascii"))
}

impl Validator {
    /// A validator with the given limits.
    pub fn new(limits: ValidationLimits) -> Self {
        Validator { limits }
    }

    /// Validates one payload. `topic_tenant` is the tenant of the topic the
    /// payload came from (`None` for files); `now_ms` is the wall clock.
    pub fn validate(&self, payload: &[u8], topic_tenant: Option<&str>, now_ms: i64) -> Result<Event, Rejection> {
        if payload.len() > self.limits.max_payload_bytes {
            return Err(Rejection::new(
                Reason::Oversize,
                None,
                format!("payload is {} bytes, limit {}", payload.len(), self.limits.max_payload_bytes),
            ));
        }
        let text = std::str::from_utf8(payload)
            .map_err(|e| Rejection::new(Reason::BadJson, None, format!("not UTF-8: {e}")))?;
        let trimmed = text.trim_start();
        if !trimmed.starts_with('{') {
            return Err(Rejection::new(Reason::BadJson, None, "not a JSON object"));
        }
        let [event_id, tenant_id, scenario_id, user_id, item_id, action_type, ts, request_id, experiment_id, variant, category, context, extra] =
            read_fields(text, RawEvent::slot, RawEvent::into_fields)
                .map_err(|e| Rejection::new(Reason::BadJson, None, format!("invalid JSON: {e}")))?;

        // missing_field: every required field, in table order.
        let required = [
            ("tenant_id", tenant_id),
            ("scenario_id", scenario_id),
            ("user_id", user_id),
            ("item_id", item_id),
            ("action_type", action_type),
            ("timestamp", ts),
        ];
        for (name, v) in required {
            if v.is_none() {
                return Err(Rejection::new(Reason::MissingField, Some(name), format!("{name} is required")));
            }
        }

        // invalid_field: types and patterns, in table order.
        let event_id = opt_id(event_id, "event_id", Class::Token)?;
        let tenant_id = id_field(req(tenant_id), "tenant_id", Class::Tenant)?;
        let scenario_id = id_field(req(scenario_id), "scenario_id", Class::Scenario)?;
        let user_id = id_field(req(user_id), "user_id", Class::Id)?;
        let item_id = id_field(req(item_id), "item_id", Class::Id)?;
        let action_name = raw_str(req(action_type))
            .ok_or_else(|| Rejection::invalid("action_type", "action_type must be a string"))?;
        let ts = timestamp(req(ts))?;
        let request_id = opt_id(request_id, "request_id", Class::Token)?;
        let experiment_id = opt_id(experiment_id, "experiment_id", Class::Scenario)?;
        let variant = opt_id(variant, "variant", Class::Scenario)?;
        let category = opt_id(category, "category", Class::Scenario)?;
        let context = match context {
            Some(t) if !t.starts_with('{') => return Err(Rejection::invalid("context", "context must be an object")),
            Some(t) => Some(Box::<str>::from(t)),
            None => None,
        };
        let (mut watch_duration, mut completion_rate, mut amount) = (None, None, None);
        if let Some(t) = extra {
            if !t.starts_with('{') {
                return Err(Rejection::invalid("extra", "extra must be an object"));
            }
            let [w, c, a] = read_fields(t, RawExtra::slot, RawExtra::into_fields)
                .map_err(|e| Rejection::invalid("extra", format!("extra is malformed: {e}")))?;
            watch_duration = opt_number(w, "extra.watch_duration", (0.0, f64::MAX))?;
            completion_rate = opt_number(c, "extra.completion_rate", (0.0, 1.0))?;
            amount = opt_number(a, "extra.amount", (0.0, f64::MAX))?;
        }

        let action = Action::parse(&action_name).ok_or_else(|| {
            Rejection::new(
                Reason::UnknownAction,
                Some("action_type"),
                format!("unknown action_type {:?}", truncate(&action_name, 64)),
            )
        })?;

        if let Some(t) = topic_tenant {
            if t != tenant_id.as_str() {
                return Err(Rejection::new(
                    Reason::TenantMismatch,
                    Some("tenant_id"),
                    format!("tenant_id {tenant_id:?} does not match topic tenant {t:?}"),
                ));
            }
        }
        if ts > now_ms.saturating_add(self.limits.max_future_skew_ms) {
            return Err(Rejection::new(
                Reason::FutureTimestamp,
                Some("timestamp"),
                format!("timestamp {ts} is more than {} ms ahead of now ({now_ms})", self.limits.max_future_skew_ms),
            ));
        }

        Ok(Event {
            event_id: event_id.unwrap_or_else(|| derived_event_id(payload)),
            tenant_id,
            scenario_id,
            user_id,
            item_id,
            action,
            ts,
            request_id,
            experiment_id: experiment_id.unwrap_or_else(|| Str::new_inline("none")),
            variant: variant.unwrap_or_else(|| Str::new_inline("none")),
            category,
            context,
            watch_duration,
            completion_rate,
            amount,
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_600_000_000;

    fn ok() -> serde_json::Value {
        serde_json::json!({"tenant_id":"t1","scenario_id":"s","user_id":"u1","item_id":"i1",
            "action_type":"click","timestamp":1_767_520_800_000i64})
    }

    fn check(v: &serde_json::Value) -> Result<Event, Rejection> {
        Validator::default().validate(v.to_string().as_bytes(), Some("t1"), NOW)
    }

    fn reason(v: &serde_json::Value) -> (Reason, Option<&'static str>) {
        let r = check(v).unwrap_err();
        (r.reason, r.field)
    }

    #[test]
    fn accepts_minimal_and_fills_defaults() {
        let e = check(&ok()).unwrap();
        assert_eq!(e.experiment_id, "none");
        assert_eq!(e.variant, "none");
        assert_eq!(e.action, Action::Click);
        assert!(e.event_id.starts_with('h') && e.event_id.len() == 17);
        // Derived ids are deterministic.
        assert_eq!(check(&ok()).unwrap().event_id, e.event_id);
    }

    #[test]
    fn escaped_ids_are_unescaped_then_checked() {
        // The minimal event with `field` set to the JSON text `value`.
        let with = |field: &str, value: &str| {
            let mut v = ok();
            v[field] = "@@".into();
            let text = v.to_string().replacen("\"@@\"", value, 1);
            Validator::default().validate(text.as_bytes(), Some("t1"), NOW)
        };
        // An escape of an allowed character is that character.
        assert_eq!(with("user_id", r#""u\u005f1""#).unwrap().user_id, "u_1");
        assert_eq!(with("tenant_id", r#""t\u0031""#).unwrap().tenant_id, "t1");
        // event_id allows '"' and '\', which only arrive escaped.
        assert_eq!(with("event_id", r#""e\"q\\1""#).unwrap().event_id, "e\"q\\1");
        // Escapes never smuggle in what the pattern forbids.
        assert_eq!(with("user_id", r#""u\u003a1""#).unwrap_err().field, Some("user_id"));
        assert_eq!(with("item_id", r#""i\n1""#).unwrap_err().field, Some("item_id"));
        assert_eq!(with("user_id", r#""u\\1""#).unwrap_err().reason, Reason::InvalidField);
        // Plain forms: too long, empty, a colon, the longest allowed.
        assert_eq!(with("tenant_id", &format!("\"{}\"", "a".repeat(65))).unwrap_err().field, Some("tenant_id"));
        assert_eq!(with("tenant_id", &format!("\"{}\"", "a".repeat(64))).unwrap_err().reason, Reason::TenantMismatch);
        assert_eq!(with("scenario_id", r#""""#).unwrap_err().field, Some("scenario_id"));
        assert_eq!(with("user_id", r#""a:b""#).unwrap_err().field, Some("user_id"));
    }

    #[test]
    fn rfc3339_timestamp() {
        let mut v = ok();
        v["timestamp"] = "2026-01-04T10:00:00.250Z".into();
        assert_eq!(check(&v).unwrap().ts, 1_767_520_800_250);
        v["timestamp"] = "2026-01-04T11:00:00+01:00".into();
        assert_eq!(check(&v).unwrap().ts, 1_767_520_800_000);
        v["timestamp"] = "yesterday".into();
        assert_eq!(reason(&v), (Reason::InvalidField, Some("timestamp")));
        v["timestamp"] = serde_json::json!(1.5);
        assert_eq!(reason(&v), (Reason::InvalidField, Some("timestamp")));
    }

    #[test]
    fn reasons_in_order() {
        let big = "x".repeat(70 * 1024);
        let mut v = ok();
        v["pad"] = big.into();
        assert_eq!(reason(&v).0, Reason::Oversize);
        assert_eq!(Validator::default().validate(b"{\"a\":", None, NOW).unwrap_err().reason, Reason::BadJson);
        assert_eq!(Validator::default().validate(b"[1,2]", None, NOW).unwrap_err().reason, Reason::BadJson);
        assert_eq!(Validator::default().validate(b"\xff\xfe", None, NOW).unwrap_err().reason, Reason::BadJson);

        // missing beats invalid, even when an earlier field is invalid.
        let mut v = ok();
        v["tenant_id"] = 5.into();
        v.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(reason(&v), (Reason::MissingField, Some("timestamp")));
        let mut v = ok();
        v["user_id"] = serde_json::Value::Null;
        assert_eq!(reason(&v), (Reason::MissingField, Some("user_id")));

        // invalid beats unknown action.
        let mut v = ok();
        v["action_type"] = "dance".into();
        v["item_id"] = "a:b".into();
        assert_eq!(reason(&v), (Reason::InvalidField, Some("item_id")));
        let mut v = ok();
        v["action_type"] = "dance".into();
        assert_eq!(reason(&v), (Reason::UnknownAction, Some("action_type")));

        // unknown action beats tenant mismatch beats future timestamp.
        let mut v = ok();
        v["tenant_id"] = "t2".into();
        v["timestamp"] = (NOW + 3_600_000).into();
        assert_eq!(reason(&v), (Reason::TenantMismatch, Some("tenant_id")));
        v["tenant_id"] = "t1".into();
        assert_eq!(reason(&v), (Reason::FutureTimestamp, Some("timestamp")));
        v["timestamp"] = (NOW + 5 * 60_000).into();
        assert!(check(&v).is_ok(), "exactly at the skew limit is accepted");
    }

    #[test]
    fn patterns() {
        for (field, bad) in [
            ("tenant_id", "Tenant"),
            ("tenant_id", ""),
            ("scenario_id", "a b"),
            ("user_id", "a:b"),
            ("user_id", "*"),
            ("item_id", "../x"),
        ] {
            let mut v = ok();
            v[field] = bad.into();
            assert_eq!(reason(&v), (Reason::InvalidField, Some(field)), "{field}={bad:?}");
        }
        let mut v = ok();
        v["user_id"] = "u".repeat(129).into();
        assert_eq!(reason(&v), (Reason::InvalidField, Some("user_id")));
        v["user_id"] = "u".repeat(128).into();
        assert!(check(&v).is_ok());
        let mut v = ok();
        v["user_id"] = "us\u{e9}r".into();
        assert_eq!(reason(&v), (Reason::InvalidField, Some("user_id")));
        // Escaped but valid characters are accepted.
        let e = Validator::default()
            .validate(
                br#"{"tenant_id":"t1","scenario_id":"s","user_id":"\u0075x","item_id":"i","action_type":"like","timestamp":1}"#,
                None,
                NOW,
            )
            .unwrap();
        assert_eq!(e.user_id, "ux");
    }

    #[test]
    fn extra_and_context() {
        let mut v = ok();
        v["extra"] = serde_json::json!({"watch_duration": 12.5, "completion_rate": 0.5, "amount": 3});
        v["context"] = serde_json::json!({"device_type": "mobile"});
        let e = check(&v).unwrap();
        assert_eq!((e.watch_duration, e.completion_rate, e.amount), (Some(12.5), Some(0.5), Some(3.0)));
        assert_eq!(e.context.as_deref(), Some(r#"{"device_type":"mobile"}"#));
        v["extra"] = serde_json::json!({"completion_rate": 1.5});
        assert_eq!(reason(&v), (Reason::InvalidField, Some("extra.completion_rate")));
        v["extra"] = serde_json::json!({"watch_duration": "long"});
        assert_eq!(reason(&v), (Reason::InvalidField, Some("extra.watch_duration")));
        v["extra"] = serde_json::json!([1]);
        assert_eq!(reason(&v), (Reason::InvalidField, Some("extra")));
        let mut v = ok();
        v["context"] = "mobile".into();
        assert_eq!(reason(&v), (Reason::InvalidField, Some("context")));
    }
}
