//! Recall strategies: each proposes scored candidates. A new strategy is one
//! file implementing [`Recall`] plus its entry in [`STRATEGIES`] (and [`STRATEGY_COUNT`]).

mod category;
mod fresh;
mod hot;

use futures_util::future::BoxFuture;
use recflow_schemas::{ProfileDoc, Str};

use crate::hotcache::{CachedList, HotCache};
use crate::state::{StateStore, StoreResult, TenantCatalog};

pub use category::CategoryAffinity;
pub use fresh::FreshItems;
pub use hot::{HotItems, HOT_ITEMS};

/// What a strategy may read.
pub struct RecallCtx<'a> {
    /// The authenticated tenant.
    pub tenant: &'a str,
    /// The scenario.
    pub scenario: &'a str,
    /// The user's profile, if any.
    pub profile: Option<&'a ProfileDoc>,
    /// The tenant's catalog.
    pub catalog: &'a TenantCatalog,
    /// State.
    pub store: &'a dyn StateStore,
    /// Hot lists, cached in-process for a short TTL.
    pub hot: &'a HotCache,
    /// Wall clock, epoch ms.
    pub now_ms: i64,
}

impl RecallCtx<'_> {
    /// The top `limit` of each hot-list ZSET in `keys`, through the in-process cache.
    pub async fn hot_lists(&self, keys: &[String], limit: usize) -> StoreResult<Vec<CachedList>> {
        self.hot.get(self.store, keys, limit).await
    }
}

/// One proposed item.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The item.
    pub item_id: Str,
    /// Strategy-specific score (higher is better; scales differ between strategies).
    pub score: f64,
    /// The category, when the strategy knows it.
    pub category: Option<Str>,
}

/// A recall strategy.
pub trait Recall: Send + Sync {
    /// The name scenario configs use (and the `reasons` entry).
    fn name(&self) -> &'static str;
    /// Up to `limit` candidates, best first.
    fn recall<'a>(&'a self, ctx: &'a RecallCtx<'a>, limit: usize) -> BoxFuture<'a, StoreResult<Vec<Candidate>>>;
}

/// How many strategies are registered.
pub const STRATEGY_COUNT: usize = 3;

/// Every registered strategy.
pub static STRATEGIES: [&dyn Recall; STRATEGY_COUNT] = [&HotItems, &CategoryAffinity, &FreshItems];

/// The strategy called `name`.
pub fn find(name: &str) -> Option<&'static dyn Recall> {
    STRATEGIES.iter().copied().find(|s| s.name() == name)
}

/// Registered names, for error messages.
pub fn names() -> Vec<&'static str> {
    STRATEGIES.iter().map(|s| s.name()).collect()
}
