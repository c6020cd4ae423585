//! Conditions every analytics query over `events` shares, spelled once.

/// Profile operations are stored as events for audit; analytics queries
/// leave them out.
pub const ANALYTICS_EVENTS: &str = "name NOT IN ('identify', 'increment', 'decrement', 'alias')";

/// Rows that belong to a session, told by the 8-byte key rather than by
/// reading the id strings (the key of the empty id is a constant).
pub const IN_SESSION: &str = "session_key != cityHash64('')";
