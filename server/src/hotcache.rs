//! An in-process cache of hot-list ZSETs for the recommend path.
//!
//! Hot lists change only when a window closes (every 15 minutes by default),
//! yet every request reads one or more of them: reading 200 scored members
//! per list per request from Redis is most of the query path's CPU (Redis
//! and client parsing alike). Here each list is read at most once per TTL per
//! process; a replaced list is served at the latest `ttl` + one Redis round
//! trip after the replace. While one request refreshes an expired list,
//! concurrent requests keep serving the previous copy (no stampede). The
//! cached copy is also the "last good" list served when Redis is down.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use recflow_schemas::Str;

use crate::state::{StateStore, StoreResult};

/// A cached ZSET read: (member, score), highest first.
pub type CachedList = Arc<[(Str, f64)]>;

struct Entry {
    list: CachedList,
    /// The `limit` it was read with: a longer request must re-read.
    limit: usize,
    fetched: Instant,
    /// A request is re-reading it now; others serve `list` meanwhile.
    refreshing: bool,
}

/// Hot lists by Redis key, each served for `ttl` after it was read.
pub struct HotCache {
    ttl: Duration,
    entries: RwLock<HashMap<String, Entry>>,
}

/// What the cache can answer for one key right now.
enum Lookup {
    Fresh(CachedList),
    /// Expired (or too short); this caller should re-read it.
    Refresh,
    /// Expired but being re-read by another request: serve this copy.
    Stale(CachedList),
}

impl HotCache {
    /// A cache serving each list for `ttl` (zero disables caching).
    pub fn new(ttl: Duration) -> Self {
        HotCache { ttl, entries: RwLock::new(HashMap::new()) }
    }

    /// The top `limit` of each ZSET in `keys`, in order: cached copies where
    /// fresh, the rest read in one round trip. A failed read is returned as the
    /// error (the callers degrade), and clears the refresh marks it set.
    pub async fn get(&self, store: &dyn StateStore, keys: &[String], limit: usize) -> StoreResult<Vec<CachedList>> {
        let now = Instant::now();
        let mut out: Vec<Option<CachedList>> = Vec::with_capacity(keys.len());
        let mut missing: Vec<usize> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match self.lookup(k, limit, now) {
                Lookup::Fresh(l) | Lookup::Stale(l) => out.push(Some(l)),
                Lookup::Refresh => {
                    out.push(None);
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(out.into_iter().flatten().map(|l| truncated(l, limit)).collect());
        }
        let read_keys: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
        match store.zsets(read_keys, limit).await {
            Ok(lists) => {
                let fetched = Instant::now();
                let mut entries = write(&self.entries);
                for (&i, list) in missing.iter().zip(lists) {
                    let list: CachedList = list.into_iter().map(|(m, s)| (Str::from(m), s)).collect();
                    entries.insert(keys[i].clone(), Entry { list: list.clone(), limit, fetched, refreshing: false });
                    out[i] = Some(list);
                }
                drop(entries);
                Ok(out.into_iter().map(|l| truncated(l.unwrap_or_else(empty), limit)).collect())
            }
            Err(e) => {
                let mut entries = write(&self.entries);
                for &i in &missing {
                    if let Some(en) = entries.get_mut(&keys[i]) {
                        en.refreshing = false;
                    }
                }
                Err(e)
            }
        }
    }

    /// The cached copy of `key`, however old (the answer when Redis is down).
    pub fn last_good(&self, key: &str) -> Option<CachedList> {
        read(&self.entries).get(key).map(|e| e.list.clone())
    }

    fn lookup(&self, key: &str, limit: usize, now: Instant) -> Lookup {
        {
            let entries = read(&self.entries);
            match entries.get(key) {
                Some(e) if e.limit >= limit && now.duration_since(e.fetched) < self.ttl => {
                    return Lookup::Fresh(e.list.clone())
                }
                Some(e) if e.limit >= limit && e.refreshing => return Lookup::Stale(e.list.clone()),
                _ => {}
            }
        }
        // Expired, too short or absent: claim the refresh (another request may have just done so).
        let mut entries = write(&self.entries);
        match entries.get_mut(key) {
            Some(e) if e.limit >= limit && now.duration_since(e.fetched) < self.ttl => Lookup::Fresh(e.list.clone()),
            Some(e) if e.limit >= limit && e.refreshing => Lookup::Stale(e.list.clone()),
            Some(e) => {
                e.refreshing = true;
                Lookup::Refresh
            }
            None => Lookup::Refresh,
        }
    }
}

fn empty() -> CachedList {
    Arc::from(Vec::new())
}

/// `list` cut to `limit` entries (shares the allocation when already short enough).
fn truncated(list: CachedList, limit: usize) -> CachedList {
    if list.len() <= limit {
        list
    } else {
        Arc::from(&list[..limit])
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::EmbeddedState;
    use recflow_schemas::{HotList, Output};
    use recflow_sinks::EmbeddedStore;

    /// Replaces the hot list of (t, s) as the pipeline does.
    fn set_hot(store: &EmbeddedStore, window_end: i64, items: &[(&str, f64)]) {
        let list = HotList {
            tenant_id: "t".into(),
            scenario_id: "s".into(),
            category: None,
            window_end,
            entries: items.iter().map(|(i, s)| (Str::new(i), *s)).collect(),
        };
        store.apply_batch(&[Output::Hot(list)]).unwrap();
    }

    fn names(l: &CachedList) -> Vec<&str> {
        l.iter().map(|(m, _)| m.as_str()).collect()
    }

    #[tokio::test]
    async fn serves_the_cached_copy_until_the_ttl_then_the_replaced_list() {
        let store = EmbeddedStore::shared();
        set_hot(&store, 1, &[("a", 2.0), ("b", 1.0)]);
        let state = EmbeddedState::new(store.clone(), Vec::new());
        let cache = HotCache::new(Duration::from_millis(150));
        let keys = ["hot:items:t:s".to_string()];
        assert_eq!(names(&cache.get(&state, &keys, 10).await.unwrap()[0]), ["a", "b"]);
        set_hot(&store, 2, &[("c", 3.0)]);
        assert_eq!(names(&cache.get(&state, &keys, 10).await.unwrap()[0]), ["a", "b"], "cached within the TTL");
        assert_eq!(names(&cache.get(&state, &keys, 1).await.unwrap()[0]), ["a"], "a shorter read is a prefix");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(names(&cache.get(&state, &keys, 10).await.unwrap()[0]), ["c"], "re-read after the TTL");
        assert_eq!(names(&cache.last_good("hot:items:t:s").unwrap()), ["c"]);
    }

    #[tokio::test]
    async fn a_longer_read_than_cached_goes_to_the_store() {
        let store = EmbeddedStore::shared();
        set_hot(&store, 1, &[("a", 3.0), ("b", 2.0), ("c", 1.0)]);
        let state = EmbeddedState::new(store, Vec::new());
        let cache = HotCache::new(Duration::from_secs(60));
        let keys = ["hot:items:t:s".to_string()];
        assert_eq!(names(&cache.get(&state, &keys, 1).await.unwrap()[0]), ["a"]);
        assert_eq!(names(&cache.get(&state, &keys, 3).await.unwrap()[0]), ["a", "b", "c"]);
    }
}
