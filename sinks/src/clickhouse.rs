//! The ClickHouse job: every valid event into `user_behaviors`, whose
//! materialized views fill `metrics_hourly` and `item_stats_daily`.
//!
//! Rows go as RowBinary over HTTP through the `clickhouse` crate with schema
//! validation off, because its validating format (RowBinaryWithNamesAndTypes)
//! and the settings it sends do not exist on old servers (18.16 here).
//! The crate is async; the sink owns a current-thread tokio runtime and
//! blocks on it inside `write`/`flush`, so callers stay synchronous and a slow
//! server slows the caller down (backpressure) instead of queueing work.
//!
//! Buffering is bounded: the open batch (at most `batch_rows` rows) plus the
//! rows whose insert failed ("held": normally nothing, at most one batch plus
//! the rest of the one `write` call during which the server went away). While
//! rows are held, `write` first retries them and refuses new rows (returns
//! `Err` having accepted nothing) until they are in; nothing is ever dropped.
//!
//! Exactly once across restarts: rows carry their Kafka (topic, partition,
//! offset). Before inserting the first rows of a partition (since the sink
//! was created, after a rewind, or after an insert whose outcome is unknown),
//! the sink asks which offsets from there on the table already holds and
//! drops those rows ([`crate::replay`]); this works on both dialects. Rows
//! without a Kafka position (file input) are inserted as they come.

use std::cell::Cell;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use recflow_schemas::{Event, KafkaPos, Output, SourcePos, Str};
use serde::{Deserialize, Serialize};

use crate::replay::{PartitionKey, PartitionTracker, StoredOffsets};
use crate::{retry_if, BatchConfig, Batcher, RawRow, RetryConfig, RetryPolicy, Sink, SinkError};

/// Modern `user_behaviors` DDL (DateTime64, TTL, LowCardinality, insert dedup).
pub const USER_BEHAVIORS_SQL: &str = include_str!("../../schemas/clickhouse/user_behaviors.sql");
/// Modern `metrics_hourly` table + view DDL.
pub const METRICS_HOURLY_SQL: &str = include_str!("../../schemas/clickhouse/metrics_hourly.sql");
/// Modern `item_stats_daily` table + view DDL.
pub const ITEM_STATS_DAILY_SQL: &str = include_str!("../../schemas/clickhouse/item_stats_daily.sql");
/// Legacy `user_behaviors` DDL (DateTime + `event_time_ms`, no TTL).
pub const LEGACY_USER_BEHAVIORS_SQL: &str = include_str!("../../schemas/clickhouse/legacy/user_behaviors.sql");
/// Legacy `metrics_hourly` table + view DDL.
pub const LEGACY_METRICS_HOURLY_SQL: &str = include_str!("../../schemas/clickhouse/legacy/metrics_hourly.sql");
/// Legacy `item_stats_daily` table + view DDL.
pub const LEGACY_ITEM_STATS_DAILY_SQL: &str = include_str!("../../schemas/clickhouse/legacy/item_stats_daily.sql");

/// Hourly metrics of one tenant in `[from, to)` (epoch seconds); binds tenant, from, to.
pub const METRICS_HOURLY_QUERY: &str = "SELECT tenant_id, scenario_id, experiment_id, variant, hour,
    sum(impressions) AS impressions, sum(clicks) AS clicks, sum(views) AS views,
    sum(likes) AS likes, sum(shares) AS shares, sum(comments) AS comments,
    sum(add_carts) AS add_carts, sum(orders) AS orders, sum(payments) AS payments,
    sum(watch_duration_sum) AS watch_duration_sum, sum(watch_duration_count) AS watch_duration_count,
    sum(completion_rate_sum) AS completion_rate_sum, sum(completion_rate_count) AS completion_rate_count,
    sum(gmv) AS gmv
FROM {db}.metrics_hourly
WHERE tenant_id = ? AND hour >= toDateTime(?, 'UTC') AND hour < toDateTime(?, 'UTC')
GROUP BY tenant_id, scenario_id, experiment_id, variant, hour
ORDER BY tenant_id, scenario_id, experiment_id, variant, hour";

/// Daily item counts of one tenant in `[from, to)` (`'YYYY-MM-DD'`); binds tenant, from, to.
pub const ITEM_STATS_DAILY_QUERY: &str = "SELECT tenant_id, scenario_id, item_id, day,
    sum(impressions) AS impressions, sum(clicks) AS clicks, sum(views) AS views,
    sum(plays) AS plays, sum(reads) AS reads, sum(learns) AS learns,
    sum(likes) AS likes, sum(shares) AS shares, sum(comments) AS comments,
    sum(add_carts) AS add_carts, sum(orders) AS orders, sum(payments) AS payments
