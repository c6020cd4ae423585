//! Conditions every analytics query over `events` shares, spelled once.
//! They read the one-byte `kind` of migration 0011 rather than compare the
//! name strings of every row; its default expression there names the same
//! events.

/// Profile operations (`identify`, `increment`, `decrement`, `alias`) are
/// stored as events for audit; analytics queries leave them out.
pub const ANALYTICS_EVENTS: &str = "kind != 2";

/// Screen views (`screen_view`).
pub const SCREEN_VIEWS: &str = "kind = 1";

/// Rows that belong to a session, told by the 8-byte key rather than by
/// reading the id strings (the key of the empty id is a constant).
pub const IN_SESSION: &str = "session_key != cityHash64('')";
