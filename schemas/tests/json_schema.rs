//! Keeps the JSON Schema files honest: each compiles as draft 2020-12, accepts
//! what the generator and the Rust types produce, and agrees with
//! `recflow_schemas::Validator` on a table of valid and invalid events.

use std::path::{Path, PathBuf};
use std::process::Command;

use recflow_schemas::{Action, Item, ProfileDoc, Reason, Validator, ACTIONS};
use serde_json::{json, Value};

/// Wall clock for the validator: a day after the generator's start, so no
/// generated or hand-written timestamp counts as "future".
const NOW: i64 = 1_767_520_800_000 + 86_400_000;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load_schema(name: &str) -> Value {
    let path = manifest_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// Compiles a schema with format checks on (off by default in 2020-12), so
/// `date-time` is enforced as the Rust validator enforces RFC 3339.
fn compile(name: &str) -> jsonschema::Validator {
    let schema = load_schema(name);
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}: must declare draft 2020-12");
    assert!(schema["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}: title");
    assert!(schema["description"].as_str().is_some_and(|t| t.len() > 20), "{name}: description");
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("{name} violates the 2020-12 meta-schema: {e}");
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

fn schema_errors(schema: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    schema.iter_errors(doc).map(|e| e.to_string()).collect()
}

fn assert_schema_accepts(schema: &jsonschema::Validator, doc: &Value, what: &str) {
    let errors = schema_errors(schema, doc);
    assert!(errors.is_empty(), "{what}: schema rejects {doc}: {errors:?}");
}

/// The generator script, next to this repository in `shared/workload`.
fn gen_script() -> PathBuf {
    let path = std::env::var_os("RECFLOW_GEN_EVENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../../shared/workload/gen_events.py"));
    assert!(path.is_file(), "gen_events.py not found at {} (set RECFLOW_GEN_EVENTS)", path.display());
    path
}

/// Runs gen_events.py; `None` (with a message) only when python3 is absent.
fn run_generator(args: &[&str]) -> Option<String> {
    let script = gen_script();
    let out = match Command::new("python3").arg(&script).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: python3 not found on PATH, cannot run {}", script.display());
            return None;
        }
        Err(e) => panic!("cannot run python3: {e}"),
    };
    assert!(out.status.success(), "gen_events.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).expect("generator output is UTF-8"))
}

fn rust_validate(doc: &Value) -> Result<(), (Reason, Option<&'static str>)> {
    Validator::default().validate(doc.to_string().as_bytes(), None, NOW).map(|_| ()).map_err(|r| (r.reason, r.field))
}

/// A minimal valid event.
fn base() -> Value {
    json!({"tenant_id":"tenant_000","scenario_id":"vlog_main_feed","user_id":"user_0000001",
        "item_id":"item_000001","action_type":"click","timestamp":1_767_520_800_000i64})
}

/// `base()` with `field` set to `v`, or removed when `v` is `None`.
fn with(field: &str, v: Option<Value>) -> Value {
    let mut doc = base();
    set(&mut doc, field, v);
    doc
}

fn set(doc: &mut Value, field: &str, v: Option<Value>) {
    // "extra.amount" addresses a nested key.
    let (obj, key) = match field.split_once('.') {
        Some((outer, inner)) => {
            if !doc[outer].is_object() {
                doc[outer] = json!({});
            }
            (doc[outer].as_object_mut().unwrap(), inner)
        }
        None => (doc.as_object_mut().unwrap(), field),
    };
    match v {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.remove(key);
        }
    }
}

