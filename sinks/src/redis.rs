//! Redis sink: hot lists, item stats, realtime metrics and the profile cache
//! in the key layout of MISSION.md — the same one [`crate::EmbeddedStore`]
//! holds — plus [`dump`], which renders a Redis exactly like the embedded dump
//! so end-to-end runs can be compared.
//!
//! Each `write` is one pipeline, re-sent whole after a connection error.
//! Every write in it is idempotent, so a re-sent pipeline, or a replay of
//! outputs after a crash, leaves the state an uninterrupted run would:
//! hot lists and metrics are replaced (atomically, by a Lua script) only by a
//! strictly newer window, item-stats deltas are added once per (scenario,
//! pane), and the profile cache is a plain SET of the full document. The
//! versions hot lists and item stats need live under [`BOOKKEEPING_PREFIX`].

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::{Client, Connection, ErrorKind, Pipeline, RedisError, ServerErrorKind, Value as RValue};
use recflow_schemas::{HotList, ItemStatsDelta, MetricsWindow, Output, ProfileDoc, ACTIONS};
use serde::Deserialize;
use serde_json::Value;

use crate::embedded::{
    hash_value, is_count_metric, metrics_fields, profile_key, FieldValue, ITEM_STATS_PREFIX, METRICS_PREFIX,
    PROFILE_PREFIX,
};
use crate::{retry_if, RetryConfig, RetryPolicy, Sink, SinkError};

/// Prefix of the hot-list ZSETs.
const HOT_PREFIX: &str = "hot:items:";
/// Prefix of every bookkeeping key the sink keeps beside the MISSION.md
/// layout: the last version written of a key, so a replay after a crash never
/// regresses or double-applies it. `recflow:v:{hot key}` holds a hot list's
/// `window_end` (STRING, same TTL as the list); `recflow:v:{item stats key}`
/// is a HASH scenario -> last applied `pane_end` (no TTL, like item stats).
/// Metrics need none: their `window_start` field is the version.
/// Comparisons with the embedded store ignore this prefix.
pub const BOOKKEEPING_PREFIX: &str = "recflow:v:";
/// Keys per SCAN step in [`dump`].
const SCAN_COUNT: u64 = 1000;
/// Connect/read/write timeout of [`dump`].
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);

const SINK: &str = "redis";

/// The `[redis]` config table.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server address, `redis://host:port[/db]`.
    pub url: String,
    /// TTL of `hot:items:*` ZSETs, in seconds (> 0).
    pub hot_ttl_secs: u64,
    /// TTL of `user:profile:*` strings, in seconds (> 0).
    pub profile_ttl_secs: u64,
    /// TTL of `metrics:realtime:*` hashes, in seconds (> 0).
    pub metrics_ttl_secs: u64,
    /// Connect, read and write timeout, in milliseconds (> 0), so a hung server becomes a retried error.
    pub timeout_ms: u64,
    /// Backoff between attempts of a failed pipeline.
    pub retry: RetryConfig,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            hot_ttl_secs: crate::embedded::HOT_TTL.as_secs(),
            profile_ttl_secs: crate::embedded::PROFILE_TTL.as_secs(),
            metrics_ttl_secs: crate::embedded::METRICS_TTL.as_secs(),
            timeout_ms: 5000,
            retry: RetryConfig::default(),
        }
    }
}

/// TTLs (seconds) the pipeline sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ttls {
    hot: u64,
    profile: u64,
    metrics: u64,
}

/// Counters of a [`RedisSink`], shareable with the Prometheus exporter.
#[derive(Debug, Default)]
pub struct RedisStats {
    retries: AtomicU64,
    errors: AtomicU64,
}

impl RedisStats {
    /// Pipeline attempts after the first of a write (`recflow_sink_retries_total`).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Failed pipeline attempts, retried or not (`recflow_sink_errors_total`).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Writes Hot/ItemStats/Metrics/Profile outputs to Redis; ignores Raw/Dead.
///
/// Holds one connection, opened lazily and re-opened after any error.
pub struct RedisSink {
    client: Client,
    conn: Option<Connection>,
    ttls: Ttls,
    timeout: Duration,
    policy: RetryPolicy,
    stats: Arc<RedisStats>,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("addr", &self.client.get_connection_info().addr())
            .field("connected", &self.conn.is_some())
            .field("ttls", &self.ttls)
            .field("policy", &self.policy)
            .field("stats", &self.stats)
            .finish()
    }
}

