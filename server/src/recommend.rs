//! The recommendation flow: scenario -> variant -> concurrent recall ->
//! weighted merge -> drop exposed/excluded -> rank -> rerank -> record
//! exposures. Degrades (hot items, or the last good hot list) instead of failing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use recflow_schemas::Str;
use serde::Serialize;

use crate::recall::{self, Candidate, RecallCtx};
use crate::rerank::{self, Ranked, Reasons, RerankCtx};
use crate::scenario::Step;
use crate::state::{keys, StoreError, UserState};
use crate::{ApiError, App};

/// A validated recommendation request.
#[derive(Clone, Debug)]
pub struct RecRequest {
    /// Authenticated tenant.
    pub tenant: String,
    /// The user (X-User-Id).
    pub user: String,
    /// The scenario.
    pub scenario_id: String,
    /// Page size, 1..=100.
    pub count: usize,
    /// Items the caller does not want.
    pub exclude: HashSet<String>,
    /// X-Request-Id, or generated.
    pub request_id: String,
}

/// One returned item.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RecItem {
    /// The item.
    pub item_id: Str,
    /// Final score.
    pub score: f64,
    /// Recall sources that proposed it.
    pub reasons: Reasons,
}

/// How the answer was produced.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RecMetadata {
    /// The scenario's (or variant's) algorithm version.
    pub algorithm_version: String,
    /// The experiment, `none` without one.
    pub experiment_id: String,
    /// The user's variant, `none` without an experiment.
    pub variant: String,
    /// Server-side time of this request.
    pub latency_ms: f64,
    /// True when the answer was degraded.
    pub is_fallback: bool,
    /// Why (`no_profile`, `redis_unavailable`, `backend_unavailable`), else null.
    pub fallback_reason: Option<&'static str>,
}

/// The response body of `POST /api/v1/recommend`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RecResponse {
    /// Echo of X-Request-Id, or generated.
    pub request_id: String,
    /// The page.
    pub items: Vec<RecItem>,
    /// How it was produced.
    pub metadata: RecMetadata,
}

/// A request id unique to this process: time and a counter, hashed.
pub fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let h = xxhash_rust::xxh3::xxh3_64(&[nanos.to_le_bytes().as_slice(), &n.to_le_bytes()].concat());
    format!("req-{h:016x}")
}

