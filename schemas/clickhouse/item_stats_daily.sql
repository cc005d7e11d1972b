-- Daily counts per action of each item, per (tenant, scenario). Modern dialect.
-- SummingMergeTree merges lazily: read with sum() GROUP BY (queries.sql).
CREATE TABLE IF NOT EXISTS {db}.item_stats_daily
(
    tenant_id   LowCardinality(String),
    scenario_id LowCardinality(String),
    item_id     String,
    day         Date,
    impressions UInt64,
    clicks      UInt64,
    views       UInt64,
    plays       UInt64,
    reads       UInt64,
    learns      UInt64,
    likes       UInt64,
    shares      UInt64,
    comments    UInt64,
    add_carts   UInt64,
    orders      UInt64,
    payments    UInt64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, scenario_id, item_id, day)
TTL day + INTERVAL 800 DAY
-- The window lets a retried insert's view block be dropped too: the sink sends
-- insert_deduplication_token + deduplicate_blocks_in_dependent_materialized_views,
-- so view blocks carry tokens derived from it (other writers should send tokens
-- too, else two identical aggregate blocks would be taken for a retry).
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.item_stats_daily_mv TO {db}.item_stats_daily AS
SELECT
    tenant_id,
    scenario_id,
    item_id,
    toDate(toDateTime(event_time, 'UTC'), 'UTC') AS day,
    countIf(action_type = 'impression') AS impressions,
    countIf(action_type = 'click') AS clicks,
    countIf(action_type = 'view') AS views,
    countIf(action_type = 'play') AS plays,
    countIf(action_type = 'read') AS reads,
    countIf(action_type = 'learn') AS learns,
    countIf(action_type = 'like') AS likes,
    countIf(action_type = 'share') AS shares,
    countIf(action_type = 'comment') AS comments,
    countIf(action_type = 'add_cart') AS add_carts,
    countIf(action_type = 'order') AS orders,
    countIf(action_type = 'payment') AS payments
FROM {db}.user_behaviors
GROUP BY tenant_id, scenario_id, item_id, day;