FROM {db}.item_stats_daily
WHERE tenant_id = ? AND day >= toDate(?) AND day < toDate(?)
GROUP BY tenant_id, scenario_id, item_id, day
ORDER BY tenant_id, scenario_id, item_id, day";

/// Exact event count of one tenant, replays collapsed even before merges; binds tenant.
pub const USER_BEHAVIORS_COUNT_QUERY: &str = "SELECT uniqExact(event_id) FROM {db}.user_behaviors WHERE tenant_id = ?";

/// Table the sink inserts into.
pub const TABLE: &str = "user_behaviors";

/// The offsets of one partition already stored from a point on; binds tenant, topic, partition, from.
/// `tenant_id` (every row of a tenant's topic has it) lets the primary key and partitions prune.
pub const STORED_OFFSETS_QUERY: &str = "SELECT source_offset FROM user_behaviors \
    WHERE tenant_id = ? AND source_topic = ? AND source_partition = ? AND source_offset >= ?";

/// Connection, batching and retry settings of the ClickHouse sink (`[clickhouse]` in config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP endpoint of the server.
    pub url: String,
    /// Database holding the tables; created by [`init`].
    pub database: String,
    /// User name (ClickHouse's `default` when empty).
    pub user: String,
    /// Password (none when empty).
    pub password: String,
    /// Rows that make a batch due.
    pub batch_rows: usize,
    /// Age in seconds of a batch's first row that makes it due.
    pub batch_max_age_secs: f64,
    /// Backoff between attempts of one insert.
    pub retry: RetryConfig,
}

impl Default for ClickHouseConfig {
    /// Local server, database `recflow`, 1000 rows / 5 s, default retry.
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "recflow".into(),
            user: String::new(),
            password: String::new(),
            batch_rows: 1000,
            batch_max_age_secs: 5.0,
            retry: RetryConfig::default(),
        }
    }
}

impl ClickHouseConfig {
    /// The batching these settings describe.
    pub fn batch(&self) -> BatchConfig {
        BatchConfig {
            max_rows: self.batch_rows.max(1),
            // try_from: a negative/NaN/huge value in a config must not panic.
            max_age: Duration::try_from_secs_f64(self.batch_max_age_secs).unwrap_or(Duration::ZERO),
        }
    }

    /// A client for this server; `database` unset so it can also create it.
    pub fn client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default().with_url(&self.url).with_validation(false);
        if !self.user.is_empty() {
            c = c.with_user(&self.user);
        }
        if !self.password.is_empty() {
            c = c.with_password(&self.password);
        }
        c
    }
}

/// Which DDL and row layout a server gets, from its `version()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerDialect {
    /// ClickHouse >= 22.3: DateTime64(3), TTL, LowCardinality, insert_deduplication_token.
    Modern,
    /// Older servers (Debian's 18.16): DateTime seconds + `event_time_ms`, none of the above.
    Legacy,
}

impl ServerDialect {
    /// First version with everything the modern DDL and inserts use (token dedup came in 22.2).
    pub const MODERN_SINCE: (u32, u32) = (22, 3);

    /// The dialect for a `SELECT version()` answer such as `18.16.1` or `24.8.4.13`; unparsable is legacy.
    pub fn from_version(version: &str) -> Self {
        let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) if (major, minor) >= Self::MODERN_SINCE => ServerDialect::Modern,
            _ => ServerDialect::Legacy,
        }
    }

    /// The DDL statements for database `db`, in creation order (tables before their views).
    pub fn ddl(self, db: &str) -> Vec<String> {
        let files = match self {
            ServerDialect::Modern => [USER_BEHAVIORS_SQL, METRICS_HOURLY_SQL, ITEM_STATS_DAILY_SQL],
            ServerDialect::Legacy => {
                [LEGACY_USER_BEHAVIORS_SQL, LEGACY_METRICS_HOURLY_SQL, LEGACY_ITEM_STATS_DAILY_SQL]
            }
        };
        let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(db))];
        for f in files {
            out.extend(split_statements(f).into_iter().map(|s| with_db(&s, db)));
        }
        out
    }
}

/// `query` with `{db}` replaced by the quoted database name.
pub fn with_db(query: &str, db: &str) -> String {
    query.replace("{db}", &quote_ident(db))
}