/// A sink error that is not the server's (bad config, bad record, unexpected reply).
fn backend_error(message: String) -> SinkError {
    SinkError::Backend { sink: SINK, message }
}

impl RedisSink {
    /// A sink for `config`; checks the URL and TTLs but does not connect yet
    /// (a Redis that is down at start is retried on the first write).
    pub fn new(config: &RedisConfig) -> Result<Self, SinkError> {
        let client =
            Client::open(config.url.as_str()).map_err(|e| backend_error(format!("bad url {:?}: {e}", config.url)))?;
        for (name, v) in [
            ("hot_ttl_secs", config.hot_ttl_secs),
            ("profile_ttl_secs", config.profile_ttl_secs),
            ("metrics_ttl_secs", config.metrics_ttl_secs),
            ("timeout_ms", config.timeout_ms),
        ] {
            // EXPIRE 0 would delete the key and SET EX 0 is an error.
            if v == 0 {
                return Err(backend_error(format!("redis.{name} must be > 0")));
            }
        }
        Ok(RedisSink {
            client,
            conn: None,
            ttls: Ttls { hot: config.hot_ttl_secs, profile: config.profile_ttl_secs, metrics: config.metrics_ttl_secs },
            timeout: Duration::from_millis(config.timeout_ms),
            policy: config.retry.into(),
            stats: Arc::default(),
        })
    }

    /// Pipeline attempts after the first of a write, since creation.
    pub fn retries(&self) -> u64 {
        self.stats.retries()
    }

    /// Failed pipeline attempts (retried or not), since creation.
    pub fn errors(&self) -> u64 {
        self.stats.errors()
    }

    /// The counters, to read from another thread (the sink itself moves into a worker).
    pub fn stats(&self) -> Arc<RedisStats> {
        self.stats.clone()
    }

    /// Sends `pipe`, reconnecting and re-sending it whole on transient errors.
    fn send(&mut self, pipe: &Pipeline) -> Result<(), SinkError> {
        let RedisSink { client, conn, timeout, policy, stats, .. } = self;
        let mut attempt = 0u32;
        let result = retry_if(
            policy,
            || {
                attempt += 1;
                if attempt > 1 {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                }
                let r = match conn {
                    Some(c) => pipe.exec(c),
                    None => connect_with_scripts(client, *timeout).and_then(|c| pipe.exec(conn.insert(c))),
                };
                if let Err(e) = &r {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    // After an error the connection may hold unread replies: never reuse it.
                    *conn = None;
                    tracing::warn!(sink = SINK, attempt, transient = is_transient(e), error = %e, "redis pipeline failed");
                }
                r
            },
            is_transient,
        );
        result.map_err(|e| SinkError::Backend { sink: SINK, message: format!("after {attempt} attempt(s): {e}") })
    }
}

impl Sink for RedisSink {
    fn retries(&self) -> u64 {
        RedisSink::retries(self)
    }

    fn name(&self) -> &'static str {
        SINK
    }

    fn write(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        let pipe = build_pipeline(batch, self.ttls)?;
        if pipe.is_empty() {
            return Ok(());
        }
        self.send(&pipe)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // `write` returns only after Redis acknowledged the whole pipeline.
        Ok(())
    }
}

fn connect(client: &Client, timeout: Duration) -> Result<Connection, RedisError> {
    let c = client.get_connection_with_timeout(timeout)?;
    c.set_read_timeout(Some(timeout))?;
    c.set_write_timeout(Some(timeout))?;
    Ok(c)
}

/// A connection on which every [`SCRIPTS`] body is loaded, so pipelines can use EVALSHA.
///
/// Loaded on every (re)connect: a restarted server has an empty script cache,
/// and a restart always breaks the old connection first.
fn connect_with_scripts(client: &Client, timeout: Duration) -> Result<Connection, RedisError> {
    let mut c = connect(client, timeout)?;
    let mut pipe = ::redis::pipe();
    for script in SCRIPTS.all() {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.body);
    }
    let shas: Vec<String> = pipe.query(&mut c)?;
    if shas.iter().zip(SCRIPTS.all()).any(|(got, s)| *got != s.sha) {
        // Would make every EVALSHA fail with NOSCRIPT forever: say why instead.
        return Err(RedisError::from((ErrorKind::Client, "SCRIPT LOAD returned an unexpected SHA1")));
    }
    Ok(c)
}

