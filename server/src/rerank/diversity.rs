//! `diversity`: at most `max_per_category` items of one category in the page.

use std::collections::HashMap;
use std::sync::Arc;

use recflow_schemas::Str;
use serde_json::{Map, Value};

use super::{only, Ranked, RerankCtx, Rule};

/// Keeps rank order but skips items whose category already filled its quota
/// in the page; if too few remain, the page is shorter (the rule is never
/// broken). Items of unknown category are not limited.
pub struct Diversity {
    max_per_category: usize,
}

/// Builds from `{"rule": "diversity", "max_per_category": N}` (N ≥ 1).
pub fn build(params: &Map<String, Value>) -> Result<Arc<dyn Rule>, (&'static str, String)> {
    only(params, &["max_per_category"])?;
    let n = params.get("max_per_category").and_then(Value::as_u64).filter(|n| (1..=1000).contains(n));
    let n = n.ok_or(("max_per_category", "max_per_category must be an integer in 1..=1000".to_string()))?;
    Ok(Arc::new(Diversity { max_per_category: n as usize }))
}

impl Rule for Diversity {
    fn apply(&self, items: Vec<Ranked>, ctx: &RerankCtx<'_>) -> Vec<Ranked> {
        let mut counts: HashMap<Str, usize, foldhash::fast::RandomState> = HashMap::default();
        let mut page = Vec::with_capacity(ctx.page);
        let mut rest = Vec::new();
        for r in items {
            if page.len() >= ctx.page {
                rest.push(r);
                continue;
            }
            let ok = match ctx.category_of(&r) {
                None => true,
                Some(c) => {
                    let n = counts.entry(Str::new(c)).or_default();
                    *n += 1;
                    *n <= self.max_per_category
                }
            };
            if ok {
                page.push(r);
            }
        }
        // Only a full page may be followed by more (they are beyond the page).
        if page.len() >= ctx.page {
            page.extend(rest);
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TenantCatalog;

    #[test]
    fn caps_each_category_per_page() {
        let cat = TenantCatalog::default();
        let ctx = RerankCtx { catalog: &cat, now_ms: 0, page: 4 };
        let r = |id: &str, c: &str, s: f64| Ranked {
            item_id: id.into(),
            score: s,
            reasons: Default::default(),
            category: Some(c.into()),
        };
        let items = vec![r("a", "x", 9.0), r("b", "x", 8.0), r("c", "x", 7.0), r("d", "y", 6.0), r("e", "z", 5.0)];
        let rule = build(serde_json::json!({"rule": "diversity", "max_per_category": 2}).as_object().unwrap()).unwrap();
        let out: Vec<String> = rule.apply(items, &ctx).into_iter().map(|r| r.item_id.to_string()).collect();
        assert_eq!(out, ["a", "b", "d", "e"]);
    }
}