/// Backquoted identifier: a database name from config cannot inject SQL.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// Statements of a `.sql` file: `--` comment lines dropped, split at `;`.
///
/// Why so simple: our DDL files have no `;` or `--` inside literals.
pub fn split_statements(sql: &str) -> Vec<String> {
    let code: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    code.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

fn backend(message: impl std::fmt::Display) -> SinkError {
    SinkError::Backend { sink: "clickhouse", message: message.to_string() }
}

fn runtime() -> Result<tokio::runtime::Runtime, SinkError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SinkError::Io)
}

/// The server's version string.
fn server_version(
    rt: &tokio::runtime::Runtime,
    client: &clickhouse::Client,
) -> Result<String, clickhouse::error::Error> {
    rt.block_on(client.query("SELECT version()").fetch_one::<String>())
}

/// Creates the database, tables and views for the server's dialect; safe to run again.
pub fn init(cfg: &ClickHouseConfig) -> Result<ServerDialect, SinkError> {
    let rt = runtime()?;
    let client = cfg.client();
    let policy = cfg.retry.policy();
    let dialect = ServerDialect::from_version(
        &retry_if(&policy, || server_version(&rt, &client), is_retryable).map_err(backend)?,
    );
    for stmt in dialect.ddl(&cfg.database) {
        // query_raw: DDL text is sent verbatim (no `?` binding).
        retry_if(&policy, || rt.block_on(client.query_raw(&stmt).execute()), is_retryable)
            .map_err(|e| backend(format!("{e}; statement: {stmt}")))?;
    }
    tracing::info!(database = %cfg.database, ?dialect, "clickhouse schema ready");
    Ok(dialect)
}

/// Server error codes that a retry cannot fix (bad schema, auth, syntax): fail fast, keep the rows.
const PERMANENT_CODES: [u32; 12] = [16, 27, 33, 53, 60, 62, 81, 115, 192, 193, 497, 516];

/// True for errors worth retrying: network trouble, timeouts and server errors not in [`PERMANENT_CODES`].
pub fn is_retryable(e: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => true,
        E::BadResponse(msg) => server_code(msg).is_none_or(|c| !PERMANENT_CODES.contains(&c)),
        // Serialization and schema errors fail the same way every time.
        _ => false,
    }
}

/// The `Code: N` of a ClickHouse error message.
fn server_code(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("Code: ")? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Where a row came from, stored in `source_topic/partition/offset` for offset-based dedup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowSource {
    /// Kafka topic; `""` for files.
    pub topic: Str,
    /// Kafka partition; 0 for files.
    pub partition: i32,
    /// Kafka offset, or the 1-based file line; 0 when unknown.
    pub offset: i64,
}

impl From<&SourcePos> for RowSource {
    fn from(p: &SourcePos) -> Self {
        match p {
            SourcePos::File { line, .. } => RowSource { topic: Str::default(), partition: 0, offset: *line as i64 },
            SourcePos::Kafka { topic, partition, offset } => {
                RowSource { topic: Str::new(topic), partition: *partition, offset: *offset }
            }
        }
    }
}

impl From<&KafkaPos> for RowSource {
    fn from(p: &KafkaPos) -> Self {
        RowSource { topic: p.topic.clone(), partition: p.partition, offset: p.offset }
    }
}

/// RowBinary row of the modern table; field order = INSERT column order.
#[derive(clickhouse::Row, Serialize)]
struct ModernRow<'a> {
    event_id: &'a str,
    tenant_id: &'a str,
    scenario_id: &'a str,
    user_id: &'a str,
    item_id: &'a str,
    action_type: &'a str,
    /// DateTime64(3) is an Int64 of ms in RowBinary.
    event_time: i64,
    request_id: &'a str,
    experiment_id: &'a str,
    variant: &'a str,
    category: &'a str,
    context: &'a str,
    watch_duration: Option<f64>,
    completion_rate: Option<f64>,
    amount: Option<f64>,
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
}

/// RowBinary row of the legacy table; field order = INSERT column order.
#[derive(clickhouse::Row, Serialize)]
struct LegacyRow<'a> {
    event_id: &'a str,
    tenant_id: &'a str,
    scenario_id: &'a str,
    user_id: &'a str,
    item_id: &'a str,
    action_type: &'a str,
    /// DateTime is a UInt32 of seconds in RowBinary.
    event_time: u32,
    event_time_ms: u64,
    request_id: &'a str,
    experiment_id: &'a str,
    variant: &'a str,
    category: &'a str,
    context: &'a str,
    watch_duration: Option<f64>,
    completion_rate: Option<f64>,
    amount: Option<f64>,
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
}

