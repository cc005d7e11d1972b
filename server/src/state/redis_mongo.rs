//! [`StateStore`] over the real services: Redis (hot lists, profile cache,
//! metrics, exposures) through one multiplexed async connection, MongoDB
//! (profiles, scenarios, items) on the blocking pool, ClickHouse (hourly
//! analytics) over HTTP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use recflow_schemas::{Item, ProfileDoc};
use recflow_sinks::{ClickHouseConfig, MongoConfig, MongoDb, SinkError};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{HourlyQuery, ItemSet, Ranked, StateStore, StoreError, StoreResult, TenantCatalog, UserState};

/// After a failed connect, requests fail fast for this long instead of each waiting for a timeout.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// How long a MongoDB profile lookup (made when the Redis profile cache
/// misses) is remembered. Safe because Redis is still read on every request:
/// the pipeline writes every new or changed profile to the Redis cache too.
const MONGO_PROFILE_TTL: Duration = Duration::from_secs(600);
/// Most remembered MongoDB profile lookups (the memo is cleared when full).
const MONGO_PROFILE_CAP: usize = 200_000;

/// Where the services are.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    /// `redis://host:port[/db]`.
    pub redis_url: String,
    /// Connect and command timeout of Redis.
    pub redis_timeout: Duration,
    /// MongoDB.
    pub mongo: MongoConfig,
    /// ClickHouse (hourly analytics).
    pub clickhouse: ClickHouseConfig,
    /// How long a tenant's catalog is served before it is reloaded from Mongo.
    pub catalog_ttl: Duration,
}

/// A tenant's catalog and when it was loaded.
struct CatalogEntry {
    loaded: Instant,
    catalog: Arc<TenantCatalog>,
    /// A background reload is running.
    refreshing: bool,
}

/// Catalogs by tenant, plus a counter bumped by every upsert so a reload
/// that started before an upsert never replaces the newer catalog.
#[derive(Default)]
struct Catalogs {
    entries: Mutex<HashMap<String, CatalogEntry>>,
    epoch: AtomicU64,
}

/// Remembered MongoDB profile lookups by profile key.
type ProfileMemo = Mutex<HashMap<String, (Instant, Option<Arc<ProfileDoc>>)>>;

#[derive(Default)]
struct Conn {
    conn: Option<MultiplexedConnection>,
    down_until: Option<Instant>,
}

