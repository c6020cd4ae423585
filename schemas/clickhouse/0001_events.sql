-- One row per stored event. Times are UTC seconds; received_at is the
-- server's clock, created_at the client's corrected one. Columns of few
-- distinct values are LowCardinality where the server has it (plain String
-- on older servers: see libs/store/src/features.rs).
CREATE TABLE IF NOT EXISTS events (
    id String,
    project_id String,
    name LowCardinality(String),
    device_id String,
    profile_id String,
    session_id String,
    created_at DateTime('UTC'),
    received_at DateTime('UTC'),
    path String,
    origin String,
    referrer String,
    referrer_name LowCardinality(String),
    referrer_type LowCardinality(String),
    utm_source LowCardinality(String),
    utm_medium LowCardinality(String),
    utm_campaign String,
    utm_term String,
    utm_content String,
    country LowCardinality(String),
    region LowCardinality(String),
    city String,
    latitude Float64,
    longitude Float64,
    os LowCardinality(String),
    os_version LowCardinality(String),
    browser LowCardinality(String),
    browser_version LowCardinality(String),
    device LowCardinality(String),
    brand LowCardinality(String),
    model String,
    properties String,
    sdk_name LowCardinality(String),
    sdk_version LowCardinality(String)
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(created_at)
ORDER BY (project_id, toDate(created_at), name, created_at);
