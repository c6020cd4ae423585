//! analytics-edge