/// Errors worth a reconnect and re-send: the server is unreachable, restarting or failing over.
/// Anything else (a rejected command) would fail the same way again.
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Parse
                | ErrorKind::Server(
                    // The script cache was flushed under us: a reconnect reloads it and the
                    // re-sent pipeline is harmless (every versioned write checks its version).
                    ServerErrorKind::NoScript
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// The outputs of a batch worth sending, in batch order: of several replaces
/// of one key only the newest version (the last of equals) — what the
/// embedded store ends with — and every item-stats delta.
fn select(batch: &[Output]) -> Vec<&Output> {
    let mut keep: Vec<bool> = batch.iter().map(|o| matches!(o, Output::ItemStats(_))).collect();
    let mut newest: HashMap<String, (i64, usize)> = HashMap::new();
    for (i, out) in batch.iter().enumerate() {
        let (key, version) = match out {
            Output::Hot(l) => (l.key(), l.window_end),
            Output::Metrics(w) => (w.key(), w.window_start),
            Output::Profile(d) => (profile_key(&d.tenant_id, &d.user_id, &d.scenario_id), d.updated_window),
            Output::ItemStats(_) | Output::Raw(_) | Output::Dead(_) => continue,
        };
        match newest.entry(key) {
            Entry::Vacant(e) => {
                e.insert((version, i));
                keep[i] = true;
            }
            Entry::Occupied(mut e) => {
                let (v, j) = *e.get();
                if version >= v {
                    keep[j] = false;
                    keep[i] = true;
                    e.insert((version, i));
                }
            }
        }
    }
    batch.iter().zip(keep).filter_map(|(o, k)| k.then_some(o)).collect()
}

/// The one pipeline of a batch (empty if nothing is to be written).
fn build_pipeline(batch: &[Output], ttls: Ttls) -> Result<Pipeline, SinkError> {
    let mut pipe = ::redis::pipe();
    for out in select(batch) {
        match out {
            Output::Hot(l) => add_hot(&mut pipe, l, ttls.hot)?,
            Output::ItemStats(d) => add_item_stats(&mut pipe, d),
            Output::Metrics(w) => add_metrics(&mut pipe, w, ttls.metrics),
            Output::Profile(d) => add_profile(&mut pipe, d, ttls.profile)?,
            Output::Raw(_) | Output::Dead(_) => {}
        }
    }
    Ok(pipe)
}

/// A Lua script: its body (for SCRIPT LOAD) and SHA1 (for EVALSHA).
struct LuaScript {
    body: &'static str,
    sha: String,
}

impl LuaScript {
    fn new(body: &'static str) -> Self {
        use sha1::Digest;
        let sha = sha1::Sha1::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        LuaScript { body, sha }
    }

    /// Appends `EVALSHA sha #keys keys... args...` to `pipe`; the caller adds ARGV.
    fn invoke<'p>(&self, pipe: &'p mut Pipeline, keys: &[&str]) -> &'p mut Pipeline {
        let cmd = pipe.cmd("EVALSHA").arg(&self.sha).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        cmd
    }
}

/// The versioned writes. Each runs atomically in Redis, so a reader never sees
/// a half-replaced key and a re-sent pipeline never applies a version twice.
struct Scripts {
    hot: LuaScript,
    metrics: LuaScript,
    item_stats: LuaScript,
}

impl Scripts {
    fn all(&self) -> [&LuaScript; 3] {
        [&self.hot, &self.metrics, &self.item_stats]
    }
}

/// KEYS: hot ZSET, its version key. ARGV: window_end, TTL (s), then score, member pairs.
/// Replaces the list only for a strictly newer window: after a crash the
/// replay re-sends older windows and partial recomputations of the stored one.
const HOT_LUA: &str = r#"
local stored = tonumber(redis.call('GET', KEYS[2]))
if stored and stored >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 1000 do
  redis.call('ZADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if #ARGV > 2 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
"#;

/// KEYS: metrics HASH. ARGV: window_start, TTL (s), then field, value pairs
/// (`window_start` among them: the stored field is the version).
const METRICS_LUA: &str = r#"
local stored = tonumber(redis.call('HGET', KEYS[1], 'window_start'))
if stored and stored >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// KEYS: item stats HASH, its version HASH. ARGV: scenario, pane_end, then action, count pairs.
/// Adds a (scenario, pane) delta once: panes of one (tenant, scenario, item)
/// arrive in increasing order from one worker, so "newer than the last
/// applied" is "not applied yet".
const ITEM_STATS_LUA: &str = r#"
local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
if stored and stored >= tonumber(ARGV[2]) then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"#;

static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
    hot: LuaScript::new(HOT_LUA),
    metrics: LuaScript::new(METRICS_LUA),
    item_stats: LuaScript::new(ITEM_STATS_LUA),
});

