//! `category_affinity`: the hot sets of the user's favourite categories,
//! each weighted by the category's share of the user's activity.

use futures_util::future::{BoxFuture, FutureExt};
use recflow_schemas::Str;

use super::{Candidate, Recall, RecallCtx};
use crate::ids;
use crate::state::{keys, StoreResult};

/// Hot items of `hot:items:{tenant}:{scenario}:{category}` for the profile's favourite categories.
pub struct CategoryAffinity;

impl Recall for CategoryAffinity {
    fn name(&self) -> &'static str {
        "category_affinity"
    }

    fn recall<'a>(&'a self, ctx: &'a RecallCtx<'a>, limit: usize) -> BoxFuture<'a, StoreResult<Vec<Candidate>>> {
        async move {
            let Some(profile) = ctx.profile else { return Ok(Vec::new()) };
            // Categories come from stored data: still only valid ids may become key parts.
            let cats: Vec<&str> = profile
                .favorite_categories
                .iter()
                .map(|c| c.as_str())
                .filter(|c| ids::scenario("category", c).is_ok())
                .collect();
            if cats.is_empty() {
                return Ok(Vec::new());
            }
            let key_list: Vec<String> = cats.iter().map(|c| keys::hot_category(ctx.tenant, ctx.scenario, c)).collect();
            let lists = ctx.hot_lists(&key_list, limit).await?;
            let mut out = Vec::new();
            for (cat, list) in cats.iter().zip(lists) {
                let share = profile.category_score(cat).unwrap_or(0.0).max(0.01);
                let category = Str::new(cat);
                out.extend(list.iter().map(|(item_id, score)| Candidate {
                    item_id: item_id.clone(),
                    score: score * share,
                    category: Some(category.clone()),
                }));
            }
            out.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.item_id.cmp(&b.item_id)));
            out.truncate(limit);
            Ok(out)
        }
        .boxed()
    }
}