impl<'a> ModernRow<'a> {
    fn new(r: RawRow<'a>, s: &'a RowSource) -> Self {
        ModernRow {
            event_id: r.event_id,
            tenant_id: r.tenant_id,
            scenario_id: r.scenario_id,
            user_id: r.user_id,
            item_id: r.item_id,
            action_type: r.action_type,
            event_time: r.event_time,
            request_id: r.request_id,
            experiment_id: r.experiment_id,
            variant: r.variant,
            category: r.category,
            context: r.context,
            watch_duration: r.watch_duration,
            completion_rate: r.completion_rate,
            amount: r.amount,
            source_topic: &s.topic,
            source_partition: s.partition,
            source_offset: s.offset,
        }
    }
}

impl<'a> LegacyRow<'a> {
    fn new(r: RawRow<'a>, s: &'a RowSource) -> Self {
        // Clamped: DateTime cannot hold times before 1970 or after 2106.
        let ms = r.event_time.max(0);
        LegacyRow {
            event_id: r.event_id,
            tenant_id: r.tenant_id,
            scenario_id: r.scenario_id,
            user_id: r.user_id,
            item_id: r.item_id,
            action_type: r.action_type,
            event_time: u32::try_from(ms / 1000).unwrap_or(u32::MAX),
            event_time_ms: ms as u64,
            request_id: r.request_id,
            experiment_id: r.experiment_id,
            variant: r.variant,
            category: r.category,
            context: r.context,
            watch_duration: r.watch_duration,
            completion_rate: r.completion_rate,
            amount: r.amount,
            source_topic: &s.topic,
            source_partition: s.partition,
            source_offset: s.offset,
        }
    }
}

/// Token that makes a retried batch a no-op on modern servers: same rows, same token.
pub fn dedup_token<'a>(rows: impl IntoIterator<Item = (&'a Event, &'a RowSource)>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (e, s) in rows {
        for part in [e.tenant_id.as_bytes(), e.event_id.as_bytes(), s.topic.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(&s.partition.to_le_bytes());
        h.update(&s.offset.to_le_bytes());
    }
    format!("recflow-{:032x}", h.digest128())
}

/// Running totals of a [`ClickHouseSink`], for logs and Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClickHouseStats {
    /// Rows acknowledged by the server.
    pub rows_inserted: u64,
    /// Inserts (batches) acknowledged by the server.
    pub batches_inserted: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Failed attempts in total (retried or not).
    pub errors: u64,
    /// Rows of the last acknowledged insert.
    pub last_batch_rows: usize,
    /// Wall time of the last acknowledged insert including its retries.
    pub last_batch_latency: Option<Duration>,
    /// Replayed rows dropped because the table already held their (topic, partition, offset).
    pub rows_skipped: u64,
    /// Stored-offset look-ups made (one per partition run, see [`crate::replay`]).
    pub offset_lookups: u64,
}

/// One buffered row: the event and where it came from.
#[derive(Clone, Debug)]
struct Pending {
    event: Box<Event>,
    source: RowSource,
    /// First row of a new run of its partition: earlier rows of that partition
    /// must be in the table before the stored offsets are looked up.
    run_start: bool,
}

impl Pending {
    fn new(event: Event, source: RowSource) -> Self {
        Pending { event: Box::new(event), source, run_start: false }
    }

    /// The Kafka partition of the row; `None` for file input.
    fn partition(&self) -> Option<PartitionKey> {
        (!self.source.topic.is_empty()).then(|| (self.source.topic.clone(), self.source.partition))
    }
}

/// Inserts every `Output::Raw` event into `user_behaviors` in batches of `batch_rows` rows or `batch_max_age_secs`.
///
/// The age is checked on every `write` (jobs send `write(&[])` as a tick);
/// `flush` inserts the partial batch. See the module docs for the bound on
/// buffered rows and what `Err` means.
pub struct ClickHouseSink {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
    dialect: ServerDialect,
    retry: RetryPolicy,
    batch: BatchConfig,
    pending: Batcher<Pending>,
    /// Rows of due batches not yet acknowledged, oldest first; empty unless the server failed.
    held: Vec<Pending>,
    /// What the table holds of each partition's replayed range.
    replay: PartitionTracker,
    stats: ClickHouseStats,
}