/// The bookkeeping key of `key` (see [`BOOKKEEPING_PREFIX`]).
pub fn version_key(key: &str) -> String {
    format!("{BOOKKEEPING_PREFIX}{key}")
}

/// Versioned atomic replace of a hot list (an empty list deletes the key: Redis has no empty ZSET).
fn add_hot(pipe: &mut Pipeline, l: &HotList, ttl: u64) -> Result<(), SinkError> {
    let key = l.key();
    if let Some((item, _)) = l.entries.iter().find(|(_, s)| s.is_nan()) {
        // Rejected before sending so nothing of the batch is applied (ZADD would refuse it mid-script).
        return Err(backend_error(format!("{key}: NaN score for item {item}")));
    }
    let cmd = SCRIPTS.hot.invoke(pipe, &[&key, &version_key(&key)]).arg(l.window_end).arg(ttl);
    for (item, score) in &l.entries {
        cmd.arg(*score).arg(item.as_str());
    }
    cmd.ignore();
    Ok(())
}

/// Versioned HINCRBY per nonzero action; no TTL (MISSION.md gives none).
fn add_item_stats(pipe: &mut Pipeline, d: &ItemStatsDelta) {
    if d.counts.iter().all(|&c| c == 0) {
        // Nothing to add: no key (as the embedded store), no version either.
        return;
    }
    let key = d.key();
    let cmd = SCRIPTS.item_stats.invoke(pipe, &[&key, &version_key(&key)]).arg(d.scenario_id.as_str()).arg(d.pane_end);
    for (a, &c) in ACTIONS.iter().zip(&d.counts) {
        if c > 0 {
            cmd.arg(a.name()).arg(c);
        }
    }
    cmd.ignore();
}

/// Versioned atomic replace of the metrics hash, so fields of an
/// (experiment, variant) absent from this minute disappear.
fn add_metrics(pipe: &mut Pipeline, w: &MetricsWindow, ttl: u64) {
    let key = w.key();
    let cmd = SCRIPTS.metrics.invoke(pipe, &[&key]).arg(w.window_start).arg(ttl);
    // The embedded store's field set and typing; FieldValue's Display is the Redis form
    // (f64 `{}` round-trips exactly).
    for (field, v) in metrics_fields(w) {
        cmd.arg(field).arg(v.to_string());
    }
    cmd.ignore();
}

/// SET of the profile JSON with its TTL: unversioned, because after a restart
/// the profile operator re-sends each user's full current document.
fn add_profile(pipe: &mut Pipeline, d: &ProfileDoc, ttl: u64) -> Result<(), SinkError> {
    let json = serde_json::to_string(d)?;
    pipe.cmd("SET").arg(profile_key(&d.tenant_id, &d.user_id, &d.scenario_id)).arg(json).arg("EX").arg(ttl).ignore();
    Ok(())
}

// ---- dump -------------------------------------------------------------------

/// The recflow key families, recognised by prefix and segment count (ids never contain ':').
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Hot,
    ItemStats,
    Metrics,
    Profile,
}

impl KeyKind {
    const ALL: [KeyKind; 4] = [KeyKind::Hot, KeyKind::ItemStats, KeyKind::Metrics, KeyKind::Profile];

    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Hot => HOT_PREFIX,
            KeyKind::ItemStats => ITEM_STATS_PREFIX,
            KeyKind::Metrics => METRICS_PREFIX,
            KeyKind::Profile => PROFILE_PREFIX,
        }
    }

    /// The kind of `key`, if it is a recflow key.
    fn of(key: &str) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| {
            key.strip_prefix(k.prefix()).is_some_and(|rest| {
                let n = rest.split(':').count();
                let ok_len = match k {
                    KeyKind::Hot => n == 2 || n == 3,
                    KeyKind::ItemStats | KeyKind::Metrics => n == 2,
                    KeyKind::Profile => n == 3,
                };
                ok_len && rest.split(':').all(|s| !s.is_empty())
            })
        })
    }
}

