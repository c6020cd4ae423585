//! analytics-store