impl std::fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("dialect", &self.dialect)
            .field("pending", &self.pending.len())
            .field("held", &self.held.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl ClickHouseSink {
    /// Runs [`init`] and returns a sink for the detected dialect.
    pub fn connect(cfg: &ClickHouseConfig) -> Result<Self, SinkError> {
        let dialect = init(cfg)?;
        Self::new(cfg, dialect)
    }

    /// A sink for a schema already created by [`init`] with the dialect it returned.
    pub fn new(cfg: &ClickHouseConfig, dialect: ServerDialect) -> Result<Self, SinkError> {
        let batch = cfg.batch();
        let mut client = cfg.client().with_database(&cfg.database);
        if dialect == ServerDialect::Modern {
            // Views dedupe a retried block too, not only user_behaviors.
            client = client.with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
        }
        Ok(ClickHouseSink {
            rt: runtime()?,
            client,
            dialect,
            retry: cfg.retry.policy(),
            batch,
            pending: Batcher::new(batch),
            held: Vec::new(),
            replay: PartitionTracker::default(),
            stats: ClickHouseStats::default(),
        })
    }

    /// The dialect rows are written in.
    pub fn dialect(&self) -> ServerDialect {
        self.dialect
    }

    /// All counters.
    pub fn stats(&self) -> ClickHouseStats {
        self.stats
    }

    /// Rows acknowledged by the server.
    pub fn rows_inserted(&self) -> u64 {
        self.stats.rows_inserted
    }

    /// Failed attempts that were retried.
    pub fn retries(&self) -> u64 {
        self.stats.retries
    }

    /// Failed attempts in total.
    pub fn errors(&self) -> u64 {
        self.stats.errors
    }

    /// Wall time of the last acknowledged insert, retries included.
    pub fn last_batch_latency(&self) -> Option<Duration> {
        self.stats.last_batch_latency
    }

    /// Rows accepted but not yet acknowledged (open batch + held).
    pub fn buffered_rows(&self) -> usize {
        self.pending.len() + self.held.len()
    }

    /// Like [`Sink::write`] for events with their source position (`None`: `""`/0/0).
    pub fn write_events<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a Event, Option<&'a SourcePos>)>,
    ) -> Result<(), SinkError> {
        self.accept(rows.into_iter().map(|(e, p)| Pending::new(e.clone(), p.map(RowSource::from).unwrap_or_default())))
    }

    fn accept(&mut self, rows: impl Iterator<Item = Pending>) -> Result<(), SinkError> {
        // Rows held from a failed insert go first; until they are in, take nothing new.
        self.insert_held()?;
        let mut failure = None;
        for mut row in rows {
            if let Some(key) = row.partition() {
                row.run_start = self.replay.accept(&key, row.source.offset);
            }
            if failure.is_some() {
                // The server is down mid-call: keep the rest of this call, in order.
                self.held.push(row);
                continue;
            }
            if self.pending.push(row) && self.pending.len() >= self.batch.max_rows {
                self.held.extend(self.pending.take());
                failure = self.insert_held().err();
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if self.pending.is_due() {
            self.held.extend(self.pending.take());
            self.insert_held()?;
        }
        Ok(())
    }

    /// Inserts the held rows in batches of at most `batch_rows`, oldest first.
    fn insert_held(&mut self) -> Result<(), SinkError> {
        while !self.held.is_empty() {
            let n = batch_len(&self.held, self.batch.max_rows);
            self.insert_batch(n)?;
            self.held.drain(..n);
        }
        Ok(())
    }

    /// Inserts `held[..n]` less the rows the table already holds as one INSERT, retrying with backoff.
    fn insert_batch(&mut self, n: usize) -> Result<(), SinkError> {
        let rows = &self.held[..n];
        let started = Instant::now();
        // Cells: retry_if's predicate is `Fn`, and both closures count.
        let (errors, retries) = (Cell::new(0u64), Cell::new(0u64));
        let (skipped, lookups) = (Cell::new(0u64), Cell::new(0u64));
        let (rt, client, dialect, replay) = (&self.rt, &self.client, self.dialect, &mut self.replay);
        let result = retry_if(
            &self.retry,
            || {
                let r = rt.block_on(async {
                    lookups.set(lookups.get() + lookup_stored(client, replay, rows).await?);
                    let fresh = not_stored(replay, rows);
                    skipped.set((rows.len() - fresh.len()) as u64);
                    if fresh.is_empty() {
                        return Ok(());
                    }
                    let token = (dialect == ServerDialect::Modern)
                        .then(|| dedup_token(fresh.iter().map(|p| (&*p.event, &p.source))));
                    insert_rows(client, dialect, &fresh, token.as_deref()).await
                });
                if r.is_err() {
                    errors.set(errors.get() + 1);
                    // The insert may have landed (a timeout): ask the table again before the retry.
                    rows.iter().filter_map(Pending::partition).for_each(|k| replay.forget(&k));
                }
                r
            },
            |e| {
                let again = is_retryable(e);
                retries.set(retries.get() + u64::from(again));
                again
            },
        );
        let stats = &mut self.stats;
        stats.errors += errors.get();
        stats.retries += retries.get();
        stats.offset_lookups += lookups.get();
        match result {
            Ok(()) => {
                stats.rows_skipped += skipped.get();
                if skipped.get() > 0 {
                    tracing::info!(rows = skipped.get(), "clickhouse: replayed rows already stored, skipped");
                }
                stats.rows_inserted += n as u64 - skipped.get();
                stats.batches_inserted += 1;
                stats.last_batch_rows = n;
                stats.last_batch_latency = Some(started.elapsed());
                Ok(())
            }
            Err(e) => {
                tracing::error!(rows = n, error = %e, "clickhouse insert failed; rows kept for the next write/flush");
                Err(backend(e))
            }
        }
    }
}

/// Rows of `held` for the next INSERT: at most `max`, and cut before a row
/// starting a new run of a partition that already has rows in the batch, so
/// those are in the table before its stored offsets are looked up.
fn batch_len(held: &[Pending], max: usize) -> usize {
    let n = held.len().min(max.max(1));
    let mut in_batch: HashSet<PartitionKey> = HashSet::new();
    for (i, p) in held[..n].iter().enumerate() {
        let Some(key) = p.partition() else { continue };
        if p.run_start && in_batch.contains(&key) {
            return i;
        }
        in_batch.insert(key);
    }
    n
}

/// Looks up the stored offsets from every row that starts a run of its
/// partition, and from the first row of a partition a failed insert left
/// unknown ([`batch_len`] makes either the partition's first row in `rows`);
/// returns how many look-ups it made.
async fn lookup_stored(
    client: &clickhouse::Client,
    replay: &mut PartitionTracker,
    rows: &[Pending],
) -> clickhouse::error::Result<u64> {
    let mut n = 0;
    for p in rows {
        let Some(key) = p.partition() else { continue };
        if p.run_start || replay.needs_lookup(&key) {
            let stored = stored_offsets(client, &p.event.tenant_id, &key, p.source.offset).await?;
            tracing::debug!(topic = %key.0, partition = key.1, from = p.source.offset, stored = stored.len(), "clickhouse: stored offsets");
            replay.set_stored(&key, stored);
            n += 1;
        }
    }
    Ok(n)
}

/// The offsets of `key` at or above `from` that `user_behaviors` holds, streamed into a compact set.
async fn stored_offsets(
    client: &clickhouse::Client,
    tenant: &str,
    key: &PartitionKey,
    from: i64,
) -> clickhouse::error::Result<StoredOffsets> {
    let mut cursor =
        client.query(STORED_OFFSETS_QUERY).bind(tenant).bind(key.0.as_str()).bind(key.1).bind(from).fetch::<i64>()?;
    let mut set = StoredOffsets::starting_at(from);
    while let Some(offset) = cursor.next().await? {
        set.insert(offset);
    }
    set.seal();
    Ok(set)
}

/// The rows of `rows` whose (topic, partition, offset) the table does not hold yet.
fn not_stored<'r>(replay: &mut PartitionTracker, rows: &'r [Pending]) -> Vec<&'r Pending> {
    rows.iter()
        .filter(|p| match p.partition() {
            Some(key) => !replay.is_stored(&key, p.source.offset),
            None => true,
        })
        .collect()
}