/// Every recflow key in Redis as one JSON object shaped exactly like
/// [`crate::EmbeddedStore::dump`] without `mongo.user_profiles`: ZSET
/// `[[member, score], ...]` (score desc, member asc), HASH object (counts and
/// `window_start` integers, ratios floats), profile the parsed JSON object.
pub fn dump(url: &str) -> Result<Value, SinkError> {
    let client = Client::open(url).map_err(|e| backend_error(format!("bad url {url:?}: {e}")))?;
    let mut con = connect(&client, DUMP_TIMEOUT).map_err(backend)?;
    let mut keys = Vec::new();
    for kind in KeyKind::ALL {
        keys.extend(
            scan(&mut con, &format!("{}*", kind.prefix()))?.into_iter().filter_map(|k| Some((KeyKind::of(&k)?, k))),
        );
    }
    // SCAN may return a key twice.
    keys.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    keys.dedup_by(|a, b| a.1 == b.1);

    let mut pipe = ::redis::pipe();
    for (kind, key) in &keys {
        match kind {
            KeyKind::Hot => pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES"),
            KeyKind::ItemStats | KeyKind::Metrics => pipe.cmd("HGETALL").arg(key),
            KeyKind::Profile => pipe.cmd("GET").arg(key),
        };
    }
    let replies: Vec<RValue> = if pipe.is_empty() { Vec::new() } else { pipe.query(&mut con).map_err(backend)? };

    let mut out = serde_json::Map::new();
    for ((kind, key), reply) in keys.into_iter().zip(replies) {
        let strings = bulk_strings(reply).map_err(|m| backend_error(format!("{key}: {m}")))?;
        // Empty: the key expired between SCAN and read.
        if strings.is_empty() {
            continue;
        }
        let value = render(kind, strings).map_err(|m| backend_error(format!("{key}: {m}")))?;
        out.insert(key, value);
    }
    Ok(Value::Object(out))
}

/// A sink error from a failed Redis call.
fn backend(e: RedisError) -> SinkError {
    SinkError::Backend { sink: SINK, message: e.to_string() }
}

/// All keys matching `pattern`.
fn scan(con: &mut Connection, pattern: &str) -> Result<Vec<String>, SinkError> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(con)
            .map_err(backend)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// A reply as strings: an array of bulk strings, one bulk string, or nil (none).
