-- The hourly aggregates count distinct devices and sessions by their
-- 64-bit keys (0007) instead of the id strings: their states are half the
-- size, the view costs about half the server CPU per inserted row, and
-- merging a month of hours answers in about 60% of the time. The table is
-- made again and, once its view exists, rebuilt from `events` by the
-- migration runner (as `analytics backfill` does, so run migrations with
-- no sink writing; a rebuild repairs a table that missed rows).
DROP TABLE IF EXISTS events_hourly_mv;
DROP TABLE IF EXISTS events_hourly;
CREATE TABLE IF NOT EXISTS events_hourly (
    project_id String,
    hour DateTime('UTC'),
    visitors AggregateFunction(uniqExact, UInt64),
    sessions AggregateFunction(uniqExactIf, UInt64, UInt8),
    screen_views AggregateFunction(sum, UInt64),
    events AggregateFunction(count)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
SELECT
    project_id,
    toStartOfHour(created_at, 'UTC') AS hour,
    uniqExactState(device_key) AS visitors,
    uniqExactIfState(session_key, toUInt8(session_key != cityHash64(''))) AS sessions,
    sumState(toUInt64(name = 'screen_view')) AS screen_views,
    countState() AS events
FROM events
WHERE name NOT IN ('identify', 'increment', 'decrement', 'alias')
GROUP BY project_id, hour;