/// One INSERT of `rows` in the dialect's row layout.
async fn insert_rows(
    client: &clickhouse::Client,
    dialect: ServerDialect,
    rows: &[&Pending],
    token: Option<&str>,
) -> clickhouse::error::Result<()> {
    match dialect {
        ServerDialect::Modern => {
            let mut ins = client.insert::<ModernRow<'static>>(TABLE).await?;
            if let Some(t) = token {
                ins = ins.with_setting("insert_deduplication_token", t);
            }
            for p in rows {
                ins.write(&ModernRow::new(RawRow::from(&*p.event), &p.source)).await?;
            }
            ins.end().await
        }
        ServerDialect::Legacy => {
            let mut ins = client.insert::<LegacyRow<'static>>(TABLE).await?;
            for p in rows {
                ins.write(&LegacyRow::new(RawRow::from(&*p.event), &p.source)).await?;
            }
            ins.end().await
        }
    }
}

impl Sink for ClickHouseSink {
    fn retries(&self) -> u64 {
        ClickHouseSink::retries(self)
    }

    fn name(&self) -> &'static str {
        "clickhouse"
    }

    /// Buffers the raw events; inserts each batch when due. `Err`: see the module docs.
    fn write(&mut self, batch: &[Output]) -> Result<(), SinkError> {
        self.accept(batch.iter().filter_map(|o| match o {
            Output::Raw(e) => {
                Some(Pending::new(e.event.clone(), e.source.as_ref().map(RowSource::from).unwrap_or_default()))
            }
            _ => None,
        }))
    }

    /// Inserts the open batch (and anything held); `Ok` means the server acknowledged every row.
    fn flush(&mut self) -> Result<(), SinkError> {
        if !self.pending.is_empty() {
            self.held.extend(self.pending.take());
        }
        self.insert_held()
    }
}

