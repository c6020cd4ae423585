//! The end-to-end lag: how long ago the newest event visible in
//! ClickHouse was sent.
//!
//! Beside the load, the probe sends one marker event every sampling
//! period through the edge (its own event name, its send time in ms in a
//! property, on devices spread over the partitions) and asks ClickHouse
//! for the newest marker stored. The markers are found through the
//! table's sort key (project, day, name), so a sample reads a few
//! granules instead of parsing the load's properties, and can be taken
//! often without adding to the ClickHouse CPU the run measures.

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::json;

use crate::clickhouse_query;
use crate::events::SENT_MS;
use crate::load::{self, Plan, unix_ms};

/// The markers' event name.
const MARKER: &str = "bench_lag_marker";
/// Devices the markers rotate over, so that they cross every partition.
const MARKER_DEVICES: u64 = 16;
/// How far back a sample looks for markers.
const LOOK_BACK: Duration = Duration::from_secs(120);

/// Sends markers to one pipeline and finds the newest one stored.
pub struct LagProbe {
    sender: SendRequest<Full<Bytes>>,
    /// Where markers go: single events to the edge, with its credentials.
    plan: Plan,
    clickhouse_url: String,
    database: String,
    project: String,
    sent: u64,
    accepted: u64,
}

impl LagProbe {
    /// Opens a connection of its own to the edge, to post single events
    /// as `plan` (with one event per request) does.
    pub async fn connect(
        plan: Plan,
        clickhouse_url: &str,
        database: &str,
        project: &str,
    ) -> Result<LagProbe> {
        Ok(LagProbe {
            sender: load::connect(plan.addr).await?,
            plan,
            clickhouse_url: clickhouse_url.into(),
            database: database.into(),
            project: project.into(),
            sent: 0,
            accepted: 0,
        })
    }

    /// Sends the next marker and waits for the edge's answer; a marker the
    /// edge refused (backpressure) is not counted.
    pub async fn mark(&mut self) -> Result<()> {
        let device = self.sent % MARKER_DEVICES;
        self.sent += 1;
        let body = json!({"type": "track", "payload": {
            "name": MARKER,
            "deviceId": format!("bench-lag-marker-{device}"),
            "properties": {SENT_MS: unix_ms()},
        }});
        let request = load::request(&self.plan, device, Bytes::from(body.to_string()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let accepted = response.status().is_success();
        response.into_body().collect().await?;
        if accepted {
            self.accepted += 1;
        }
        Ok(())
    }

    /// Markers the edge accepted, which are stored beside the load's events.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// The send time of the newest marker stored, if one is.
    pub async fn newest_stored_ms(&self) -> Result<Option<u64>> {
        let sql = format!(
            "SELECT count(), max(visitParamExtractUInt(properties, '{SENT_MS}')) FROM events \
             WHERE project_id = '{project}' AND name = '{MARKER}' AND created_at >= now() - {back}",
            project = self.project,
            back = LOOK_BACK.as_secs(),
        );
        let (url, database) = (self.clickhouse_url.clone(), self.database.clone());
        // curl blocks: off the runtime, so the generator's threads keep sending.
        let reply =
            tokio::task::spawn_blocking(move || clickhouse_query(&url, &database, &sql)).await??;
        let mut fields = reply.split('\t').map(|f| f.parse::<u64>().ok());
        Ok(match (fields.next(), fields.next()) {
            (Some(Some(stored)), Some(Some(newest))) if stored > 0 => Some(newest),
            _ => None,
        })
    }
}