#[test]
fn generated_events_are_valid() {
    let schema = compile("event.schema.json");
    let Some(text) = run_generator(&["events", "--events", "200", "--seed", "3"]) else {
        return;
    };
    let lines: Vec<&str> = text.lines().take(200).collect();
    assert_eq!(lines.len(), 200, "generator wrote too few lines");
    let (mut with_extra, mut late) = (0, 0);
    let mut max_ts = 0;
    for (n, line) in lines.iter().enumerate() {
        let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {n}: {e}"));
        assert_schema_accepts(&schema, &doc, &format!("generated line {n}"));
        let ev = Validator::default()
            .validate(line.as_bytes(), doc["tenant_id"].as_str(), NOW)
            .unwrap_or_else(|r| panic!("line {n} rejected by Validator: {r}"));
        with_extra += usize::from(doc.get("extra").is_some());
        late += usize::from(ev.ts < max_ts);
        max_ts = max_ts.max(ev.ts);
    }
    // The sample must exercise the optional parts, or the test proves little.
    assert!(with_extra > 0, "no generated event carries `extra`");
    assert!(lines.iter().all(|l| l.contains("\"context\":{")));
    eprintln!("200 generated events valid ({with_extra} with extra, {late} out of order)");
}

#[test]
fn generated_catalog_is_valid() {
    let schema = compile("item.schema.json");
    let Some(text) = run_generator(&["catalog", "--tenants", "2", "--items", "300"]) else {
        return;
    };
    let mut n = 0;
    for line in text.lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        assert_schema_accepts(&schema, &doc, "catalog line");
        let item: Item =
            serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("catalog line is not an Item: {e}: {line}"));
        // The Rust type round-trips into something the schema still accepts.
        assert_schema_accepts(&schema, &serde_json::to_value(&item).unwrap(), "Item");
        n += 1;
    }
    assert_eq!(n, 600);
}

#[test]
fn item_schema_table() {
    let schema = compile("item.schema.json");
    let ok = json!({"tenant_id":"tenant_000","scenario_id":"news_main_feed","item_id":"item_000042",
        "category":"tech","tags":["tech","pets"],"publish_time":1_767_520_800_000i64,"status":"active"});
    assert_schema_accepts(&schema, &ok, "full item");
    let minimal = json!({"tenant_id":"t","item_id":"i"});
    assert_schema_accepts(&schema, &minimal, "minimal item");
    // Every Option field may be null, as serde reads it.
    let nulls = json!({"tenant_id":"t","item_id":"i","scenario_id":null,"category":null,
        "publish_time":null,"status":null,"other":1});
    assert_schema_accepts(&schema, &nulls, "nulls");
    serde_json::from_value::<Item>(nulls).unwrap();

    for (what, patch) in [
        ("no tenant", json!({"tenant_id": null})),
        ("bad tenant", json!({"tenant_id": "Tenant"})),
        ("no item", json!({"item_id": null})),
        ("bad item", json!({"item_id": "a b"})),
        ("bad scenario", json!({"scenario_id": "a/b"})),
        ("bad category", json!({"category": ""})),
        ("tags not array", json!({"tags": "tech"})),
        ("tags of numbers", json!({"tags": [1]})),
        ("fractional publish_time", json!({"publish_time": 1.5})),
        ("status number", json!({"status": 1})),
    ] {
        let mut doc = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                doc.as_object_mut().unwrap().remove(k);
            } else {
                doc[k] = v.clone();
            }
        }
        assert!(!schema.is_valid(&doc), "{what}: schema accepts {doc}");
    }
}

fn sample_profile() -> ProfileDoc {
    let mut counts = recflow_schemas::ActionCounts::default();
    counts.0[Action::Click.index()] = 3;
    counts.0[Action::Play.index()] = 2;
    counts.0[Action::Impression.index()] = 9;
    let mut active_hours = [0; 24];
    active_hours[10] = 5;
    ProfileDoc {
        tenant_id: "tenant_001".into(),
        user_id: "user_0000042".into(),
        scenario_id: "vlog_main_feed".into(),
        counts,
        watch_count: 2,
        watch_seconds: 310.5,
        category_counts: [("music".into(), 6), ("sports".into(), 2)].into(),
        favorite_categories: vec!["music".into(), "sports".into()],
        active_hours,
        first_seen: 1_767_520_800_000,
        last_active_at: 1_767_521_100_000,
        recent_items: vec!["item_000007".into(), "item_000001".into()],
        updated_window: 1_767_521_100_000,
    }
}