#[cfg(test)]
mod tests {
    use recflow_schemas::Action;

    use super::*;

    #[test]
    fn dialect_from_version() {
        assert_eq!(ServerDialect::from_version("18.16.1"), ServerDialect::Legacy);
        assert_eq!(ServerDialect::from_version("22.2.3.5"), ServerDialect::Legacy);
        assert_eq!(ServerDialect::from_version("22.3.1"), ServerDialect::Modern);
        assert_eq!(ServerDialect::from_version("24.8.4.13\n"), ServerDialect::Modern);
        assert_eq!(ServerDialect::from_version("garbage"), ServerDialect::Legacy);
    }

    #[test]
    fn ddl_statements() {
        for (d, n) in [(ServerDialect::Modern, 6), (ServerDialect::Legacy, 6)] {
            let ddl = d.ddl("rf`x");
            assert_eq!(ddl.len(), n, "{d:?}: database + 3 tables + 2 views");
            assert_eq!(ddl[0], "CREATE DATABASE IF NOT EXISTS `rf\\`x`");
            assert!(ddl.iter().all(|s| s.contains("IF NOT EXISTS") && !s.contains("{db}") && !s.contains("--")));
            assert!(ddl[1].contains("`rf\\`x`.user_behaviors"));
        }
        let modern = ServerDialect::Modern.ddl("db").join("\n");
        assert!(modern.contains("DateTime64(3, 'UTC')") && modern.contains("TTL "));
        let legacy = ServerDialect::Legacy.ddl("db").join("\n");
        for absent in ["DateTime64", "TTL", "LowCardinality", "deduplication"] {
            assert!(!legacy.contains(absent), "legacy DDL must not use {absent}");
        }
        assert!(legacy.contains("event_time_ms    UInt64"));
    }

    #[test]
    fn queries_match_queries_sql() {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let file: Vec<String> =
            split_statements(include_str!("../../schemas/clickhouse/queries.sql")).iter().map(|s| norm(s)).collect();
        for q in [METRICS_HOURLY_QUERY, ITEM_STATS_DAILY_QUERY, USER_BEHAVIORS_COUNT_QUERY] {
            assert!(file.contains(&norm(q)), "queries.sql lacks: {q}");
        }
    }

