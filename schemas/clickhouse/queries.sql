-- Canonical reads (both dialects). `{db}` is the database; `?` are bound by
-- the client in order. SummingMergeTree collapses rows only when parts merge,
-- so every read aggregates with sum() GROUP BY; reading rows as they are
-- would count one key several times. The Rust constants
-- recflow_sinks::clickhouse::{METRICS_HOURLY_QUERY, ITEM_STATS_DAILY_QUERY,
-- USER_BEHAVIORS_COUNT_QUERY} hold the same text.

-- metrics_hourly: one tenant, [from, to) as epoch seconds.
SELECT tenant_id, scenario_id, experiment_id, variant, hour,
    sum(impressions) AS impressions, sum(clicks) AS clicks, sum(views) AS views,
    sum(likes) AS likes, sum(shares) AS shares, sum(comments) AS comments,
    sum(add_carts) AS add_carts, sum(orders) AS orders, sum(payments) AS payments,
    sum(watch_duration_sum) AS watch_duration_sum, sum(watch_duration_count) AS watch_duration_count,
    sum(completion_rate_sum) AS completion_rate_sum, sum(completion_rate_count) AS completion_rate_count,
    sum(gmv) AS gmv
FROM {db}.metrics_hourly
WHERE tenant_id = ? AND hour >= toDateTime(?, 'UTC') AND hour < toDateTime(?, 'UTC')
GROUP BY tenant_id, scenario_id, experiment_id, variant, hour
ORDER BY tenant_id, scenario_id, experiment_id, variant, hour;

-- item_stats_daily: one tenant, [from, to) as 'YYYY-MM-DD' strings.
SELECT tenant_id, scenario_id, item_id, day,
    sum(impressions) AS impressions, sum(clicks) AS clicks, sum(views) AS views,
    sum(plays) AS plays, sum(reads) AS reads, sum(learns) AS learns,
    sum(likes) AS likes, sum(shares) AS shares, sum(comments) AS comments,
    sum(add_carts) AS add_carts, sum(orders) AS orders, sum(payments) AS payments
FROM {db}.item_stats_daily
WHERE tenant_id = ? AND day >= toDate(?) AND day < toDate(?)
GROUP BY tenant_id, scenario_id, item_id, day
ORDER BY tenant_id, scenario_id, item_id, day;

-- user_behaviors: exact event count of a tenant, replays collapsed even before merges.
SELECT uniqExact(event_id) FROM {db}.user_behaviors WHERE tenant_id = ?;
