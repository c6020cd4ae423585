-- Profile traits; the row with the highest version wins on merge, and
-- queries read it with argMax(…, version).
CREATE TABLE IF NOT EXISTS profiles (
    id String,
    project_id String,
    first_name String,
    last_name String,
    email String,
    avatar String,
    properties String,
    created_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (project_id, id);
