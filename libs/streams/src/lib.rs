//! analytics-streams
