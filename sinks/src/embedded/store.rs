//! State and write/read paths of the embedded store.
//!
//! One `RwLock` per key family so hot-list, stats, metrics and profile writers
//! from different workers do not contend. Lock order (for code taking several):
//! zsets, item_stats, metrics, profiles.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use recflow_schemas::{HotList, IdMap, ItemStatsDelta, MetricsWindow, Output, ProfileDoc, Str, ACTIONS};

use super::hourly::{Hourly, HourlyRow};
use super::FieldValue;
use crate::SinkError;

/// TTL of `hot:items:*` ZSETs.
pub const HOT_TTL: Duration = Duration::from_secs(24 * 3600);
/// TTL of `user:profile:*` strings.
pub const PROFILE_TTL: Duration = Duration::from_secs(3600);
/// TTL of `metrics:realtime:*` hashes.
pub const METRICS_TTL: Duration = Duration::from_secs(3600);

pub(crate) const ITEM_STATS_PREFIX: &str = "item:stats:";
pub(crate) const METRICS_PREFIX: &str = "metrics:realtime:";
pub(crate) const PROFILE_PREFIX: &str = "user:profile:";

/// A ZSET as one immutable, sorted snapshot (score desc, member asc).
#[derive(Debug)]
pub(super) struct ZSet {
    pub(super) entries: Vec<(Str, f64)>,
    pub(super) window_end: i64,
    pub(super) expires_at: SystemTime,
}

/// The latest metrics minute of a (tenant, scenario).
#[derive(Debug)]
pub(super) struct Metrics {
    pub(super) window: Arc<MetricsWindow>,
    pub(super) expires_at: SystemTime,
}

/// The `user:profile:*` string: the document, rendered as JSON when read.
#[derive(Debug)]
pub(super) struct CachedProfile {
    pub(super) doc: Arc<ProfileDoc>,
    pub(super) version: i64,
    pub(super) expires_at: SystemTime,
}

/// One (tenant, user, scenario): its Mongo document and its Redis string
/// (which expires on its own). One entry for both, so an upsert hashes the
/// key once.
#[derive(Debug)]
pub(super) struct StoredProfile {
    pub(super) doc: Arc<ProfileDoc>,
    pub(super) cached: Option<CachedProfile>,
}

/// (tenant_id, user_id, scenario_id): the unique index of `user_profiles`.
pub(super) type ProfileKey = (Str, Str, Str);

/// In-process Redis + Mongo state; share it as `Arc<EmbeddedStore>` between
/// the workers' sinks (writers) and the HTTP server (readers).
#[derive(Debug, Default)]
pub struct EmbeddedStore {
    pub(super) zsets: RwLock<HashMap<String, ZSet>>,
    /// `item:stats:{tenant}:{item}` counts indexed by `Action::index`.
    pub(super) item_stats: RwLock<IdMap<(Str, Str), [u64; 12]>>,
    /// `metrics:realtime:{tenant}:{scenario}`.
    pub(super) metrics: RwLock<IdMap<(Str, Str), Metrics>>,
    /// Mongo `user_profiles` and the `user:profile:{tenant}:{user}:{scenario}` strings.
    pub(super) profiles: RwLock<IdMap<ProfileKey, StoredProfile>>,
    /// ClickHouse `metrics_hourly`, from the raw-log rows.
    hourly: RwLock<Hourly>,
}

// Poisoning only means another worker panicked; each critical section leaves
// the maps consistent (single inserts/removes), so keep serving.
pub(super) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The Redis key of a profile string.
pub(crate) fn profile_key(tenant: &str, user: &str, scenario: &str) -> String {
    format!("{PROFILE_PREFIX}{tenant}:{user}:{scenario}")
}

/// Metric names whose values are counts (integers in the hash).
pub(crate) fn is_count_metric(name: &str) -> bool {
    matches!(
        name,
        "impressions" | "clicks" | "views" | "likes" | "shares" | "comments" | "add_carts" | "orders" | "payments"
    )
}

