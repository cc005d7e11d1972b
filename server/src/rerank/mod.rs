//! Rerank rules, applied in config order to the ranked list. A new rule is one
//! file with a builder plus one line in [`RULES`].

mod diversity;
mod freshness;
mod reasons;

use std::sync::Arc;

use recflow_schemas::Str;
use serde_json::{Map, Value};

use crate::state::TenantCatalog;

pub use reasons::Reasons;

/// A ranked recommendation.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// The item.
    pub item_id: Str,
    /// Merged (then reranked) score.
    pub score: f64,
    /// Recall strategies that proposed it.
    pub reasons: Reasons,
    /// Category, if a strategy or the catalog knows it.
    pub category: Option<Str>,
}

/// What rules may read.
pub struct RerankCtx<'a> {
    /// The tenant's catalog.
    pub catalog: &'a TenantCatalog,
    /// Wall clock, epoch ms.
    pub now_ms: i64,
    /// Items in the page being served.
    pub page: usize,
}

impl RerankCtx<'_> {
    /// The category of `r`: its own, else the catalog's.
    pub fn category_of<'r>(&'r self, r: &'r Ranked) -> Option<&'r str> {
        r.category.as_deref().or_else(|| self.catalog.get(&r.item_id)?.category.as_deref())
    }
}

/// A rerank rule.
pub trait Rule: Send + Sync {
    /// Reorders (or drops from the page) ranked items.
    fn apply(&self, items: Vec<Ranked>, ctx: &RerankCtx<'_>) -> Vec<Ranked>;
}

/// Builds a rule from its config object; errors are (parameter, message).
pub type Builder = fn(&Map<String, Value>) -> Result<Arc<dyn Rule>, (&'static str, String)>;

/// Every registered rule.
pub static RULES: [(&str, Builder); 2] = [("diversity", diversity::build), ("freshness", freshness::build)];

/// The builder of the rule called `name`.
pub fn find(name: &str) -> Option<Builder> {
    RULES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Registered names, for error messages.
pub fn names() -> Vec<&'static str> {
    RULES.iter().map(|(n, _)| *n).collect()
}

/// Sorts by score desc, then item id asc (a total, deterministic order).
pub fn sort(items: &mut [Ranked]) {
    items.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.item_id.cmp(&b.item_id)));
}

/// Rejects parameters other than `rule` and `allowed`.
fn only(params: &Map<String, Value>, allowed: &[&'static str]) -> Result<(), (&'static str, String)> {
    match params.keys().find(|k| *k != "rule" && !allowed.contains(&k.as_str())) {
        Some(k) => Err(("rule", format!("unknown parameter {k:?}; allowed: {}", allowed.join(", ")))),
        None => Ok(()),
    }
}
