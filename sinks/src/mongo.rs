//! MongoDB: versioned `user_profiles` upserts ([`MongoSink`]), the `items`
//! catalog and the `scenarios` configs ([`MongoDb`]).
//!
//! Writes use the classic batched `update` command (one request per batch)
//! rather than the driver's `bulk_write`, which needs MongoDB 8.0's
//! `bulkWrite`: `update` works on every server version we may meet.
//!
//! Every document's `_id` is its natural key ([`natural_id`]), so all writes
//! and point reads go through the primary index; the unique compound indexes
//! of [`ensure_indexes`] still guard the key fields themselves.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{Error as MongoError, ErrorKind};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::sync::{Client, Database};
use mongodb::IndexModel;
use recflow_schemas::{Item, Output, ProfileDoc, Str};
use serde::Deserialize;

use crate::batcher::{retry_if, RetryPolicy};
use crate::{Sink, SinkError};

/// The collection of user profile documents.
pub const PROFILES: &str = "user_profiles";
/// The collection of scenario configs.
pub const SCENARIOS: &str = "scenarios";
/// The collection of catalog items.
pub const ITEMS: &str = "items";

/// The sink name used in logs and errors.
const SINK: &str = "mongo";
/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Command error codes meaning "server going away / not primary": worth retrying.
const TRANSIENT_CODES: [i32; 12] = [6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];
/// Bytes of statements per `update` command; well under the 16 MiB command limit.
const MAX_REQUEST_BYTES: usize = 8 << 20;
/// Keys per `find` of [`MongoProfiles::load_profiles`]: the `$in` list and its
/// answer (~1 KiB a profile) stay far below the 16 MiB document limit.
const LOAD_CHUNK: usize = 1000;

/// Where MongoDB is and how hard to retry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string; `mongodb+srv://` and TLS are not compiled in.
    pub url: String,
    /// Database holding `user_profiles`, `scenarios` and `items`.
    pub database: String,
    /// How long one attempt waits for a reachable server (ms); short so our backoff paces retries.
    pub server_selection_timeout_ms: u64,
    /// Delay before the first retry (ms).
    pub retry_initial_ms: u64,
    /// Upper bound of one retry delay (ms).
    pub retry_max_delay_ms: u64,
    /// Attempts per request including the first; after that the write fails with `SinkError::Backend`.
    pub retry_max_attempts: u32,
    /// Statements per `update` command at most; larger batches are split.
    pub max_statements: usize,
}

impl Default for MongoConfig {
    fn default() -> Self {
        let p = RetryPolicy::default();
        MongoConfig {
            url: "mongodb://127.0.0.1:27017".to_string(),
            database: "recflow".to_string(),
            server_selection_timeout_ms: 2000,
            retry_initial_ms: p.initial.as_millis() as u64,
            retry_max_delay_ms: p.max_delay.as_millis() as u64,
            retry_max_attempts: p.max_attempts,
            max_statements: 1000,
        }
    }
}

impl MongoConfig {
    /// The shared backoff built from the retry settings.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(self.retry_initial_ms),
            factor: 2.0,
            max_delay: Duration::from_millis(self.retry_max_delay_ms),
            max_attempts: self.retry_max_attempts.max(1),
        }
    }
}

/// One failed attempt, classified so `retry_if` only repeats what may heal.
#[derive(Debug)]
struct Failure {
    retryable: bool,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    fn fatal(message: impl Into<String>) -> Self {
        Failure { retryable: false, message: message.into() }
    }
}

impl From<MongoError> for Failure {
    fn from(e: MongoError) -> Self {
        Failure { retryable: is_transient(&e), message: e.to_string() }
    }
}

impl From<Failure> for SinkError {
    fn from(f: Failure) -> Self {
        backend(f.message)
    }
}

fn backend(message: impl Into<String>) -> SinkError {
    SinkError::Backend { sink: SINK, message: message.into() }
}

/// Connection-level trouble (server down, restarting, stepping down), as opposed to bad data.
fn is_transient(e: &MongoError) -> bool {
    if e.contains_label("RetryableWriteError") || e.contains_label("RetryableError") {
        return true;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } | ErrorKind::ServerSelection { .. } => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        _ => false,
    }
}

