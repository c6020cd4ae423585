-- One row per hour, session, device and set of session-level values
-- (referrer, campaign, place, browser, system, device type) of the
-- analytics events, filled by a materialized view as rows arrive. A month
-- of a project is then about as many rows as it had sessions, not events:
-- headline counts, session lengths, daily series and the top lists of these
-- columns read a sixth of the rows and count distinct devices and sessions
-- over those. Rows with the same key are one session's hour, merged as
-- parts merge; every count is a sum or a min/max of states, so unmerged
-- parts give the same answers.
-- Hours are UTC, so they serve ranges that start and end on the hour in a
-- zone whose offset is a whole number of hours; the insights API asks
-- `events` for other ranges, for filters on other columns, and whenever
-- this table's count of a range's events differs from `events`' own (a view
-- misses the rows of an insert that failed half-way).
-- A path is not a session-level value: top pages, entry and exit pages,
-- funnels and retention read `events`.
CREATE TABLE IF NOT EXISTS session_hours (
    project_id String,
    hour DateTime('UTC'),
    session_key UInt64,
    device_key UInt64,
    referrer_name LowCardinality(String),
    referrer_type LowCardinality(String),
    utm_source LowCardinality(String),
    utm_campaign String,
    country LowCardinality(String),
    region LowCardinality(String),
    city String,
    browser LowCardinality(String),
    os LowCardinality(String),
    device LowCardinality(String),
    screen_views AggregateFunction(sum, UInt64),
    event_count AggregateFunction(count),
    first_at AggregateFunction(min, DateTime('UTC')),
    last_at AggregateFunction(max, DateTime('UTC'))
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, hour, session_key, device_key, referrer_name, referrer_type, utm_source, utm_campaign, country, region, city, browser, os, device);

-- Rows stored before this migration, once: run migrations with no sink
-- writing, as for every migration (rows stored between this statement and
-- the view's creation are only in `events`, and ranges holding them are
-- answered from there).
INSERT INTO session_hours
SELECT project_id, toStartOfHour(created_at, 'UTC') AS hour, session_key, device_key,
    referrer_name, referrer_type, utm_source, utm_campaign, country, region, city, browser, os, device,
    sumState(toUInt64(kind = 1)), countState(), minState(created_at), maxState(created_at)
FROM events
WHERE kind != 2 AND (SELECT count() FROM session_hours) = 0
GROUP BY project_id, hour, session_key, device_key,
    referrer_name, referrer_type, utm_source, utm_campaign, country, region, city, browser, os, device;

CREATE MATERIALIZED VIEW IF NOT EXISTS session_hours_mv TO session_hours AS
SELECT
    project_id,
    toStartOfHour(created_at, 'UTC') AS hour,
    session_key,
    device_key,
    referrer_name, referrer_type, utm_source, utm_campaign, country, region, city, browser, os, device,
    sumState(toUInt64(kind = 1)) AS screen_views,
    countState() AS event_count,
    minState(created_at) AS first_at,
    maxState(created_at) AS last_at
FROM events
WHERE kind != 2
GROUP BY project_id, hour, session_key, device_key,
    referrer_name, referrer_type, utm_source, utm_campaign, country, region, city, browser, os, device;
