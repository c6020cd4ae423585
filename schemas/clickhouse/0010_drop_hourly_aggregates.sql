-- Counts per range and per bucket are answered from `events`. The hourly
-- view kept two exact distinct-count states per hour, built for every
-- inserted block and merged again at every merge of its parts: it cost the
-- server about as much CPU per inserted row as the bare `events` table
-- (4.0 against 4.6 µs per row in 10,000-row inserts), while a scan of the
-- raw rows answers a month's counts or daily series within the same
-- fraction of a second as merging its states did.
DROP TABLE IF EXISTS events_hourly_mv;
DROP TABLE IF EXISTS events_hourly;
