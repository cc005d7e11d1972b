-- Every valid event (late ones too), one row each. Modern dialect (ClickHouse >= 22.3).
-- `{db}` is replaced by the configured database when the sink runs init.
--
-- ReplacingMergeTree keyed by (tenant, scenario, event_time, event_id): a row
-- replayed after a crash has the same key, so merges collapse it; exact reads
-- use FINAL or uniqExact(event_id) until then. The materialized views below do
-- NOT see the collapse (they fire per insert), so replays are also stopped at
-- the source: the sink sends each batch with an insert_deduplication_token and
-- non_replicated_deduplication_window makes a retried block a no-op, views
-- included; source_topic/partition/offset are stored beside the data so a
-- restarted sink drops replayed rows the table already holds (sinks/src/replay.rs).
CREATE TABLE IF NOT EXISTS {db}.user_behaviors
(
    event_id         String,
    tenant_id        LowCardinality(String),
    scenario_id      LowCardinality(String),
    user_id          String,
    item_id          String,
    action_type      LowCardinality(String),
    event_time       DateTime64(3, 'UTC'),
    request_id       String,
    experiment_id    LowCardinality(String),
    variant          LowCardinality(String),
    category         LowCardinality(String),
    context          String,
    watch_duration   Nullable(Float64),
    completion_rate  Nullable(Float64),
    amount           Nullable(Float64),
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    inserted_at      DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY (tenant_id, toYYYYMM(event_time))
ORDER BY (tenant_id, scenario_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL 400 DAY
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000;