/// The hash fields of an item's stats: action name -> count, nonzero only.
pub(crate) fn item_stats_fields(counts: &[u64; 12]) -> BTreeMap<String, FieldValue> {
    ACTIONS
        .iter()
        .zip(counts)
        .filter(|(_, &c)| c > 0)
        .map(|(a, &c)| (a.name().to_string(), FieldValue::Int(c as i64)))
        .collect()
}

/// The hash fields of a metrics window: `window_start` and `{exp}:{variant}:{metric}`.
pub(crate) fn metrics_fields(w: &MetricsWindow) -> BTreeMap<String, FieldValue> {
    let mut m = BTreeMap::new();
    m.insert("window_start".to_string(), FieldValue::Int(w.window_start));
    for row in &w.rows {
        for (name, v) in row.fields() {
            let value = if is_count_metric(name) { FieldValue::Int(v as i64) } else { FieldValue::Float(v) };
            m.insert(format!("{}:{}:{}", row.experiment_id, row.variant, name), value);
        }
    }
    m
}

/// Splits `{a}:{b}` after `prefix`; ids never contain ':' (validated patterns).
fn split_pair<'k>(key: &'k str, prefix: &str) -> Option<(&'k str, &'k str)> {
    key.strip_prefix(prefix)?.split_once(':')
}

/// A hot list as the ZSET it becomes: sorted score desc, member asc.
fn build_zset(list: &HotList, now: SystemTime) -> ZSet {
    let mut entries = list.entries.clone();
    // Operators already sort; re-sorting keeps the ZSET order guaranteed.
    entries.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ZSet { entries, window_end: list.window_end, expires_at: now + HOT_TTL }
}

/// Atomic replace of one ZSET, skipped if an equal-or-newer window is there.
fn replace_zset(map: &mut HashMap<String, ZSet>, key: String, z: ZSet) -> bool {
    if map.get(&key).is_some_and(|old| old.window_end > z.window_end) {
        return false;
    }
    if z.entries.is_empty() {
        // Redis has no empty ZSETs: replacing with nothing deletes the key.
        map.remove(&key);
    } else {
        map.insert(key, z);
    }
    true
}

fn add_stats(map: &mut IdMap<(Str, Str), [u64; 12]>, d: &ItemStatsDelta) {
    // HINCRBY of zeros creates nothing in Redis.
    if d.counts.iter().all(|&c| c == 0) {
        return;
    }
    let slot = map.entry((d.tenant_id.clone(), d.item_id.clone())).or_insert([0; 12]);
    for (s, c) in slot.iter_mut().zip(d.counts) {
        *s += c;
    }
}

fn replace_metrics(map: &mut IdMap<(Str, Str), Metrics>, w: &MetricsWindow, now: SystemTime) -> bool {
    let key = (w.tenant_id.clone(), w.scenario_id.clone());
    if map.get(&key).is_some_and(|old| old.window.window_start > w.window_start) {
        return false;
    }
    map.insert(key, Metrics { window: Arc::new(w.clone()), expires_at: now + METRICS_TTL });
    true
}

/// A profile ready to upsert.
struct PreparedProfile {
    key: ProfileKey,
    doc: Arc<ProfileDoc>,
}

fn prepare_profile(doc: &Arc<ProfileDoc>) -> PreparedProfile {
    PreparedProfile { key: (doc.tenant_id.clone(), doc.user_id.clone(), doc.scenario_id.clone()), doc: doc.clone() }
}

/// Splits `user:profile:{tenant}:{user}:{scenario}` (ids never contain ':').
fn split_profile_key(key: &str) -> Option<ProfileKey> {
    let mut parts = key.strip_prefix(PROFILE_PREFIX)?.splitn(3, ':');
    Some((Str::new(parts.next()?), Str::new(parts.next()?), Str::new(parts.next()?)))
}