/// Makes a valid profile invalid in one way.
type Breaker = Box<dyn Fn(&mut ProfileDoc)>;

#[test]
fn profile_doc_matches_schema() {
    let schema = compile("profile.schema.json");
    let doc = serde_json::to_value(sample_profile()).unwrap();
    assert_schema_accepts(&schema, &doc, "ProfileDoc");

    // A freshly created profile (all zeros, nothing favorite yet) is valid too.
    let mut empty = sample_profile();
    empty.counts = recflow_schemas::ActionCounts::default();
    empty.watch_count = 0;
    empty.watch_seconds = 0.0;
    empty.category_counts.clear();
    empty.favorite_categories.clear();
    empty.recent_items.clear();
    assert_schema_accepts(&schema, &serde_json::to_value(empty).unwrap(), "empty ProfileDoc");

    // The counts object must name exactly the twelve actions.
    let mut d = doc.clone();
    d["counts"].as_object_mut().unwrap().remove("payment");
    assert!(!schema.is_valid(&d), "missing action count accepted");
    let mut d = doc.clone();
    d["counts"]["dance"] = json!(1);
    assert!(!schema.is_valid(&d), "unknown action count accepted");

    // Exactly 24 active hours (the Rust type cannot hold another number).
    for n in [23, 25] {
        let mut d = doc.clone();
        d["active_hours"] = json!(vec![0; n]);
        assert!(!schema.is_valid(&d), "{n} active hours accepted");
    }

    // Every field is required: dropping any one is rejected.
    for key in doc.as_object().unwrap().keys() {
        let mut d = doc.clone();
        d.as_object_mut().unwrap().remove(key);
        assert!(!schema.is_valid(&d), "schema accepts a profile without {key}");
    }

    let bad: Vec<(&str, Breaker)> = vec![
        ("4 favorites", Box::new(|p| p.favorite_categories = vec!["a".into(), "b".into(), "c".into(), "d".into()])),
        ("duplicate favorites", Box::new(|p| p.favorite_categories = vec!["a".into(), "a".into()])),
        ("21 recent items", Box::new(|p| p.recent_items = (0..21).map(|i| format!("item_{i}").into()).collect())),
        ("duplicate recent items", Box::new(|p| p.recent_items = vec!["i".into(), "i".into()])),
        ("bad recent item", Box::new(|p| p.recent_items = vec!["a b".into()])),
        (
            "zero category count",
            Box::new(|p| {
                p.category_counts.insert("pets".into(), 0);
            }),
        ),
        (
            "bad category name",
            Box::new(|p| {
                p.category_counts.insert("a b".into(), 1);
            }),
        ),
        ("negative watch seconds", Box::new(|p| p.watch_seconds = -1.0)),
        ("negative first_seen", Box::new(|p| p.first_seen = -1)),
        ("bad tenant", Box::new(|p| p.tenant_id = "T".into())),
        ("bad user", Box::new(|p| p.user_id = "".into())),
    ];
    for (what, f) in bad {
        let mut p = sample_profile();
        f(&mut p);
        let d = serde_json::to_value(p).unwrap();
        assert!(!schema.is_valid(&d), "{what}: schema accepts {d}");
    }
    // Scores are derived from the counts, so only a document from elsewhere can hold these.
    for (what, score) in [("score above 1", 1.5), ("score of 0", 0.0)] {
        let mut d = doc.clone();
        d["category_scores"]["music"] = json!(score);
        assert!(!schema.is_valid(&d), "{what}: schema accepts {d}");
    }
    let mut d = doc.clone();
    d["surprise"] = json!(1);
    assert!(!schema.is_valid(&d), "profile schema must reject unknown fields");
}