fn bulk_strings(v: RValue) -> Result<Vec<String>, String> {
    fn one(v: RValue) -> Result<String, String> {
        match v {
            RValue::BulkString(b) => String::from_utf8(b).map_err(|e| e.to_string()),
            RValue::SimpleString(s) => Ok(s),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
    match v {
        RValue::Nil => Ok(Vec::new()),
        RValue::Array(items) => items.into_iter().map(one).collect(),
        other => one(other).map(|s| vec![s]),
    }
}

/// One key's reply rendered as the embedded dump renders that key.
fn render(kind: KeyKind, strings: Vec<String>) -> Result<Value, String> {
    match kind {
        KeyKind::Hot => {
            let pairs = pairs(strings)?
                .into_iter()
                .map(|(m, s)| s.parse::<f64>().map(|s| (m, s)).map_err(|e| format!("score {s:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(render_zset(pairs))
        }
        KeyKind::ItemStats | KeyKind::Metrics => {
            let fields = pairs(strings)?
                .into_iter()
                .map(|(f, raw)| parse_field(kind, &f, &raw).map(|v| (f, v)))
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            Ok(hash_value(fields))
        }
        KeyKind::Profile => {
            let [json] = <[String; 1]>::try_from(strings).map_err(|s| format!("{} values for a string", s.len()))?;
            serde_json::from_str(&json).map_err(|e| format!("profile JSON: {e}"))
        }
    }
}

/// `[a, b, c, d]` -> `[(a, b), (c, d)]` (RESP2 ZRANGE WITHSCORES / HGETALL).
fn pairs(strings: Vec<String>) -> Result<Vec<(String, String)>, String> {
    if !strings.len().is_multiple_of(2) {
        return Err(format!("odd reply length {}", strings.len()));
    }
    let mut it = strings.into_iter();
    Ok(std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect())
}

/// ZSET entries as the embedded dump lists them: `[[member, score], ...]`, score desc, member asc.
fn render_zset(mut entries: Vec<(String, f64)>) -> Value {
    entries.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Value::Array(entries.into_iter().map(|(m, s)| Value::Array(vec![Value::from(m), Value::from(s)])).collect())
}

/// A HASH field typed as the embedded store types it (by field name, not by how the string looks:
/// a gmv of `100` is still a float).
fn parse_field(kind: KeyKind, field: &str, raw: &str) -> Result<FieldValue, String> {
    let metric = field.rsplit(':').next().unwrap_or(field);
    let int = kind == KeyKind::ItemStats || field == "window_start" || is_count_metric(metric);
    if int {
        raw.parse::<i64>().map(FieldValue::Int).map_err(|e| format!("field {field} = {raw:?}: {e}"))
    } else {
        raw.parse::<f64>().map(FieldValue::Float).map_err(|e| format!("field {field} = {raw:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use recflow_schemas::{Action, MetricsRow, Str};
    use serde_json::json;

    use super::*;

    const TTLS: Ttls = Ttls { hot: 86400, profile: 3600, metrics: 60 };

    /// The pipeline as readable commands, e.g. `["ZADD", "k", "1.5", "a"]`.
    fn commands(pipe: &Pipeline) -> Vec<Vec<String>> {
        pipe.cmd_iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        ::redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                        _ => "<cursor>".into(),
                    })
                    .collect()
            })
            .collect()
    }

    fn cmds(batch: &[Output]) -> Vec<Vec<String>> {
        commands(&build_pipeline(batch, TTLS).unwrap())
    }

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    fn hot(category: Option<&str>, window_end: i64, entries: &[(&str, f64)]) -> Output {
        Output::Hot(HotList {
            tenant_id: "t1".into(),
            scenario_id: "vlog".into(),
            category: category.map(Str::from),
            window_end,
            entries: entries.iter().map(|(m, s)| (Str::from(*m), *s)).collect(),
        })
    }

    fn metrics(window_start: i64, clicks: u64, gmv: f64) -> Output {
        Output::Metrics(MetricsWindow {
            tenant_id: "t1".into(),
            scenario_id: "vlog".into(),
            window_start,
            rows: vec![MetricsRow {
                experiment_id: "exp1".into(),
                variant: "A".into(),
                impressions: 3,
                clicks,
                views: 0,
                likes: 0,
                shares: 0,
                comments: 0,
                add_carts: 0,
                orders: 0,
                payments: 0,
                ctr: clicks as f64 / 3.0,
                avg_watch_duration: 0.0,
                avg_completion_rate: 0.0,
                conversion_rate: 0.0,
                interaction_rate: 0.0,
                gmv,
            }],
        })
    }

    fn profile(user: &str, updated_window: i64) -> Output {
        Output::Profile(Arc::new(ProfileDoc {
            tenant_id: "t1".into(),
            user_id: user.into(),
            scenario_id: "vlog".into(),
            counts: Default::default(),
            watch_count: 0,
            watch_seconds: 1.5,
            category_counts: [(Str::from("music"), 1), (Str::from("sports"), 2)].into_iter().collect(),
            favorite_categories: vec![],
            active_hours: [0; 24],
            first_seen: 1,
            last_active_at: 2,
            recent_items: vec!["i1".into()],
            updated_window,
        }))
    }

    #[test]
    fn hot_list_is_a_versioned_script_call() {
        let c = cmds(&[hot(Some("music"), 900, &[("a", 2.5), ("b", 0.1)])]);
        let key = "hot:items:t1:vlog:music";
        assert_eq!(
            c,
            vec![v(&[
                "EVALSHA",
                &SCRIPTS.hot.sha,
                "2",
                key,
                "recflow:v:hot:items:t1:vlog:music",
                "900",
                "86400",
                "2.5",
                "a",
                "0.1",
                "b"
            ])]
        );
        assert_eq!(KeyKind::of(&version_key(key)), None, "bookkeeping keys are outside the dumped families");
    }

    #[test]
    fn empty_hot_list_still_goes_through_the_version_check_and_nan_is_refused() {
        let c = cmds(&[hot(None, 900, &[])]);
        assert_eq!(
            c,
            vec![v(&[
                "EVALSHA",
                &SCRIPTS.hot.sha,
                "2",
                "hot:items:t1:vlog",
                "recflow:v:hot:items:t1:vlog",
                "900",
                "86400"
            ])]
        );
        assert!(build_pipeline(&[hot(None, 900, &[("a", f64::NAN)])], TTLS).is_err());
    }

    #[test]
    fn item_stats_are_versioned_by_scenario_and_pane() {
        let mut counts = [0; 12];
        counts[Action::AddCart.index()] = 2;
        counts[Action::Click.index()] = 7;
        let d = |counts, pane_end| {
            Output::ItemStats(ItemStatsDelta {
                tenant_id: "t1".into(),
                scenario_id: "vlog".into(),
                item_id: "i9".into(),
                counts,
                pane_end,
            })
        };
        let call = |pane: &str| {
            v(&[
                "EVALSHA",
                &SCRIPTS.item_stats.sha,
                "2",
                "item:stats:t1:i9",
                "recflow:v:item:stats:t1:i9",
                "vlog",
                pane,
                "click",
                "7",
                "add_cart",
                "2",
            ])
        };
        assert_eq!(
            cmds(&[d(counts, 900), d([0; 12], 1800), d(counts, 1800)]),
            vec![call("900"), call("1800")],
            "every nonzero delta is sent; the script skips panes already applied"
        );
    }

    #[test]
    fn metrics_are_a_versioned_script_call() {
        let c = cmds(&[metrics(60_000, 1, 100.0)]);
        let key = "metrics:realtime:t1:vlog";
        assert_eq!(c.len(), 1);
        assert_eq!(c[0][..6], v(&["EVALSHA", &SCRIPTS.metrics.sha, "1", key, "60000", "60"]));
        let hset: BTreeMap<&str, &str> = c[0][6..].chunks(2).map(|p| (p[0].as_str(), p[1].as_str())).collect();
        assert_eq!(hset.len(), 16, "window_start + 15 metrics");
        assert_eq!(hset["window_start"], "60000");
        assert_eq!(hset["exp1:A:clicks"], "1");
        assert_eq!(hset["exp1:A:gmv"], "100");
        assert_eq!(hset["exp1:A:ctr"], "0.3333333333333333");
        assert_eq!(hset["exp1:A:ctr"].parse::<f64>().unwrap(), 1.0 / 3.0, "Display round-trips");
    }

    #[test]
    fn scripts_have_distinct_shas_of_their_bodies() {
        let shas: Vec<&str> = SCRIPTS.all().iter().map(|s| s.sha.as_str()).collect();
        assert!(shas.iter().all(|s| s.len() == 40));
        assert!(shas[0] != shas[1] && shas[1] != shas[2] && shas[0] != shas[2]);
    }

    #[test]
    fn profile_is_set_with_ttl() {
        let c = cmds(&[profile("u1", 300_000)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0][..2], v(&["SET", "user:profile:t1:u1:vlog"]));
        assert_eq!(c[0][3..], v(&["EX", "3600"]));
        let back: Value = serde_json::from_str(&c[0][2]).unwrap();
        assert_eq!(back["updated_window"], json!(300_000));
        assert_eq!(back["category_scores"]["music"], json!(1.0 / 3.0));
    }

    #[test]
    fn only_the_newest_replace_per_key_is_sent_and_raw_dead_are_ignored() {
        let batch = [
            hot(None, 1800, &[("new", 1.0)]),
            hot(None, 900, &[("old", 1.0)]),
            hot(Some("music"), 900, &[("m", 1.0)]),
            metrics(120_000, 2, 0.0),
            metrics(60_000, 1, 0.0),
            profile("u1", 600),
            profile("u1", 600),
            profile("u2", 300),
        ];
        let kept = select(&batch);
        assert_eq!(kept, vec![&batch[0], &batch[2], &batch[3], &batch[6], &batch[7]]);
        assert!(build_pipeline(&[], TTLS).unwrap().is_empty());
    }

    #[test]
    fn key_kinds() {
        assert_eq!(KeyKind::of("hot:items:t:s"), Some(KeyKind::Hot));
        assert_eq!(KeyKind::of("hot:items:t:s:c"), Some(KeyKind::Hot));
        assert_eq!(KeyKind::of("hot:items:t:s:c:tmp"), None);
        assert_eq!(KeyKind::of("hot:items:t"), None);
        assert_eq!(KeyKind::of("item:stats:t:i"), Some(KeyKind::ItemStats));
        assert_eq!(KeyKind::of("metrics:realtime:t:s"), Some(KeyKind::Metrics));
        assert_eq!(KeyKind::of("user:profile:t:u:s"), Some(KeyKind::Profile));
        assert_eq!(KeyKind::of("user:profile:t::s"), None);
        assert_eq!(KeyKind::of("exposed:t:u:s"), None);
    }

    #[test]
    fn zset_rendering_orders_score_desc_then_member_asc() {
        let z = render(KeyKind::Hot, v(&["b", "1", "a", "1", "c", "2.5", "d", "0.30000000000000004"])).unwrap();
        assert_eq!(z, json!([["c", 2.5], ["a", 1.0], ["b", 1.0], ["d", 0.1 + 0.2]]));
        assert_eq!(z[1][1], json!(1.0), "scores stay floats even when integral");
        assert!(render(KeyKind::Hot, v(&["a"])).is_err());
    }

    #[test]
    fn hash_rendering_types_fields_by_name() {
        let m = render(
            KeyKind::Metrics,
            v(&[
                "window_start",
                "60000",
                "e:A:clicks",
                "3",
                "e:A:gmv",
                "100",
                "e:A:ctr",
                "0.1",
                "e:A:avg_watch_duration",
                "NaN",
            ]),
        )
        .unwrap();
        assert_eq!(
            m,
            json!({"window_start": 60000, "e:A:clicks": 3, "e:A:gmv": 100.0, "e:A:ctr": 0.1, "e:A:avg_watch_duration": null})
        );
        assert!(m["e:A:gmv"].is_f64() && m["e:A:clicks"].is_i64());
        let s = render(KeyKind::ItemStats, v(&["click", "4", "add_cart", "1"])).unwrap();
        assert_eq!(s, json!({"click": 4, "add_cart": 1}));
        assert!(render(KeyKind::ItemStats, v(&["click", "1.5"])).is_err());
    }

    #[test]
    fn metrics_written_then_read_back_equal_the_embedded_rendering() {
        let Output::Metrics(w) = metrics(60_000, 2, 19.99) else { unreachable!() };
        let c = cmds(&[Output::Metrics(w.clone())]);
        let read_back = render(KeyKind::Metrics, c[0][6..].to_vec()).unwrap();
        assert_eq!(read_back, hash_value(metrics_fields(&w)));
    }

    #[test]
    fn profile_rendering_round_trips_floats_exactly() {
        let Output::Profile(d) = profile("u1", 1) else { unreachable!() };
        let mut doc = (*d).clone();
        // Shortest reprs of 17 significant digits are where a lossy float parser slips:
        // scores n / 67 (these counts and the profile's 1 + 2), and a sum that is not 0.8.
        for (i, n) in [1, 3, 7, 11, 13, 29].into_iter().enumerate() {
            doc.category_counts.insert(Str::from(format!("c{i}")), n);
        }
        doc.watch_seconds = 0.1 + 0.7;
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(render(KeyKind::Profile, vec![json]).unwrap(), serde_json::to_value(&doc).unwrap());
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: RedisConfig =
            serde_json::from_value(json!({"url": "redis://h:1", "retry": {"max_attempts": 3}})).unwrap();
        assert_eq!(c.url, "redis://h:1");
        assert_eq!((c.hot_ttl_secs, c.profile_ttl_secs, c.metrics_ttl_secs), (86400, 3600, 3600));
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry.initial_backoff_ms, 100);
        assert_eq!(RedisConfig::default().url, "redis://127.0.0.1:6379");
        assert!(serde_json::from_value::<RedisConfig>(json!({"ttl": 1})).is_err());
        assert!(serde_json::from_value::<RedisConfig>(json!({"retry": {"tries": 1}})).is_err());
        assert!(RedisSink::new(&RedisConfig { hot_ttl_secs: 0, ..Default::default() }).is_err());
        assert!(RedisSink::new(&RedisConfig { url: "nope://x".into(), ..Default::default() }).is_err());
    }

    #[test]
    fn transient_errors() {
        let io = |k| RedisError::from(std::io::Error::from(k));
        assert!(is_transient(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(is_transient(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(is_transient(&io(std::io::ErrorKind::TimedOut)));
        assert!(!is_transient(&RedisError::from((ErrorKind::Client, "bad"))));
        assert!(is_transient(&RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "flushed"))));
    }

    #[test]
    fn write_to_an_unreachable_server_fails_after_the_retries_and_counts_them() {
        // Port 1 on loopback: connection refused at once.
        let config = RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            timeout_ms: 200,
            retry: RetryConfig { max_attempts: 3, initial_backoff_ms: 1, backoff_factor: 1.0, max_backoff_ms: 1 },
            ..Default::default()
        };
        let mut sink = RedisSink::new(&config).unwrap();
        sink.write(&[]).unwrap();
        assert_eq!(sink.errors(), 0, "an empty batch does not connect");
        let err = sink.write(&[metrics(60_000, 1, 0.0)]).unwrap_err();
        assert!(matches!(err, SinkError::Backend { sink: "redis", .. }), "{err}");
        assert_eq!((sink.retries(), sink.errors()), (2, 3));
    }
}
