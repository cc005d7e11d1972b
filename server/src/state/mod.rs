//! The seam between the server and where state lives: one [`StateStore`]
//! trait, implemented by the embedded store and by Redis + MongoDB (+ ClickHouse).

pub mod embedded;
pub mod redis_mongo;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use recflow_schemas::{Item, ProfileDoc, Str};

pub use embedded::EmbeddedState;
pub use redis_mongo::{RedisMongoState, ServicesConfig};

/// Why a state read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The Redis cache is unreachable or timed out: recommendations degrade.
    #[error("redis unavailable: {0}")]
    Redis(String),
    /// Another backend (MongoDB, ClickHouse) failed.
    #[error("{0}")]
    Backend(String),
    /// This store cannot answer that (e.g. ClickHouse analytics in embedded mode).
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Catalog facts of one item.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemMeta {
    /// Category, if known.
    pub category: Option<Str>,
    /// Epoch ms, if known.
    pub publish_time: Option<i64>,
}

/// One tenant's catalog, indexed for the recommend path.
#[derive(Debug, Default)]
pub struct TenantCatalog {
    items: HashMap<Str, ItemMeta>,
    /// Per scenario: (item, publish_time), newest first, then item id.
    fresh: HashMap<Str, Vec<(Str, i64)>>,
}

impl TenantCatalog {
    /// Indexes `items` (the last of duplicates wins; inactive items are not fresh candidates).
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a Item>) -> Self {
        let mut latest: HashMap<Str, &Item> = HashMap::new();
        for it in items {
            latest.insert(it.item_id.clone(), it);
        }
        let mut c = TenantCatalog::default();
        for (id, it) in latest {
            c.items.insert(id.clone(), ItemMeta { category: it.category.clone(), publish_time: it.publish_time });
            let active = it.status.as_deref().is_none_or(|s| s == "active");
            if let (Some(scenario), Some(t), true) = (&it.scenario_id, it.publish_time, active) {
                c.fresh.entry(scenario.clone()).or_default().push((id, t));
            }
        }
        for list in c.fresh.values_mut() {
            list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        }
        c
    }

    /// The facts of `item`.
    pub fn get(&self, item: &str) -> Option<&ItemMeta> {
        self.items.get(item)
    }

    /// Up to `limit` newest items of `scenario`.
    pub fn fresh(&self, scenario: &str, limit: usize) -> &[(Str, i64)] {
        self.fresh.get(scenario).map_or(&[], |l| &l[..l.len().min(limit)])
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the catalog has no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A ZSET read: (member, score), highest first.
pub type Ranked = Vec<(String, f64)>;

/// One user's state as the recommend path reads it.
#[derive(Clone, Debug, Default)]
pub struct UserState {
    /// The profile, if any.
    pub profile: Option<Arc<ProfileDoc>>,
    /// Items exposed to the user in the scenario (within the exposure TTL).
    pub exposed: ItemSet,
}

/// A set of item ids with a fast (seeded) hasher: the recommend path probes it per candidate.
pub type ItemSet = HashSet<String, foldhash::fast::RandomState>;

/// What [`StateStore::hourly`] is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourlyQuery {
    /// The tenant.
    pub tenant: String,
    /// The scenario.
    pub scenario: String,
    /// Inclusive start, epoch ms.
    pub from_ms: i64,
    /// Exclusive end, epoch ms.
    pub to_ms: i64,
}

/// Where the server reads state and writes exposures, scenarios and items.
/// Keys are built by the callers from validated ids (see [`keys`]).
pub trait StateStore: Send + Sync + 'static {
    /// Up to `limit` entries of each ZSET in `keys` (one round trip), same order as `keys`.
    fn zsets(&self, keys: Vec<String>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Ranked>>>;
    /// The profile of (tenant, user, scenario): cache first, then the document store.
    fn profile(
        &self,
        tenant: String,
        user: String,
        scenario: String,
    ) -> BoxFuture<'_, StoreResult<Option<Arc<ProfileDoc>>>>;
    /// Members of a SET.
    fn members(&self, key: String) -> BoxFuture<'_, StoreResult<HashSet<String>>>;
    /// Adds `items` to a SET and (re)sets its TTL.
    fn add_members(&self, key: String, items: Vec<String>, ttl: Duration) -> BoxFuture<'_, StoreResult<()>>;
    /// [`StateStore::add_members`] for several SETs; remote stores send them in one round trip.
    fn add_members_batch(&self, sets: Vec<(String, Vec<String>)>, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            for (key, items) in sets {
                self.add_members(key, items, ttl).await?;
            }
            Ok(())
        }
        .boxed()
    }
    /// What the recommend path reads of one user: the profile (as
    /// [`StateStore::profile`]) and the members of `exposed_key`; remote
    /// stores read both in one round trip.
    fn user_state(
        &self,
        tenant: String,
        user: String,
        scenario: String,
        exposed_key: String,
    ) -> BoxFuture<'_, StoreResult<UserState>> {
        async move {
            let (profile, exposed) =
                futures_util::join!(self.profile(tenant, user, scenario), self.members(exposed_key));
            Ok(UserState { profile: profile?, exposed: exposed?.into_iter().collect() })
        }
        .boxed()
    }
    /// True when writes are in-process and immediate (no round trip worth taking off the response path).
    fn in_process(&self) -> bool {
        false
    }
    /// All fields of a HASH as numbers.
    fn hash(&self, key: String) -> BoxFuture<'_, StoreResult<BTreeMap<String, f64>>>;
    /// The tenant's catalog (cached by implementations that load it remotely).
    fn catalog(&self, tenant: String) -> BoxFuture<'_, StoreResult<Arc<TenantCatalog>>>;
    /// Upserts catalog items (all of one tenant).
    fn upsert_items(&self, tenant: String, items: Vec<Item>) -> BoxFuture<'_, StoreResult<()>>;
    /// A stored scenario config.
    fn get_scenario(&self, tenant: String, id: String) -> BoxFuture<'_, StoreResult<Option<serde_json::Value>>>;
    /// Stores a scenario config.
    fn put_scenario(&self, tenant: String, id: String, config: serde_json::Value) -> BoxFuture<'_, StoreResult<()>>;
    /// Hourly experiment metrics rows.
    fn hourly(&self, q: HourlyQuery) -> BoxFuture<'_, StoreResult<Vec<serde_json::Value>>>;
    /// Ok when every backend answers.
    fn ready(&self) -> BoxFuture<'_, StoreResult<()>>;
}

/// The key layout of MISSION.md; every part is a validated id (no ':').
pub mod keys {
    /// `hot:items:{tenant}:{scenario}`.
    pub fn hot(tenant: &str, scenario: &str) -> String {
        format!("hot:items:{tenant}:{scenario}")
    }
    /// `hot:items:{tenant}:{scenario}:{category}`.
    pub fn hot_category(tenant: &str, scenario: &str, category: &str) -> String {
        format!("hot:items:{tenant}:{scenario}:{category}")
    }
    /// `exposed:{tenant}:{user}:{scenario}`.
    pub fn exposed(tenant: &str, user: &str, scenario: &str) -> String {
        format!("exposed:{tenant}:{user}:{scenario}")
    }
    /// `metrics:realtime:{tenant}:{scenario}`.
    pub fn metrics(tenant: &str, scenario: &str) -> String {
        format!("metrics:realtime:{tenant}:{scenario}")
    }
}