/// Events both the schema and the Validator must accept.
fn valid_events() -> Vec<(&'static str, Value)> {
    let s = |s: &str| Some(json!(s));
    vec![
        ("minimal", base()),
        ("timestamp 0", with("timestamp", Some(json!(0)))),
        ("rfc3339 Z", with("timestamp", s("2026-01-04T10:00:00Z"))),
        ("rfc3339 fraction", with("timestamp", s("2026-01-04T10:00:00.250Z"))),
        ("rfc3339 offset", with("timestamp", s("2026-01-04T11:00:00+01:00"))),
        ("rfc3339 epoch", with("timestamp", s("1970-01-01T00:00:00Z"))),
        ("rfc3339 lowercase", with("timestamp", s("2026-01-04t10:00:00z"))),
        ("rfc3339 leap second", with("timestamp", s("2016-12-31T23:59:60Z"))),
        ("rfc3339 leap day", with("timestamp", s("2024-02-29T10:00:00Z"))),
        ("rfc3339 -00:00", with("timestamp", s("2026-01-04T10:00:00-00:00"))),
        ("tenant max", with("tenant_id", s(&"a".repeat(64)))),
        ("tenant chars", with("tenant_id", s("abc_019"))),
        ("scenario chars", with("scenario_id", s("Vlog.Main-Feed_2"))),
        ("scenario max", with("scenario_id", s(&"S".repeat(64)))),
        ("user max", with("user_id", s(&"u".repeat(128)))),
        ("user chars", with("user_id", s("A.b_c-d@e9"))),
        ("item chars", with("item_id", s("x@y.z"))),
        ("event_id punctuation", with("event_id", s("!\"#$%&'()*+,-./:;<=>?[\\]^_`{|}~"))),
        ("event_id max", with("event_id", s(&"e".repeat(128)))),
        ("request_id", with("request_id", s("req:42/a"))),
        ("experiment", with("experiment_id", s("exp_001"))),
        ("variant", with("variant", s("treatment"))),
        ("category", with("category", s("music"))),
        ("optional nulls", {
            let mut d = base();
            for f in ["event_id", "request_id", "experiment_id", "variant", "category", "context", "extra"] {
                d[f] = Value::Null;
            }
            d
        }),
        ("context", with("context", Some(json!({"device_type":"mobile","n":[1]})))),
        ("empty context", with("context", Some(json!({})))),
        ("empty extra", with("extra", Some(json!({})))),
        ("extra full", with("extra", Some(json!({"watch_duration":12.5,"completion_rate":0.5,"amount":3})))),
        ("extra bounds", with("extra", Some(json!({"watch_duration":0,"completion_rate":1,"amount":0})))),
        ("extra nulls", with("extra", Some(json!({"watch_duration":null,"completion_rate":null,"amount":null})))),
        ("extra unknown keys", with("extra", Some(json!({"coupon":"X","note":[1]})))),
        ("unknown top-level property", with("source", s("app"))),
    ]
}

