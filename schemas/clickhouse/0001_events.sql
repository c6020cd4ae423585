-- One row per stored event. Times are UTC seconds; received_at is the
-- server's clock, created_at the client's corrected one.
CREATE TABLE IF NOT EXISTS events (
    id String,
    project_id String,
    name String,
    device_id String,
    profile_id String,
    session_id String,
    created_at DateTime('UTC'),
    received_at DateTime('UTC'),
    path String,
    origin String,
    referrer String,
    referrer_name String,
    referrer_type String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_term String,
    utm_content String,
    country String,
    region String,
    city String,
    latitude Float64,
    longitude Float64,
    os String,
    os_version String,
    browser String,
    browser_version String,
    device String,
    brand String,
    model String,
    properties String,
    sdk_name String,
    sdk_version String
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(created_at)
ORDER BY (project_id, toDate(created_at), name, created_at);
