-- Per-session rows are answered from `events`, grouped by `session_key`
-- (the README gives the query), as the insights API already answers
-- bounce rate, duration and entry and exit pages. The view kept 22
-- aggregate states per session, written for every inserted event and
-- merged again and again, and no question read them: it cost the server
-- about 60% of the bare `events` table's CPU per inserted row.
DROP TABLE IF EXISTS sessions_mv;
DROP TABLE IF EXISTS sessions;
