//! analytics-sink
