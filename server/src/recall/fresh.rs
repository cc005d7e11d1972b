//! `fresh_items`: the scenario's newest catalog items by publish_time.

use futures_util::future::{ready, BoxFuture, FutureExt};

use super::{Candidate, Recall, RecallCtx};
use crate::state::StoreResult;

/// A day: the age at which a fresh item's score halves.
const HALF_LIFE_MS: f64 = 24.0 * 3600.0 * 1000.0;

/// Newest items of the scenario, scored 2^(−age / 1 day).
pub struct FreshItems;

impl Recall for FreshItems {
    fn name(&self) -> &'static str {
        "fresh_items"
    }

    fn recall<'a>(&'a self, ctx: &'a RecallCtx<'a>, limit: usize) -> BoxFuture<'a, StoreResult<Vec<Candidate>>> {
        let out = ctx
            .catalog
            .fresh(ctx.scenario, limit)
            .iter()
            .map(|(item, published)| {
                let age = (ctx.now_ms - published).max(0) as f64;
                let category = ctx.catalog.get(item).and_then(|m| m.category.clone());
                Candidate { item_id: item.clone(), score: (-age / HALF_LIFE_MS).exp2(), category }
            })
            .collect();
        ready(Ok(out)).boxed()
    }
}