/// Merges strategy results: each list's scores scaled to its best (so scales
/// compare), times the strategy weight, summed per item; sorted.
pub fn merge(results: &[(&'static str, f64, Vec<Candidate>)]) -> Vec<Ranked> {
    merge_kept(results, |_| true)
}

/// [`merge`] of the candidates `keep` accepts (dropped ones cost no ranking work).
pub fn merge_kept(results: &[(&'static str, f64, Vec<Candidate>)], keep: impl Fn(&Str) -> bool) -> Vec<Ranked> {
    let total = results.iter().map(|(_, _, c)| c.len()).sum();
    let mut index: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(total, Default::default());
    let mut out: Vec<Ranked> = Vec::with_capacity(total);
    for (name, weight, cands) in results {
        let best = cands.iter().map(|c| c.score).fold(0.0f64, f64::max);
        for c in cands {
            let part = if best > 0.0 { c.score / best * weight } else { 0.0 };
            let i = match index.get(c.item_id.as_str()) {
                Some(&i) => i,
                None => {
                    if !keep(&c.item_id) {
                        continue;
                    }
                    index.insert(c.item_id.as_str(), out.len());
                    out.push(Ranked {
                        item_id: c.item_id.clone(),
                        score: 0.0,
                        reasons: Reasons::default(),
                        category: None,
                    });
                    out.len() - 1
                }
            };
            let r = &mut out[i];
            r.score += part;
            r.reasons.add(name);
            if r.category.is_none() {
                r.category.clone_from(&c.category);
            }
        }
    }
    rerank::sort(&mut out);
    out
}

/// Why a recommendation degraded, as counted in `recflow_degraded_total`.
fn reason_of(e: &StoreError) -> &'static str {
    match e {
        StoreError::Redis(_) => "redis_unavailable",
        _ => "backend_unavailable",
    }
}

/// Serves one recommendation request: one Redis round trip (profile and
/// exposed set, pipelined) when the hot lists are cached; exposures are
/// recorded off the response path (see [`crate::exposures`]).
pub async fn recommend(app: &App, req: RecRequest) -> Result<RecResponse, ApiError> {
    let started = Instant::now();
    let store = app.store.as_ref();
    let scenario = app.scenarios.get(store, &req.tenant, &req.scenario_id).await?;
    let plan = scenario.plan(&req.user);
    let exposed_key = keys::exposed(&req.tenant, &req.user, &req.scenario_id);
    // Before the read: whatever is not pending any more is in the exposed SET.
    let recent = app.exposures.pending(&exposed_key);
    let (user_state, catalog) = futures_util::join!(
        store.user_state(req.tenant.clone(), req.user.clone(), req.scenario_id.clone(), exposed_key.clone()),
        store.catalog(req.tenant.clone()),
    );
    let catalog = catalog.unwrap_or_default();
    let now_ms = crate::now_ms();
    let rctx = RerankCtx { catalog: &catalog, now_ms, page: req.count };

    let mut fallback: Option<&'static str> = None;
    let mut page = match user_state {
        Ok(UserState { profile, exposed }) => {
            let hot_steps;
            let steps = match &profile {
                Some(_) => &plan.steps,
                None => {
                    fallback = Some("no_profile");
                    hot_steps = hot_only(&plan.steps);
                    &hot_steps
                }
            };
            let ctx = RecallCtx {
                tenant: &req.tenant,
                scenario: &req.scenario_id,
                profile: profile.as_deref(),
                catalog: &catalog,
                store,
                hot: &app.hot,
                now_ms,
            };
            let results = join_all(steps.iter().map(|s| s.recall.recall(&ctx, s.limit))).await;
            let mut lists = Vec::with_capacity(steps.len());
            let mut failure = None;
            for (step, r) in steps.iter().zip(results) {
                match r {
                    Ok(c) => lists.push((step.recall.name(), step.weight, c)),
                    Err(e) => failure = Some(e),
                }
            }
            match failure {
                Some(e) => {
                    tracing::warn!(error = %e, "recall failed; serving the last good hot list");
                    fallback = Some(reason_of(&e));
                    last_good(app, &req)
                }
                None => merge_kept(&lists, |id| {
                    !exposed.contains(id.as_str()) && !req.exclude.contains(id.as_str()) && !recent.contains(id)
                }),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "state read failed; serving the last good hot list");
            fallback = Some(reason_of(&e));
            last_good(app, &req)
        }
    };
    for rule in plan.rules {
        page = rule.apply(page, &rctx);
    }
    page.truncate(req.count);

    let degraded_by_store = matches!(fallback, Some(r) if r != "no_profile");
    if !degraded_by_store && !page.is_empty() {
        app.exposures.record(exposed_key, page.iter().map(|r| r.item_id.clone()).collect()).await;
    }
    if let Some(r) = fallback {
        app.metrics.degraded.with_label_values(&[r]).inc();
    }
    let mut hits: [(&str, u64); recall::STRATEGY_COUNT] = [("", 0); recall::STRATEGY_COUNT];
    for reason in page.iter().flat_map(|r| r.reasons.as_slice()) {
        if let Some(h) = hits.iter_mut().find(|h| h.0 == *reason || h.1 == 0) {
            *h = (reason, h.1 + 1);
        }
    }
    for (reason, n) in hits.iter().filter(|h| h.1 > 0) {
        app.metrics.recall_hits.with_label_values(&[reason]).inc_by(*n);
    }
    Ok(RecResponse {
        request_id: req.request_id,
        items: page.into_iter().map(|r| RecItem { item_id: r.item_id, score: r.score, reasons: r.reasons }).collect(),
        metadata: RecMetadata {
            algorithm_version: plan.algorithm_version.to_string(),
            experiment_id: plan.experiment_id.to_string(),
            variant: plan.variant.to_string(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            is_fallback: fallback.is_some(),
            fallback_reason: fallback,
        },
    })
}

/// The plan's hot_items step (or a default one): what a user without a profile gets.
fn hot_only(steps: &[Step]) -> Vec<Step> {
    let hot = steps.iter().find(|s| s.recall.name() == recall::HOT_ITEMS).cloned();
    vec![hot.unwrap_or(Step { recall: &recall::HotItems, weight: 1.0, limit: 200 })]
}

/// The last hot list read successfully for this (tenant, scenario), minus exclusions.
fn last_good(app: &App, req: &RecRequest) -> Vec<Ranked> {
    let list = app.hot.last_good(&keys::hot(&req.tenant, &req.scenario_id)).unwrap_or_else(|| Arc::from(Vec::new()));
    let cands: Vec<Candidate> = list
        .iter()
        .filter(|(item, _)| !req.exclude.contains(item.as_str()))
        .map(|(item, score)| Candidate { item_id: item.clone(), score: *score, category: None })
        .collect();
    merge(&[(recall::HOT_ITEMS, 1.0, cands)])
}
