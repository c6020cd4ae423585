-- One row per session, aggregated from `events` as rows arrive. Read with
-- the -Merge functions grouped by (project_id, session_id); duration is
-- maxMerge(end_at) - minMerge(start_at), a bounce is one screen view.
CREATE TABLE IF NOT EXISTS sessions (
    project_id String,
    session_id String,
    device_id AggregateFunction(any, String),
    profile_id AggregateFunction(max, String),
    start_at AggregateFunction(min, DateTime('UTC')),
    end_at AggregateFunction(max, DateTime('UTC')),
    events AggregateFunction(count),
    screen_views AggregateFunction(sum, UInt64),
    entry_path AggregateFunction(argMinIf, String, DateTime('UTC'), UInt8),
    exit_path AggregateFunction(argMaxIf, String, DateTime('UTC'), UInt8),
    referrer AggregateFunction(argMin, String, DateTime('UTC')),
    referrer_name AggregateFunction(argMin, String, DateTime('UTC')),
    referrer_type AggregateFunction(argMin, String, DateTime('UTC')),
    utm_source AggregateFunction(argMin, String, DateTime('UTC')),
    utm_medium AggregateFunction(argMin, String, DateTime('UTC')),
    utm_campaign AggregateFunction(argMin, String, DateTime('UTC')),
    country AggregateFunction(any, String),
    region AggregateFunction(any, String),
    city AggregateFunction(any, String),
    device AggregateFunction(any, String),
    browser AggregateFunction(any, String),
    os AggregateFunction(any, String)
) ENGINE = AggregatingMergeTree()
ORDER BY (project_id, session_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_mv TO sessions AS
SELECT
    project_id,
    session_id,
    anyState(device_id) AS device_id,
    maxState(profile_id) AS profile_id,
    minState(created_at) AS start_at,
    maxState(created_at) AS end_at,
    countState() AS events,
    sumState(toUInt64(name = 'screen_view')) AS screen_views,
    argMinIfState(path, created_at, toUInt8(name = 'screen_view')) AS entry_path,
    argMaxIfState(path, created_at, toUInt8(name = 'screen_view')) AS exit_path,
    argMinState(referrer, created_at) AS referrer,
    argMinState(referrer_name, created_at) AS referrer_name,
    argMinState(referrer_type, created_at) AS referrer_type,
    argMinState(utm_source, created_at) AS utm_source,
    argMinState(utm_medium, created_at) AS utm_medium,
    argMinState(utm_campaign, created_at) AS utm_campaign,
    anyState(country) AS country,
    anyState(region) AS region,
    anyState(city) AS city,
    anyState(device) AS device,
    anyState(browser) AS browser,
    anyState(os) AS os
FROM events
WHERE session_id != ''
GROUP BY project_id, session_id;
