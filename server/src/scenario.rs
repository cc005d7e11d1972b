//! Scenario configs: validated against schemas/scenario.schema.json and the
//! strategy/rule registries, compiled, and cached per (tenant, scenario).
//! A tenant's stored config wins over the template of the same id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::recall::{self, Recall};
use crate::rerank::{self, Rule};
use crate::state::StateStore;
use crate::{ab, ApiError};

/// The scenario JSON Schema (also published as schemas/scenario.schema.json).
pub const SCHEMA: &str = include_str!("../../schemas/scenario.schema.json");

/// The typed view of a schema-valid document (`scenario_id` and `description` are checked by the schema only).
#[derive(Deserialize)]
struct RawScenario {
    algorithm_version: String,
    recall: Vec<RawStrategy>,
    #[serde(default)]
    rerank: Vec<Map<String, Value>>,
    #[serde(default)]
    experiment: Option<RawExperiment>,
}

#[derive(Deserialize)]
struct RawStrategy {
    strategy: String,
    weight: f64,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct RawExperiment {
    experiment_id: String,
    variants: Vec<RawVariant>,
}

#[derive(Deserialize)]
struct RawVariant {
    name: String,
    traffic: u32,
    #[serde(default)]
    algorithm_version: Option<String>,
    #[serde(default)]
    weights: BTreeMap<String, f64>,
    #[serde(default)]
    rerank: Option<Vec<Map<String, Value>>>,
}

/// Candidates a strategy returns when the config sets no `limit`.
const DEFAULT_LIMIT: usize = 200;

/// One recall step of a plan.
#[derive(Clone)]
pub struct Step {
    /// The strategy.
    pub recall: &'static dyn Recall,
    /// Weight in the merge.
    pub weight: f64,
    /// Candidates to fetch.
    pub limit: usize,
}

/// An experiment variant, compiled.
struct Variant {
    name: String,
    algorithm_version: Option<String>,
    weights: BTreeMap<String, f64>,
    rules: Option<Vec<Arc<dyn Rule>>>,
}

/// A validated scenario config.
pub struct Scenario {
    /// The config as stored (what GET returns).
    pub config: Value,
    algorithm_version: String,
    steps: Vec<Step>,
    rules: Vec<Arc<dyn Rule>>,
    experiment: Option<(String, Vec<u32>, Vec<Variant>)>,
}

/// What one user gets in one scenario: the variant's strategies and rules.
pub struct Plan<'a> {
    /// `none` without an experiment.
    pub experiment_id: &'a str,
    /// `none` without an experiment.
    pub variant: &'a str,
    /// The variant's version, else the scenario's.
    pub algorithm_version: &'a str,
    /// Recall steps with the variant's weights.
    pub steps: Vec<Step>,
    /// Rerank rules in order.
    pub rules: &'a [Arc<dyn Rule>],
}

impl Scenario {
    /// The plan of `user`: their variant by stable hash, its overrides applied.
    pub fn plan(&self, user: &str) -> Plan<'_> {
        let base = Plan {
            experiment_id: "none",
            variant: "none",
            algorithm_version: &self.algorithm_version,
            steps: self.steps.clone(),
            rules: &self.rules,
        };
        let Some((exp, traffic, variants)) = &self.experiment else { return base };
        let v = &variants[ab::pick(traffic, ab::bucket(exp, user))];
        let steps = self
            .steps
            .iter()
            .map(|s| Step { weight: v.weights.get(s.recall.name()).copied().unwrap_or(s.weight), ..s.clone() })
            .collect();
        Plan {
            experiment_id: exp,
            variant: &v.name,
            algorithm_version: v.algorithm_version.as_deref().unwrap_or(&self.algorithm_version),
            steps,
            rules: v.rules.as_deref().unwrap_or(&self.rules),
        }
    }
}

/// `/recall/0/weight` -> `recall[0].weight`.
fn field_of(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_scenario", message).with_field(field)
}

/// Compiled scenarios by (tenant, scenario), with their load time.
/// Compiled scenarios by (tenant, id), and ids known to be unknown (`None`):
/// without those, every request for a missing scenario would reach the store.
type Cache = Mutex<HashMap<(String, String), (Instant, Option<Arc<Scenario>>)>>;

/// Most cached entries: unknown ids come from requests, so the cache is bounded.
const MAX_CACHED: usize = 10_000;

/// Validates scenario documents and caches compiled scenarios.
pub struct Scenarios {
    schema: jsonschema::Validator,
    templates: HashMap<String, Arc<Scenario>>,
    cache: Cache,
    ttl: Duration,
}

