-- Hourly experiment metrics per (tenant, scenario, experiment, variant).
-- Legacy dialect (ClickHouse < 22.3). SummingMergeTree merges lazily: read with sum() GROUP BY
-- (queries.sql), never the raw rows. Fed by the materialized view
-- metrics_hourly_mv on every insert into user_behaviors; a separate target
-- table (TO) so the view can be dropped/recreated without losing data.
CREATE TABLE IF NOT EXISTS {db}.metrics_hourly
(
    tenant_id             String,
    scenario_id           String,
    experiment_id         String,
    variant               String,
    hour                  DateTime('UTC'),
    impressions           UInt64,
    clicks                UInt64,
    views                 UInt64,
    likes                 UInt64,
    shares                UInt64,
    comments              UInt64,
    add_carts             UInt64,
    orders                UInt64,
    payments              UInt64,
    watch_duration_sum    Float64,
    watch_duration_count  UInt64,
    completion_rate_sum   Float64,
    completion_rate_count UInt64,
    gmv                   Float64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, scenario_id, experiment_id, variant, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.metrics_hourly_mv TO {db}.metrics_hourly AS
SELECT
    tenant_id,
    scenario_id,
    experiment_id,
    variant,
    toStartOfHour(event_time) AS hour,
    countIf(action_type = 'impression') AS impressions,
    countIf(action_type = 'click') AS clicks,
    countIf(action_type IN ('view', 'play')) AS views,
    countIf(action_type = 'like') AS likes,
    countIf(action_type = 'share') AS shares,
    countIf(action_type = 'comment') AS comments,
    countIf(action_type = 'add_cart') AS add_carts,
    countIf(action_type = 'order') AS orders,
    countIf(action_type = 'payment') AS payments,
    sum(ifNull(watch_duration, 0)) AS watch_duration_sum,
    count(watch_duration) AS watch_duration_count,
    sum(ifNull(completion_rate, 0)) AS completion_rate_sum,
    count(completion_rate) AS completion_rate_count,
    sumIf(ifNull(amount, 0), action_type = 'payment') AS gmv
FROM {db}.user_behaviors
GROUP BY tenant_id, scenario_id, experiment_id, variant, hour;