/// Opens a client; it connects lazily, so this fails only on a malformed URL.
fn connect(cfg: &MongoConfig) -> Result<Client, Failure> {
    let mut opts = ClientOptions::parse(&cfg.url).run().map_err(|e| Failure::fatal(format!("bad url: {e}")))?;
    // The URL wins when it sets the timeout itself.
    if opts.server_selection_timeout.is_none() {
        opts.server_selection_timeout = Some(Duration::from_millis(cfg.server_selection_timeout_ms.max(1)));
    }
    if opts.connect_timeout.is_none() {
        opts.connect_timeout = Some(Duration::from_millis(cfg.server_selection_timeout_ms.max(1)));
    }
    if opts.app_name.is_none() {
        opts.app_name = Some("recflow".to_string());
    }
    Ok(Client::with_options(opts)?)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A BSON document of `value`, which must serialize as a map.
fn to_document<T: serde::Serialize>(value: &T) -> Result<Document, SinkError> {
    bson::to_document(value).map_err(|e| backend(format!("cannot encode as BSON: {e}")))
}

/// The `_id` of the document of a natural key: the JSON array of its parts.
///
/// Why: a filter on `_id` hits the primary index on every server (nx-27017
/// scans the collection for any other filter, 5-10 ms per statement at 5k
/// documents), and JSON keeps the encoding unambiguous whatever the ids contain.
pub fn natural_id(parts: &[&str]) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

/// `value` as a replacement document whose first field is `_id`.
fn with_id<T: serde::Serialize>(id: &str, value: &T) -> Result<Document, SinkError> {
    let mut d = doc! { "_id": id };
    d.extend(to_document(value)?);
    Ok(d)
}

/// The versioned upsert statement of one profile for the `update` command.
///
/// Matches only a stored document with an older `updated_window` and replaces
/// it by `doc`. When the stored one is newer or equal nothing matches, the
/// upsert's insert hits the unique `_id` and the server answers 11000 for this
/// statement: stale. When no document exists the upsert inserts it.
pub fn profile_statement(doc: &ProfileDoc) -> Result<Document, SinkError> {
    let id = natural_id(&[&doc.tenant_id, &doc.user_id, &doc.scenario_id]);
    Ok(doc! {
        "q": { "_id": &id, "updated_window": { "$lt": doc.updated_window } },
        // A replacement, not `$set`: the stored document becomes exactly this
        // profile, and nx-27017 rounds top-level doubles written by `$set` to
        // 15 digits. It carries `_id` because nx-27017 inserts the replacement
        // as is on upsert (MongoDB would take `_id` from the filter).
        "u": with_id(&id, doc)?,
        "upsert": true,
    })
}

/// The upsert statement of one catalog item, keyed by (tenant_id, item_id).
pub fn item_statement(item: &Item) -> Result<Document, SinkError> {
    let id = natural_id(&[&item.tenant_id, &item.item_id]);
    Ok(doc! {
        "q": { "_id": &id },
        // A replacement (absent fields stored as null): a PUT replaces the item.
        "u": with_id(&id, item)?,
        "upsert": true,
    })
}

/// The profiles of a batch, one per key: the highest version, the later one on ties.
///
/// Why not simply the last: an out-of-order older window later in the same
/// batch must not hide a newer one (the server would keep neither order).
pub fn latest_profiles(batch: &[Output]) -> Vec<&ProfileDoc> {
    let mut pos: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let mut out: Vec<&ProfileDoc> = Vec::new();
    for o in batch {
        let Output::Profile(d) = o else { continue };
        let key = (d.tenant_id.as_str(), d.user_id.as_str(), d.scenario_id.as_str());
        match pos.get(&key) {
            Some(&i) => {
                if out[i].updated_window <= d.updated_window {
                    out[i] = d;
                }
            }
            None => {
                pos.insert(key, out.len());
                out.push(d);
            }
        }
    }
    out
}

/// What the server did with one `update` command.
#[derive(Debug, Default, PartialEq, Eq)]
struct UpdateReply {
    /// Statements that matched or upserted.
    applied: u64,
    /// Indices (into the request) of statements rejected with 11000.
    duplicates: Vec<usize>,
}

/// Reads an `update` reply; write errors other than 11000 are failures.
fn parse_update_reply(reply: &Document) -> Result<UpdateReply, Failure> {
    let int = |d: &Document, k: &str| match d.get(k) {
        Some(Bson::Int32(v)) => *v as i64,
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Double(v)) => *v as i64,
        _ => 0,
    };
    if let Ok(wce) = reply.get_document("writeConcernError") {
        // The writes happened but are not acknowledged as durable: resend (idempotent).
        return Err(Failure { retryable: true, message: format!("write concern error: {wce}") });
    }
    let mut out = UpdateReply { applied: int(reply, "n").max(0) as u64, duplicates: Vec::new() };
    if let Ok(errors) = reply.get_array("writeErrors") {
        let mut other = Vec::new();
        for e in errors {
            let Bson::Document(e) = e else { continue };
            let code = int(e, "code");
            if code == DUPLICATE_KEY as i64 {
                out.duplicates.push(int(e, "index").max(0) as usize);
            } else {
                other.push(format!("#{} code {code}: {}", int(e, "index"), e.get_str("errmsg").unwrap_or("")));
            }
        }
        if !other.is_empty() {
            return Err(Failure::fatal(format!("write errors: {}", other.join("; "))));
        }
    }
    Ok(out)
}