/// Events both reject; the Validator with the given (reason, field).
fn invalid_events() -> Vec<(&'static str, Value, Reason, &'static str)> {
    use Reason::{InvalidField as Inv, MissingField as Miss, UnknownAction as Unk};
    let s = |s: &str| Some(json!(s));
    let mut t = vec![];
    for f in ["tenant_id", "scenario_id", "user_id", "item_id", "action_type", "timestamp"] {
        t.push(("required field absent", with(f, None), Miss, f));
        t.push(("required field null", with(f, Some(Value::Null)), Miss, f));
    }
    t.extend([
        ("tenant uppercase", with("tenant_id", s("Tenant")), Inv, "tenant_id"),
        ("tenant empty", with("tenant_id", s("")), Inv, "tenant_id"),
        ("tenant dash", with("tenant_id", s("a-b")), Inv, "tenant_id"),
        ("tenant too long", with("tenant_id", s(&"a".repeat(65))), Inv, "tenant_id"),
        ("tenant number", with("tenant_id", Some(json!(5))), Inv, "tenant_id"),
        ("scenario space", with("scenario_id", s("a b")), Inv, "scenario_id"),
        ("scenario at", with("scenario_id", s("a@b")), Inv, "scenario_id"),
        ("scenario too long", with("scenario_id", s(&"s".repeat(65))), Inv, "scenario_id"),
        ("scenario array", with("scenario_id", Some(json!(["s"]))), Inv, "scenario_id"),
        ("user colon", with("user_id", s("a:b")), Inv, "user_id"),
        ("user non-ascii", with("user_id", s("us\u{e9}r")), Inv, "user_id"),
        ("user too long", with("user_id", s(&"u".repeat(129))), Inv, "user_id"),
        ("user trailing newline", with("user_id", s("u\n")), Inv, "user_id"),
        ("item path", with("item_id", s("../x")), Inv, "item_id"),
        ("item empty", with("item_id", s("")), Inv, "item_id"),
        ("item number", with("item_id", Some(json!(1))), Inv, "item_id"),
        ("event_id space", with("event_id", s("a b")), Inv, "event_id"),
        ("event_id empty", with("event_id", s("")), Inv, "event_id"),
        ("event_id too long", with("event_id", s(&"e".repeat(129))), Inv, "event_id"),
        ("event_id number", with("event_id", Some(json!(7))), Inv, "event_id"),
        ("event_id control char", with("event_id", s("a\tb")), Inv, "event_id"),
        ("request_id space", with("request_id", s("r 1")), Inv, "request_id"),
        ("request_id object", with("request_id", Some(json!({}))), Inv, "request_id"),
        ("experiment slash", with("experiment_id", s("a/b")), Inv, "experiment_id"),
        ("variant empty", with("variant", s("")), Inv, "variant"),
        ("variant bool", with("variant", Some(json!(true))), Inv, "variant"),
        ("category space", with("category", s("a b")), Inv, "category"),
        ("action number", with("action_type", Some(json!(3))), Inv, "action_type"),
        ("action unknown", with("action_type", s("dance")), Unk, "action_type"),
        ("action wrong case", with("action_type", s("Click")), Unk, "action_type"),
        ("action empty", with("action_type", s("")), Unk, "action_type"),
        ("timestamp negative", with("timestamp", Some(json!(-1))), Inv, "timestamp"),
        ("timestamp fraction", with("timestamp", Some(json!(1.5))), Inv, "timestamp"),
        ("timestamp bool", with("timestamp", Some(json!(true))), Inv, "timestamp"),
        ("timestamp above i64", with("timestamp", Some(json!(u64::MAX))), Inv, "timestamp"),
        ("timestamp word", with("timestamp", s("yesterday")), Inv, "timestamp"),
        ("timestamp digits string", with("timestamp", s("1767520800000")), Inv, "timestamp"),
        ("timestamp no offset", with("timestamp", s("2026-01-04T10:00:00")), Inv, "timestamp"),
        ("timestamp date only", with("timestamp", s("2026-01-04")), Inv, "timestamp"),
        ("timestamp not a leap day", with("timestamp", s("2026-02-29T10:00:00Z")), Inv, "timestamp"),
        ("timestamp second 60 off midnight", with("timestamp", s("2026-01-04T10:00:60Z")), Inv, "timestamp"),
        ("timestamp offset 24h", with("timestamp", s("2026-01-04T10:00:00+24:00")), Inv, "timestamp"),
        ("timestamp no seconds", with("timestamp", s("2026-01-04T10:00Z")), Inv, "timestamp"),
        ("timestamp empty fraction", with("timestamp", s("2026-01-04T10:00:00.Z")), Inv, "timestamp"),
        ("timestamp bad month", with("timestamp", s("2026-13-04T10:00:00Z")), Inv, "timestamp"),
        ("timestamp before 1970", with("timestamp", s("1969-12-31T23:59:59Z")), Inv, "timestamp"),
        ("context string", with("context", s("mobile")), Inv, "context"),
        ("context array", with("context", Some(json!([1]))), Inv, "context"),
        ("context number", with("context", Some(json!(1))), Inv, "context"),
        ("extra array", with("extra", Some(json!([1]))), Inv, "extra"),
        ("extra string", with("extra", s("x")), Inv, "extra"),
        ("watch_duration negative", with("extra.watch_duration", Some(json!(-1))), Inv, "extra.watch_duration"),
        ("watch_duration string", with("extra.watch_duration", s("long")), Inv, "extra.watch_duration"),
        ("completion_rate above 1", with("extra.completion_rate", Some(json!(1.5))), Inv, "extra.completion_rate"),
        ("completion_rate negative", with("extra.completion_rate", Some(json!(-0.1))), Inv, "extra.completion_rate"),
        ("completion_rate bool", with("extra.completion_rate", Some(json!(false))), Inv, "extra.completion_rate"),
        ("amount negative", with("extra.amount", Some(json!(-0.01))), Inv, "extra.amount"),
        ("amount string", with("extra.amount", s("5")), Inv, "extra.amount"),
    ]);
    t
}

