//! Property tests for `Validator::validate`: it never panics on any input, and
//! on mutated events its verdict follows MISSION.md's check order, as computed
//! by an independent oracle over the mutated JSON value.

use proptest::prelude::*;
use recflow_schemas::{Reason, Validator, ACTIONS};
use serde_json::{json, Map, Value};

const NOW: i64 = 1_767_600_000_000;
const LIMIT: usize = 64 * 1024;
const REQUIRED: [&str; 6] = ["tenant_id", "scenario_id", "user_id", "item_id", "action_type", "timestamp"];
/// Optional top-level fields in the validator's check order, after `timestamp`.
const OPTIONAL_STRINGS: [(&str, Class); 4] = [
    ("request_id", Class::Token),
    ("experiment_id", Class::Scenario),
    ("variant", Class::Scenario),
    ("category", Class::Scenario),
];
/// RFC 3339 strings the mutator may use, all valid and after 1970.
const GOOD_RFC3339: [(&str, i64); 3] = [
    ("2026-01-04T10:00:00Z", 1_767_520_800_000),
    ("2026-01-04T10:00:00.250Z", 1_767_520_800_250),
    ("2026-01-04T11:00:00+01:00", 1_767_520_800_000),
];

fn cases() -> ProptestConfig {
    ProptestConfig { cases: 2000, ..ProptestConfig::default() }
}

/// The id patterns of MISSION.md, written independently of validate.rs.
#[derive(Clone, Copy)]
enum Class {
    Tenant,
    Scenario,
    Id,
    Token,
}

impl Class {
    fn ok(self, s: &str) -> bool {
        let (max, allowed): (usize, fn(char) -> bool) = match self {
            Class::Tenant => (64, |c| matches!(c, 'a'..='z' | '0'..='9' | '_')),
            Class::Scenario => (64, |c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
            Class::Id => (128, |c| c.is_ascii_alphanumeric() || "_.@-".contains(c)),
            Class::Token => (128, |c| ('!'..='~').contains(&c)),
        };
        !s.is_empty() && s.chars().count() <= max && s.chars().all(allowed)
    }
}

/// What the validator must answer for `doc` (serialized as `bytes`).
fn oracle(doc: &Value, bytes: &[u8], topic: Option<&str>) -> Result<(), (Reason, Option<&'static str>)> {
    if bytes.len() > LIMIT {
        return Err((Reason::Oversize, None));
    }
    let Some(obj) = doc.as_object() else {
        return Err((Reason::BadJson, None));
    };
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    for f in REQUIRED {
        if present(f).is_none() {
            return Err((Reason::MissingField, Some(f)));
        }
    }
    let inv = |f: &'static str| Err((Reason::InvalidField, Some(f)));
    let string_ok = |f: &str, c: Class| present(f).is_none_or(|v| v.as_str().is_some_and(|s| c.ok(s)));

    if !string_ok("event_id", Class::Token) {
        return inv("event_id");
    }
    for (f, c) in
        [("tenant_id", Class::Tenant), ("scenario_id", Class::Scenario), ("user_id", Class::Id), ("item_id", Class::Id)]
    {
        if !string_ok(f, c) {
            return inv(f);
        }
    }
    let Some(action) = obj["action_type"].as_str() else {
        return inv("action_type");
    };
    let ts = match &obj["timestamp"] {
        // i64 only: u64 above i64::MAX and any float (even 5.0) are invalid.
        Value::Number(n) if n.is_i64() && n.as_i64().unwrap() >= 0 => n.as_i64().unwrap(),
        Value::String(s) => match GOOD_RFC3339.iter().find(|(g, _)| g == s) {
            Some((_, ms)) => *ms,
            None => return inv("timestamp"),
        },
        _ => return inv("timestamp"),
    };
    for (f, c) in OPTIONAL_STRINGS {
        if !string_ok(f, c) {
            return inv(f);
        }
    }
    if present("context").is_some_and(|v| !v.is_object()) {
        return inv("context");
    }
    if let Some(extra) = present("extra") {
        let Some(extra) = extra.as_object() else {
            return inv("extra");
        };
        for (k, f, max) in [
            ("watch_duration", "extra.watch_duration", f64::MAX),
            ("completion_rate", "extra.completion_rate", 1.0),
            ("amount", "extra.amount", f64::MAX),
        ] {
            match extra.get(k) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if (0.0..=max).contains(&n.as_f64().unwrap()) => {}
                Some(_) => return inv(f),
            }
        }
    }
    if !ACTIONS.iter().any(|a| a.name() == action) {
        return Err((Reason::UnknownAction, Some("action_type")));
    }
    if topic.is_some_and(|t| t != obj["tenant_id"]) {
        return Err((Reason::TenantMismatch, Some("tenant_id")));
    }
    if ts > NOW + 5 * 60_000 {
        return Err((Reason::FutureTimestamp, Some("timestamp")));
    }
    Ok(())
}

