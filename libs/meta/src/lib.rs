//! analytics-meta
