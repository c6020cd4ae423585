//! analytics-enricher
