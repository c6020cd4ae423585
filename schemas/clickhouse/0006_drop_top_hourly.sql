-- Top lists are answered from `events`. Their hourly aggregates fanned each
-- page view out to eleven rows, each carrying two exact distinct-count
-- states: that view cost more CPU per inserted row than the rest of the
-- schema together, and merging its states answered no faster than a scan
-- of the raw rows.
DROP TABLE IF EXISTS top_hourly_mv;
DROP TABLE IF EXISTS top_hourly;
