-- Daily counts per action of each item, per (tenant, scenario). Legacy dialect (ClickHouse < 22.3).
-- SummingMergeTree merges lazily: read with sum() GROUP BY (queries.sql).
CREATE TABLE IF NOT EXISTS {db}.item_stats_daily
(
    tenant_id   String,
    scenario_id String,
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
ORDER BY (tenant_id, scenario_id, item_id, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.item_stats_daily_mv TO {db}.item_stats_daily AS
SELECT
    tenant_id,
    scenario_id,
    item_id,
    toDate(event_time, 'UTC') AS day,
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
