//! Every metric the pipeline exports, with its help text: `/metrics`
//! carries `# HELP` for each (promtool's lint wants it), and this table is
//! the one list the dashboards and alerting rules draw from.

/// How a metric behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, kind, help.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "analytics_sink_buffered_rows",
        Kind::Gauge,
        "Rows each enriched partition's sink task holds: its buffer, or the batch it is flushing.",
    ),
    (
        "analytics_enricher_partition_progress_age_seconds",
        Kind::Gauge,
        "Seconds since each raw partition's enricher task last read or committed (readyz fails past enricher.stall_after_ms).",
    ),
    (
        "analytics_enricher_running_tasks",
        Kind::Gauge,
        "1 while the enricher task of each raw partition runs.",
    ),
    (
        "analytics_sink_partition_progress_age_seconds",
        Kind::Gauge,
        "Seconds since each enriched partition's sink task last read or flushed (readyz fails past sink.stall_after_ms).",
    ),
    (
        "analytics_sink_running_tasks",
        Kind::Gauge,
        "1 while the sink task of each enriched partition runs.",
    ),
    (
        "analytics_edge_requests_total",
        Kind::Counter,
        "Ingest requests answered, by route and status.",
    ),
    (
        "analytics_edge_accepted_events_total",
        Kind::Counter,
        "Events written to the raw stream (answered 202).",
    ),
    (
        "analytics_edge_rejected_requests_total",
        Kind::Counter,
        "Ingest requests refused, by route and reason.",
    ),
    (
        "analytics_edge_stream_length_entries",
        Kind::Gauge,
        "Length of each raw partition as last seen by this edge (503 above redis.max_stream_len).",
    ),
    (
        "analytics_edge_xadd_batch_entries",
        Kind::Histogram,
        "Stream entries (bundles of events) per group-committed XADD pipeline.",
    ),
    (
        "analytics_edge_xadd_seconds",
        Kind::Histogram,
        "Time of one group-committed XADD pipeline.",
    ),
    (
        "analytics_enricher_events_total",
        Kind::Counter,
        "Events enriched and forwarded to the enriched stream.",
    ),
    (
        "analytics_enricher_fenced_commits_total",
        Kind::Counter,
        "Commits refused because another enricher holds the partition's lease.",
    ),
    (
        "analytics_enricher_state_sessions",
        Kind::Gauge,
        "Open sessions the partition's owner holds in memory.",
    ),
    (
        "analytics_enricher_state_dedupe_keys",
        Kind::Gauge,
        "Event keys of the dedupe window the partition's owner holds in memory.",
    ),
    (
        "analytics_enricher_state_sessions_log_bytes",
        Kind::Gauge,
        "Bytes of the partition's sessions log in Redis (compacted into a snapshot at twice the open sessions' size).",
    ),
    (
        "analytics_enricher_duplicates_total",
        Kind::Counter,
        "Events dropped as repeats inside the dedupe window.",
    ),
    (
        "analytics_enricher_bots_dropped_total",
        Kind::Counter,
        "Crawler events dropped by their project's bot policy.",
    ),
    (
        "analytics_enricher_errors_total",
        Kind::Counter,
        "Enricher batches that failed and will be read again.",
    ),
    (
        "analytics_enricher_redelivered_batches_total",
        Kind::Counter,
        "Batches read again after a failure or a takeover.",
    ),
    (
        "analytics_enricher_paused_total",
        Kind::Counter,
        "Times an enricher paused reading because its enriched partition was at redis.max_stream_len.",
    ),
    (
        "analytics_enricher_batch_seconds",
        Kind::Histogram,
        "Time to enrich and forward one batch.",
    ),
    (
        "analytics_sink_rows_total",
        Kind::Counter,
        "Rows inserted into ClickHouse.",
    ),
    (
        "analytics_sink_duplicates_skipped_total",
        Kind::Counter,
        "Rows of a redelivered batch found already stored and skipped.",
    ),
    (
        "analytics_sink_insert_errors_total",
        Kind::Counter,
        "Failed ClickHouse inserts (retried with backoff).",
    ),
    (
        "analytics_sink_batch_rows",
        Kind::Histogram,
        "Rows per ClickHouse insert.",
    ),
    (
        "analytics_sink_flush_seconds",
        Kind::Histogram,
        "Time of one flush: insert plus acknowledgement.",
    ),
    (
        "analytics_insights_requests_total",
        Kind::Counter,
        "Insights requests answered, by endpoint and status.",
    ),
    (
        "analytics_insights_request_seconds",
        Kind::Histogram,
        "Insights request latency, by endpoint.",
    ),
    (
        "analytics_insights_export_stalls_total",
        Kind::Counter,
        "NDJSON exports dropped because their client took no data for insights.export_send_timeout_ms.",
    ),
    (
        "analytics_insights_summary_checks_total",
        Kind::Counter,
        "Counts of a range in session_hours against events, by result (agrees: answered from session_hours; differs: from events, and logged).",
    ),
    (
        "analytics_streams_length_entries",
        Kind::Gauge,
        "Entries in a stream partition.",
    ),
    (
        "analytics_streams_pending_entries",
        Kind::Gauge,
        "Entries delivered to a consumer group and not yet acknowledged.",
    ),
    (
        "analytics_streams_lag_entries",
        Kind::Gauge,
        "Entries of a stream partition not yet delivered to a consumer group.",
    ),
    (
        "analytics_streams_dead_letters_entries",
        Kind::Gauge,
        "Entries waiting in a dead-letter stream (see `analytics dlq list`).",
    ),
    (
        "analytics_streams_group_members",
        Kind::Gauge,
        "Live members of the consumer group that share the partitions.",
    ),
    (
        "analytics_streams_leases_acquired_total",
        Kind::Counter,
        "Partition leases this process took (it became the partition's owner).",
    ),
    (
        "analytics_streams_leases_lost_total",
        Kind::Counter,
        "Partition leases found held by another member at renewal (this process stopped working on it).",
    ),
    (
        "analytics_streams_claimed_total",
        Kind::Counter,
        "Entries taken over from consumers idle past claim_idle_ms.",
    ),
    (
        "analytics_streams_dead_lettered_total",
        Kind::Counter,
        "Entries moved to the dead-letter stream.",
    ),
    (
        "analytics_streams_trimmed_total",
        Kind::Counter,
        "Acknowledged entries trimmed from a stream.",
    ),
];

/// Registers the help text of every metric with the installed recorder.
pub(crate) fn describe_all() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &(name, kind, help) in METRICS {
            assert!(seen.insert(name), "{name} twice");
            let parts: Vec<&str> = name.split('_').collect();
            assert_eq!(parts[0], "analytics", "{name}");
            assert!(
                ["edge", "enricher", "sink", "insights", "streams"].contains(&parts[1]),
                "{name}"
            );
            let unit = *parts.last().unwrap();
            match kind {
                Kind::Counter => assert_eq!(unit, "total", "{name}"),
                _ => assert!(
                    [
                        "seconds", "entries", "rows", "tasks", "sessions", "keys", "members",
                        "bytes",
                    ]
                    .contains(&unit),
                    "{name}"
                ),
            }
            assert!(help.ends_with('.') || help.ends_with(')'), "{name}");
        }
    }
}