fn verdict(bytes: &[u8], topic: Option<&str>) -> Result<(), (Reason, Option<&'static str>)> {
    Validator::default().validate(bytes, topic, NOW).map(|_| ()).map_err(|r| (r.reason, r.field))
}

fn id_string(pattern: &'static str) -> impl Strategy<Value = String> {
    proptest::string::string_regex(pattern).expect("valid regex")
}

/// Valid events with every optional field sometimes present.
fn valid_event() -> impl Strategy<Value = Value> {
    (
        (
            id_string("[a-z0-9_]{1,64}"),
            id_string("[A-Za-z0-9_.-]{1,64}"),
            id_string("[A-Za-z0-9_.@-]{1,128}"),
            id_string("[A-Za-z0-9_.@-]{1,20}"),
            prop::sample::select(ACTIONS.to_vec()),
            prop_oneof![
                (0i64..=NOW).prop_map(Value::from),
                prop::sample::select(GOOD_RFC3339.to_vec()).prop_map(|(s, _)| Value::from(s)),
            ],
        ),
        (
            prop::option::of(id_string("[!-~]{1,128}")),
            prop::option::of(id_string("[!-~]{1,40}")),
            prop::option::of(id_string("[A-Za-z0-9_.-]{1,64}")),
            prop::option::of(id_string("[A-Za-z0-9_.-]{1,10}")),
            prop::option::of(id_string("[a-z]{1,10}")),
            any::<bool>(),
            prop::option::of((0.0..1e6f64, 0.0..=1.0f64, 0.0..1e5f64)),
        ),
    )
        .prop_map(|((t, s, u, i, a, ts), (eid, rid, exp, var, cat, ctx, extra))| {
            let mut m = Map::new();
            let mut put = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            };
            put("event_id", eid.map(Value::from));
            put("tenant_id", Some(t.into()));
            put("scenario_id", Some(s.into()));
            put("user_id", Some(u.into()));
            put("item_id", Some(i.into()));
            put("action_type", Some(a.name().into()));
            put("timestamp", Some(ts));
            put("request_id", rid.map(Value::from));
            put("experiment_id", exp.map(Value::from));
            put("variant", var.map(Value::from));
            put("category", cat.map(Value::from));
            put("context", ctx.then(|| json!({"device_type": "mobile"})));
            put("extra", extra.map(|(w, c, a)| json!({"watch_duration": w, "completion_rate": c, "amount": a})));
            Value::Object(m)
        })
}