impl EmbeddedStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store ready to share.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    // ---- writes ---------------------------------------------------------

    /// Replaces the ZSET `list.key()` atomically; false if a newer window is stored.
    pub fn apply_hot(&self, list: &HotList) -> bool {
        let z = build_zset(list, SystemTime::now());
        replace_zset(&mut write(&self.zsets), list.key(), z)
    }

    /// HINCRBYs the item's stats hash by the delta's nonzero counts.
    pub fn add_item_stats(&self, delta: &ItemStatsDelta) {
        add_stats(&mut write(&self.item_stats), delta);
    }

    /// Replaces the metrics hash unless a later minute is stored; true if applied.
    pub fn apply_metrics(&self, window: &MetricsWindow) -> bool {
        replace_metrics(&mut write(&self.metrics), window, SystemTime::now())
    }

    /// Versioned upsert of the Mongo document and Redis string; false if a newer one is stored.
    pub fn upsert_profile(&self, doc: &ProfileDoc) -> Result<bool, SinkError> {
        let p = prepare_profile(&Arc::new(doc.clone()));
        Ok(self.upsert_prepared(vec![p], SystemTime::now()) > 0)
    }

    /// Applies the Hot/ItemStats/Profile/Metrics records of a batch, one lock per family.
    pub fn apply_batch(&self, batch: &[Output]) -> Result<(), SinkError> {
        let now = SystemTime::now();
        // Build everything costly (sorting, JSON, clones) before taking locks.
        let mut hot = Vec::new();
        let mut profiles = Vec::new();
        let (mut has_stats, mut has_metrics, mut has_raw) = (false, false, false);
        for out in batch {
            match out {
                Output::Hot(l) => hot.push((l.key(), build_zset(l, now))),
                Output::Profile(d) => profiles.push(prepare_profile(d)),
                Output::ItemStats(_) => has_stats = true,
                Output::Metrics(_) => has_metrics = true,
                Output::Raw(_) => has_raw = true,
                Output::Dead(_) => {}
            }
        }
        if has_raw {
            let mut hourly = write(&self.hourly);
            for out in batch {
                if let Output::Raw(r) = out {
                    hourly.add(&r.event);
                }
            }
        }
        if !hot.is_empty() {
            let mut map = write(&self.zsets);
            for (key, z) in hot {
                replace_zset(&mut map, key, z);
            }
        }
        if has_stats {
            let mut map = write(&self.item_stats);
            for out in batch {
                if let Output::ItemStats(d) = out {
                    add_stats(&mut map, d);
                }
            }
        }
        if has_metrics {
            let mut map = write(&self.metrics);
            for out in batch {
                if let Output::Metrics(w) = out {
                    replace_metrics(&mut map, w, now);
                }
            }
        }
        if !profiles.is_empty() {
            self.upsert_prepared(profiles, now);
        }
        Ok(())
    }

    /// Applies prepared profile upserts; returns how many were applied.
    fn upsert_prepared(&self, profiles: Vec<PreparedProfile>, now: SystemTime) -> usize {
        let mut map = write(&self.profiles);
        let mut applied = 0;
        for p in profiles {
            let version = p.doc.updated_window;
            let cached = |doc| Some(CachedProfile { doc, version, expires_at: now + PROFILE_TTL });
            match map.entry(p.key) {
                Entry::Occupied(mut e) => {
                    let stored = e.get_mut();
                    if stored.doc.updated_window > version {
                        continue;
                    }
                    stored.doc = p.doc.clone();
                    // The cache is versioned too, so a replayed old window never overwrites it.
                    if stored.cached.as_ref().is_none_or(|c| c.version <= version) {
                        stored.cached = cached(p.doc);
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(StoredProfile { doc: p.doc.clone(), cached: cached(p.doc) });
                }
            }
            applied += 1;
        }
        applied
    }

    /// `metrics_hourly` rows of (tenant, scenario) for hours starting in
    /// `[from_ms, to_ms)`, ordered by hour, experiment, variant.
    pub fn hourly(&self, tenant: &str, scenario: &str, from_ms: i64, to_ms: i64) -> Vec<HourlyRow> {
        read(&self.hourly).query(tenant, scenario, from_ms, to_ms)
    }

    /// Drops keys whose TTL passed by wall-clock now; returns how many.
    pub fn expire_now(&self) -> usize {
        self.expire_at(SystemTime::now())
    }

    /// Drops Redis keys expired at `now` (Mongo documents never expire); returns how many.
    pub fn expire_at(&self, now: SystemTime) -> usize {
        let mut n = 0;
        let mut count = |before: usize, after: usize| n += before - after;
        {
            let mut m = write(&self.zsets);
            let before = m.len();
            m.retain(|_, z| z.expires_at > now);
            count(before, m.len());
        }
        {
            let mut m = write(&self.metrics);
            let before = m.len();
            m.retain(|_, v| v.expires_at > now);
            count(before, m.len());
        }
        // The document stays (Mongo), only its Redis string expires.
        for p in write(&self.profiles).values_mut() {
            if p.cached.as_ref().is_some_and(|c| c.expires_at <= now) {
                p.cached = None;
                n += 1;
            }
        }
        n
    }

    // ---- reads (for the query server) -----------------------------------

    /// The Redis key of a profile string (`user:profile:{tenant}:{user}:{scenario}`).
    pub fn profile_key(tenant: &str, user: &str, scenario: &str) -> String {
        profile_key(tenant, user, scenario)
    }

    /// Up to `limit` (member, score) of a ZSET, highest score first, ties by member asc.
    pub fn get_zset(&self, key: &str, limit: usize) -> Vec<(String, f64)> {
        read(&self.zsets)
            .get(key)
            .map_or_else(Vec::new, |z| z.entries.iter().take(limit).map(|(m, s)| (m.to_string(), *s)).collect())
    }

    /// The window end (ms) of the list currently in a ZSET.
    pub fn zset_window_end(&self, key: &str) -> Option<i64> {
        read(&self.zsets).get(key).map(|z| z.window_end)
    }

    /// All fields of a HASH (`item:stats:*` or `metrics:realtime:*`).
    pub fn get_hash(&self, key: &str) -> Option<BTreeMap<String, FieldValue>> {
        if let Some((tenant, item)) = split_pair(key, ITEM_STATS_PREFIX) {
            return self.get_item_stats(tenant, item).map(|c| item_stats_fields(&c));
        }
        if let Some((tenant, scenario)) = split_pair(key, METRICS_PREFIX) {
            return self.get_metrics(tenant, scenario).map(|w| metrics_fields(&w));
        }
        None
    }

    /// A STRING value (`user:profile:*`: the profile JSON).
    pub fn get_string(&self, key: &str) -> Option<Arc<str>> {
        let doc = read(&self.profiles).get(&split_profile_key(key)?)?.cached.as_ref()?.doc.clone();
        serde_json::to_string(doc.as_ref()).ok().map(Arc::from)
    }

    /// The Mongo `user_profiles` document of (tenant, user, scenario).
    pub fn get_profile(&self, tenant: &str, user: &str, scenario: &str) -> Option<Arc<ProfileDoc>> {
        let key = (Str::new(tenant), Str::new(user), Str::new(scenario));
        read(&self.profiles).get(&key).map(|p| p.doc.clone())
    }

    /// Cumulative counts (indexed by `Action::index`) of an item.
    pub fn get_item_stats(&self, tenant: &str, item: &str) -> Option<[u64; 12]> {
        read(&self.item_stats).get(&(Str::new(tenant), Str::new(item))).copied()
    }

    /// The latest metrics minute of (tenant, scenario).
    pub fn get_metrics(&self, tenant: &str, scenario: &str) -> Option<Arc<MetricsWindow>> {
        read(&self.metrics).get(&(Str::new(tenant), Str::new(scenario))).map(|m| m.window.clone())
    }

    /// All Redis keys starting with `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = read(&self.zsets).keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        let pairs = |p: &str, m: &mut dyn Iterator<Item = (&Str, &Str)>| -> Vec<String> {
            m.map(|(a, b)| format!("{p}{a}:{b}")).filter(|k| k.starts_with(prefix)).collect()
        };
        keys.extend(pairs(ITEM_STATS_PREFIX, &mut read(&self.item_stats).keys().map(|(a, b)| (a, b))));
        keys.extend(pairs(METRICS_PREFIX, &mut read(&self.metrics).keys().map(|(a, b)| (a, b))));
        keys.extend(
            read(&self.profiles)
                .iter()
                .filter(|(_, p)| p.cached.is_some())
                .map(|((t, u, s), _)| profile_key(t, u, s))
                .filter(|k| k.starts_with(prefix)),
        );
        keys.sort_unstable();
        keys
    }
}