impl Scenarios {
    /// Loads every `*.json` template of `dir` (missing dir = no templates);
    /// an invalid template is an error naming the file and field.
    pub fn load(dir: &Path, ttl: Duration) -> Result<Self, String> {
        let mut me = Self::empty(ttl);
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(me),
            Err(e) => return Err(format!("reading {}: {e}", dir.display())),
        };
        let mut paths: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.retain(|p| p.extension().is_some_and(|x| x == "json"));
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| format!("{}: bad JSON: {e}", p.display()))?;
            let sc = me.compile(&value).map_err(|e| {
                format!("{}: {}: {}", p.display(), e.field.as_deref().unwrap_or("(document)"), e.message)
            })?;
            let id = value["scenario_id"].as_str().unwrap_or_default().to_string();
            me.templates.insert(id, Arc::new(sc));
        }
        Ok(me)
    }

    /// No templates.
    pub fn empty(ttl: Duration) -> Self {
        let schema_value: Value = serde_json::from_str(SCHEMA).expect("the bundled scenario schema is JSON");
        let schema = jsonschema::validator_for(&schema_value).expect("the bundled scenario schema is valid");
        Scenarios { schema, templates: HashMap::new(), cache: Mutex::new(HashMap::new()), ttl }
    }

    /// Template ids, sorted.
    pub fn template_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.templates.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Validates and compiles a scenario document; errors name the field.
    pub fn compile(&self, value: &Value) -> Result<Scenario, ApiError> {
        if let Some(e) = self.schema.iter_errors(value).next() {
            let mut field = field_of(e.instance_path().as_str());
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                let name = property.as_str().unwrap_or_default();
                field = if field.is_empty() { name.to_string() } else { format!("{field}.{name}") };
            }
            return Err(bad(field, e.to_string()));
        }
        let raw: RawScenario = serde_json::from_value(value.clone()).map_err(|e| bad("", e.to_string()))?;
        let mut steps = Vec::new();
        let mut seen = HashSet::new();
        for (i, s) in raw.recall.iter().enumerate() {
            let field = format!("recall[{i}].strategy");
            let r = recall::find(&s.strategy).ok_or_else(|| {
                bad(&field, format!("unknown strategy {:?}; known: {}", s.strategy, recall::names().join(", ")))
            })?;
            if !seen.insert(r.name()) {
                return Err(bad(field, format!("strategy {:?} listed twice", s.strategy)));
            }
            steps.push(Step { recall: r, weight: s.weight, limit: s.limit.unwrap_or(DEFAULT_LIMIT) });
        }
        let rules = compile_rules(&raw.rerank, "rerank")?;
        let experiment = match raw.experiment {
            None => None,
            Some(exp) => {
                let mut traffic = Vec::new();
                let mut variants = Vec::new();
                let mut names = HashSet::new();
                for (i, v) in exp.variants.into_iter().enumerate() {
                    if !names.insert(v.name.clone()) {
                        return Err(bad(format!("experiment.variants[{i}].name"), "variant names must be unique"));
                    }
                    for k in v.weights.keys() {
                        if !seen.contains(k.as_str()) {
                            return Err(bad(
                                format!("experiment.variants[{i}].weights.{k}"),
                                format!("{k:?} is not a recall strategy of this scenario"),
                            ));
                        }
                    }
                    let rules = match &v.rerank {
                        Some(r) => Some(compile_rules(r, &format!("experiment.variants[{i}].rerank"))?),
                        None => None,
                    };
                    traffic.push(v.traffic);
                    variants.push(Variant {
                        name: v.name,
                        algorithm_version: v.algorithm_version,
                        weights: v.weights,
                        rules,
                    });
                }
                let total: u32 = traffic.iter().sum();
                if total != 100 {
                    return Err(bad("experiment.variants", format!("traffic must sum to 100, got {total}")));
                }
                Some((exp.experiment_id, traffic, variants))
            }
        };
        Ok(Scenario { config: value.clone(), algorithm_version: raw.algorithm_version, steps, rules, experiment })
    }

    /// The scenario `id` of `tenant`: cached, else stored, else the template; 404 if none.
    pub async fn get(&self, store: &dyn StateStore, tenant: &str, id: &str) -> Result<Arc<Scenario>, ApiError> {
        let unknown = || ApiError::not_found(format!("unknown scenario {id:?}")).with_field("scenario_id");
        let key = (tenant.to_string(), id.to_string());
        if let Some((at, s)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            if at.elapsed() < self.ttl {
                return s.clone().ok_or_else(unknown);
            }
        }
        let scenario = match store.get_scenario(key.0.clone(), key.1.clone()).await? {
            Some(v) => Some(Arc::new(self.compile(&v).map_err(|e| {
                tracing::error!(%tenant, scenario = %id, error = %e, "stored scenario config is invalid");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "invalid_stored_scenario", e.message)
            })?)),
            None => self.templates.get(id).cloned(),
        };
        self.remember(key, scenario.clone());
        scenario.ok_or_else(unknown)
    }

    /// Caches a lookup; when full, expired entries go first, then unknown
    /// ids, then everything (a flood of random ids cannot grow it).
    fn remember(&self, key: (String, String), scenario: Option<Arc<Scenario>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, s)| s.is_some());
            }
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), scenario));
    }

    /// Drops the cached scenario after a PUT.
    pub fn invalidate(&self, tenant: &str, id: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(&(tenant.to_string(), id.to_string()));
    }
}

