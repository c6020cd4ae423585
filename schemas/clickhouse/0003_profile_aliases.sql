-- `alias` calls: `alias` is another id of the person `profile_id`.
CREATE TABLE IF NOT EXISTS profile_aliases (
    project_id String,
    alias String,
    profile_id String,
    created_at DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (project_id, alias);
