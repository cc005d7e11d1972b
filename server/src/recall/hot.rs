//! `hot_items`: the scenario's hot ZSET.

use futures_util::future::{BoxFuture, FutureExt};

use super::{Candidate, Recall, RecallCtx};
use crate::state::{keys, StoreResult};

/// The name of [`HotItems`] (also the degraded answers' reason).
pub const HOT_ITEMS: &str = "hot_items";

/// The top of `hot:items:{tenant}:{scenario}`.
pub struct HotItems;

impl Recall for HotItems {
    fn name(&self) -> &'static str {
        HOT_ITEMS
    }

    fn recall<'a>(&'a self, ctx: &'a RecallCtx<'a>, limit: usize) -> BoxFuture<'a, StoreResult<Vec<Candidate>>> {
        async move {
            let lists = ctx.hot_lists(&[keys::hot(ctx.tenant, ctx.scenario)], limit).await?;
            let list = lists.first().map_or(&[][..], |l| &l[..]);
            Ok(list
                .iter()
                .map(|(item_id, score)| Candidate { item_id: item_id.clone(), score: *score, category: None })
                .collect())
        }
        .boxed()
    }
}