    #[test]
    fn config_defaults_and_serde() {
        let c = ClickHouseConfig::default();
        assert_eq!((c.url.as_str(), c.database.as_str(), c.batch_rows), ("http://127.0.0.1:8123", "recflow", 1000));
        assert_eq!(c.batch(), BatchConfig::default());
        assert_eq!(c.retry.policy(), RetryPolicy::default());
        let c: ClickHouseConfig = serde_json::from_str(r#"{"batch_rows":10,"retry":{"max_attempts":3}}"#).unwrap();
        assert_eq!((c.batch_rows, c.retry.max_attempts, c.retry.initial_backoff_ms), (10, 3, 100));
        assert!(serde_json::from_str::<ClickHouseConfig>(r#"{"batch_size":10}"#).is_err());
        let bad = ClickHouseConfig { batch_max_age_secs: -1.0, batch_rows: 0, ..Default::default() };
        assert_eq!(bad.batch(), BatchConfig { max_rows: 1, max_age: Duration::ZERO });
    }

    #[test]
    fn retryable_errors() {
        use clickhouse::error::Error as E;
        assert!(is_retryable(&E::TimedOut));
        assert!(is_retryable(&E::BadResponse("Code: 252, e.displayText() = Too many parts".into())));
        assert!(is_retryable(&E::BadResponse("502 Bad Gateway".into())));
        assert!(!is_retryable(&E::BadResponse("Code: 60, e.displayText() = DB::Exception: Table x".into())));
        assert!(!is_retryable(&E::NotEnoughData));
        assert_eq!(server_code("Code: 516. DB::Exception"), Some(516));
    }

    fn event(i: i64) -> Event {
        Event {
            event_id: format!("e{i}").into(),
            tenant_id: "t1".into(),
            scenario_id: "vlog".into(),
            user_id: "u".into(),
            item_id: "i".into(),
            action: Action::Play,
            ts: 1_767_520_800_123 + i,
            request_id: None,
            experiment_id: "none".into(),
            variant: "none".into(),
            category: None,
            context: None,
            watch_duration: Some(1.5),
            completion_rate: None,
            amount: None,
        }
    }

    #[test]
    fn rows_and_sources() {
        let e = event(0);
        let src = RowSource::from(&SourcePos::Kafka { topic: "user-behaviors-t1".into(), partition: 3, offset: 42 });
        let m = ModernRow::new(RawRow::from(&e), &src);
        assert_eq!(
            (m.event_time, m.source_topic, m.source_partition, m.source_offset),
            (1_767_520_800_123, "user-behaviors-t1", 3, 42)
        );
        assert_eq!((m.category, m.request_id, m.action_type), ("unknown", "", "play"));
        let file = RowSource::from(&SourcePos::File { path: "x.jsonl".into(), line: 7 });
        let l = LegacyRow::new(RawRow::from(&e), &file);
        assert_eq!(
            (l.event_time, l.event_time_ms, l.source_topic, l.source_offset),
            (1_767_520_800, 1_767_520_800_123, "", 7)
        );
        let mut neg = e.clone();
        neg.ts = -5;
        assert_eq!(LegacyRow::new(RawRow::from(&neg), &file).event_time, 0);
    }

    #[test]
    fn dedup_token_is_stable_and_content_sensitive() {
        let (a, b) = (event(1), event(2));
        let s = RowSource::default();
        let t1 = dedup_token([(&a, &s), (&b, &s)]);
        assert_eq!(t1, dedup_token([(&a, &s), (&b, &s)]));
        assert_ne!(t1, dedup_token([(&b, &s), (&a, &s)]));
        assert_ne!(t1, dedup_token([(&a, &s)]));
        assert!(t1.starts_with("recflow-") && t1.len() == 40);
    }

    #[test]
    fn a_batch_ends_before_a_rewind_of_a_partition_it_holds() {
        let row = |partition: i32, offset: i64, run_start: bool| Pending {
            run_start,
            ..Pending::new(event(offset), RowSource { topic: "user-behaviors-t1".into(), partition, offset })
        };
        let file = Pending::new(event(0), RowSource::default());
        // p0 starts, p1 starts (its own first run: no cut), p0 rewinds: cut before it.
        let held = vec![row(0, 10, true), row(0, 11, false), row(1, 5, true), file.clone(), row(0, 3, true)];
        assert_eq!(batch_len(&held, 100), 4);
        assert_eq!(batch_len(&held, 2), 2, "the size limit still applies");
        assert_eq!(batch_len(&held[4..], 100), 1, "a run start first in the batch is fine");
        assert_eq!(file.partition(), None, "file rows are not tracked");
    }

    /// A sink pointed at a closed port: inserts fail fast, so buffering rules can be checked offline.
    fn offline(batch_rows: usize) -> ClickHouseSink {
        let cfg = ClickHouseConfig {
            url: "http://127.0.0.1:9".into(),
            batch_rows,
            batch_max_age_secs: 3600.0,
            retry: RetryConfig { initial_backoff_ms: 1, backoff_factor: 1.0, max_backoff_ms: 1, max_attempts: 2 },
            ..Default::default()
        };
        ClickHouseSink::new(&cfg, ServerDialect::Legacy).unwrap()
    }

    #[test]
    fn server_down_keeps_rows_and_refuses_more() {
        let mut s = offline(3);
        let raws: Vec<Output> = (0..5).map(|i| Output::Raw(Box::new(event(i).into()))).collect();
        s.write(&raws[..2]).unwrap();
        assert_eq!(s.buffered_rows(), 2);
        // The third row fills the batch; the insert fails; rows 4-5 of the call are kept too.
        assert!(s.write(&raws).is_err());
        assert_eq!(s.buffered_rows(), 7);
        assert_eq!((s.errors(), s.retries(), s.rows_inserted()), (2, 1, 0));
        // Held rows block new ones: nothing of this call is accepted.
        assert!(s.write(&raws[..1]).is_err());
        assert_eq!(s.buffered_rows(), 7);
        assert!(s.flush().is_err());
        assert_eq!(s.buffered_rows(), 7);
        // Non-raw outputs are ignored.
        let mut s = offline(3);
        s.write(&[Output::Dead(Box::new(recflow_schemas::DeadLetter {
            reason: "late".into(),
            field: None,
            detail: String::new(),
            source: SourcePos::File { path: "-".into(), line: 1 },
            payload: String::new(),
        }))])
        .unwrap();
        assert_eq!(s.buffered_rows(), 0);
        s.flush().unwrap();
    }
}