/// Any JSON value, biased to the shapes and edges the validator cares about.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Around the extra.* bounds (0 and 1).
        prop::sample::select(vec![-1.0, -1e-9, 0.0, 0.5, 1.0, 1.000001, 1.5, 1e300]).prop_map(Value::from),
        (-2.0..2.0f64).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        id_string("[a-zA-Z0-9_.@: /\"\\\\é\n-]{0,12}").prop_map(Value::from),
        // Lengths around the 64 and 128 limits.
        (60usize..70, prop::sample::select(vec!['a', 'Z', '@', '!'])).prop_map(|(n, c)| c.to_string().repeat(n).into()),
        (124usize..132, prop::sample::select(vec!['a', 'Z', '@', '!']))
            .prop_map(|(n, c)| c.to_string().repeat(n).into()),
        prop::sample::select(vec!["click", "Click", "dance", "add_cart", "", "2026-01-04T10:00:00Z", "yesterday"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec!["watch_duration", "completion_rate", "amount", "k"]).prop_map(String::from),
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON-ish value text: mostly valid scalars, some malformed numbers and escapes.
const JSONISH_VALUE: &str = r#"-?[0-9]{0,3}(\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?|"[a-zA-Z0-9_ :@\\u]{0,8}"|"(click|like|dance|t1|2026-01-04T10:00:00Z)"|null|true|\{\}|\[\]|\{"amount":-?[0-9]\}"#;

const FIELDS: [&str; 14] = [
    "event_id",
    "tenant_id",
    "scenario_id",
    "user_id",
    "item_id",
    "action_type",
    "timestamp",
    "request_id",
    "experiment_id",
    "variant",
    "category",
    "context",
    "extra",
    "unrelated",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete(&'static str),
    Set(&'static str, Value),
    /// Sets a key inside `extra` (creating it when it is not an object).
    SetExtra(&'static str, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = prop::sample::select(FIELDS.to_vec());
    prop_oneof![
        field.clone().prop_map(Mutation::Delete),
        (field, any_value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        (prop::sample::select(vec!["watch_duration", "completion_rate", "amount"]), any_value())
            .prop_map(|(k, v)| Mutation::SetExtra(k, v)),
    ]
}

fn apply(doc: &mut Value, m: &Mutation) {
    let obj = doc.as_object_mut().unwrap();
    match m {
        Mutation::Delete(f) => {
            obj.remove(*f);
        }
        Mutation::Set(f, v) => {
            obj.insert(f.to_string(), v.clone());
        }
        Mutation::SetExtra(k, v) => {
            let extra = obj.entry("extra").or_insert_with(|| json!({}));
            if !extra.is_object() {
                *extra = json!({});
            }
            extra[*k] = v.clone();
        }
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let r = verdict(&bytes, None);
        if std::str::from_utf8(&bytes).is_err() {
            prop_assert_eq!(r, Err((Reason::BadJson, None)));
        } else if !String::from_utf8_lossy(&bytes).trim_start().starts_with('{') {
            prop_assert_eq!(r, Err((Reason::BadJson, None)));
        }
    }

    #[test]
    fn json_looking_text_follows_the_order(
        pairs in prop::collection::btree_map(
            prop::sample::select(FIELDS.to_vec()),
            id_string(JSONISH_VALUE),
            0..10,
        ),
        tail in id_string(r"\}|\} |,\}|\]|"),
        topic in prop::option::of(id_string("[a-z]{1,3}")),
    ) {
        // Unique keys by construction: serde_json's Value keeps the last of
        // duplicate keys while the validator rejects them.
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let text = format!("{{{}{tail}", body.join(","));
        let r = verdict(text.as_bytes(), topic.as_deref());
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => prop_assert_eq!(r, oracle(&v, text.as_bytes(), topic.as_deref()), "{}", text),
            // Whatever is not a JSON object is bad_json, never a later reason.
            Err(_) => prop_assert_eq!(r, Err((Reason::BadJson, None)), "{}", text),
        }
    }

    #[test]
    fn oversize_always_wins(
        len in (LIMIT + 1)..(LIMIT + 4096),
        fill in any::<u8>(),
        doc in valid_event(),
    ) {
        // Garbage of any kind over the limit...
        prop_assert_eq!(verdict(&vec![fill; len], None), Err((Reason::Oversize, None)));
        // ...and a perfectly valid event padded over it.
        let mut doc = doc;
        doc["pad"] = Value::from("x".repeat(len));
        prop_assert_eq!(verdict(doc.to_string().as_bytes(), None), Err((Reason::Oversize, None)));
    }

    #[test]
    fn valid_events_pass(doc in valid_event(), topic_matches in any::<bool>()) {
        let bytes = doc.to_string();
        let tenant = doc["tenant_id"].as_str().unwrap().to_string();
        let topic = topic_matches.then_some(tenant.as_str());
        prop_assert_eq!(verdict(bytes.as_bytes(), topic), Ok(()));
        prop_assert_eq!(verdict(bytes.as_bytes(), Some("x-other")), Err((Reason::TenantMismatch, Some("tenant_id"))));
    }

    #[test]
    fn unknown_action_only(doc in valid_event(), word in id_string("[a-z_]{0,12}|[A-Z][a-z]{1,8}")) {
        prop_assume!(!ACTIONS.iter().any(|a| a.name() == word));
        let mut doc = doc;
        doc["action_type"] = Value::from(word);
        prop_assert_eq!(
            verdict(doc.to_string().as_bytes(), None),
            Err((Reason::UnknownAction, Some("action_type")))
        );
    }

    #[test]
    fn mutated_events_follow_the_order(
        doc in valid_event(),
        muts in prop::collection::vec(mutation(), 1..5),
        topic in prop::option::of(prop_oneof![Just("other".to_string()), id_string("[a-z0-9_]{1,3}")]),
        future in any::<bool>(),
    ) {
        let mut doc = doc;
        if future {
            doc["timestamp"] = Value::from(NOW + 5 * 60_000 + 1);
        }
        for m in &muts {
            apply(&mut doc, m);
        }
        let bytes = doc.to_string();
        let topic = topic.as_deref();
        prop_assert_eq!(verdict(bytes.as_bytes(), topic), oracle(&doc, bytes.as_bytes(), topic), "{}", bytes);
    }

    #[test]
    fn single_mutation_follows_the_order(doc in valid_event(), m in mutation(), topic_matches in any::<bool>()) {
        // One change at a time, so no earlier failure masks the rule under test.
        let mut doc = doc;
        apply(&mut doc, &m);
        let bytes = doc.to_string();
        let topic = topic_matches.then(|| doc["tenant_id"].as_str().unwrap_or("x").to_string());
        let topic = topic.as_deref();
        prop_assert_eq!(verdict(bytes.as_bytes(), topic), oracle(&doc, bytes.as_bytes(), topic), "{}", bytes);
    }

    #[test]
    fn truncated_events_are_bad_json(doc in valid_event(), cut in any::<prop::sample::Index>()) {
        let bytes = doc.to_string().into_bytes();
        let cut = cut.index(bytes.len()); // strictly shorter than the whole object
        prop_assert_eq!(verdict(&bytes[..cut], None), Err((Reason::BadJson, None)));
    }
}
