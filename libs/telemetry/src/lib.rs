//! analytics-telemetry