/// Redis + MongoDB + ClickHouse state.
pub struct RedisMongoState {
    client: redis::Client,
    redis_cfg: AsyncConnectionConfig,
    conn: Mutex<Conn>,
    mongo: MongoDb,
    clickhouse: clickhouse::Client,
    clickhouse_db: String,
    catalog_ttl: Duration,
    catalogs: Arc<Catalogs>,
    mongo_profiles: ProfileMemo,
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedisMongoState {
    /// Handles on the services; nothing connects yet. Call outside an async
    /// context (the MongoDB handle parses its URL with the blocking driver).
    pub fn new(cfg: &ServicesConfig) -> Result<Self, SinkError> {
        let client = redis::Client::open(cfg.redis_url.as_str())
            .map_err(|e| SinkError::Backend { sink: "redis", message: format!("bad url: {e}") })?;
        let redis_cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.redis_timeout))
            .set_response_timeout(Some(cfg.redis_timeout));
        let clickhouse = cfg.clickhouse.client().with_setting("output_format_json_quote_64bit_integers", "0");
        Ok(RedisMongoState {
            client,
            redis_cfg,
            conn: Mutex::new(Conn::default()),
            mongo: MongoDb::new(&cfg.mongo)?,
            clickhouse,
            clickhouse_db: cfg.clickhouse.database.clone(),
            catalog_ttl: cfg.catalog_ttl,
            catalogs: Arc::default(),
            mongo_profiles: Mutex::new(HashMap::new()),
        })
    }

    /// The shared connection, (re)connecting if needed.
    async fn conn(&self) -> StoreResult<MultiplexedConnection> {
        {
            let c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(conn) = &c.conn {
                return Ok(conn.clone());
            }
            if c.down_until.is_some_and(|t| Instant::now() < t) {
                return Err(StoreError::Redis("not connected (reconnect pending)".into()));
            }
        }
        let result = self.client.get_multiplexed_async_connection_with_config(&self.redis_cfg).await;
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(conn) => {
                c.conn = Some(conn.clone());
                c.down_until = None;
                Ok(conn)
            }
            Err(e) => {
                c.down_until = Some(Instant::now() + RECONNECT_PAUSE);
                Err(redis_err(e))
            }
        }
    }

    /// Runs one pipeline; a failure drops the connection so the next call reconnects.
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> StoreResult<T> {
        let mut conn = self.conn().await?;
        match pipe.query_async::<T>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.conn.lock().unwrap_or_else(|e| e.into_inner()).conn = None;
                }
                Err(redis_err(e))
            }
        }
    }

    /// Runs a blocking MongoDB call on the blocking pool.
    async fn mongo<T: Send + 'static>(
        &self,
        f: impl FnOnce(&MongoDb) -> Result<T, SinkError> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.mongo.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(backend)?.map_err(backend)
    }

    /// The profile from a Redis cache read (`cached`), else from MongoDB (remembered a while).
    async fn profile_from(
        &self,
        cached: Option<String>,
        t: String,
        u: String,
        s: String,
    ) -> StoreResult<Option<Arc<ProfileDoc>>> {
        if let Some(json) = cached {
            return serde_json::from_str(&json).map(|d| Some(Arc::new(d))).map_err(backend);
        }
        let key = recflow_sinks::EmbeddedStore::profile_key(&t, &u, &s);
        if let Some((at, doc)) = lock(&self.mongo_profiles).get(&key) {
            if at.elapsed() < MONGO_PROFILE_TTL {
                return Ok(doc.clone());
            }
        }
        // The cache expires after an hour; MongoDB keeps every profile.
        match self.mongo(move |db| db.get_profile(&t, &u, &s)).await {
            Ok(doc) => {
                let doc = doc.map(Arc::new);
                let mut memo = lock(&self.mongo_profiles);
                if memo.len() >= MONGO_PROFILE_CAP {
                    memo.clear();
                }
                memo.insert(key, (Instant::now(), doc.clone()));
                Ok(doc)
            }
            Err(e) => {
                tracing::warn!(error = %e, "profile lookup in MongoDB failed; serving without profile");
                Ok(None)
            }
        }
    }

    /// Loads `tenant`'s catalog from MongoDB and caches it unless an upsert came in meanwhile.
    async fn load_catalog(
        mongo: MongoDb,
        catalogs: &Catalogs,
        tenant: String,
        stale: Option<Arc<TenantCatalog>>,
    ) -> Arc<TenantCatalog> {
        let epoch = catalogs.epoch.load(Ordering::SeqCst);
        let t = tenant.clone();
        let loaded = tokio::task::spawn_blocking(move || mongo.tenant_items(&t)).await;
        let catalog = match loaded {
            Ok(Ok(items)) => Arc::new(TenantCatalog::from_items(&items)),
            // The catalog only refines ranking: serve the stale one (or none) rather than fail.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %tenant, "catalog load failed");
                stale.unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "catalog load failed");
                stale.unwrap_or_default()
            }
        };
        let mut entries = lock(&catalogs.entries);
        if catalogs.epoch.load(Ordering::SeqCst) == epoch {
            let entry = CatalogEntry { loaded: Instant::now(), catalog: catalog.clone(), refreshing: false };
            entries.insert(tenant, entry);
        } else if let Some(e) = entries.get_mut(&tenant) {
            e.refreshing = false;
        }
        catalog
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StateStore for RedisMongoState {
    fn zsets(&self, keys: Vec<String>, limit: usize) -> BoxFuture<'_, StoreResult<Vec<Ranked>>> {
        async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            let stop = limit.max(1) as isize - 1;
            for k in &keys {
                pipe.zrevrange_withscores(k, 0, stop);
            }
            self.query(&pipe).await
        }
        .boxed()
    }

    fn profile(&self, t: String, u: String, s: String) -> BoxFuture<'_, StoreResult<Option<Arc<ProfileDoc>>>> {
        async move {
            let key = recflow_sinks::EmbeddedStore::profile_key(&t, &u, &s);
            let (cached,): (Option<String>,) = self.query(redis::pipe().get(&key)).await?;
            self.profile_from(cached, t, u, s).await
        }
        .boxed()
    }

    fn user_state(
        &self,
        t: String,
        u: String,
        s: String,
        exposed_key: String,
    ) -> BoxFuture<'_, StoreResult<UserState>> {
        async move {
            let key = recflow_sinks::EmbeddedStore::profile_key(&t, &u, &s);
            let (cached, exposed): (Option<String>, ItemSet) =
                self.query(redis::pipe().get(&key).smembers(&exposed_key)).await?;
            Ok(UserState { profile: self.profile_from(cached, t, u, s).await?, exposed })
        }
        .boxed()
    }

    fn members(&self, key: String) -> BoxFuture<'_, StoreResult<HashSet<String>>> {
        async move {
            let (m,): (HashSet<String>,) = self.query(redis::pipe().smembers(&key)).await?;
            Ok(m)
        }
        .boxed()
    }

    fn add_members(&self, key: String, items: Vec<String>, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            if items.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            pipe.sadd(&key, &items).ignore().expire(&key, ttl.as_secs().max(1) as i64).ignore();
            self.query::<()>(&pipe).await
        }
        .boxed()
    }

    fn add_members_batch(&self, sets: Vec<(String, Vec<String>)>, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut pipe = redis::pipe();
            let ttl = ttl.as_secs().max(1) as i64;
            for (key, items) in sets.iter().filter(|(_, items)| !items.is_empty()) {
                pipe.sadd(key, items).ignore().expire(key, ttl).ignore();
            }
            if pipe.is_empty() {
                return Ok(());
            }
            self.query::<()>(&pipe).await
        }
        .boxed()
    }

    fn hash(&self, key: String) -> BoxFuture<'_, StoreResult<BTreeMap<String, f64>>> {
        async move {
            let (h,): (HashMap<String, String>,) = self.query(redis::pipe().hgetall(&key)).await?;
            Ok(h.into_iter().filter_map(|(k, v)| Some((k, v.parse::<f64>().ok()?))).collect())
        }
        .boxed()
    }

    fn catalog(&self, tenant: String) -> BoxFuture<'_, StoreResult<Arc<TenantCatalog>>> {
        async move {
            let stale = {
                let mut entries = lock(&self.catalogs.entries);
                match entries.get_mut(&tenant) {
                    Some(e) if e.loaded.elapsed() < self.catalog_ttl || e.refreshing => return Ok(e.catalog.clone()),
                    Some(e) => {
                        // Expired: reload in the background, serve this copy meanwhile.
                        e.refreshing = true;
                        Some(e.catalog.clone())
                    }
                    None => None,
                }
            };
            match stale {
                Some(stale) => {
                    let (mongo, catalogs) = (self.mongo.clone(), self.catalogs.clone());
                    let old = stale.clone();
                    tokio::spawn(async move { Self::load_catalog(mongo, &catalogs, tenant, Some(old)).await });
                    Ok(stale)
                }
                None => Ok(Self::load_catalog(self.mongo.clone(), &self.catalogs, tenant, None).await),
            }
        }
        .boxed()
    }

    fn upsert_items(&self, tenant: String, items: Vec<Item>) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            self.mongo(move |db| db.upsert_items(&items)).await?;
            self.catalogs.epoch.fetch_add(1, Ordering::SeqCst);
            lock(&self.catalogs.entries).remove(&tenant);
            Ok(())
        }
        .boxed()
    }

    fn get_scenario(&self, tenant: String, id: String) -> BoxFuture<'_, StoreResult<Option<serde_json::Value>>> {
        self.mongo(move |db| db.get_scenario(&tenant, &id)).boxed()
    }

    fn put_scenario(&self, tenant: String, id: String, config: serde_json::Value) -> BoxFuture<'_, StoreResult<()>> {
        self.mongo(move |db| db.put_scenario(&tenant, &id, &config)).boxed()
    }

    fn hourly(&self, q: HourlyQuery) -> BoxFuture<'_, StoreResult<Vec<serde_json::Value>>> {
        async move {
            let sql = format!(
                "SELECT experiment_id, variant, toUnixTimestamp(hour) * 1000 AS hour_ms, \
                 sum(impressions) AS impressions, sum(clicks) AS clicks, sum(views) AS views, \
                 sum(likes) AS likes, sum(shares) AS shares, sum(comments) AS comments, \
                 sum(add_carts) AS add_carts, sum(orders) AS orders, sum(payments) AS payments, \
                 sum(gmv) AS gmv, \
                 if(sum(watch_duration_count) = 0, 0, sum(watch_duration_sum) / sum(watch_duration_count)) AS avg_watch_duration, \
                 if(sum(completion_rate_count) = 0, 0, sum(completion_rate_sum) / sum(completion_rate_count)) AS avg_completion_rate \
                 FROM {}.metrics_hourly \
                 WHERE tenant_id = ? AND scenario_id = ? AND hour >= toDateTime(?, 'UTC') AND hour < toDateTime(?, 'UTC') \
                 GROUP BY experiment_id, variant, hour ORDER BY hour, experiment_id, variant",
                self.clickhouse_db
            );
            let bytes = self
                .clickhouse
                .query(&sql)
                // Counts as JSON numbers, as the embedded store serves them (a URL
                // setting: old servers ignore it inside the query).
                .with_setting("output_format_json_quote_64bit_integers", "0")
                .bind(q.tenant.as_str())
                .bind(q.scenario.as_str())
                .bind(q.from_ms.div_euclid(1000))
                .bind(q.to_ms.div_euclid(1000))
                .fetch_bytes("JSONEachRow")
                .map_err(backend)?
                .collect()
                .await
                .map_err(backend)?;
            bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).map_err(backend))
                .collect()
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let _: (String,) = self.query(redis::pipe().cmd("PING")).await?;
            self.mongo(|db| db.ping()).await?;
            self.clickhouse.query("SELECT 1").execute().await.map_err(backend)?;
            Ok(())
        }
        .boxed()
    }
}
