-- Hourly aggregates per project, filled by materialized views from
-- `events`. Hours are UTC, so they serve any time zone whose offset is a
-- whole number of hours; the insights API falls back to `events` for other
-- zones, for ranges that do not start and end on an hour, and for queries
-- with filters. Read with the -Merge functions.
CREATE TABLE IF NOT EXISTS events_hourly (
    project_id String,
    hour DateTime('UTC'),
    visitors AggregateFunction(uniqExact, String),
    sessions AggregateFunction(uniqExactIf, String, UInt8),
    screen_views AggregateFunction(sum, UInt64),
    events AggregateFunction(count)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, hour);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
SELECT
    project_id,
    toStartOfHour(created_at, 'UTC') AS hour,
    uniqExactState(device_id) AS visitors,
    uniqExactIfState(session_id, toUInt8(session_id != '')) AS sessions,
    sumState(toUInt64(name = 'screen_view')) AS screen_views,
    countState() AS events
FROM events
WHERE name NOT IN ('identify', 'increment', 'decrement', 'alias')
GROUP BY project_id, hour;

-- Page views per hour and value of each top-list dimension.
CREATE TABLE IF NOT EXISTS top_hourly (
    project_id String,
    dimension String,
    hour DateTime('UTC'),
    value String,
    views AggregateFunction(count),
    visitors AggregateFunction(uniqExact, String),
    sessions AggregateFunction(uniqExactIf, String, UInt8)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, dimension, hour, value);

CREATE MATERIALIZED VIEW IF NOT EXISTS top_hourly_mv TO top_hourly AS
SELECT
    project_id,
    tupleElement(pair, 1) AS dimension,
    toStartOfHour(created_at, 'UTC') AS hour,
    tupleElement(pair, 2) AS value,
    countState() AS views,
    uniqExactState(device_id) AS visitors,
    uniqExactIfState(session_id, toUInt8(session_id != '')) AS sessions
FROM events
ARRAY JOIN [
    ('path', path), ('referrer_name', referrer_name), ('referrer_type', referrer_type),
    ('utm_source', utm_source), ('utm_campaign', utm_campaign), ('country', country),
    ('region', region), ('city', city), ('browser', browser), ('os', os), ('device', device)
] AS pair
WHERE name = 'screen_view'
GROUP BY project_id, dimension, hour, value;