fn compile_rules(raw: &[Map<String, Value>], prefix: &str) -> Result<Vec<Arc<dyn Rule>>, ApiError> {
    raw.iter()
        .enumerate()
        .map(|(i, params)| {
            let field = format!("{prefix}[{i}]");
            let name = params.get("rule").and_then(Value::as_str).unwrap_or_default();
            let build = rerank::find(name).ok_or_else(|| {
                bad(format!("{field}.rule"), format!("unknown rule {name:?}; known: {}", rerank::names().join(", ")))
            })?;
            build(params).map_err(|(param, msg)| bad(format!("{field}.{param}"), msg))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Scenarios {
        templates_with_ttl(Duration::from_secs(60))
    }

    fn templates_with_ttl(ttl: Duration) -> Scenarios {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/scenarios");
        Scenarios::load(&dir, ttl).unwrap()
    }

    fn field_of_error(s: &Scenarios, mutate: impl FnOnce(&mut Value)) -> String {
        let text = include_str!("../../configs/scenarios/vlog.json");
        let mut v: Value = serde_json::from_str(text).unwrap();
        mutate(&mut v);
        s.compile(&v).err().expect("must be rejected").field.unwrap_or_default()
    }

    #[test]
    fn templates_load_and_bad_configs_name_the_field() {
        let s = templates();
        assert_eq!(s.template_ids(), ["news_main_feed", "vlog_main_feed"]);
        assert_eq!(field_of_error(&s, |v| v["recall"][0]["weight"] = Value::from(-1)), "recall[0].weight");
        assert_eq!(field_of_error(&s, |v| v["recall"][1]["strategy"] = "nope".into()), "recall[1].strategy");
        assert_eq!(
            field_of_error(&s, |v| {
                v.as_object_mut().unwrap().remove("algorithm_version");
            }),
            "algorithm_version"
        );
        assert_eq!(
            field_of_error(&s, |v| v["rerank"][1]["max_per_category"] = Value::from(0)),
            "rerank[1].max_per_category"
        );
        assert_eq!(
            field_of_error(&s, |v| v["experiment"]["variants"][0]["traffic"] = Value::from(10)),
            "experiment.variants"
        );
        assert_eq!(field_of_error(&s, |v| v["surprise"] = Value::from(1)), "");
    }

    #[tokio::test]
    async fn unknown_ids_are_cached_until_a_put_invalidates_them() {
        use crate::state::{EmbeddedState, StateStore};
        let s = templates();
        let store = EmbeddedState::new(Arc::default(), Vec::new());
        let err = s.get(&store, "t1", "later").await.err().expect("unknown");
        assert_eq!((err.status, err.field.as_deref()), (StatusCode::NOT_FOUND, Some("scenario_id")));
        // Stored behind the cache's back (another server's PUT): still unknown here until the TTL...
        let doc: Value = serde_json::from_str(include_str!("../../configs/scenarios/news.json")).unwrap();
        store.put_scenario("t1".into(), "later".into(), doc).await.unwrap();
        assert!(s.get(&store, "t1", "later").await.is_err(), "the miss is cached");
        // ...or this server's PUT, which invalidates it.
        s.invalidate("t1", "later");
        assert!(s.get(&store, "t1", "later").await.is_ok());
        assert!(s.get(&store, "t2", "later").await.is_err(), "another tenant's scenario is not found");
        // With a zero TTL nothing is served from the cache.
        let fresh = templates_with_ttl(Duration::ZERO);
        assert!(fresh.get(&store, "t2", "later").await.is_err());
        store
            .put_scenario(
                "t2".into(),
                "later".into(),
                serde_json::from_str(include_str!("../../configs/scenarios/news.json")).unwrap(),
            )
            .await
            .unwrap();
        assert!(fresh.get(&store, "t2", "later").await.is_ok());
    }

    #[test]
    fn the_cache_stays_bounded_under_a_flood_of_unknown_ids() {
        let s = templates();
        for i in 0..MAX_CACHED + 5 {
            s.remember(("t".into(), format!("nope_{i}")), None);
        }
        s.remember(("t".into(), "vlog_main_feed".into()), s.templates.get("vlog_main_feed").cloned());
        let cache = s.cache.lock().unwrap();
        assert!(cache.len() <= MAX_CACHED, "{}", cache.len());
        assert!(cache.get(&("t".to_string(), "vlog_main_feed".to_string())).is_some_and(|(_, sc)| sc.is_some()));
    }

    #[test]
    fn variants_override_weights_and_rules() {
        let s = templates();
        let vlog = &s.templates["vlog_main_feed"];
        let mut seen = HashSet::new();
        for u in 0..200 {
            let p = vlog.plan(&format!("user_{u}"));
            assert_eq!(p.experiment_id, "exp_001");
            let affinity = p.steps.iter().find(|st| st.recall.name() == "category_affinity").unwrap().weight;
            match p.variant {
                "control" => assert_eq!((affinity, p.rules.len(), p.algorithm_version), (1.5, 2, "vlog-v1")),
                "treatment" => assert_eq!((affinity, p.rules.len(), p.algorithm_version), (3.0, 1, "vlog-v1-affinity")),
                other => panic!("unexpected variant {other}"),
            }
            seen.insert(p.variant.to_string());
        }
        assert_eq!(seen.len(), 2, "both variants get traffic");
    }
}