/// Runs one unordered `update` command.
fn run_update(db: &Database, coll: &str, stmts: &[Document]) -> Result<UpdateReply, Failure> {
    let reply = db.run_command(doc! { "update": coll, "updates": stmts, "ordered": false }).run()?;
    parse_update_reply(&reply)
}

/// Splits statements into requests of at most `max` statements and ~8 MiB.
fn chunks(stmts: &[Document], max: usize) -> Vec<&[Document]> {
    let max = max.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, s) in stmts.iter().enumerate() {
        // Rough size: encoding once per statement is cheap next to the round trip.
        let size = bson::to_vec(s).map(|v| v.len()).unwrap_or(0);
        if i > start && (i - start >= max || bytes + size > MAX_REQUEST_BYTES) {
            out.push(&stmts[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < stmts.len() {
        out.push(&stmts[start..]);
    }
    out
}

/// Applied and stale statement counts of one upsert round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    applied: u64,
    stale: u64,
}

/// Sends upserts; statements answered 11000 are resent once, and 11000 again means stale.
///
/// Why resend: two writers inserting the same new key race, and the loser
/// gets 11000 although its version may be newer. On the second try the
/// document exists, so 11000 can only mean "stored version >= ours".
fn upsert_chunk(db: &Database, coll: &str, stmts: &[Document]) -> Result<Outcome, Failure> {
    let first = run_update(db, coll, stmts)?;
    if first.duplicates.is_empty() {
        return Ok(Outcome { applied: first.applied, stale: 0 });
    }
    let again: Vec<Document> = first.duplicates.iter().filter_map(|&i| stmts.get(i).cloned()).collect();
    let second = run_update(db, coll, &again)?;
    Ok(Outcome { applied: first.applied + second.applied, stale: second.duplicates.len() as u64 })
}

/// A connected handle on the recflow database, for the query server and tools.
#[derive(Clone, Debug)]
pub struct MongoDb {
    cfg: MongoConfig,
    client: Client,
}

impl MongoDb {
    /// A handle for `cfg` (connects lazily; fails only on a malformed URL).
    pub fn new(cfg: &MongoConfig) -> Result<Self, SinkError> {
        Ok(MongoDb { cfg: cfg.clone(), client: connect(cfg)? })
    }

    /// The configuration in use.
    pub fn config(&self) -> &MongoConfig {
        &self.cfg
    }

    /// The driver's database handle, for queries this module does not wrap.
    pub fn database(&self) -> Database {
        self.client.database(&self.cfg.database)
    }

    /// Runs `op` with the configured backoff on transient errors.
    fn with_retry<T>(&self, what: &str, mut op: impl FnMut(&Database) -> Result<T, Failure>) -> Result<T, SinkError> {
        let db = self.database();
        retry_if(&self.cfg.retry_policy(), || op(&db), |f| f.retryable)
            .map_err(|f| backend(format!("{what}: {}", f.message)))
    }

    /// Creates the unique and query indexes of all three collections; a no-op when they exist.
    pub fn ensure_indexes(&self) -> Result<(), SinkError> {
        let unique = |name: &str| IndexOptions::builder().unique(true).name(name.to_string()).build();
        let specs: [(&str, Document, IndexOptions); 4] = [
            (PROFILES, doc! { "tenant_id": 1, "user_id": 1, "scenario_id": 1 }, unique("tenant_user_scenario_unique")),
            (SCENARIOS, doc! { "tenant_id": 1, "scenario_id": 1 }, unique("tenant_scenario_unique")),
            (ITEMS, doc! { "tenant_id": 1, "item_id": 1 }, unique("tenant_item_unique")),
            (
                ITEMS,
                doc! { "tenant_id": 1, "scenario_id": 1, "publish_time": -1 },
                IndexOptions::builder().name("tenant_scenario_publish_time".to_string()).build(),
            ),
        ];
        self.with_retry("ensure_indexes", |db| {
            for (coll, keys, opts) in &specs {
                let model = IndexModel::builder().keys(keys.clone()).options(opts.clone()).build();
                db.collection::<Document>(coll).create_index(model).run()?;
            }
            Ok(())
        })
    }

    /// All `user_profiles` documents as the embedded dump's `mongo.user_profiles` renders them.
    ///
    /// Each document goes through [`ProfileDoc`] (dropping `_id`), so field
    /// names, order and integer-vs-float match `serde_json` of the struct.
    pub fn dump_profiles(&self) -> Result<Vec<serde_json::Value>, SinkError> {
        let mut docs: Vec<ProfileDoc> = self.find_all(PROFILES)?;
        // Sorted here, not by the server: byte order of the strings, exactly as the embedded store sorts keys.
        docs.sort_unstable_by(|a, b| {
            (&a.tenant_id, &a.user_id, &a.scenario_id).cmp(&(&b.tenant_id, &b.user_id, &b.scenario_id))
        });
        docs.iter().map(|d| serde_json::to_value(d).map_err(SinkError::from)).collect()
    }

    /// Every document of `coll` decoded as `T` (unknown fields such as `_id` ignored).
    fn find_all<T: serde::de::DeserializeOwned>(&self, coll: &str) -> Result<Vec<T>, SinkError> {
        let raw: Vec<Document> = self.with_retry(coll, |db| {
            let cursor = db.collection::<Document>(coll).find(doc! {}).run()?;
            Ok(cursor.collect::<Result<Vec<_>, _>>()?)
        })?;
        raw.into_iter()
            .map(|d| bson::from_document(d).map_err(|e| backend(format!("bad document in {coll}: {e}"))))
            .collect()
    }

    /// Upserts catalog items by (tenant_id, item_id); the last of duplicates in `items` wins.
    pub fn upsert_items(&self, items: &[Item]) -> Result<(), SinkError> {
        let mut pos: HashMap<(&str, &str), usize> = HashMap::new();
        let mut latest: Vec<&Item> = Vec::new();
        for it in items {
            match pos.get(&(it.tenant_id.as_str(), it.item_id.as_str())) {
                Some(&i) => latest[i] = it,
                None => {
                    pos.insert((it.tenant_id.as_str(), it.item_id.as_str()), latest.len());
                    latest.push(it);
                }
            }
        }
        let stmts = latest.into_iter().map(item_statement).collect::<Result<Vec<_>, _>>()?;
        for chunk in chunks(&stmts, self.cfg.max_statements) {
            let o = self.with_retry("upsert items", |db| upsert_chunk(db, ITEMS, chunk))?;
            // The filter is the unique key, so a second 11000 is not "stale": something is wrong.
            if o.stale > 0 {
                return Err(backend(format!("upsert items: {} duplicate-key errors", o.stale)));
            }
        }
        Ok(())
    }

    /// The whole catalog, sorted by (tenant_id, item_id).
    pub fn load_items(&self) -> Result<Vec<Item>, SinkError> {
        let mut items: Vec<Item> = self.find_all(ITEMS)?;
        items.sort_unstable_by(|a, b| (&a.tenant_id, &a.item_id).cmp(&(&b.tenant_id, &b.item_id)));
        Ok(items)
    }

    /// Round-trips a `ping` command: the server is reachable.
    pub fn ping(&self) -> Result<(), SinkError> {
        self.with_retry("ping", |db| {
            db.run_command(doc! { "ping": 1 }).run()?;
            Ok(())
        })
    }

    /// The `user_profiles` document of (tenant, user, scenario), if any.
    pub fn get_profile(&self, tenant: &str, user: &str, scenario: &str) -> Result<Option<ProfileDoc>, SinkError> {
        let id = natural_id(&[tenant, user, scenario]);
        let found = self.with_retry("get profile", |db| {
            Ok(db.collection::<Document>(PROFILES).find_one(doc! { "_id": &id }).run()?)
        })?;
        found.map(|d| bson::from_document(d).map_err(|e| backend(format!("bad profile document: {e}")))).transpose()
    }

    /// The catalog items of one tenant, sorted by item_id.
    pub fn tenant_items(&self, tenant: &str) -> Result<Vec<Item>, SinkError> {
        let raw: Vec<Document> = self.with_retry("tenant items", |db| {
            let cursor = db.collection::<Document>(ITEMS).find(doc! { "tenant_id": tenant }).run()?;
            Ok(cursor.collect::<Result<Vec<_>, _>>()?)
        })?;
        let mut items = raw
            .into_iter()
            .map(|d| bson::from_document::<Item>(d).map_err(|e| backend(format!("bad document in {ITEMS}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        items.sort_unstable_by(|a, b| a.item_id.cmp(&b.item_id));
        Ok(items)
    }

    /// The stored config of a scenario, if any.
    pub fn get_scenario(&self, tenant: &str, scenario_id: &str) -> Result<Option<serde_json::Value>, SinkError> {
        let found = self.with_retry("get scenario", |db| {
            Ok(db
                .collection::<Document>(SCENARIOS)
                .find_one(doc! { "_id": natural_id(&[tenant, scenario_id]) })
                .run()?)
        })?;
        let Some(mut d) = found else { return Ok(None) };
        let config = d.remove("config").unwrap_or(Bson::Null);
        let json = bson::from_bson(config).map_err(|e| backend(format!("bad scenario config: {e}")))?;
        Ok(Some(json))
    }

    /// Stores (replaces) a scenario config, stamping `updated_at` (epoch ms).
    pub fn put_scenario(&self, tenant: &str, scenario_id: &str, config: &serde_json::Value) -> Result<(), SinkError> {
        let config = bson::to_bson(config).map_err(|e| backend(format!("cannot encode scenario config: {e}")))?;
        let id = natural_id(&[tenant, scenario_id]);
        let stmt = doc! {
            "q": { "_id": &id },
            "u": { "_id": &id, "tenant_id": tenant, "scenario_id": scenario_id, "config": config, "updated_at": now_ms() },
            "upsert": true,
        };
        let o = self.with_retry("put scenario", |db| upsert_chunk(db, SCENARIOS, std::slice::from_ref(&stmt)))?;
        if o.stale > 0 {
            return Err(backend("put scenario: duplicate-key error"));
        }
        Ok(())
    }
}

/// Reads stored profiles back, for the profile operator rebuilding its state after a restart.
#[derive(Clone, Debug)]
pub struct MongoProfiles {
    db: MongoDb,
}

impl MongoProfiles {
    /// A handle for `cfg`; connects lazily (fails only on a malformed URL), reads retry with its backoff.
    pub fn connect(cfg: &MongoConfig) -> Result<Self, SinkError> {
        Ok(MongoProfiles { db: MongoDb::new(cfg)? })
    }

    /// The stored profiles of the (tenant, user, scenario) `keys` that have one, in the order of
    /// `keys` (each once); keys without a document are simply absent. Blocking.
    ///
    /// Queried by `_id` (`$in`, [`LOAD_CHUNK`] keys a request): the primary
    /// index, the one filter nx-27017 does not answer by scanning.
    pub fn load_profiles(&self, keys: &[(Str, Str, Str)]) -> Result<Vec<ProfileDoc>, SinkError> {
        let mut ids: Vec<String> = keys.iter().map(|(t, u, s)| natural_id(&[t, u, s])).collect();
        // First occurrence wins: the answer follows `keys` without repeats.
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        let mut found: HashMap<String, ProfileDoc> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(LOAD_CHUNK) {
            for (id, doc) in self.find_profiles(chunk)? {
                found.insert(id, doc);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// The profiles stored under `ids`, with their `_id`.
    fn find_profiles(&self, ids: &[String]) -> Result<Vec<(String, ProfileDoc)>, SinkError> {
        let raw: Vec<Document> = self.db.with_retry("load profiles", |db| {
            let cursor = db.collection::<Document>(PROFILES).find(doc! { "_id": { "$in": ids } }).run()?;
            Ok(cursor.collect::<Result<Vec<_>, _>>()?)
        })?;
        raw.into_iter()
            .map(|d| {
                let id = d.get_str("_id").map_err(|e| backend(format!("profile without a string _id: {e}")))?;
                let id = id.to_string();
                let doc = bson::from_document(d).map_err(|e| backend(format!("bad profile document {id}: {e}")))?;
                Ok((id, doc))
            })
            .collect()
    }
}

/// Creates the indexes of `user_profiles`, `scenarios` and `items`; safe to run repeatedly.
pub fn ensure_indexes(cfg: &MongoConfig) -> Result<(), SinkError> {
    MongoDb::new(cfg)?.ensure_indexes()
}

/// All `user_profiles` documents, rendered and sorted like the embedded dump's `mongo.user_profiles`.
pub fn dump_profiles(cfg: &MongoConfig) -> Result<Vec<serde_json::Value>, SinkError> {
    MongoDb::new(cfg)?.dump_profiles()
}

/// Upserts catalog items into `items` by (tenant_id, item_id).
pub fn upsert_items(cfg: &MongoConfig, items: &[Item]) -> Result<(), SinkError> {
    MongoDb::new(cfg)?.upsert_items(items)
}

/// The whole `items` catalog, sorted by (tenant_id, item_id).
pub fn load_items(cfg: &MongoConfig) -> Result<Vec<Item>, SinkError> {
    MongoDb::new(cfg)?.load_items()
}

/// The stored config of (tenant, scenario), if any.
pub fn get_scenario(
    cfg: &MongoConfig,
    tenant: &str,
    scenario_id: &str,
) -> Result<Option<serde_json::Value>, SinkError> {
    MongoDb::new(cfg)?.get_scenario(tenant, scenario_id)
}

/// Stores the config of (tenant, scenario) in `scenarios`.
pub fn put_scenario(
    cfg: &MongoConfig,
    tenant: &str,
    scenario_id: &str,
    config: &serde_json::Value,
) -> Result<(), SinkError> {
    MongoDb::new(cfg)?.put_scenario(tenant, scenario_id, config)
}

/// Writes `Output::Profile` records as versioned upserts into `user_profiles`; ignores the rest.
///
/// Every `write` is one `update` request (split only past `max_statements`)
/// and is durable when it returns, so `flush` has nothing to do. Replays and
/// out-of-order windows never regress a stored profile.
pub struct MongoSink {
    cfg: MongoConfig,
    /// Rebuilt after a connection-level failure, so a wedged pool cannot outlive a server restart.
    client: Option<Client>,
    retries: u64,
    errors: u64,
    applied: u64,
    stale: u64,
}

impl MongoSink {
    /// A sink for `cfg`; connects lazily, so this fails only on a malformed URL.
    pub fn new(cfg: MongoConfig) -> Result<Self, SinkError> {
        let client = Some(connect(&cfg)?);
        Ok(MongoSink { cfg, client, retries: 0, errors: 0, applied: 0, stale: 0 })
    }

    /// Attempts repeated after a transient failure.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Writes that failed for good (returned an error).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Profile statements that inserted or updated a document.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Profile statements skipped because a newer-or-equal version was stored.
    pub fn stale(&self) -> u64 {
        self.stale
    }

    /// One request with the backoff; drops the client after transient failures.
    fn send(&mut self, chunk: &[Document]) -> Result<Outcome, Failure> {
        let policy = self.cfg.retry_policy();
        let mut attempt = 0u32;
        retry_if(
            &policy,
            || {
                attempt += 1;
                if attempt > 1 {
                    self.retries += 1;
                }
                let client = match &self.client {
                    Some(c) => c.clone(),
                    None => {
                        let c = connect(&self.cfg)?;
                        self.client = Some(c.clone());
                        c
                    }
                };
                let r = upsert_chunk(&client.database(&self.cfg.database), PROFILES, chunk);
                if matches!(&r, Err(f) if f.retryable) {
                    self.client = None;
                }
                r
            },
            |f| f.retryable,
        )
    }

    fn write_profiles(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        let latest = latest_profiles(batch);
        if latest.is_empty() {
            return Ok(());
        }
        let stmts = latest.iter().map(|d| profile_statement(d)).collect::<Result<Vec<_>, _>>()?;
        for chunk in chunks(&stmts, self.cfg.max_statements) {
            let o = self.send(chunk)?;
            self.applied += o.applied;
            self.stale += o.stale;
        }
        Ok(())
    }
}

impl Sink for MongoSink {
    fn retries(&self) -> u64 {
        MongoSink::retries(self)
    }

    fn name(&self) -> &'static str {
        SINK
    }

    fn write(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        let r = self.write_profiles(batch);
        if r.is_err() {
            self.errors += 1;
        }
        r
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        // `write` returns only after the server acknowledged the batch.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use recflow_schemas::Str;

    use super::*;

    fn profile(user: &str, window: i64) -> ProfileDoc {
        ProfileDoc {
            tenant_id: Str::new("t1"),
            user_id: Str::new(user),
            scenario_id: Str::new("s1"),
            counts: Default::default(),
            watch_count: 2,
            watch_seconds: 1.5,
            category_counts: [(Str::new("music"), 3)].into_iter().collect(),
            favorite_categories: vec![Str::new("music")],
            active_hours: [0; 24],
            first_seen: 1,
            last_active_at: 2,
            recent_items: vec![Str::new("i1")],
            updated_window: window,
        }
    }

    #[test]
    fn config_defaults_and_strictness() {
        let c: MongoConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, MongoConfig::default());
        assert_eq!(c.url, "mongodb://127.0.0.1:27017");
        assert_eq!(c.database, "recflow");
        assert_eq!(c.retry_policy(), RetryPolicy::default());
        let c: MongoConfig = serde_json::from_str(r#"{"database":"x","retry_max_attempts":0}"#).unwrap();
        assert_eq!(c.database, "x");
        assert_eq!(c.retry_policy().max_attempts, 1, "at least one attempt");
        assert!(serde_json::from_str::<MongoConfig>(r#"{"uri":"x"}"#).is_err());
    }

    #[test]
    fn profile_statement_is_versioned_upsert_of_whole_doc() {
        let p = profile("u1", 600_000);
        let s = profile_statement(&p).unwrap();
        let id = r#"["t1","u1","s1"]"#;
        assert_eq!(s.get_document("q").unwrap(), &doc! { "_id": id, "updated_window": { "$lt": 600_000i64 } });
        assert!(s.get_bool("upsert").unwrap());
        let set = s.get_document("u").unwrap();
        assert_eq!(set.len(), 15, "a replacement by _id plus the whole document");
        assert_eq!(set.get_str("_id").unwrap(), id);
        assert_eq!(set.get_i64("updated_window").unwrap(), 600_000);
        assert_eq!(set.get_i64("watch_count").unwrap(), 2);
        assert_eq!(set.get_f64("watch_seconds").unwrap(), 1.5);
        assert_eq!(set.get_document("counts").unwrap().len(), 12);
        // Round trip through BSON is lossless.
        let back: ProfileDoc = bson::from_document(set.clone()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn item_statement_keys_on_tenant_and_item() {
        let it = Item {
            tenant_id: Str::new("t1"),
            scenario_id: None,
            item_id: Str::new("i9"),
            category: Some(Str::new("news")),
            tags: vec!["a".into()],
            publish_time: Some(5),
            status: None,
        };
        let s = item_statement(&it).unwrap();
        assert_eq!(s.get_document("q").unwrap(), &doc! { "_id": r#"["t1","i9"]"# });
        let set = s.get_document("u").unwrap();
        assert_eq!(set.get("scenario_id"), Some(&Bson::Null), "absent fields are cleared");
        assert_eq!(bson::from_document::<Item>(set.clone()).unwrap(), it);
    }

    #[test]
    fn natural_ids_are_unambiguous() {
        assert_eq!(natural_id(&["a:b", "c"]), r#"["a:b","c"]"#);
        assert_ne!(natural_id(&["a", "b,c"]), natural_id(&["a,b", "c"]));
        assert_ne!(natural_id(&["a\"", "b"]), natural_id(&["a", "\"b"]));
    }

    #[test]
    fn latest_profiles_keeps_highest_version_per_key() {
        let o = |u: &str, w: i64| Output::Profile(Arc::new(profile(u, w)));
        let mut tie = profile("a", 200);
        tie.watch_count = 99;
        let batch = vec![
            o("a", 100),
            o("b", 300),
            Output::Metrics(recflow_schemas::MetricsWindow {
                tenant_id: Str::new("t1"),
                scenario_id: Str::new("s1"),
                window_start: 0,
                rows: vec![],
            }),
            o("a", 200),
            o("b", 100), // out of order: must not replace 300
            Output::Profile(Arc::new(tie)),
        ];
        let got: Vec<(&str, i64, u64)> =
            latest_profiles(&batch).iter().map(|d| (d.user_id.as_str(), d.updated_window, d.watch_count)).collect();
        assert_eq!(got, vec![("a", 200, 99), ("b", 300, 2)], "first-seen key order, ties go to the later doc");
    }

    #[test]
    fn reply_parsing() {
        let r = parse_update_reply(&doc! { "ok": 1, "n": 3, "nModified": 1 }).unwrap();
        assert_eq!(r, UpdateReply { applied: 3, duplicates: vec![] });
        let r = parse_update_reply(&doc! {
            "ok": 1, "n": 1i64,
            "writeErrors": [ { "index": 0, "code": 11000, "errmsg": "dup" }, { "index": 2i64, "code": 11000 } ],
        })
        .unwrap();
        assert_eq!(r, UpdateReply { applied: 1, duplicates: vec![0, 2] });
        let f = parse_update_reply(
            &doc! { "ok": 1, "n": 0, "writeErrors": [ { "index": 1, "code": 2, "errmsg": "bad" } ] },
        )
        .unwrap_err();
        assert!(!f.retryable && f.message.contains("code 2: bad"), "{f}");
        let f = parse_update_reply(&doc! { "ok": 1, "n": 1, "writeConcernError": { "code": 64 } }).unwrap_err();
        assert!(f.retryable);
    }

    #[test]
    fn chunking_by_count() {
        let stmts: Vec<Document> = (0..5).map(|i| doc! { "i": i }).collect();
        let sizes: Vec<usize> = chunks(&stmts, 2).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(chunks(&stmts, 0).len(), 5, "at least one statement per request");
        assert!(chunks(&[], 10).is_empty());
    }

    #[test]
    fn transient_classification() {
        let io = MongoError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&io));
        let bad = MongoError::custom("nope");
        assert!(!is_transient(&bad));
    }
}