#[test]
fn schema_and_validator_agree_on_valid_events() {
    let schema = compile("event.schema.json");
    let mut docs = valid_events();
    for a in ACTIONS {
        docs.push(("every action", with("action_type", Some(json!(a.name())))));
    }
    assert!(docs.len() > 35);
    for (what, doc) in docs {
        assert_schema_accepts(&schema, &doc, what);
        if let Err(r) = rust_validate(&doc) {
            panic!("{what}: Validator rejects {doc}: {r:?}");
        }
    }
}

#[test]
fn schema_and_validator_agree_on_invalid_events() {
    let schema = compile("event.schema.json");
    let table = invalid_events();
    assert!(table.len() > 60);
    for (what, doc, reason, field) in table {
        assert!(!schema.is_valid(&doc), "{what}: schema accepts what the Validator rejects: {doc}");
        assert_eq!(rust_validate(&doc), Err((reason, Some(field))), "{what}: Validator verdict on {doc}");
    }
}

/// The boundary of what a schema can say: these are rejected only by the
/// Validator (runtime context, payload size, lexical number form); the schema
/// accepts them. Pinned so a change on either side is noticed.
#[test]
fn documented_differences() {
    let schema = compile("event.schema.json");
    let v = Validator::default();
    let check = |doc: &Value, topic: Option<&str>| {
        v.validate(doc.to_string().as_bytes(), topic, NOW).map(|_| ()).map_err(|r| r.reason)
    };

    let doc = base();
    assert!(schema.is_valid(&doc));
    assert_eq!(check(&doc, Some("other")), Err(Reason::TenantMismatch));

    let doc = with("timestamp", Some(json!(NOW + 3_600_000)));
    assert!(schema.is_valid(&doc));
    assert_eq!(check(&doc, None), Err(Reason::FutureTimestamp));

    let doc = with("pad", Some(json!("x".repeat(70 * 1024))));
    assert!(schema.is_valid(&doc));
    assert_eq!(check(&doc, None), Err(Reason::Oversize));

    // JSON Schema calls 1.0 an integer; the Validator wants integer syntax.
    let doc = with("timestamp", Some(json!(1_767_520_800_000.0f64)));
    assert!(schema.is_valid(&doc));
    assert_eq!(check(&doc, None), Err(Reason::InvalidField));

    // The year pattern approximates "not before 1970" in UTC: an offset can
    // move an instant across the epoch.
    let doc = with("timestamp", Some(json!("1970-01-01T00:30:00+01:00")));
    assert!(schema.is_valid(&doc));
    assert_eq!(check(&doc, None), Err(Reason::InvalidField));

    // The other way round: the Validator's RFC 3339 parser also takes the
    // space separator RFC 3339 section 5.6 permits; format date-time does not.
    for ts in ["2026-01-04 10:00:00Z", "1969-12-31T23:30:00-01:00"] {
        let doc = with("timestamp", Some(json!(ts)));
        assert!(!schema.is_valid(&doc), "{ts}");
        assert_eq!(check(&doc, None), Ok(()), "{ts}");
    }
}
