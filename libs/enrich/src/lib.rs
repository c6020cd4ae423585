//! analytics-enrich
