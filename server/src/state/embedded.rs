//! [`StateStore`] over the in-process [`EmbeddedStore`] the pipeline writes;
//! exposures, scenarios and the catalog live beside it in memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::{ready, BoxFuture, FutureExt};
use recflow_schemas::{Item, ProfileDoc};
use recflow_sinks::EmbeddedStore;

use super::{HourlyQuery, Ranked, StateStore, StoreResult, TenantCatalog};

/// A SET with one expiry for the whole key, like Redis.
#[derive(Debug)]
struct ExpiringSet {
    members: HashSet<String>,
    expires_at: Instant,
}

/// The embedded store plus the server-owned state.
#[derive(Debug, Default)]
pub struct EmbeddedState {
    store: Arc<EmbeddedStore>,
    sets: RwLock<HashMap<String, ExpiringSet>>,
    items: RwLock<HashMap<String, Vec<Item>>>,
    catalogs: RwLock<HashMap<String, Arc<TenantCatalog>>>,
    scenarios: RwLock<HashMap<(String, String), serde_json::Value>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl EmbeddedState {
    /// Serves `store`, with `items` as the initial catalog.
    pub fn new(store: Arc<EmbeddedStore>, items: Vec<Item>) -> Self {
        let state = EmbeddedState { store, ..Default::default() };
        let mut by_tenant: HashMap<String, Vec<Item>> = HashMap::new();
        for it in items {
            by_tenant.entry(it.tenant_id.to_string()).or_default().push(it);
        }
        for (tenant, items) in by_tenant {
            state.set_items(tenant, items);
        }
        state
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.store
    }

    fn set_items(&self, tenant: String, items: Vec<Item>) {
        let catalog = Arc::new(TenantCatalog::from_items(&items));
        write(&self.catalogs).insert(tenant.clone(), catalog);
        write(&self.items).insert(tenant, items);
    }

    fn add(&self, tenant: String, new: Vec<Item>) {
        let mut all = read(&self.items).get(&tenant).cloned().unwrap_or_default();
        all.extend(new);
        self.set_items(tenant, all);
    }

    fn profile_now(&self, t: &str, u: &str, s: &str) -> Option<Arc<ProfileDoc>> {
        self.store.get_profile(t, u, s)
    }
}

fn done<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    ready(v).boxed()
}

impl StateStore for EmbeddedState {
    fn zsets(&self, keys: Vec<String>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Ranked>>> {
        done(Ok(keys.iter().map(|k| self.store.get_zset(k, limit)).collect()))
    }

    fn profile(&self, t: String, u: String, s: String) -> BoxFuture<'_, StoreResult<Option<Arc<ProfileDoc>>>> {
        done(Ok(self.profile_now(&t, &u, &s)))
    }

    fn members(&self, key: String) -> BoxFuture<'_, StoreResult<HashSet<String>>> {
        let now = Instant::now();
        let sets = read(&self.sets);
        done(Ok(sets.get(&key).filter(|s| s.expires_at > now).map(|s| s.members.clone()).unwrap_or_default()))
    }

    fn add_members(&self, key: String, items: Vec<String>, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        let now = Instant::now();
        let mut sets = write(&self.sets);
        // Expired sets go away lazily here, so the map stays bounded by live keys.
        if sets.len() > 10_000 {
            sets.retain(|_, s| s.expires_at > now);
        }
        let set = sets.entry(key).or_insert_with(|| ExpiringSet { members: HashSet::new(), expires_at: now });
        if set.expires_at <= now {
            set.members.clear();
        }
        set.members.extend(items);
        set.expires_at = now + ttl;
        done(Ok(()))
    }

    fn hash(&self, key: String) -> BoxFuture<'_, StoreResult<BTreeMap<String, f64>>> {
        let fields = self.store.get_hash(&key).unwrap_or_default();
        done(Ok(fields.into_iter().map(|(k, v)| (k, v.as_f64())).collect()))
    }

    fn catalog(&self, tenant: String) -> BoxFuture<'_, StoreResult<Arc<TenantCatalog>>> {
        done(Ok(read(&self.catalogs).get(&tenant).cloned().unwrap_or_default()))
    }

    fn upsert_items(&self, tenant: String, items: Vec<Item>) -> BoxFuture<'_, StoreResult<()>> {
        self.add(tenant, items);
        done(Ok(()))
    }

    fn get_scenario(&self, tenant: String, id: String) -> BoxFuture<'_, StoreResult<Option<serde_json::Value>>> {
        done(Ok(read(&self.scenarios).get(&(tenant, id)).cloned()))
    }

    fn put_scenario(&self, tenant: String, id: String, config: serde_json::Value) -> BoxFuture<'_, StoreResult<()>> {
        write(&self.scenarios).insert((tenant, id), config);
        done(Ok(()))
    }

    fn hourly(&self, q: HourlyQuery) -> BoxFuture<'_, StoreResult<Vec<serde_json::Value>>> {
        // The same columns as the ClickHouse query of the services mode.
        let rows = self.store.hourly(&q.tenant, &q.scenario, q.from_ms, q.to_ms);
        done(Ok(rows
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "experiment_id": r.experiment_id, "variant": r.variant, "hour_ms": r.hour_ms,
                    "impressions": r.impressions, "clicks": r.clicks, "views": r.views, "likes": r.likes,
                    "shares": r.shares, "comments": r.comments, "add_carts": r.add_carts, "orders": r.orders,
                    "payments": r.payments, "gmv": r.gmv, "avg_watch_duration": r.avg_watch_duration(),
                    "avg_completion_rate": r.avg_completion_rate(),
                })
            })
            .collect()))
    }

    fn in_process(&self) -> bool {
        true
    }

    fn ready(&self) -> BoxFuture<'_, StoreResult<()>> {
        done(Ok(()))
    }
}
