-- Every valid event (late ones too), one row each. Legacy dialect (ClickHouse < 22.3, e.g. 18.16).
-- `{db}` is replaced by the configured database when the sink runs init.
--
-- No DateTime64/TTL/LowCardinality here: event_time is whole seconds (what
-- partitions, orders and feeds the views) and event_time_ms keeps the exact
-- epoch milliseconds. ReplacingMergeTree keyed by (tenant, scenario,
-- event_time, event_id) collapses a replayed row on merge (read exact counts
-- with FINAL or uniqExact(event_id)); replays never reach the table or the
-- views: the sink drops rows whose source_topic/partition/offset it already
-- holds before inserting (sinks/src/replay.rs).
CREATE TABLE IF NOT EXISTS {db}.user_behaviors
(
    event_id         String,
    tenant_id        String,
    scenario_id      String,
    user_id          String,
    item_id          String,
    action_type      String,
    event_time       DateTime('UTC'),
    event_time_ms    UInt64,
    request_id       String,
    experiment_id    String,
    variant          String,
    category         String,
    context          String,
    watch_duration   Nullable(Float64),
    completion_rate  Nullable(Float64),
    amount           Nullable(Float64),
    source_topic     String,
    source_partition Int32,
    source_offset    Int64,
    inserted_at      DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree()
PARTITION BY (tenant_id, toYYYYMM(event_time))
ORDER BY (tenant_id, scenario_id, event_time, event_id)
SETTINGS index_granularity = 8192;
